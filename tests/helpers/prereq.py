"""Missing prerequisites: skip with the reason locally, fail in CI.

``tests/conftest.py`` turns every skip into a failure when ``CI=true``; these
helpers only make the reason uniform and name the install step.
"""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = "run scripts/install-test-tools as root"


def require(condition: bool, what: str) -> None:
    """Skip (fail in CI) unless ``condition``; ``what`` names the missing thing."""
    if not condition:
        pytest.skip(f"needs {what} ({INSTALL_HINT})")


def require_executable(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"`{name}` on PATH")
    assert path is not None
    return path


def require_root() -> None:
    require(os.geteuid() == 0, "root")
