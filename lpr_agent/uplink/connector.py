"""Keeps one Socket.IO link up in the background, with backoff and jitter.

While Socket.IO is down REST carries the traffic; this task reconnects (the
delays come from ``LinkState.sio_delay``) and hands each new, registered link
to the drainer. ``link`` is the current live link or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.flow import FlowController
from lpr_agent.uplink.linkstate import LinkState
from lpr_agent.uplink.sio import SioConnectError, SioLink, flow_settings
from lpr_agent.uplink.stats import RateLimitedLog, UplinkStats

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)


class SioConnector:
    def __init__(self, config: UplinkConfig, registration: dict[str, Any], state: LinkState,
                 stats: UplinkStats, wake: Callable[[], None],
                 note_error: Callable[[str], None]) -> None:
        self.config = config
        self.registration = registration
        self.state = state
        self.stats = stats
        self.wake = wake  # wakes the drain loop
        self.note_error = note_error
        self.link: SioLink | None = None
        # One flow controller for all links: a reconnect keeps what was learnt
        # about the link's rate and round trip (a fresh estimate starts at the
        # rate floor, slow to declare a frozen server dead).
        self.flow = FlowController(flow_settings(config))
        self.kick = asyncio.Event()  # reconnect now (REST is back, or stop)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def alive(self) -> SioLink | None:
        link = self.link
        return link if link is not None and link.alive else None

    async def run(self, stop: asyncio.Event) -> None:
        state, kick = self.state, self.kick
        while not stop.is_set():
            if self.alive is not None:
                kick.clear()
                await kick.wait()  # set by _on_dead or stop
                continue
            blocked = state.sio_auth_blocked()
            if blocked > 0:
                state.sio_first_attempt = False
                self.wake()
                await asyncio.sleep(blocked)
                continue
            if state.sio_failures:
                # REST carries the traffic during the backoff.
                state.sio_first_attempt = False
                self.wake()
                await self._sleep_or_kick(state.sio_delay())
                if stop.is_set():
                    break
            kick.clear()
            link = SioLink(self.config, self.registration, on_dead=self._on_dead,
                           probation=state.sio_probation, flow=self.flow)
            try:
                await link.connect()
            except SioConnectError as exc:
                self._connect_failed(exc)
                continue
            except asyncio.CancelledError:
                # Stopped mid-connect: close the half-open client, or its
                # engine.io tasks outlive the event loop.
                with contextlib.suppress(Exception):
                    await link.close()
                raise
            if stop.is_set():
                await link.close()
                break
            self._connected(link)

    def _connect_failed(self, exc: SioConnectError) -> None:
        self.state.sio_connect_failed(registration_refused=exc.registration)
        self.stats.sio_connect_failures += 1
        self.wake()
        if exc.auth:
            self.auth_failed(str(exc))
            return
        self.note_error(str(exc))
        _rlog(logging.WARNING, "sio_connect", "uplink: %s; retrying with backoff", exc)

    def auth_failed(self, reason: str) -> None:
        self.stats.auth_failed = True
        delay = self.state.auth_failed("socketio")
        self.note_error(reason)
        _rlog(logging.ERROR, "auth", "uplink: server refused our credentials (%s); "
              "check [uplink] token; retrying in %.0f s", reason, delay or 0.0)

    def _connected(self, link: SioLink) -> None:
        _rlog.reset("sio_connect")
        self.stats.sio_connects += 1
        self.stats.ack_style = link.ack_style
        self.link = link
        self.state.sio_connected()
        log.info("uplink: Socket.IO connected and registered (%s acks, window %d%s)",
                 link.ack_style, link.window, "" if link.proven else ", on probation")
        self.wake()

    async def _sleep_or_kick(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.kick.wait(), max(0.0, delay))
        if self.kick.is_set():
            self.kick.clear()
            # Even a kick waits a little, proportionally jittered, so that a
            # fleet seeing the server come back does not reconnect at once.
            await asyncio.sleep(random.uniform(0.0, min(0.25, self.config.retry_initial_s)))

    def _on_dead(self, reason: str) -> None:
        link = self.link
        if link is None:
            return
        self.link = None
        self.state.sio_lost(timed_out=link.timed_out)
        self.note_error(f"Socket.IO {reason}")
        _rlog(logging.WARNING, "sio_dead", "uplink: Socket.IO link lost (%s)", reason)
        task = asyncio.get_running_loop().create_task(link.close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.kick.set()
        self.wake()

    async def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await link.close()
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 1.0)
