"""Logging: journald priority prefixes, no own timestamps under systemd, key=value, rate limit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from lpr_agent.logs import LoggingConfig, RateLimitFilter, setup_logging

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    from lpr_agent.logs import LoggingConfig, setup_logging
    if sys.argv[1] == "journal":
        st = os.fstat(2)
        os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    elif sys.argv[1] == "foreign":
        os.environ["JOURNAL_STREAM"] = "1:2"   # inherited, but not our stderr
    setup_logging(LoggingConfig(level="DEBUG"))
    log = logging.getLogger("lpr_agent.x")
    log.debug("dbg")
    log.info("frame source opened", extra={"url": "rtsp://cam/1", "fps": 12.5})
    log.warning("uplink down", extra={"error": 'refused "now"'})
    log.error("multi\\nline")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("boom")
    """
)


def _run(mode: str, tmp_path: Path) -> list[str]:
    err = tmp_path / f"{mode}.err"
    with err.open("w") as fh:
        subprocess.run(
            [sys.executable, "-c", SCRIPT, mode], stderr=fh, check=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"},
        )
    return err.read_text().splitlines()


def test_journal_mode_priority_prefix_and_no_timestamp(tmp_path: Path) -> None:
    lines = _run("journal", tmp_path)
    assert lines[0] == "<7>lpr_agent.x: dbg"
    assert lines[1] == "<6>lpr_agent.x: frame source opened url=rtsp://cam/1 fps=12.5"
    assert lines[2] == '<4>lpr_agent.x: uplink down error="refused \\"now\\""'
    assert lines[3] == "<3>lpr_agent.x: multi | line"  # one event, one line
    assert lines[4].startswith('<3>lpr_agent.x: boom exc="ZeroDivisionError: division by zero"')
    # the traceback keeps the event's priority on every line
    assert len(lines) > 5 and all(line.startswith("<3>  ") for line in lines[5:])


def test_plain_mode_has_timestamps_and_levels(tmp_path: Path) -> None:
    for mode in ("plain", "foreign"):
        lines = _run(mode, tmp_path)
        assert re.match(
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} WARNING lpr_agent\.x: uplink down ", lines[2]
        ), lines[2]
        assert not any(line.startswith("<") for line in lines)


def test_rate_limit_suppresses_repeats_then_reports_count(tmp_path: Path) -> None:
    import io
    import logging

    stream = io.StringIO()
    setup_logging(LoggingConfig(rate_limit_burst=3, rate_limit_window_s=0.5), stream=stream)
    log = logging.getLogger("lpr_agent.test_rate")
    try:
        for i in range(200):  # a dead server, one failure per frame
            log.warning("send failed frame=%d", i, extra={"error": "HTTP 500"})
        log.warning("different message")
        time.sleep(0.6)
        log.warning("send failed frame=%d", 999)
    finally:
        setup_logging(LoggingConfig(), stream=sys.stderr)
    lines = stream.getvalue().splitlines()
    failed = [x for x in lines if "send failed" in x]
    assert len(failed) == 5, lines  # 3 + "repeating" notice + the one after the window
    assert "repeating; further identical messages suppressed" in failed[3]
    assert "frame=999" in failed[4] and "suppressed=196" in failed[4]
    assert any("different message" in x for x in lines)


def test_rate_limit_filter_bounds_memory() -> None:
    import logging

    f = RateLimitFilter(burst=1, window_s=0.01)
    for i in range(5000):
        f.filter(logging.LogRecord("n", logging.INFO, "p", 1, f"m{i}", None, None))
    time.sleep(0.02)
    f.filter(logging.LogRecord("n", logging.INFO, "p", 1, "last", None, None))
    assert len(f._seen) < 4200


def test_distinct_events_are_not_rate_limited() -> None:
    import io
    import logging

    stream = io.StringIO()
    setup_logging(LoggingConfig(rate_limit_burst=2, rate_limit_window_s=60), stream=stream)
    log = logging.getLogger("lpr_agent.test_distinct")
    try:
        for plate in ("AB123CD", "XY987ZT", "KL456MN", "PQ111RS"):
            log.info("plate %s (%d frames)", plate, 7)
        for delay in (0.5, 1.0, 2.0, 4.0, 8.0):  # same message, only numbers differ
            log.warning("server down; retrying in %.1f s", delay)
    finally:
        setup_logging(LoggingConfig(), stream=sys.stderr)
    out = stream.getvalue()
    assert all(p in out for p in ("AB123CD", "XY987ZT", "KL456MN", "PQ111RS"))
    assert out.count("retrying in") == 3  # 2 + the "repeating" notice
