"""Link state and counters of the uplink, for the health reporter and the CLI."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Channel = Literal["socketio", "rest", "none"]
AckStyle = Literal["outcome", "legacy", "unknown"]


@dataclass
class UplinkStats:
    channel: Channel = "none"
    connected: bool = False  # Socket.IO connected and registered
    ack_style: AckStyle = "unknown"
    auth_failed: bool = False
    sent: int = 0  # messages written to a link (Socket.IO or REST)
    acked: int = 0  # positively acknowledged -> removed from the spool
    retried: int = 0  # returned to the spool (nack or release) to be sent again
    rejected: int = 0  # dead-lettered with the server's reason
    fallback_switches: int = 0  # Socket.IO -> REST switches
    possible_duplicates: int = 0  # resent after an unknown outcome (may be stored twice
    # on a server without event_id dedup)
    server_duplicates: int = 0  # acks saying "duplicate": the server deduplicated a resend
    sio_connects: int = 0
    sio_connect_failures: int = 0
    in_flight: int = 0
    last_ack_at: float | None = None  # wall time (time.time())
    last_error: str | None = None
    last_error_at: float | None = None
    ack_latency_p50_ms: float | None = None
    ack_latency_p99_ms: float | None = None
    backlog: int | None = None  # spool items waiting, when the spool reports it
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyWindow:
    """The last N ack latencies; percentiles on demand (cheap enough for stats())."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.mean_s: float | None = None  # moving average (cheap, for sizing)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)
        mean = self.mean_s
        self.mean_s = seconds if mean is None else mean + (seconds - mean) / 16

    def percentile(self, q: float) -> float | None:
        if not self._values:
            return None
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] * 1000.0


class RateLimitedLog:
    """Log a repeated failure once, then at most every ``interval`` seconds with a count.

    A dead server must not write a line per message.
    """

    def __init__(self, logger: Any, interval: float = 30.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args)

    def reset(self, key: str) -> None:
        self._last.pop(key, None)
        self._suppressed.pop(key, None)
