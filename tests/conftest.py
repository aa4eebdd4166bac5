"""Suite-wide rules.

In CI (``CI=true``) a test whose prerequisite is missing fails instead of
skipping: a green CI run must mean every test ran. Outside CI a developer
without root (no chromium, no nspawn, no fuse) still gets a useful run, with
each skip saying what to install. A skip that is not about a missing
prerequisite (the test does not apply here) says so with a reason starting
``not applicable:`` and stays a skip everywhere.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import threading

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _serialise_ast_parse() -> None:
    """Work around CPython gh-106905 (fixed in 3.11.8; this machine has 3.11.7).

    Building a Python AST keeps its recursion depth in interpreter-global
    state; when the GC releases the GIL in the middle of one ``ast.parse`` and
    another thread parses too, the first ends in ``SystemError: AST constructor
    recursion depth mismatch``. Tests have many threads that parse: Python
    3.11's traceback module parses a line to place its ``^^^`` markers whenever
    a worker thread logs an exception, while pytest's assertion rewriting and
    Hypothesis (which scans local modules for constants) parse in the main
    thread. Seen here as pytest crashing after every test had passed. One lock
    around ``ast.parse`` makes the parses take turns.
    """
    if sys.version_info >= (3, 11, 8) or getattr(ast.parse, "_serialised", False):
        return
    lock = threading.RLock()
    parse = ast.parse

    @functools.wraps(parse)
    def serialised(*args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            return parse(*args, **kwargs)

    serialised._serialised = True  # type: ignore[attr-defined]
    ast.parse = serialised


_serialise_ast_parse()
NOT_APPLICABLE = "not applicable:"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if not IN_CI or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if NOT_APPLICABLE in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"CI=true: a prerequisite is missing, so this test fails: {reason}"
