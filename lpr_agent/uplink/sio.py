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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from lpr_agent.protocol import now_timestamp
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.outcome import Outcome, Verdict, classify_reply
from lpr_agent.uplink.rest import auth_headers, ssl_context
from lpr_agent.uplink.stats import AckStyle

log = logging.getLogger(__name__)

# Spool kind -> Socket.IO event (protocol.md).
SIO_EVENTS = {
    "detection": "lpr_data",
    "health": "health_status",
    "registration": "camera_register",
    "ping": "ping",  # probe of a link on probation when there is nothing to send
}
REPLY_EVENTS = ("lpr_response", "health_response", "camera_register", "error")
_AUTH_WORDS = re.compile(r"unauthori|forbidden|token|auth|credential", re.IGNORECASE)


class SioConnectError(Exception):
    """Connect or registration failed. ``auth`` is True when the server refused us."""

    def __init__(self, message: str, *, auth: bool = False, registration: bool = False) -> None:
        super().__init__(message)
        self.auth = auth
        self.registration = registration


class _Pending:
    __slots__ = ("probe", "resolve", "sent_at")

    def __init__(self, resolve: Callable[[Outcome], None], sent_at: float, probe: bool) -> None:
        self.resolve = resolve  # called exactly once: whoever pops it from _pending calls it
        self.sent_at = sent_at
        self.probe = probe


def _resolver(future: asyncio.Future[Outcome]) -> Callable[[Outcome], None]:
    def resolve(outcome: Outcome) -> None:
        if not future.done():
            future.set_result(outcome)

    return resolve


_LEAF_TYPES = frozenset((str, int, float, bool, type(None)))


class _Packet(socketio.packet.Packet):
    """python-socketio's packet with a cheaper scan for binary attachments.

    Every outgoing event is scanned for bytes before it is encoded; the stock
    scan recurses through the payload building lists and calling
    functools.reduce (~12 µs for a 1 KB detection, about 7 % of what sending
    one costs). Same answer, iteratively, with a fast path for JSON leaves
    (~2 µs). Installed through the documented ``serializer=`` argument.
    """

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        stack = [data]
        pop = stack.pop
        extend = stack.extend
        leaf = _LEAF_TYPES
        while stack:
            x = pop()
            t = type(x)
            if t in leaf:
                continue
            if t is dict:
                extend(x.values())
            elif t is list:
                extend(x)
            elif isinstance(x, (bytes, bytearray)):
                return True
            elif isinstance(x, dict):  # subclasses, as the stock scan accepts them
                extend(x.values())
            elif isinstance(x, list):
                extend(x)
        return False


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
        self._pending: dict[int, _Pending] = {}  # in send order
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
        # Legacy acks carry no id-matched outcome: one at a time.
        return self.config.window if self.ack_style == "outcome" else 1

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
            serializer=_Packet,
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

    # --- sending -------------------------------------------------------------------

    @property
    def probes_in_flight(self) -> int:
        return sum(1 for p in self._pending.values() if p.probe)

    async def send(
        self, kind: str, payload: dict[str, Any], *, probe: bool = False
    ) -> asyncio.Future[Outcome]:
        """Emit one message; the returned future resolves with its outcome.

        Never raises for link failures: the future resolves to LINK_DOWN.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        await self.send_cb(kind, payload, _resolver(future), probe=probe)
        return future

    async def send_cb(
        self, kind: str, payload: dict[str, Any], on_outcome: Callable[[Outcome], None], *,
        probe: bool = False,
    ) -> None:
        """Emit one message; ``on_outcome(outcome)`` is called exactly once, from
        the event loop (possibly before this returns, if the link is down).

        The drainer's path: it saves a future per message and the extra
        event-loop hop of that future's done-callback.
        Never raises for link failures: the outcome is LINK_DOWN.
        """
        if not self.alive:
            on_outcome(Outcome(Verdict.LINK_DOWN, self.dead_reason or "not connected"))
            return
        loop = self._loop or asyncio.get_running_loop()
        self._seq += 1
        key = self._seq
        sent_at = time.monotonic()
        self._pending[key] = _Pending(on_outcome, sent_at, probe)
        if self._sweep is None:
            self._sweep = loop.call_at(sent_at + self.config.ack_timeout_s, self._check_timeouts)
        if probe:
            self.last_probe_at = sent_at
        legacy = self.ack_style != "outcome"

        def on_ack(*args: Any) -> None:
            pending = self._pending.pop(key, None)
            if pending is None:
                return
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

        if legacy:
            self._last_reply = None
        assert self.client is not None
        try:
            await self.client.emit(SIO_EVENTS[kind], payload, callback=on_ack)
        except Exception as exc:  # BadNamespaceError and transport errors
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"emit failed: {exc!r}"))
            self._declare_dead(f"emit failed: {exc!r}")

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
        # One timer for the whole window instead of one per message: the
        # pending dict is in send order, so the oldest entry decides.
        self._sweep = None
        loop = self._loop or asyncio.get_running_loop()
        limit = self.config.ack_timeout_s
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            due = pending.sent_at + limit
            if due > time.monotonic():  # the loop's clock too
                self._sweep = loop.call_at(due, self._check_timeouts)
                return
            self._on_timeout(key)

    def _on_timeout(self, key: int) -> None:
        pending = self._pending.get(key)
        if pending is None:
            return
        reason = f"no ack within {self.config.ack_timeout_s:g} s"
        if pending.probe and self.proven:
            # An early probe lost while the server was still stuck; later ones
            # were acked, so the link itself is fine.
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"Socket.IO probe: {reason}",
                                    maybe_stored=True))
            return
        self.timed_out = True
        self._declare_dead(reason)

    def _fail(self, key: int, outcome: Outcome) -> None:
        pending = self._pending.pop(key, None)
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
        # Every message still waiting has an unknown outcome: it may have been
        # stored. Hand them back now rather than after their own timeouts.
        for key in list(self._pending):
            self._fail(key, Outcome(Verdict.LINK_DOWN, f"Socket.IO {reason}", maybe_stored=True))
        if was_alive and notify and self.on_dead is not None:
            self.on_dead(reason)
