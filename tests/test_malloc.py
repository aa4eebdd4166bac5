"""The daemon caps glibc's malloc arenas (see lpr_agent/malloc.py)."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_arena_cap_applies_on_glibc_and_yields_to_the_operator() -> None:
    code = "from lpr_agent.malloc import limit_arenas; print(limit_arenas())"
    env_none = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env_none, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")
    # MALLOC_ARENA_MAX set by the operator (or the unit file) wins: no override.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env_none, "MALLOC_ARENA_MAX": "4"}, check=True).stdout.strip()
    assert out == "False"
