"""The drainer: moves spooled items to the server, exactly once where it can.

Rules (see the uplink issue):

* An item leaves the spool only on a positive acknowledgement (``ack``). A
  rejection is dead-lettered with the server's reason; a temporary server
  error is ``nack``-ed (the spool backs it off); a link failure ``release``-s
  it so that it is sent again at once over whatever link works, in creation
  order.
* Socket.IO first. When it cannot connect or an ack times out, REST takes
  over at once, while a background task reconnects Socket.IO with exponential
  backoff and full jitter; traffic returns to Socket.IO as soon as it is up.
* Health comes before detections (the spool leases health first) and the
  windows are short, so a health snapshot never waits behind a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import defaultdict, deque
from typing import Any, Protocol

from lpr_agent.config import CameraIdentity
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.outcome import Outcome, Verdict
from lpr_agent.uplink.rest import RestLink
from lpr_agent.uplink.sio import SioConnectError, SioLink
from lpr_agent.uplink.stats import Channel, LatencyWindow, RateLimitedLog, UplinkStats

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

DETECTION, HEALTH, REGISTRATION = "detection", "health", "registration"
_ACK_GATHER_S = 0.02  # acks gather this long before one spool commit
_HOLD_CAP_S = 1.0  # longest pause of all sending after a temporary server error
_COMPLETION_GATHER_S = 0.005  # completions gather this long while the pipe is full


class SpoolLike(Protocol):
    """The part of ``lpr_agent.spool.Spool`` the uplink uses."""

    def lease(
        self, limit: int = ..., kinds: Any = ..., lease_seconds: float = ...
    ) -> list[Any]: ...
    def ack(self, ids: Any) -> None: ...
    def nack(self, ids: Any, error: str) -> None: ...
    def dead_letter(self, ids: Any, reason: str) -> None: ...
    def release(self, ids: Any) -> None: ...
    def add_listener(self, callback: Any) -> None: ...


def backoff_delay(failures: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, initial * 2**n)).

    The jitter is proportional to the delay (python-socketio's is a fixed
    ±0.5 s), so a fleet that lost the server at the same moment spreads its
    reconnects over the whole interval instead of arriving in lockstep.
    """
    ceiling = min(cap, initial * (2 ** min(max(failures - 1, 0), 30)))
    return random.uniform(0.0, ceiling)


def _outage_cap(cap: float, down_for: float, initial: float) -> float:
    """Never wait longer than half the outage so far: a short outage (a server
    restart) is noticed within about half its length, a long one still backs
    off to ``cap``. Both scale with the outage, so a fleet stays spread out."""
    return min(cap, max(initial, 0.5 * down_for))


def _kind(item: Any) -> str:
    kind = item.kind
    return str(getattr(kind, "value", kind))


class _Done:
    __slots__ = ("channel", "item", "outcome", "sent_at")

    def __init__(self, item: Any, outcome: Outcome, sent_at: float, channel: str) -> None:
        self.item = item
        self.outcome = outcome
        self.sent_at = sent_at
        self.channel = channel


class Uplink:
    """Drains the spool to the LPR server. See the module docstring."""

    def __init__(self, config: UplinkConfig, identity: CameraIdentity, spool: SpoolLike) -> None:
        self.config = config
        self.identity = identity
        self.spool = spool
        self.heartbeat = time.monotonic()
        self._stats = UplinkStats()
        self._latency = LatencyWindow()
        self._rest = RestLink(config)
        self._sio: SioLink | None = None
        self._done: list[_Done] = []
        self._in_flight: dict[int, str] = {}  # spool id -> channel
        self._wake: asyncio.Event | None = None
        self._sio_kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._rest_failures = 0
        self._rest_retry_at = 0.0
        # Server trouble (5xx): hold all sending until then, so the failed
        # message is resent before anything younger and order is kept.
        self._hold_until = 0.0
        self._server_trouble = 0
        self._in_order_tries: dict[int, int] = {}
        self._rest_ok_at: float | None = None
        self._rest_down_since = 0.0
        self._sio_auth_blocked_until = 0.0
        self._auth_failures = 0
        self._sio_down_since: float | None = time.monotonic()
        self._sio_failures = 0  # since the last Socket.IO ack; drives the backoff
        self._sio_probation = False  # next link starts on probation (died by ack timeout)
        # Socket.IO first: at start and after a plain disconnect, REST waits for
        # the outcome of one (re)connect attempt (bounded by connect_timeout_s).
        self._sio_first_attempt = True
        self._sio_refused = False  # the last attempt connected but registration was refused
        self._rest_registered = False
        self._channel: Channel = "none"
        self._last_channel: Channel = "none"  # last channel that carried traffic
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rest_tasks: set[asyncio.Task[None]] = set()  # REST request slots
        self._kinds_cache: dict[tuple[str, ...], Any] = {}
        self._ack_pending: list[int] = []
        self._buffer: deque[Any] = deque()  # leased, not sent yet
        self._busy: dict[str, int] = {"socketio": 0, "rest": 0}  # sent, not settled yet
        # Sent and no outcome yet (busy minus outcomes waiting in _done): what
        # the server is working on, i.e. how full the pipe really is.
        self._live: dict[str, int] = {"socketio": 0, "rest": 0}
        # An outcome other than "delivered" waits in _done: stop refilling
        # from completions until the loop has settled it (a release must hand
        # the buffer back before anything younger goes out).
        self._trouble = False
        self._stop: asyncio.Event | None = None
        self._lease_task: asyncio.Task[list[Any]] | None = None
        self._lease_gen = 0
        self._puts = 0  # spool puts seen by the listener
        self._puts_seen = 0  # _puts when the last lease started
        self._dry = False  # the last lease came back short: the spool had no more ready
        self._dry_at = 0.0
        self._low_water: dict[str, int] = {}
        self._gather_pending = False
        self._ack_task: asyncio.Task[None] | None = None

    # --- public -------------------------------------------------------------------

    def stats(self) -> UplinkStats:
        s = self._stats
        s.channel = self._channel
        s.connected = self._sio is not None and self._sio.alive
        if self._sio is not None:
            s.ack_style = self._sio.ack_style
        s.in_flight = len(self._in_flight)
        s.ack_latency_p50_ms = self._latency.percentile(0.50)
        s.ack_latency_p99_ms = self._latency.percentile(0.99)
        sio = self._sio
        s.extra = {
            "socketio_window": sio.window if sio is not None and sio.alive else None,
            "socketio_probation": bool(sio is not None and sio.alive and not sio.proven),
            "rest_failures": self._rest_failures,
            "socketio_failures": self._sio_failures,
        }
        # Stats must never raise into the health reporter, even on a closed spool.
        with contextlib.suppress(Exception):
            s.backlog = self.spool.stats().items
        return dataclasses.replace(s, extra=dict(s.extra))

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; then hand back unsent items and disconnect."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._sio_kick = asyncio.Event()
        self._stop = stop
        self._running = True
        self.spool.add_listener(self._on_put)
        stop_watch = asyncio.create_task(self._wake_on(stop))
        connector = asyncio.create_task(self._sio_connector(stop))
        try:
            await self._drain(stop)
        finally:
            self._running = False
            with contextlib.suppress(ValueError):
                self.spool.remove_listener(self._on_put)
            connector.cancel()
            stop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connector
            await self._shutdown()

    # --- wake-ups -------------------------------------------------------------------

    def _on_put(self) -> None:
        # Called from the putting thread (detector) after every commit.
        self._puts += 1  # racy increments are fine: only "changed?" is asked
        if not self._running or self._loop is None or self._wake is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._wake is not None:
            self._wake.set()
        if self._sio_kick is not None:
            self._sio_kick.set()

    # --- the drain loop ---------------------------------------------------------------

    async def _drain(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        wake = self._wake
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            wake.clear()
            channel: Channel = "none"
            try:
                self._settle()
                await self._maybe_register_over_rest()
                channel = self._choose()
                self._set_channel(channel)
                if channel != "none":
                    await self._fill(channel)
                else:
                    # Offline: do not sit on leases that could expire.
                    self._release_buffer()
                if channel == "rest":
                    await self._probe()
            except Exception as exc:
                # A spool or link bug must not stop delivery for good; the
                # watchdog sees the heartbeat, the log sees the cause (once
                # per interval, not once per turn).
                _rlog(logging.ERROR, "loop", "uplink loop turn failed: %r", exc)
                log.debug("uplink loop turn failed", exc_info=True)
                self._note_error(f"internal: {exc!r}")
                await asyncio.sleep(self.config.poll_interval_s)
            if self._done:
                continue
            timeout = self.config.poll_interval_s
            if channel == "none":
                resume = max(self._rest_retry_at, self._hold_until)
                timeout = max(0.01, min(timeout, resume - time.monotonic()))
            elif self._sio is not None and not self._sio.proven:
                timeout = min(timeout, self.config.ack_timeout_s / 8)
            # (A timer setting the event is cheaper than wait_for's extra task.)
            timer = loop.call_later(timeout, wake.set)
            await wake.wait()
            timer.cancel()

    def _choose(self) -> Channel:
        now = time.monotonic()
        if now < self._hold_until:
            return "none"
        sio = self._sio
        # A link on probation carries only probes while REST works.
        if sio is not None and sio.alive and (sio.proven or self._rest_failures):
            return "socketio"
        if self._sio_first_attempt and (sio is None or not sio.alive):
            return "none"
        if now >= self._rest_retry_at:
            return "rest"
        return "none"

    def _set_channel(self, channel: Channel) -> None:
        if channel == self._channel:
            return
        self._channel = channel
        if channel == "none":
            return  # offline or waiting for a connect attempt: not a switch
        previous, self._last_channel = self._last_channel, channel
        if previous == channel:
            return
        if channel == "socketio":
            log.info("uplink: delivering over Socket.IO (%s acks)", self._stats.ack_style)
        elif previous == "socketio":
            self._stats.fallback_switches += 1
            log.warning("uplink: Socket.IO unavailable, delivering over REST")

    def _rest_kinds(self) -> tuple[str, ...]:
        # REST registration breaks later Socket.IO use on deployed servers
        # (quirk 8): spooled registrations go over REST only once the uplink
        # has decided to register over REST anyway.
        if self._rest_registered:
            return (HEALTH, DETECTION, REGISTRATION)
        return (HEALTH, DETECTION)

    def _kinds(self, names: tuple[str, ...]) -> Any:
        cached = self._kinds_cache.get(names)
        if cached is None:
            try:
                from lpr_agent.spool import Kind

                cached = [Kind(n) for n in names]
            except ImportError:  # pragma: no cover - spool always present in the product
                cached = list(names)
            self._kinds_cache[names] = cached
        return cached

    async def _fill(self, channel: Channel) -> None:
        if channel == "socketio":
            sio = self._sio
            assert sio is not None
            window = sio.window
            kinds = (HEALTH, DETECTION, REGISTRATION)
        else:
            # Half-open after a failure: one request proves the server is back
            # before a full window is thrown at it.
            window = 1 if self._rest_failures else self.config.rest_concurrency
            kinds = self._rest_kinds()
        buffer = self._buffer
        # A lease is a write transaction that reads (and decodes) whole
        # payloads: take a batch (at least two windows) ahead, in a worker
        # thread, while the pipe keeps moving.
        ahead = max(self.config.batch, 2 * window) if window > 1 else 4
        if self._lease_task is None:
            new_puts = self._puts != self._puts_seen
            low = len(buffer) < ahead - ahead // 4
            # After a lease came back short the spool has nothing more that is
            # ready: ask again only after a put or a poll interval (items
            # backing off become ready by time alone).
            dry = self._dry and time.monotonic() - self._dry_at < self.config.poll_interval_s
            if (low and (not dry or new_puts)) or (new_puts and buffer):
                # The second case: something new while the buffer is full of
                # detections. The spool leases health first, so a new health
                # snapshot goes to the front instead of waiting behind them
                # (seconds on a slow link).
                self._puts_seen = self._puts
                self._start_lease(max(ahead - len(buffer), 1), kinds)
        free = window - self._busy[channel]
        if free <= 0:
            return
        unsendable: list[int] = []
        while free > 0 and buffer:
            item = buffer.popleft()
            kind = _kind(item)
            if kind not in kinds:
                unsendable.append(item.id)  # e.g. a registration while on REST
                continue
            free -= 1
            await self._dispatch(channel, item, kind)
        if unsendable:
            self.spool.release(unsendable)

    def _start_lease(self, limit: int, kinds: tuple[str, ...]) -> None:
        generation = self._lease_gen
        puts_before = self._puts
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._lease, limit, kinds))
        self._lease_task = task

        def landed(t: asyncio.Task[list[Any]]) -> None:
            self._lease_task = None
            if t.cancelled():
                return
            if t.exception() is not None:
                self._note_error(f"spool.lease failed: {t.exception()!r}")
                _rlog(logging.ERROR, "lease", "uplink: spool.lease failed: %r", t.exception())
                return
            items = t.result()
            self._dry = len(items) < limit
            if self._dry:
                self._dry_at = time.monotonic()
            if not items:
                if self._puts != puts_before and self._wake is not None:
                    # Something was put while this lease ran (its wake-up was
                    # spent on a turn that could not start another lease).
                    self._wake.set()
                return
            if generation != self._lease_gen:
                # Leased before a release of older items: hand these back too,
                # so the next lease returns everything in creation order.
                self.spool.release([it.id for it in items])
                return
            items = _creation_order(items)
            fresh_health = [it for it in items if _kind(it) == HEALTH]
            others = [it for it in items if _kind(it) != HEALTH]
            self._buffer.extendleft(reversed(fresh_health))
            self._buffer.extend(others)
            if self._wake is not None:
                self._wake.set()

        task.add_done_callback(landed)

    def _mark_sent(self, channel: str, item: Any) -> None:
        self._in_flight[item.id] = channel
        self._busy[channel] += 1
        self._live[channel] += 1
        self._stats.sent += 1

    async def _dispatch(self, channel: Channel, item: Any, kind: str, *,
                        probe: bool = False) -> None:
        self._mark_sent(channel, item)
        self._low_water[channel] = max(1, self._window_of(channel) // 2)
        if channel == "socketio":
            assert self._sio is not None
            sent_at = time.monotonic()
            await self._sio.send_cb(
                kind, item.payload,
                lambda outcome, item=item, sent_at=sent_at: self._complete(
                    item, outcome, sent_at, "socketio"
                ),
                probe=probe,
            )
        else:
            task = asyncio.create_task(self._rest_worker(item, kind))
            self._rest_tasks.add(task)
            task.add_done_callback(self._rest_tasks.discard)

    async def _rest_worker(self, item: Any, kind: str) -> None:
        """Send ``item`` over REST, then keep this request slot busy: as soon as
        one answer is in, the next buffered item goes out from here, like the
        workers of a plain client with N connections. Going through the drain
        loop instead would refill per batch of answers, and the pipe would run
        half empty between batches (REST throughput is requests in flight /
        round trip)."""
        while True:
            sent_at = time.monotonic()
            try:
                outcome = await self._rest.send(kind, item.payload)
            except asyncio.CancelledError:
                self._complete(item, Outcome(Verdict.LINK_DOWN, "cancelled", maybe_stored=True),
                               sent_at, "rest")
                raise
            except Exception as exc:
                outcome = Outcome(Verdict.LINK_DOWN, f"REST send failed: {exc!r}",
                                  maybe_stored=True)
            self._complete(item, outcome, sent_at, "rest")
            if outcome.verdict is not Verdict.DELIVERED:
                return
            nxt = self._next_rest_item()
            if nxt is None:
                return
            item = nxt
            kind = _kind(item)

    def _next_rest_item(self) -> Any | None:
        """The next buffered item for a REST slot that just freed up, or None
        when the drain loop must decide (channel change, failure, stop, an item
        REST may not carry, an empty buffer)."""
        buffer = self._buffer
        if (not buffer or self._trouble or not self._running or self._channel != "rest"
                or self._rest_failures or (self._stop is not None and self._stop.is_set())
                or self._live["rest"] >= self.config.rest_concurrency
                or self._choose() != "rest"):
            return None
        item = buffer[0]
        if _kind(item) not in self._rest_kinds():
            return None  # _fill hands it back to the spool
        buffer.popleft()
        self._mark_sent("rest", item)
        return item

    def _window_of(self, channel: str) -> int:
        if channel == "socketio":
            return self._sio.window if self._sio is not None else 1
        return self.config.rest_concurrency

    def _release_buffer(self) -> None:
        self._lease_gen += 1  # a lease still in the worker thread is handed back too
        self._dry = False
        if self._buffer:
            ids = [it.id for it in self._buffer]
            self._buffer.clear()
            self.spool.release(ids)

    async def _probe(self) -> None:
        """While REST carries the traffic, send single probes over a Socket.IO
        link on probation; the first ack promotes it back to the main channel."""
        sio = self._sio
        if sio is None or not sio.alive or sio.proven:
            return
        spacing = self.config.ack_timeout_s / 8
        limit = 1 if sio.ack_style != "outcome" else 9
        if sio.probes_in_flight >= limit or time.monotonic() - sio.last_probe_at < spacing:
            return
        if self._buffer and _kind(self._buffer[0]) in (HEALTH, DETECTION):
            items = [self._buffer.popleft()]
        else:
            items = self.spool.lease(limit=1, kinds=self._kinds((HEALTH, DETECTION)),
                                     lease_seconds=self.config.lease_seconds)
        if not items:
            # Nothing to send: a ping with ack proves the link instead, so an
            # idle uplink is back on Socket.IO too.
            ping = {"type": "test", "message": "lpr-agent probe", "timestamp": _now()}
            await sio.send("ping", ping, probe=True)
            return
        for item in items:
            await self._dispatch("socketio", item, _kind(item), probe=True)

    def _lease(self, limit: int, kinds: tuple[str, ...]) -> list[Any]:
        # One lease (a write transaction) per fill. The spool hands out health
        # first, newest first; when the batch also holds other kinds, it holds
        # every ready health snapshot, and _creation_order sends them oldest
        # first. Only more ready snapshots than a batch (the spool coalesces
        # them, so practically never) would go out newest-first.
        return self.spool.lease(limit=limit, kinds=self._kinds(kinds),
                                lease_seconds=self.config.lease_seconds)

    def _complete(self, item: Any, outcome: Outcome, sent_at: float, channel: str) -> None:
        self._done.append(_Done(item, outcome, sent_at, channel))
        self._live[channel] -= 1
        delivered = outcome.verdict is Verdict.DELIVERED
        if not delivered:
            self._trouble = True
        wake = self._wake
        if wake is None or wake.is_set():
            return
        # While the pipe is still at least half full, let completions gather
        # for a few ms: one loop turn per batch instead of per ack leaves more
        # CPU for sending (the server usually shares the machine's cores).
        # (REST slots refill themselves meanwhile, see _rest_worker.)
        if not delivered or self._live[channel] < self._low_water.get(channel, 1):
            wake.set()
        elif not self._gather_pending and self._loop is not None:
            self._gather_pending = True
            self._loop.call_later(_COMPLETION_GATHER_S, self._gathered)

    def _gathered(self) -> None:
        self._gather_pending = False
        if self._wake is not None:
            self._wake.set()

    # --- outcomes -> spool ---------------------------------------------------------------

    def _settle(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        self._trouble = False
        now = time.monotonic()
        acks: list[int] = []
        releases: list[int] = []
        nacks: dict[str, list[int]] = defaultdict(list)
        dead: dict[str, list[int]] = defaultdict(list)
        st = self._stats
        hold = False
        for d in done:
            item_id = d.item.id
            if self._in_flight.pop(item_id, None) is not None:
                self._busy[d.channel] -= 1
            verdict = d.outcome.verdict
            if verdict is not Verdict.RETRY:
                self._in_order_tries.pop(item_id, None)
            if verdict is Verdict.DELIVERED:
                acks.append(item_id)
                self._server_trouble = 0
                self._latency.add(now - d.sent_at)
                if d.outcome.duplicate:
                    st.server_duplicates += 1
                if d.channel == "rest":
                    self._rest_ok()
                elif self._sio_failures or self._sio_probation:
                    self._sio_failures = 0
                    self._sio_probation = False
            elif verdict is Verdict.REJECTED:
                dead[d.outcome.reason or "rejected"].append(item_id)
                if d.channel == "rest":
                    self._rest_ok()
            elif verdict is Verdict.RETRY:
                if d.outcome.maybe_stored:
                    st.possible_duplicates += 1
                tries = self._in_order_tries.get(item_id, 0) + 1
                if tries > self.config.in_order_retries:
                    # Give up on order for this one: its own backoff in the
                    # spool, while the messages behind it go on.
                    self._in_order_tries.pop(item_id, None)
                    nacks[d.outcome.reason or "retry"].append(item_id)
                else:
                    self._in_order_tries[item_id] = tries
                    releases.append(item_id)
                    hold = True
                    self._note_error(d.outcome.reason or "retry")
            elif verdict is Verdict.AUTH:
                releases.append(item_id)
                self._auth_failed(d.outcome.reason, d.channel)
            else:  # LINK_DOWN
                releases.append(item_id)
                if d.outcome.maybe_stored:
                    st.possible_duplicates += 1
                if d.channel == "rest":
                    self._rest_failed(d.outcome.reason)
        spool = self.spool
        if acks:
            self._queue_acks(acks)
            st.acked += len(acks)
            st.last_ack_at = time.time()
            if st.auth_failed:
                st.auth_failed = False
                self._auth_failures = 0
        for reason, ids in dead.items():
            spool.dead_letter(ids, reason)
            st.rejected += len(ids)
            _rlog(logging.WARNING, "rejected", "uplink: %d message(s) dead-lettered: %s",
                  len(ids), reason)
        for reason, ids in nacks.items():
            spool.nack(ids, reason)
            st.retried += len(ids)
            self._note_error(reason)
            _rlog(logging.WARNING, "retry", "uplink: %d message(s) to retry: %s", len(ids), reason)
        if hold:
            # Equal jitter: a fleet hit by the same server trouble spreads out,
            # yet each camera waits at least half the step.
            self._server_trouble += 1
            step = min(_HOLD_CAP_S, 0.25 * 2 ** (self._server_trouble - 1))
            self._hold_until = now + step / 2 + random.uniform(0, step / 2)
            _rlog(logging.WARNING, "hold", "uplink: server trouble (%s); resending in order "
                  "after %.1fs", self._stats.last_error, self._hold_until - now)
        if releases:
            st.retried += len(releases)
            # The lease-ahead buffer holds younger items: hand them back too so
            # the next lease returns everything in creation order again.
            releases.extend(it.id for it in self._buffer)
            self._buffer.clear()
            self._lease_gen += 1
            self._dry = False  # released items are ready again at once
            spool.release(releases)

    def _queue_acks(self, ids: list[int]) -> None:
        # spool.ack is a durable commit (an fsync with synchronous=FULL): run it
        # off the event loop so acks keep arriving and new messages keep going
        # out meanwhile; whatever arrives during one commit joins the next
        # (group commit). Acked items stay leased until then, so they are
        # never sent twice.
        self._ack_pending.extend(ids)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        while self._ack_pending:
            # Let acks gather for a few ms: every hand-off to the worker
            # thread costs a GIL round trip that slows the sending side.
            await asyncio.sleep(_ACK_GATHER_S)
            ids, self._ack_pending = self._ack_pending, []
            try:
                await asyncio.to_thread(self.spool.ack, ids)
            except Exception:
                # The items stay leased and come back when the lease expires:
                # at worst a duplicate the server deduplicates.
                log.exception("uplink: spool.ack of %d item(s) failed", len(ids))

    def _note_error(self, reason: str) -> None:
        self._stats.last_error = reason
        self._stats.last_error_at = time.time()

    def _rest_ok(self) -> None:
        if self._rest_failures:
            log.info("uplink: REST reachable again")
            _rlog.reset("rest_down")
            # The server is back: try Socket.IO now instead of at the end of
            # a long backoff, and let the replay wait for that one attempt
            # (Socket.IO keeps creation order; parallel REST may not).
            if self._sio is None and self._sio_kick is not None:
                self._sio_first_attempt = True
                self._sio_failures = 0
                self._sio_kick.set()
        self._rest_failures = 0
        self._rest_ok_at = time.monotonic()

    def _rest_failed(self, reason: str) -> None:
        if time.monotonic() < self._rest_retry_at:
            return  # already counted for this round of requests
        now = time.monotonic()
        if self._rest_failures == 0:
            self._rest_down_since = now
        self._rest_failures += 1
        delay = backoff_delay(self._rest_failures, self.config.retry_initial_s,
                              _outage_cap(self.config.retry_max_s, now - self._rest_down_since,
                                          self.config.retry_initial_s))
        self._rest_retry_at = time.monotonic() + delay
        self._note_error(reason)
        _rlog(logging.WARNING, "rest_down", "uplink: REST failed (%s); retrying in %.1f s",
              reason, delay)

    def _auth_failed(self, reason: str, channel: str) -> None:
        now = time.monotonic()
        if channel == "rest" and now < self._rest_retry_at:
            return  # already counted for this round of requests
        self._auth_failures += 1
        self._stats.auth_failed = True
        # Not the items' fault and not fixed by hammering: back off long.
        delay = max(5.0, backoff_delay(self._auth_failures, 5.0, 300.0))
        if channel == "rest":
            self._rest_retry_at = now + delay
        else:
            self._sio_auth_blocked_until = now + delay
        self._note_error(reason)
        _rlog(logging.ERROR, "auth", "uplink: server refused our credentials (%s); "
              "check [uplink] token; retrying in %.0f s", reason, delay)

    # --- REST registration (only when Socket.IO stays unavailable) ------------------------

    async def _maybe_register_over_rest(self) -> None:
        after = self.config.rest_register_after_s
        if not self.config.rest_register or self._rest_registered or self._sio_down_since is None:
            return
        if self._rest_failures or self._rest_ok_at is None:
            return
        if time.monotonic() - self._sio_down_since < after:
            return
        self._rest_registered = True
        payload = {
            "camera_id": self.identity.camera_id,
            "checkpoint_id": self.identity.checkpoint_id,
            "timestamp": _now(),
        }
        outcome = await self._rest.send(REGISTRATION, payload)
        if outcome.verdict is Verdict.DELIVERED:
            log.info("uplink: registered over REST (Socket.IO unavailable for %.0f s)", after)
        else:
            self._rest_registered = outcome.verdict is Verdict.REJECTED
            log.warning("uplink: REST registration failed: %s", outcome.reason)

    # --- Socket.IO connector --------------------------------------------------------------

    def _registration(self) -> dict[str, Any]:
        return {"camera_id": self.identity.camera_id, "checkpoint_id": self.identity.checkpoint_id}

    async def _sio_connector(self, stop: asyncio.Event) -> None:
        assert self._sio_kick is not None
        kick = self._sio_kick
        while not stop.is_set():
            sio = self._sio
            if sio is not None and sio.alive:
                kick.clear()
                await kick.wait()  # set by _on_sio_dead or stop
                continue
            if time.monotonic() < self._sio_auth_blocked_until:
                self._sio_first_attempt = False
                self._wake_drain()
                await asyncio.sleep(self._sio_auth_blocked_until - time.monotonic())
                continue
            if self._sio_failures:
                # REST carries the traffic during the backoff.
                self._sio_first_attempt = False
                self._wake_drain()
                await self._sleep_or_kick(self._sio_delay())
                if stop.is_set():
                    break
            kick.clear()
            link = SioLink(self.config, self._registration(), on_dead=self._on_sio_dead,
                           probation=self._sio_probation)
            try:
                await link.connect()
            except SioConnectError as exc:
                self._sio_first_attempt = False
                self._wake_drain()
                self._sio_failures += 1
                self._stats.sio_connect_failures += 1
                if exc.auth:
                    self._auth_failed(str(exc), "socketio")
                    continue
                # A server that answers but refuses the registration (quirk 8)
                # will not change its mind soon: back off the long way.
                self._sio_refused = exc.registration
                self._note_error(str(exc))
                _rlog(logging.WARNING, "sio_connect", "uplink: %s; retrying with backoff", exc)
                continue
            if stop.is_set():
                await link.close()
                break
            _rlog.reset("sio_connect")
            self._stats.sio_connects += 1
            self._stats.ack_style = link.ack_style
            self._sio = link
            self._sio_refused = False
            self._sio_first_attempt = False
            self._sio_down_since = None
            log.info("uplink: Socket.IO connected and registered (%s acks, window %d%s)",
                     link.ack_style, link.window, "" if link.proven else ", on probation")
            if self._wake is not None:
                self._wake.set()

    def _sio_delay(self) -> float:
        # While REST works the server is up: a reconnect attempt is cheap and
        # getting back to Socket.IO quickly matters more than a long backoff.
        rest_works = self._rest_failures == 0 and self._rest_ok_at is not None
        quick = rest_works and not self._sio_refused
        cap = self.config.sio_probe_max_s if quick else self.config.retry_max_s
        down_for = time.monotonic() - (self._sio_down_since or time.monotonic())
        return backoff_delay(self._sio_failures, self.config.retry_initial_s,
                             _outage_cap(cap, down_for, self.config.retry_initial_s))

    def _wake_drain(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _sleep_or_kick(self, delay: float) -> None:
        assert self._sio_kick is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sio_kick.wait(), max(0.0, delay))
        if self._sio_kick.is_set():
            self._sio_kick.clear()
            # Even a kick waits a little, proportionally jittered, so that a
            # fleet seeing the server come back does not reconnect at once.
            await asyncio.sleep(random.uniform(0.0, min(0.25, self.config.retry_initial_s)))

    def _on_sio_dead(self, reason: str) -> None:
        link = self._sio
        if link is None:
            return
        self._sio = None
        self._sio_down_since = time.monotonic()
        if link.timed_out:
            self._sio_failures += 1
            self._sio_probation = True
        else:
            self._sio_first_attempt = True
        self._note_error(f"Socket.IO {reason}")
        _rlog(logging.WARNING, "sio_dead", "uplink: Socket.IO link lost (%s)", reason)
        task = asyncio.get_running_loop().create_task(link.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._sio_kick is not None:
            self._sio_kick.set()
        if self._wake is not None:
            self._wake.set()

    # --- shutdown ----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        # Give acks already on their way a moment, then hand everything still
        # leased back to the spool so a restart sends it at once.
        deadline = time.monotonic() + 1.0
        while self._in_flight and time.monotonic() < deadline:
            self._settle()
            if not self._in_flight:
                break
            await asyncio.sleep(0.02)
        self._settle()
        if self._lease_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._lease_task), 5.0)
        with contextlib.suppress(Exception):
            self._release_buffer()
        # Stop waiting on REST requests still unanswered (a frozen server would
        # hold each for rest_timeout_s); their items are handed back below.
        rest_tasks = list(self._rest_tasks)
        for task in rest_tasks:
            task.cancel()
        if rest_tasks:
            await asyncio.gather(*rest_tasks, return_exceptions=True)
        leftover = list(self._in_flight)
        if leftover:
            with contextlib.suppress(Exception):
                self.spool.release(leftover)
            self._stats.retried += len(leftover)
            self._in_flight.clear()
            self._busy = {"socketio": 0, "rest": 0}
            self._live = {"socketio": 0, "rest": 0}
        if self._ack_task is not None:
            with contextlib.suppress(Exception):
                await self._ack_task
        sio, self._sio = self._sio, None
        if sio is not None:
            await sio.close()
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 1.0)
        await self._rest.close()
        self._channel = "none"


def _creation_order(items: list[Any]) -> list[Any]:
    """Health first (the spool leases it first, newest first, so a fresh snapshot
    is never stuck behind a backlog), but within the batch each kind goes out
    in creation order so that a replay reaches the server in order."""
    return sorted(items, key=lambda it: (_kind(it) != HEALTH, it.id))


def _now() -> str:
    from lpr_agent.protocol import now_timestamp

    return now_timestamp()
