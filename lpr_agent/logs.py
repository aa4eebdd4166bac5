"""Logging set-up for the daemon and the CLI: journald-friendly, one line per event.

* Under systemd (``JOURNAL_STREAM`` names our stderr) every line starts with a
  syslog priority prefix (``<4>`` for warning) that journald turns into the
  entry's priority, so ``journalctl -p warning`` works; no timestamp of our own
  (journald stamps each entry). Elsewhere: an ISO timestamp and the level name.
* Context goes in ``extra=``: ``log.warning("uplink down", extra={"error": e})``
  renders as ``uplink down error="connection refused"``.
* A message logged again and again (a dead server, a missing camera) is
  rate-limited per (logger, level, message with numbers blanked): ``burst`` lines per
  ``window_s``, then one summary line with the number suppressed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

LevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# Python level -> syslog priority (sd-daemon.h SD_ERR ...).
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName", "rate_limit_key"}


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: LevelName = Field(default="INFO", description="lowest level written to the log")
    rate_limit_burst: int = Field(
        default=5,
        ge=1,
        description="how many lines of the same message may be written per window before "
        "repeats are suppressed (a dead server must not write a line per frame)",
    )
    rate_limit_window_s: float = Field(
        default=60.0, gt=0, description="length of the rate-limit window, seconds"
    )


def syslog_priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _SYSLOG_PRIORITY[level]
    return _SYSLOG_PRIORITY[logging.DEBUG]


def _kv(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\t') or "\n" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def journal_stream_is(stream: TextIO) -> bool:
    """True when ``stream`` is the journald stream systemd connected us to.

    ``JOURNAL_STREAM`` is ``<dev>:<inode>`` of that stream; a child process
    whose stderr was redirected elsewhere inherits the variable, so compare.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class EventFormatter(logging.Formatter):
    """``[<prio>]`` or timestamp, then ``logger: message key=value ...`` on one line."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " | ")
        context = [
            f"{key}={_kv(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        ]
        if record.exc_info and record.exc_info[0] is not None:
            exc = record.exc_info[1]
            context.append(f"exc={_kv(f'{type(exc).__name__}: {exc}')}")
        line = f"{record.name}: {message}"
        if context:
            line += " " + " ".join(context)
        if self.journal:
            prio = syslog_priority(record.levelno)
            out = f"<{prio}>{line}"
            if record.exc_info and record.exc_info[0] is not None:
                # The traceback follows as extra lines of the same priority, so
                # `journalctl -p err` shows them together with their event.
                trace = self.formatException(record.exc_info)
                out += "".join(f"\n<{prio}>  {t}" for t in trace.splitlines())
            return out
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        out = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {line}"
        if record.exc_info and record.exc_info[0] is not None:
            out += "\n" + self.formatException(record.exc_info)
        return out


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _repeat_key(record: logging.LogRecord) -> str:
    """What counts as "the same message": the rendered text with numbers blanked,
    so "retrying in 1.5 s" and "retrying in 3.0 s" repeat, while "plate AB123CD"
    and "plate XY987ZT" are different events."""
    try:
        text = record.getMessage()
    except Exception:  # a bad format string: fall back to the template
        text = str(record.msg)
    return _NUMBER.sub("#", text)


class RateLimitFilter(logging.Filter):
    """Let ``burst`` records per (logger, level, message) through per window.

    When a window with suppressed records ends, the next record of that key
    carries ``suppressed=N`` so the reader knows how many were dropped.
    A record may set ``extra={"rate_limit_key": ...}`` to group differently.
    """

    def __init__(self, burst: int, window_s: float) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._lock = threading.Lock()
        # key -> [window start, count in window, suppressed in window]
        self._seen: dict[tuple[Any, ...], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (
            record.name,
            record.levelno,
            getattr(record, "rate_limit_key", None) or _repeat_key(record),
        )
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[0] >= self.window_s:
                suppressed = int(entry[2]) if entry else 0
                self._seen[key] = [now, 1, 0]
                if suppressed:
                    record.suppressed = suppressed
                if len(self._seen) > 4096:  # bound memory against unbounded templates
                    cutoff = now - self.window_s
                    self._seen = {k: v for k, v in self._seen.items() if v[0] >= cutoff}
                return True
            entry[1] += 1
            if entry[1] <= self.burst:
                return True
            if entry[1] == self.burst + 1:
                # Say once that we start suppressing, so silence is not mistaken for recovery.
                record.msg = f"{record.msg} (repeating; further identical messages suppressed " \
                    f"for up to {self.window_s:g}s)"
                return True
            entry[2] += 1
            return False


_HANDLER_NAME = "lpr-agent"


def setup_logging(config: LoggingConfig | None = None, stream: TextIO | None = None) -> None:
    """Install the agent's single handler on the root logger (idempotent; call
    again after a config reload to apply a new level or rate limit)."""
    config = config or LoggingConfig()
    stream = stream or sys.stderr
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(EventFormatter(journal=journal_stream_is(stream)))
    handler.addFilter(RateLimitFilter(config.rate_limit_burst, config.rate_limit_window_s))
    root.addHandler(handler)
    root.setLevel(config.level)
    # Chatty third-party loggers would otherwise log every reconnect attempt at INFO.
    for noisy in ("engineio", "socketio", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
