"""Who may do what: the token, the allowed web origins, loopback checks.

What the token protects (when set): every ``/api`` and ``/admin`` request,
Socket.IO connections, the dashboard page. Browsers add two gaps that the
token alone does not close, handled here too:

* a web page on another origin can make the operator's browser send
  requests to the stub (a ``text/plain`` form post, a Socket.IO handshake);
  so requests carrying a foreign ``Origin`` are refused, Socket.IO accepts
  only the stub's own origin (plus ``--cors-origin`` ones) and JSON
  endpoints only ``application/json`` (which no form can send);
* ``<img>`` tags cannot send headers, so ``?token=`` is accepted, but only
  for image GETs and the dashboard page, where a token in a URL (and so in
  logs and history) reveals nothing that the page itself does not.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

# GET routes that accept ?token= (the dashboard page and image URLs).
_QUERY_TOKEN_PATHS = re.compile(r"^/$|^/api/records/[^/]+/(image/annotated|crops/[^/]+)$")


def same_secret(given: str | None, secret: str) -> bool:
    """Constant-time comparison: a plain ``==`` leaks how much of a guess matched."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


def authorized(request: web.Request, token: str) -> bool:
    if same_secret(request.headers.get("Authorization"), f"Bearer {token}"):
        return True
    return (
        request.method == "GET"
        and _QUERY_TOKEN_PATHS.match(request.path) is not None
        and same_secret(request.query.get("token"), token)
    )


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    """True without an ``Origin`` header (not a browser, or a same-origin GET)."""
    origin = request.headers.get("Origin")
    return origin is None or origin == own_origin(request) or origin in allowed


def socketio_origin_check(allowed: frozenset[str]) -> Callable[[str | None, dict[str, Any]], bool]:
    """engine.io's ``cors_allowed_origins``: the stub's own origin plus ``allowed``.

    (A plain list would replace the own origin instead of adding to it.)
    """

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin is not None and (origin == own or origin in allowed)

    return check


def is_json(request: web.Request) -> bool:
    # content_type is the media type without parameters (charset=...).
    return request.content_type == "application/json"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: may resolve to anything
