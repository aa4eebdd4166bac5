"""A python-socketio client that records every event it receives, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import socketio


class RecordingClient:
    """Wraps ``socketio.Client``: ``events`` is the list of (name, data) received.

    Handlers are registered the way a client written for the deployed servers
    does it (plain ``on(name)`` handlers); ``connect`` accepts an optional
    argument because the legacy server sends data with an ordinary `connect`.
    """

    def __init__(self, **client_kwargs: Any) -> None:
        client_kwargs.setdefault("reconnection", False)
        self.client = socketio.Client(**client_kwargs)
        self.events: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self.client.on("*", self._record)

        def on_connect(*args: Any) -> None:
            self._record("connect", *args)

        def on_disconnect(*args: Any) -> None:
            self._record("disconnect", *args)

        self.client.on("connect", on_connect)
        self.client.on("disconnect", on_disconnect)

    def _record(self, event: str, *args: Any) -> None:
        with self._cond:
            self.events.append((event, args[0] if len(args) == 1 else (args or None)))
            self._cond.notify_all()

    def connect(self, url: str, **kwargs: Any) -> RecordingClient:
        kwargs.setdefault("wait_timeout", 10)
        self.client.connect(url, **kwargs)
        return self

    def emit(self, event: str, data: Any = None, **kwargs: Any) -> None:
        if data is None:
            self.client.emit(event, **kwargs)
        else:
            self.client.emit(event, data, **kwargs)

    def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if data is None:
            return self.client.call(event, timeout=timeout)
        return self.client.call(event, data, timeout=timeout)

    def named(self, event: str) -> list[Any]:
        with self._cond:
            return [data for name, data in self.events if name == event]

    def wait_for(
        self,
        event: str,
        predicate: Callable[[Any], bool] = lambda _d: True,
        timeout: float = 5.0,
    ) -> Any:
        """The first received ``event`` whose data satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for name, data in self.events:
                    if name == event and predicate(data):
                        return data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {event!r} event within {timeout}s; got {self.events}")
                self._cond.wait(left)

    def disconnect(self) -> None:
        self.client.disconnect()

    def __enter__(self) -> RecordingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
