"""REST link: the same messages as Socket.IO, over HTTP with timeouts and reuse."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

import aiohttp

from lpr_agent.protocol import REST_PATHS
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.outcome import Outcome, Verdict, classify_http

log = logging.getLogger(__name__)



def ssl_context(config: UplinkConfig) -> ssl.SSLContext | bool | None:
    """TLS settings for aiohttp: None = default verification, False = no verification."""
    if not config.server_url.startswith("https://"):
        return None
    if not config.tls_verify:
        return False
    if config.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(config.ca_bundle))
    return None


def auth_headers(config: UplinkConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"} if config.token else {}


_JSON = {"Content-Type": "application/json"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class RestLink:
    """One aiohttp session (keep-alive pool) for every REST call to the server."""

    def __init__(self, config: UplinkConfig) -> None:
        self.config = config
        self.base = config.server_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.rest_concurrency + 2,
                ssl=ssl_context(self.config),  # type: ignore[arg-type]
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Every POST carries JSON: a session default spares aiohttp a
                # header merge per request (measured in a REST drain).
                headers={**auth_headers(self.config), **_JSON},
                timeout=aiohttp.ClientTimeout(
                    total=self.config.rest_timeout_s,
                    connect=min(self.config.rest_timeout_s, self.config.connect_timeout_s),
                ),
                json_serialize=_dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def send(self, kind: str, payload: dict[str, Any] | str) -> Outcome:
        """POST one message. ``payload`` is a dict or the stored JSON text,
        which goes out as the body as it is (no decode/encode round trip)."""
        path = REST_PATHS[kind]
        body_text = payload if isinstance(payload, str) else _dumps(payload)
        try:
            async with self.session.post(self.base + path, data=body_text.encode()) as resp:
                # read() + one decode: resp.text() would look up the charset
                # (and may sniff it) on every reply of a drain.
                raw = await resp.read()
                try:
                    text = raw.decode(resp.charset or "utf-8", "replace")
                except LookupError:  # a charset Python does not know
                    text = raw.decode("utf-8", "replace")
                body: Any = None
                if text:
                    try:
                        body = json.loads(text)
                    except ValueError:
                        body = None
                return classify_http(resp.status, body, text)
        except (aiohttp.ClientConnectorError, aiohttp.ClientSSLError) as exc:
            # The request never reached the server.
            return Outcome(Verdict.LINK_DOWN, f"REST connect failed: {exc}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Sent (or partly sent) and no answer: it may have been stored.
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
            return Outcome(Verdict.LINK_DOWN, f"REST {path} {what}", maybe_stored=True)

    async def get_json(self, path: str, timeout: float | None = None) -> tuple[int, Any]:
        """GET for diagnostics (``check``); returns (status, body or text)."""
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.config.rest_timeout_s)
        async with self.session.get(self.base + path, timeout=client_timeout) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


async def rest_reachable(link: RestLink) -> bool:
    """Cheap probe: does the server answer ``GET /api/test``?"""
    try:
        status, _ = await link.get_json("/api/test", timeout=2.0)
    except (TimeoutError, aiohttp.ClientError, OSError, asyncio.CancelledError):
        return False
    return status < 500
