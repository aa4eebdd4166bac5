"""Link-aware flow control of the Socket.IO pipe: how much may be in flight,
and when a missing ack means the link is dead. Pure logic, injected clock.

Why (issue 12): a fixed window of 64 messages and a fixed 3 s ack timeout
turn a 1 Mbit/s cellular link into a permanent outage. 64 images of 50 KB
take 26 s to cross such a link, so every ack "timed out", the link was
declared dead, and everything was resent: 424 messages sent for 146 acked.

The model (BBR-like, simplified; unit-tested by tables in
``tests/uplink/test_flow.py``):

* **Delivery rate** ``rate``: every ack gives a sample, acked bytes over the
  time they took (BBR's definition: since the last ack before the message
  was sent, and never shorter than the send interval, so that bunched acks
  do not inflate it). The estimate is the largest sample of the last
  ``filter_s`` seconds. Samples taken while the sender did not fill the
  window (app-limited) only ever raise it: a camera sending one reading a
  minute says nothing about the link. With no fresh sample the last
  estimate stays (an idle link has not become slower).
* **Base RTT** ``base_rtt``: the round trip without our own queue
  (propagation + server time), from messages sent into an empty pipe:
  their round trip less their own bytes / ``rate``. Taking the plain minimum
  RTT instead would include our own queue during a long drain, and a window
  sized from it would grow without bound.
* **Departure model**: each message gets an estimated departure time from
  the slowest hop, ``max(now, previous departure) + bytes / rate`` (rate at
  least ``min_rate``); an ack earlier than that proves the model slow and
  pulls every later departure (and deadline) in.
* **Byte window** = ``rate * (base_rtt + queue_target_s) + largest message``
  (at least two of the largest messages of the last ``filter_s``), clamped
  to ``[min_window_bytes, max_window_bytes]``: the pipe stays full
  (a message is acked only once all of it arrived, hence the message term)
  while at most about ``queue_target_s`` of data waits in queues, so a
  health snapshot or an engine.io pong is never stuck behind seconds of
  images. Before the first estimate: ``initial_window_bytes``. One message
  always fits into an empty pipe, however large.
* **Deadline** of a message = ``sent + base_timeout + slack * (departure -
  sent)``: its own bytes and the bytes queued ahead of it get ``slack``
  times the time the rate estimate says they need (at least ``min_rate``).
  An idle or fast link therefore keeps a deadline of about ``base_timeout``,
  and a slow link is never taken for a dead one.
* **Dead**: a message is overdue when its deadline passed and either no ack
  at all came for ``base_timeout`` (a frozen server acks nothing; plus the
  time the oldest message in flight needs if the link just became
  ``rate_drop_tolerance`` times slower than measured: milliseconds on a fast
  link, seconds on a slow one) or it is past ``hard_factor`` base timeouts
  plus its transmission budget stretched the same way (a lost message on a
  link that otherwise works). While acks keep
  coming, a link slower than its estimate is waited for. A link declared
  dead by a timeout loses its rate estimate (``distrust``): the next
  connection's deadlines rest on ``min_rate`` until its first ack.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FlowSettings:
    base_timeout_s: float = 3.0
    min_rate_bps: float = 64_000.0  # bits/s; floor of the rate used for deadlines
    initial_window_bytes: int = 65_536
    min_window_bytes: int = 16_384
    max_window_bytes: int = 4_194_304
    queue_target_s: float = 0.5
    deadline_slack: float = 2.0
    filter_s: float = 10.0
    hard_factor: float = 3.0
    rate_drop_tolerance: float = 8.0

    @property
    def min_rate(self) -> float:
        """The floor in bytes/s."""
        return self.min_rate_bps / 8.0


class _Flight:
    __slots__ = ("app_limited", "deadline", "delivered", "delivered_at", "depart",
                 "first_sent_at", "idle_start", "model_rate", "nbytes", "sent_at")

    def __init__(self, nbytes: int, sent_at: float) -> None:
        self.nbytes = nbytes
        self.sent_at = sent_at
        self.depart = sent_at
        self.deadline = sent_at
        self.delivered = 0
        self.delivered_at = sent_at
        self.first_sent_at = sent_at
        self.model_rate = 0.0  # the rate estimate ``depart`` was computed with (0: none)
        self.idle_start = True  # sent into an empty pipe
        self.app_limited = True


class _WindowedExtreme:
    """Max (or min) of the samples of the last ``span`` seconds; the last value
    stays when every sample is older (no news is not a change)."""

    def __init__(self, span: float, *, maximum: bool) -> None:
        self.span = span
        self.maximum = maximum
        self._samples: deque[tuple[float, float]] = deque()  # (time, value), monotone
        self.value: float | None = None

    def add(self, now: float, value: float) -> None:
        better = (lambda a, b: a >= b) if self.maximum else (lambda a, b: a <= b)
        samples = self._samples
        # Keep a monotone deque: older samples that the new one beats never win again.
        while samples and better(value, samples[-1][1]):
            samples.pop()
        samples.append((now, value))
        while len(samples) > 1 and samples[0][0] < now - self.span:
            samples.popleft()
        self.value = samples[0][1]

    def raise_to(self, now: float, value: float) -> None:
        """Add ``value`` only if it beats the current value (app-limited samples)."""
        if self.value is None or (value > self.value if self.maximum else value < self.value):
            self.add(now, value)


class FlowController:
    """Window and deadlines for one pipe of acknowledged messages.

    Keys are the caller's (any hashable); every ``on_send`` is ended by exactly
    one ``on_ack`` or ``forget``. ``reset()`` starts a new connection and keeps
    what was learnt about the link.
    """

    def __init__(self, settings: FlowSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = s = settings or FlowSettings()
        self.clock = clock
        self._rate = _WindowedExtreme(s.filter_s, maximum=True)
        self._idle_samples: deque[tuple[float, float, int]] = deque()  # (sent, rtt, bytes)
        self._largest = _WindowedExtreme(s.filter_s, maximum=True)
        self._flight: dict[Hashable, _Flight] = {}  # in send order
        self.in_flight_bytes = 0
        self._delivered = 0  # bytes acked, ever
        self._delivered_at = 0.0
        self._first_sent_at = 0.0
        self._free_at = 0.0  # estimated time the bottleneck has sent all we gave it
        self._progress_at = 0.0  # last ack, or when the pipe last became busy
        self.generation = 0  # reset() count: lets callers tell connections apart
        self.acked = 0
        self.window_limited = 0  # admits() said no: the window, not the sender, was the limit

    def distrust(self) -> None:
        """Forget the rate estimate (the link was declared dead by a timeout:
        maybe the server froze, maybe the link became far slower). Until the
        next ack, deadlines rest on ``min_rate`` again."""
        self._rate = _WindowedExtreme(self.settings.filter_s, maximum=True)

    def reset(self) -> None:
        """A new connection: nothing in flight; rate and RTT estimates are kept."""
        self.generation += 1
        self._flight.clear()
        self.in_flight_bytes = 0
        self._free_at = 0.0

    # --- estimates -------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """Estimated delivery rate in bytes/s (None before the first ack)."""
        return self._rate.value

    @property
    def base_rtt(self) -> float | None:
        """Round trip without our own queueing, seconds (None before the first ack
        of a message sent into an empty pipe)."""
        if not self._idle_samples:
            return None
        rate = self.rate
        if rate is None:
            return min(rtt for _, rtt, _ in self._idle_samples)
        return max(0.0, min(rtt - n / rate for _, rtt, n in self._idle_samples))

    @property
    def window_bytes(self) -> int:
        s = self.settings
        rate, base = self.rate, self.base_rtt
        if rate is None or base is None:
            return s.initial_window_bytes
        largest = self._largest.value or 0.0
        # At least two messages: with one at a time the pipe idles while each
        # ack travels back, the rate samples only ever measure that, and the
        # window would stay too small for good (seen in the simulation).
        want = max(rate * (base + s.queue_target_s) + largest, 2 * largest)
        return int(min(s.max_window_bytes, max(s.min_window_bytes, want)))

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    def admits(self, nbytes: int) -> bool:
        """True if one more message of ``nbytes`` fits now (always into an empty pipe)."""
        if not self._flight or self.in_flight_bytes + nbytes <= self.window_bytes:
            return True
        # Everything in flight was sent while the window was the limit: their
        # rate samples measure the link, not the sender.
        for f in self._flight.values():
            f.app_limited = False
        self.window_limited += 1
        return False

    def messages_allowed(self, typical_bytes: int, limit: int) -> int:
        """Messages in flight allowed now, for callers that count messages: those
        in flight plus as many ``typical_bytes`` messages as the window has room for."""
        room = self.window_bytes - self.in_flight_bytes
        more = max(0, room // max(1, typical_bytes))
        if not self._flight:
            more = max(1, more)
        return max(1, min(limit, len(self._flight) + more))

    # --- events ----------------------------------------------------------------------

    def on_send(self, key: Hashable, nbytes: int) -> float:
        """A message left for the link; returns its deadline."""
        s = self.settings
        now = self.clock()
        f = _Flight(nbytes, now)
        if not self._flight:
            # Idle time is not delivery time: rate samples start from here.
            self._delivered_at = now
            self._first_sent_at = now
            self._progress_at = now
        f.delivered = self._delivered
        f.delivered_at = self._delivered_at
        f.first_sent_at = self._first_sent_at
        rate = self.rate
        f.model_rate = rate or 0.0
        f.idle_start = not self._flight
        model_rate = max(s.min_rate, rate or 0.0)
        f.depart = max(now, self._free_at) + nbytes / model_rate
        self._free_at = f.depart
        f.deadline = now + s.base_timeout_s + s.deadline_slack * (f.depart - now)
        self._flight[key] = f
        self.in_flight_bytes += nbytes
        self._largest.add(now, float(nbytes))
        return f.deadline

    def on_ack(self, key: Hashable) -> float | None:
        """The message was acknowledged; returns its round trip (None if unknown key)."""
        f = self._pop(key)
        if f is None:
            return None
        now = self.clock()
        self.acked += 1
        self._progress_at = now
        self._delivered += f.nbytes
        self._delivered_at = now
        self._first_sent_at = f.sent_at
        if f.depart > now:
            self._correct_model(f.depart - now)
        rtt = now - f.sent_at
        self._base_sample(f, rtt)  # with the rate known before this ack
        interval = max(now - f.delivered_at, f.sent_at - f.first_sent_at)
        if interval > 0:
            sample = (self._delivered - f.delivered) / interval
            if f.app_limited:
                self._rate.raise_to(now, sample)
            else:
                self._rate.add(now, sample)
        if not self._flight:
            self._free_at = 0.0
        return rtt

    def _correct_model(self, late: float) -> None:
        # Acked before its modelled departure: the model's rate was too low (the
        # floor, before the first estimate). Everything queued behind it leaves
        # earlier too; their deadlines shrink with it, so that a frozen server
        # is not waited for on the strength of an estimate already disproved.
        s = self.settings
        for g in self._flight.values():
            earliest = g.sent_at + g.nbytes / max(s.min_rate, g.model_rate)
            g.depart = max(earliest, g.depart - late)
            g.deadline = g.sent_at + s.base_timeout_s + s.deadline_slack * (g.depart - g.sent_at)
        self._free_at = max(self.clock(), self._free_at - late)

    def _base_sample(self, f: _Flight, rtt: float) -> None:
        # Only a message sent into an empty pipe has nothing queued ahead of it
        # for sure. Its (rtt, size) is kept, and the base RTT is computed with
        # the current rate estimate: the estimate at the time may have come
        # from that very message (size / rtt), which would make it zero.
        # During a long drain there are no new samples; the last ones stay.
        if not f.idle_start:
            return
        samples = self._idle_samples
        samples.append((f.sent_at, rtt, f.nbytes))
        span = self.settings.filter_s
        while len(samples) > 1 and (samples[0][0] < f.sent_at - span or len(samples) > 64):
            samples.popleft()

    def forget(self, key: Hashable) -> None:
        """The message left the pipe without an ack (link failure)."""
        self._pop(key)

    def _pop(self, key: Hashable) -> _Flight | None:
        f = self._flight.pop(key, None)
        if f is not None:
            self.in_flight_bytes -= f.nbytes
        return f

    # --- deadlines -------------------------------------------------------------------

    def deadline_of(self, key: Hashable) -> float | None:
        f = self._flight.get(key)
        return None if f is None else f.deadline

    def _hard(self, f: _Flight) -> float:
        # A message lost amid acks of others. Its own budget, stretched for a
        # link that became rate_drop_tolerance times slower (as the stall
        # limit is), so that a slowed link draining its queue is not taken
        # for one that lost a message.
        s = self.settings
        return (f.sent_at + s.hard_factor * s.base_timeout_s
                + s.rate_drop_tolerance * s.deadline_slack * (f.depart - f.sent_at))

    def _stall_limit(self) -> float:
        # How long without any ack means "stalled": the base timeout, plus the
        # time the oldest message in flight (the next ack due) needs if the link
        # just became rate_drop_tolerance times slower than measured. On a
        # fast link this adds milliseconds; on a slow one it keeps a cell
        # handover from passing for a frozen server.
        s = self.settings
        head = next(iter(self._flight.values())).nbytes if self._flight else 0
        rate = max(s.min_rate, (self.rate or 0.0) / s.rate_drop_tolerance)
        return s.base_timeout_s + s.deadline_slack * head / rate

    def overdue(self) -> Hashable | None:
        """The key of a message whose missing ack means the link is dead, if any."""
        now = self.clock()
        stalled = now - self._progress_at >= self._stall_limit()
        for key, f in self._flight.items():
            if now >= f.deadline and (stalled or now >= self._hard(f)):
                return key
        return None

    def next_check(self) -> float | None:
        """When ``overdue`` can next give a different answer (None: nothing in flight)."""
        if not self._flight:
            return None
        now = self.clock()
        unstall = self._progress_at + self._stall_limit()
        times = []
        for f in self._flight.values():
            if now < f.deadline:
                times.append(f.deadline)
            else:
                times.append(min(max(unstall, now), self._hard(f)))
        # Never a busy loop, whatever the clock says.
        return max(min(times), now + 0.001)

    def snapshot(self) -> dict[str, Any]:
        """Figures for stats: estimates and the current window."""
        rate, base = self.rate, self.base_rtt
        return {
            "rate_bps": None if rate is None else round(rate * 8),
            "base_rtt_ms": None if base is None else round(base * 1000, 1),
            "window_bytes": self.window_bytes,
            "in_flight_bytes": self.in_flight_bytes,
        }
