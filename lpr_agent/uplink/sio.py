"""Socket.IO link: one connection, registered, sending with acknowledgement.

Facts about python-socketio 5.x that shape this module (measured, see the
uplink issue): an emit on a dead connection may "succeed" and be lost, and a
frozen server is noticed by the library only after ping interval + timeout
(~45 s). So nothing counts as delivered without an ack, and an ack missing
for ``ack_timeout_s`` declares the whole connection dead at once.

Two ack styles exist (protocol.md):

* ``outcome``: the ack carries the reply object (this project's stub). Many
  messages can be in flight; each ack names its own outcome.
* ``legacy``: deployed servers ack with no data and send the outcome as an
  event (``lpr_response`` / ``health_response`` / ``camera_register`` /
  ``error``) just before the ack. The outcome is matched to the ack by order,
  which is only unambiguous with one message in flight.

The style is learnt from the ``camera_register`` ack on every connect.

How much is in flight, and how long an ack may take, is decided by the link's
:class:`~lpr_agent.uplink.flow.FlowController` (byte window from the measured
rate and round trip; deadlines that grow with the bytes queued ahead). A
message the window has no room for waits here, not in python-socketio's send
queue, so its deadline starts only when it is handed over (uplink README,
"Slow links").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from lpr_agent.protocol import SOCKETIO_EVENTS, now_timestamp
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.flow import FlowController, FlowSettings
from lpr_agent.uplink.outcome import Outcome, Verdict, classify_reply
from lpr_agent.uplink.packet import PACKET_OVERHEAD, Packet, RawJSON
from lpr_agent.uplink.rest import auth_headers, ssl_context
from lpr_agent.uplink.stats import AckStyle

log = logging.getLogger(__name__)

# Spool kind -> Socket.IO event (protocol.md), plus the ping that probes a link
# on probation when there is nothing to send.
SIO_EVENTS: dict[str, str] = {**SOCKETIO_EVENTS, "ping": "ping"}
REPLY_EVENTS = ("lpr_response", "health_response", "camera_register", "error")
_AUTH_WORDS = re.compile(r"unauthori|forbidden|token|auth|credential", re.IGNORECASE)


class SioConnectError(Exception):
    """Connect or registration failed. ``auth`` is True when the server refused us."""

    def __init__(self, message: str, *, auth: bool = False, registration: bool = False) -> None:
        super().__init__(message)
        self.auth = auth
        self.registration = registration


def flow_settings(config: UplinkConfig) -> FlowSettings:
    """The flow controller's settings from ``[uplink]``."""
    return FlowSettings(
        base_timeout_s=config.ack_timeout_s,
        min_rate_bps=config.link_min_rate_kbps * 1000.0,
        initial_window_bytes=config.link_initial_window_kb * 1024,
        max_window_bytes=config.link_max_window_kb * 1024,
        queue_target_s=config.link_queue_target_s,
        deadline_slack=config.link_deadline_slack,
    )


class _Pending:
    __slots__ = ("event", "nbytes", "probe", "raw", "resolve", "sent_at")

    def __init__(self, resolve: Callable[[Outcome], None], probe: bool, event: str,
                 raw: RawJSON, nbytes: int) -> None:
        self.resolve = resolve  # called exactly once: whoever pops it from _pending calls it
        self.sent_at = 0.0  # 0 while it waits for room in the window
        self.probe = probe
        self.event = event
        self.raw: RawJSON | None = raw  # dropped once handed to python-socketio
        self.nbytes = nbytes


def _resolver(future: asyncio.Future[Outcome]) -> Callable[[Outcome], None]:
    def resolve(outcome: Outcome) -> None:
        if not future.done():
            future.set_result(outcome)

    return resolve


class SioLink:
    """A single Socket.IO connection. Build a new one for every reconnect.

    ``on_dead`` is called once (from the event loop) when the connection is
    found dead: disconnect, ack timeout, or an emit that raised.
    """

    def __init__(
        self,
        config: UplinkConfig,
        registration: dict[str, Any],
        on_dead: Callable[[str], None] | None = None,
        *,
        probation: bool = False,
        flow: FlowController | None = None,
    ) -> None:
        self.config = config
        self.registration = registration
        self.on_dead = on_dead
        self.ack_style: AckStyle = "unknown"
        self.alive = False
        self.dead_reason: str | None = None
        self.timed_out = False  # died because an ack did not come in time
        # After a death by ack timeout the link must prove itself: a connect
        # and a registration succeed even when the server's message handling
        # is stuck. Until one message is acked it only carries probes.
        self.proven = not probation
        self.last_probe_at = 0.0
        self.server_hello: Any = None  # data of a deployed server's "connect" event
        self.register_reply: Any = None
        self._pending: dict[int, _Pending] = {}  # in send order (waiting ones included)
        # Pass the previous link's controller to keep what it learnt about the
        # link (rate, round trip) across reconnects.
        self.flow = flow or FlowController(flow_settings(config))
        self.flow.reset()
        # The controller may outlive this link: its keys carry the link's
        # generation so that a late ack of the previous link cannot touch ours.
        self._gen = self.flow.generation
        self._pump_task: asyncio.Task[None] | None = None
        self._waiting: deque[int] = deque()  # keys with no room in the window yet
        self._pumping = False
        self._typical = 1024.0  # moving average of message sizes, for ``window``
        self._sweep: asyncio.TimerHandle | None = None
        self._seq = 0
        self._last_reply: tuple[str, Any] | None = None
        self._connect_error: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: socketio.AsyncClient | None = None

    # --- properties -------------------------------------------------------------

    @property
    def window(self) -> int:
        """Messages allowed in flight now: those in flight plus as many typical
        messages as the byte window has room for (at most ``config.window``)."""
        # Legacy acks carry no id-matched outcome: one at a time.
        if self.ack_style != "outcome":
            return 1
        return self.flow.messages_allowed(int(self._typical), self.config.window)

    def admits(self, nbytes: int) -> bool:
        """True if one more message of ``nbytes`` (its JSON) fits the byte window
        now; always True for the first message into an empty pipe."""
        if self._waiting:
            return False
        return self.flow.admits(nbytes + PACKET_OVERHEAD)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- handlers ---------------------------------------------------------------

    def _install_handlers(self, client: socketio.AsyncClient) -> None:

        # Takes optional data: deployed servers emit an ordinary event named
        # "connect" with a payload (protocol.md quirk 5); the real namespace
        # connect calls it without arguments.
        def on_connect(*args: Any) -> None:
            if args:
                self.server_hello = args[0]

        def on_disconnect(*args: Any) -> None:
            reason = f"disconnected ({args[0]})" if args else "disconnected"
            self._declare_dead(reason)

        def on_connect_error(*args: Any) -> None:
            self._connect_error = args[0] if args else "refused"

        client.on("connect", on_connect)
        client.on("disconnect", on_disconnect)
        client.on("connect_error", on_connect_error)
        for name in REPLY_EVENTS:
            client.on(name, self._make_reply_handler(name))

    def _make_reply_handler(self, name: str) -> Callable[..., None]:
        # python-socketio runs each incoming packet as its own task, in arrival
        # order, and these handlers never await: so a reply event is recorded
        # before the ack that follows it on the wire is processed.
        def handler(*args: Any) -> None:
            self._last_reply = (name, args[0] if args else None)

        return handler

    # --- connect / close ----------------------------------------------------------

    async def connect(self) -> None:
        """Connect, register, learn the ack style. Raises SioConnectError."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._connect(), self.config.connect_timeout_s)
        except SioConnectError:
            await self.close()
            raise
        except TimeoutError:
            await self.close()
            raise SioConnectError("Socket.IO connect timed out") from None
        except Exception as exc:
            await self.close()
            raise SioConnectError(f"Socket.IO connect failed: {exc!r}") from None

    async def _connect(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(ssl=ssl_context(cfg))  # type: ignore[arg-type]
        self._http = aiohttp.ClientSession(connector=connector)
        self.client = socketio.AsyncClient(
            reconnection=False,  # our own loop reconnects, with proportional jitter
            handle_sigint=False,
            request_timeout=cfg.connect_timeout_s,
            http_session=self._http,
            logger=False,
            engineio_logger=False,
            serializer=Packet,
        )
        self._install_handlers(self.client)
        auth = {"token": cfg.token} if cfg.token else None
        try:
            await self.client.connect(
                cfg.server_url,
                headers=auth_headers(cfg),
                auth=auth,
                transports=list(cfg.transports),
                wait_timeout=cfg.connect_timeout_s,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._connect_error is not None:
                detail = self._connect_error
                if isinstance(detail, dict):
                    detail = detail.get("message", detail)
                is_auth = bool(_AUTH_WORDS.search(str(detail)))
                what = "refused" if is_auth else "failed"
                raise SioConnectError(
                    f"Socket.IO connection {what}: {detail}", auth=is_auth
                ) from None
            raise SioConnectError(f"Socket.IO connect failed: {exc}") from None
        self.alive = True
        await self._register()

    async def _register(self) -> None:
        payload = dict(self.registration)
        payload["timestamp"] = now_timestamp()
        self._last_reply = None
        assert self.client is not None
        try:
            ack = await self.client.call(
                "camera_register", payload, timeout=self.config.connect_timeout_s
            )
        except socketio.exceptions.TimeoutError:
            raise SioConnectError("camera_register not acknowledged", registration=True) from None
        except socketio.exceptions.BadNamespaceError:
            raise SioConnectError("disconnected during camera_register") from None
        if isinstance(ack, dict):
            self.ack_style = "outcome"
            reply: Any = ack
        else:
            self.ack_style = "legacy"
            reply = self._last_reply[1] if self._last_reply else None
        self.register_reply = reply
        outcome = classify_reply(reply)
        if outcome.verdict is not Verdict.DELIVERED:
            message = outcome.reason or "registration refused"
            if isinstance(reply, dict) and reply.get("message") == "'clients'":
                message += (
                    " (a deployed server refuses Socket.IO for a camera registered over REST "
                    "until it restarts; staying on REST)"
                )
            raise SioConnectError(f"camera_register refused: {message}", registration=True)

    async def close(self) -> None:
        """Disconnect without waiting on a dead peer (bounded time)."""
        self._declare_dead("closed", notify=False)
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 1.0)
        if self._http is not None:
            # Closing the session force-closes a socket that the disconnect
            # above could not close politely (frozen peer).
            with contextlib.suppress(Exception):
                await self._http.close()
            self._http = None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.eio.disconnect(abort=True), 1.0)
            # A refused connect leaves engine.io's read and write loops waiting
            # on a dead socket (its disconnect returns at once): end them, or
            # each refused attempt of a long auth outage keeps two tasks alive.
            loops = [t for t in (client.eio.read_loop_task, client.eio.write_loop_task)
                     if isinstance(t, asyncio.Task) and not t.done()]
            for task in loops:
                task.cancel()
            if loops:
                await asyncio.wait(loops, timeout=1.0)

    # --- sending -------------------------------------------------------------------

    @property
    def probes_in_flight(self) -> int:
        return sum(1 for p in self._pending.values() if p.probe)

    async def send(
        self, kind: str, payload: dict[str, Any] | str, *, probe: bool = False
    ) -> asyncio.Future[Outcome]:
        """Emit one message; the returned future resolves with its outcome.

        Never raises for link failures: the future resolves to LINK_DOWN.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        await self.send_cb(kind, payload, _resolver(future), probe=probe)
        return future

    async def send_cb(
        self, kind: str, payload: dict[str, Any] | str, on_outcome: Callable[[Outcome], None],
        *, probe: bool = False,
    ) -> None:
        """Emit one message; ``on_outcome(outcome)`` is called exactly once, from
        the event loop (possibly before this returns, if the link is down).

        ``payload`` is a dict or the stored JSON text (``str``), which is sent
        as it is. A message the byte window has no room for waits inside the
        link (see ``admits``) and goes out, in order, as acks make room.

        The drainer's path: it saves a future per message and the extra
        event-loop hop of that future's done-callback.
        Never raises for link failures: the outcome is LINK_DOWN.
        """
        if not self.alive:
            on_outcome(Outcome(Verdict.LINK_DOWN, self.dead_reason or "not connected"))
            return
        if type(payload) is RawJSON:
            raw = payload
        elif isinstance(payload, str):
            raw = RawJSON(payload)  # the spooled JSON text, as stored
        else:
            raw = RawJSON(json.dumps(payload, separators=(",", ":")))
        nbytes = len(raw) + PACKET_OVERHEAD
        self._typical += (nbytes - self._typical) / 8
        self._seq += 1
        key = self._seq
        pending = _Pending(on_outcome, probe, SIO_EVENTS[kind], raw, nbytes)
        self._pending[key] = pending
        if self._waiting or self._pumping or not self.flow.admits(nbytes):
            # No room: wait here, where the clock of its deadline has not started.
            self._waiting.append(key)
            return
        await self._emit(key, pending)

    async def _emit(self, key: int, pending: _Pending) -> None:
        loop = self._loop or asyncio.get_running_loop()
        deadline = self.flow.on_send((self._gen, key), pending.nbytes)
        pending.sent_at = sent_at = time.monotonic()
        sweep = self._sweep
        if sweep is None or sweep.when() > deadline:
            if sweep is not None:
                sweep.cancel()
            self._sweep = loop.call_at(deadline, self._check_timeouts)
        if pending.probe:
            self.last_probe_at = sent_at
        legacy = self.ack_style != "outcome"

        def on_ack(*args: Any) -> None:
            pending = self._pending.pop(key, None)
            if pending is None:
                return
            self.flow.on_ack((self._gen, key))
            self.proven = True
            if args and isinstance(args[0], dict):
                outcome = classify_reply(args[0])
            elif legacy and self._last_reply is not None:
                outcome = classify_reply(self._last_reply[1])
                self._last_reply = None
            else:
                outcome = Outcome(Verdict.RETRY, "empty ack without a reply event", None,
                                  maybe_stored=True)
            pending.resolve(outcome)
            if self._waiting and not self._pumping and self.alive:
                self._pumping = True
                self._pump_task = loop.create_task(self._pump())  # referenced: not GC-ed

        if legacy:
            self._last_reply = None
        raw, pending.raw = pending.raw, None
        assert self.client is not None
        try:
            await self.client.emit(pending.event, raw, callback=on_ack)
        except Exception as exc:  # BadNamespaceError and transport errors
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"emit failed: {exc!r}"))
            self._declare_dead(f"emit failed: {exc!r}")

    async def _pump(self) -> None:
        """Hand waiting messages over, in order, as acks make room."""
        try:
            waiting = self._waiting
            while waiting and self.alive:
                pending = self._pending.get(waiting[0])
                if pending is None:  # failed meanwhile
                    waiting.popleft()
                    continue
                if not self.flow.admits(pending.nbytes):
                    return  # the next ack starts another pump
                await self._emit(waiting.popleft(), pending)
        finally:
            self._pumping = False

    async def ping(self, timeout: float) -> Any:
        """Socket.IO ``ping`` -> ``pong`` (diagnostics)."""
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_pong(*args: Any) -> None:
            if not got.done():
                got.set_result(args[0] if args else None)

        assert self.client is not None
        self.client.on("pong", on_pong)
        await self.client.emit(
            "ping", {"type": "test", "message": "lpr-agent check", "timestamp": now_timestamp()}
        )
        return await asyncio.wait_for(got, timeout)

    # --- failure handling ------------------------------------------------------------

    def _check_timeouts(self) -> None:
        # One timer for the whole window instead of one per message, at the
        # controller's next deadline.
        self._sweep = None
        loop = self._loop or asyncio.get_running_loop()
        while self.alive:
            flow_key = self.flow.overdue()
            if flow_key is None:
                when = self.flow.next_check()
                if when is not None:
                    self._sweep = loop.call_at(when, self._check_timeouts)
                return
            self._on_timeout(flow_key[1])  # type: ignore[index]

    def _on_timeout(self, key: int) -> None:
        pending = self._pending.get(key)
        if pending is None:
            self.flow.forget((self._gen, key))
            return
        reason = f"no ack within {time.monotonic() - pending.sent_at:.1f} s"
        if pending.probe and self.proven:
            # An early probe lost while the server was still stuck; later ones
            # were acked, so the link itself is fine.
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"Socket.IO probe: {reason}",
                                    maybe_stored=True))
            return
        self.timed_out = True
        self.flow.distrust()  # frozen server or a far slower link: measure afresh
        self._declare_dead(reason)

    def _fail(self, key: int, outcome: Outcome) -> None:
        pending = self._pending.pop(key, None)
        self.flow.forget((self._gen, key))
        if pending is None:
            return
        pending.resolve(outcome)

    def _declare_dead(self, reason: str, *, notify: bool = True) -> None:
        was_alive = self.alive
        self.alive = False
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self.dead_reason is None:
            self.dead_reason = reason
        # Every message handed over has an unknown outcome: it may have been
        # stored. Hand them back now rather than after their own timeouts.
        # Those still waiting for room were never sent.
        waiting = set(self._waiting)
        self._waiting.clear()
        for key in list(self._pending):
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"Socket.IO {reason}",
                                    maybe_stored=key not in waiting))
        if was_alive and notify and self.on_dead is not None:
            self.on_dead(reason)
