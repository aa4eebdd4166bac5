"""The drainer: moves spooled items to the server, exactly once where it can.

It only moves items — lease, dispatch, complete, apply the actions of
``settle`` — and leaves every decision to its parts:

* ``linkstate.LinkState`` — channel choice, probation, holds, backoff,
  stop-and-wait (pure, injected clock);
* ``settle.settle`` — what an outcome means for the item and the link (pure);
* ``spoolops.SpoolOps`` — spool calls off the event loop, in order, acks
  group-committed;
* ``connector.SioConnector`` — keeps a Socket.IO link up in the background;
* ``registration`` — REST registration when Socket.IO stays unavailable.

Rules (see the uplink issues):

* An item leaves the spool only on a positive acknowledgement. A rejection is
  dead-lettered with the server's reason; a temporary server error or a link
  failure hands it back to the spool, and it is resent before anything
  younger (stop-and-wait until it is delivered; ``LinkState``).
* Socket.IO first. When it cannot connect or an ack times out, REST takes
  over, while the connector reconnects Socket.IO with backoff and full
  jitter; traffic returns to Socket.IO as soon as it is up.
* Health comes before detections (the spool leases health first) and the
  windows are short, so a health snapshot never waits behind a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from lpr_agent.identity import CameraIdentity
from lpr_agent.protocol import Kind, now_timestamp
from lpr_agent.uplink.applier import Applier, Done
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.connector import SioConnector
from lpr_agent.uplink.feed import Feed, lease_ahead
from lpr_agent.uplink.linkstate import LinkState
from lpr_agent.uplink.outcome import Outcome, Verdict
from lpr_agent.uplink.registration import maybe_register_over_rest, registration_payload
from lpr_agent.uplink.rest import RestLink
from lpr_agent.uplink.settle import OrderPolicy
from lpr_agent.uplink.spoolops import SpoolLike, SpoolOps
from lpr_agent.uplink.stats import Channel, LatencyWindow, RateLimitedLog, UplinkStats

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

__all__ = ["SpoolLike", "Uplink"]

_COMPLETION_GATHER_S = 0.005  # completions gather this long while the pipe is full
_ALL_KINDS = (Kind.HEALTH, Kind.DETECTION, Kind.REGISTRATION)
_READINGS = (Kind.HEALTH, Kind.DETECTION)


def _size(item: Any) -> int:
    text = getattr(item, "payload_json", None)
    return len(text) if text is not None else int(getattr(item, "size", 0) or 0)


def _payload(item: Any) -> Any:
    # The stored JSON text as is (no decode/encode); a dict on older spools.
    text = getattr(item, "payload_json", None)
    return text if text is not None else item.payload


class Uplink:
    """Drains the spool to the LPR server. See the module docstring."""

    def __init__(self, config: UplinkConfig, identity: CameraIdentity, spool: SpoolLike) -> None:
        self.config = config
        self.identity = identity
        self.spool = spool
        self.heartbeat = time.monotonic()
        self.state = LinkState(config)
        spool_config = getattr(spool, "config", None)
        self.policy = OrderPolicy(config.keep_order, config.in_order_retries,
                                  int(getattr(spool_config, "max_attempts", 0) or 0))
        self._stats = UplinkStats()
        self._latency = LatencyWindow()
        self._rest = RestLink(config)
        self._ops = SpoolOps(spool)
        self._conn: SioConnector | None = None
        self._done: list[Done] = []
        self._in_flight: dict[int, str] = {}  # spool id -> channel
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running = False
        self._channel: Channel = "none"
        self._last_channel: Channel = "none"  # last channel that carried traffic
        self._rest_tasks: set[asyncio.Task[None]] = set()  # REST request slots
        self._feed = Feed(self._ops, config.lease_seconds, config.batch,
                          config.poll_interval_s, self._wake_drain, self._note_error,
                          self._on_batch)
        self._applier = Applier(self.state, self.policy, self._stats, self._latency, self._ops,
                                self._feed, self._kick_sio, self._sio_auth_failed,
                                self._note_error)
        self._busy: dict[str, int] = {"socketio": 0, "rest": 0}  # sent, not settled yet
        # Sent and no outcome yet (busy minus outcomes waiting in _done): what
        # the server is working on, i.e. how full the pipe really is.
        self._live: dict[str, int] = {"socketio": 0, "rest": 0}
        # An outcome other than "delivered" waits in _done: stop refilling
        # from completions until the loop has settled it (a release must hand
        # the buffer back before anything younger goes out).
        self._trouble = False
        self._low_water: dict[str, int] = {}
        self._gather_pending = False
        self._typical_size = 1000.0  # bytes per message, running mean
        if config.token and config.server_url.startswith("http://"):
            log.warning("uplink: [uplink] token is sent to %s without TLS: anyone on the "
                        "path can read it; use https://", config.server_url)
        if not config.keep_order:
            log.warning("uplink: keep_order = false: a reading the server keeps failing is "
                        "passed by younger ones after %d in-order tries", config.in_order_retries)

    @property
    def _sio(self) -> Any:
        return self._conn.alive if self._conn is not None else None

    # --- public -------------------------------------------------------------------

    def stats(self) -> UplinkStats:
        s = self._stats
        s.channel = self._channel
        sio = self._sio
        s.connected = sio is not None
        if sio is not None:
            s.ack_style = sio.ack_style
        s.in_flight = len(self._in_flight)
        s.ack_latency_p50_ms = self._latency.percentile(0.50)
        s.ack_latency_p99_ms = self._latency.percentile(0.99)
        s.extra = {
            "socketio_window": sio.window if sio is not None else None,
            "socketio_probation": bool(sio is not None and not sio.proven),
            "rest_failures": self.state.rest_failures,
            "socketio_failures": self.state.sio_failures,
            "stop_and_wait": self.state.recovering,
            "socketio_flow": self._conn.flow.snapshot() if self._conn is not None else None,
        }
        s.backlog = self._ops.backlog
        return dataclasses.replace(s, extra=dict(s.extra))

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; then hand back unsent items and disconnect."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = stop
        self._conn = SioConnector(self.config, registration_payload(self.identity), self.state,
                                  self._stats, self._wake.set, self._note_error)
        self._running = True
        self.spool.add_listener(self._on_put)
        stop_watch = asyncio.create_task(self._wake_on(stop))
        connector = asyncio.create_task(self._conn.run(stop))
        try:
            await self._drain(stop)
        finally:
            self._running = False
            with contextlib.suppress(ValueError, AttributeError):
                self.spool.remove_listener(self._on_put)  # type: ignore[attr-defined]
            connector.cancel()
            stop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connector
            await self._shutdown()

    # --- wake-ups -------------------------------------------------------------------

    def _on_put(self) -> None:
        # Called from the putting thread (detector) after every commit.
        self._feed.puts += 1  # racy increments are fine: only "changed?" is asked
        if not self._running or self._loop is None or self._wake is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._wake is not None:
            self._wake.set()
        if self._conn is not None:
            self._conn.kick.set()

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
                await maybe_register_over_rest(self._rest, self.identity, self.state)
                sio = self._sio
                channel = self.state.choose(sio is not None, sio is not None and sio.proven)
                self._set_channel(channel)
                if channel == "rest":
                    # First: a probe of a Socket.IO link on probation goes
                    # alone, REST waits for it (one channel at a time).
                    await self._probe()
                if channel != "none":
                    await self._fill(channel)
                else:
                    # Offline: do not sit on leases that could expire.
                    self._feed.give_back()
                self._ops.refresh_backlog(self.config.poll_interval_s)
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
            sio = self._sio
            if channel == "none":
                timeout = max(0.01, min(timeout, self.state.resume_at() - time.monotonic()))
            elif sio is not None and not sio.proven:
                timeout = min(timeout, self.config.ack_timeout_s / 8)
            # (A timer setting the event is cheaper than wait_for's extra task.)
            timer = loop.call_later(timeout, wake.set)
            await wake.wait()
            timer.cancel()

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

    def _kinds_for(self, channel: str) -> tuple[Kind, ...]:
        # REST registration breaks later Socket.IO use on deployed servers
        # (quirk 8): spooled registrations go over REST only once the uplink
        # has decided to register over REST anyway.
        if channel == "socketio" or self.state.rest_registered:
            return _ALL_KINDS
        return _READINGS

    def _window(self, channel: Channel) -> int:
        sio = self._sio
        return self.state.window(channel, sio.window if sio is not None else 1)

    async def _fill(self, channel: Channel) -> None:
        window = self._window(channel)
        kinds = self._kinds_for(channel)
        buffer = self._feed.buffer
        self._feed.top_up(self._ahead(channel, window), kinds)
        if not self.state.may_send(channel, self._busy):
            return
        free = window - self._busy[channel]
        sio = self._sio if channel == "socketio" else None
        # The link's byte window (slow links, see sio.py); until it exists, room.
        admits = getattr(sio, "admits", None)
        unsendable: list[int] = []
        while free > 0 and buffer and not self._trouble:
            # (_trouble: a failure came back during this fill; settle it
            # before anything else goes out.)
            item = buffer[0]
            if item.kind not in kinds:
                buffer.popleft()
                unsendable.append(item.id)  # e.g. a registration while on REST
                continue
            if admits is not None and not admits(_size(item)):
                break
            buffer.popleft()
            free -= 1
            await self._dispatch(channel, item)
        self._ops.release(unsendable)

    def _ahead(self, channel: Channel, window: int) -> int:
        rate = getattr(getattr(self._sio, "flow", None), "rate", None)
        return lease_ahead(channel, window, self.config, self._typical_size,
                           self._latency.mean_s, rate)

    def _mark_sent(self, channel: str, item: Any) -> None:
        self._in_flight[item.id] = channel
        self._busy[channel] += 1
        self._live[channel] += 1
        self._stats.sent += 1

    async def _dispatch(self, channel: Channel, item: Any, *, probe: bool = False) -> None:
        self._mark_sent(channel, item)
        self._typical_size += (_size(item) - self._typical_size) / 8
        solo = self.state.recovering or probe
        self._low_water[channel] = max(1, self._window(channel) // 2)
        if channel == "socketio":
            sio = self._sio
            assert sio is not None
            sent_at = time.monotonic()
            await sio.send_cb(
                item.kind, _payload(item),
                lambda outcome, item=item, sent_at=sent_at: self._complete(
                    item, outcome, sent_at, "socketio", solo),
                probe=probe,
            )
        else:
            rest_task = asyncio.get_running_loop().create_task(self._rest_worker(item, solo))
            self._rest_tasks.add(rest_task)
            rest_task.add_done_callback(self._rest_tasks.discard)

    async def _rest_worker(self, item: Any, solo: bool) -> None:
        """Send ``item`` over REST, then keep this request slot busy: as soon as
        one answer is in, the next buffered item goes out from here, like the
        workers of a plain client with N connections (REST throughput is
        requests in flight / round trip)."""
        while True:
            sent_at = time.monotonic()
            try:
                outcome = await self._rest.send(item.kind, _payload(item))
            except asyncio.CancelledError:
                self._complete(item, Outcome(Verdict.LINK_DOWN, "cancelled", maybe_stored=True),
                               sent_at, "rest", solo)
                raise
            except Exception as exc:
                outcome = Outcome(Verdict.LINK_DOWN, f"REST send failed: {exc!r}",
                                  maybe_stored=True)
            self._complete(item, outcome, sent_at, "rest", solo)
            if outcome.verdict is not Verdict.DELIVERED or solo:
                return  # the drain loop decides (and reopens the window)
            nxt = self._next_rest_item()
            if nxt is None:
                return
            item = nxt

    def _next_rest_item(self) -> Any | None:
        """The next buffered item for a REST slot that just freed up, or None
        when the drain loop must decide (channel change, failure, stop, an item
        REST may not carry, an empty buffer)."""
        buffer = self._feed.buffer
        state = self.state
        if (not buffer or self._trouble or not self._running or self._channel != "rest"
                or state.rest_failures or state.recovering or self._busy["socketio"]
                or (self._stop is not None and self._stop.is_set())
                or self._live["rest"] >= self.config.rest_concurrency
                or time.monotonic() < state.hold_until or self._probe_due()):
            return None
        item = buffer[0]
        if item.kind not in self._kinds_for("rest"):
            return None  # _fill hands it back to the spool
        buffer.popleft()
        self._mark_sent("rest", item)
        return item

    def _probe_due(self) -> bool:
        sio = self._sio
        return (sio is not None and not sio.proven
                and time.monotonic() - sio.last_probe_at >= self.config.ack_timeout_s / 8)

    async def _probe(self) -> None:
        """While REST carries the traffic, send the next reading alone over a
        Socket.IO link on probation; its ack promotes the link back to the
        main channel. Alone: nothing else is in flight meanwhile, so the
        probe cannot be overtaken by REST."""
        sio = self._sio
        if (sio is None or not self._probe_due() or self._busy["rest"]
                or self._busy["socketio"] or time.monotonic() < self.state.hold_until):
            return
        buffer = self._feed.buffer
        if buffer and buffer[0].kind in _READINGS:
            await self._dispatch("socketio", buffer.popleft(), probe=True)
        elif not buffer and self._feed.dry and sio.probes_in_flight == 0:
            # Nothing to send: a ping with ack proves the link instead, so an
            # idle uplink is back on Socket.IO too.
            ping = {"type": "test", "message": "lpr-agent probe", "timestamp": now_timestamp()}
            await sio.send("ping", ping, probe=True)

    def _complete(self, item: Any, outcome: Outcome, sent_at: float, channel: str,
                  solo: bool) -> None:
        self._done.append(Done(item, outcome, sent_at, channel, solo))
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
        if not delivered or solo or self._live[channel] < self._low_water.get(channel, 1):
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
        for d in done:
            if self._in_flight.pop(d.item.id, None) is not None:
                self._busy[d.channel] -= 1
        self._applier.apply(done)

    def _on_batch(self, items: list[Any], at_head: bool) -> None:
        # With nothing in flight, a batch into an empty buffer starts at the
        # spool's head: an owed reading older than it is gone (dead letter).
        if self.state.owed and at_head and not self._in_flight:
            heads = [it.id for it in items if it.kind == Kind.DETECTION]
            if heads:
                self.state.gone(heads[0])

    def _kick_sio(self) -> None:
        # REST is back while Socket.IO is down: reconnect now.
        if self._sio is None and self._conn is not None:
            self._conn.kick.set()

    def _sio_auth_failed(self, reason: str) -> None:
        if self._conn is not None:
            self._conn.auth_failed(reason)

    def _wake_drain(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _note_error(self, reason: str) -> None:
        self._stats.last_error = reason
        self._stats.last_error_at = time.time()

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
        lease = self._feed.task
        if lease is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(lease), 5.0)
        self._feed.give_back()
        # Stop waiting on REST requests still unanswered (a frozen server would
        # hold each for rest_timeout_s); their items are handed back below.
        rest_tasks = list(self._rest_tasks)
        for task in rest_tasks:
            task.cancel()
        if rest_tasks:
            await asyncio.gather(*rest_tasks, return_exceptions=True)
        leftover = list(self._in_flight)
        if leftover:
            self._ops.release(leftover)
            self._stats.retried += len(leftover)
            self._in_flight.clear()
            self._busy = {"socketio": 0, "rest": 0}
            self._live = {"socketio": 0, "rest": 0}
        await self._ops.close()
        if self._conn is not None:
            await self._conn.close()
        await self._rest.close()
        self._channel = "none"
