"""The ``/metrics`` HTTP endpoint: prometheus_client's own threaded server on our registry.

A thread rather than the asyncio loop: a scrape then still answers while the
loop is busy, and its few stats() calls are thread-safe and take < 1 ms.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from lpr_agent.metrics.config import split_listen

log = logging.getLogger(__name__)


class MetricsServer:
    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        self.host, self.port = split_listen(listen)
        self.registry = registry
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._server.server_port}/metrics"

    def start(self) -> None:
        """Bind and serve; raises OSError (port taken, address not local)."""
        self._server, self._thread = start_http_server(self.port, self.host,
                                                       registry=self.registry)
        log.info("metrics endpoint listening", extra={"url": self.url})

    @classmethod
    def serve(cls, listen: str, registry: CollectorRegistry) -> MetricsServer | None:
        """Started server, or None after logging why not: a taken port must not stop
        a camera from reading plates."""
        server = cls(listen, registry)
        try:
            server.start()
        except OSError as exc:
            log.error("metrics endpoint not started", extra={"listen": listen, "error": exc})
            return None
        return server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
