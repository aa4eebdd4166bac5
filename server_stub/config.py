"""Settings of the server stub (CLI flags map one to one onto these fields)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PORT = 8765
DEFAULT_BODY_LIMIT = 10 * 1024 * 1024


class StubConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="TCP port (0 = any).")
    db: Path = Field(default=Path("lpr-stub.db"), description="SQLite database file.")
    legacy: bool = Field(
        default=False,
        description="Behave like the deployed reference servers (protocol.md): empty acks, "
        "no de-duplication, a `connect` event, 500 for non-JSON bodies, REST not broadcast.",
    )
    faults: bool = Field(
        default=False, description="Enable the /admin/faults fault-injection API (tests only)."
    )
    token: str | None = Field(
        default=None,
        description="Shared secret; when set, Socket.IO needs auth={'token': T}, REST and "
        "/admin need 'Authorization: Bearer T' (image URLs and the dashboard page also "
        "accept ?token=T).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (scheme://host[:port]) allowed besides the stub's own, for "
        "Socket.IO and the REST API. Empty: same origin only.",
    )
    allow_remote_faults: bool = Field(
        default=False,
        description="Allow --faults on an address other than loopback (anyone who can reach "
        "the port could then make the stub fail).",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes sharing the port (workers.py)."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL through which worker processes share Socket.IO broadcasts "
        "(python-socketio's AsyncRedisManager); set for --workers > 1.",
    )
    reuse_port: bool = Field(
        default=False,
        description="Listen with SO_REUSEPORT, so that several worker processes share the "
        "port (the kernel spreads connections over them).",
    )
    body_limit: int = Field(
        default=DEFAULT_BODY_LIMIT, gt=0, description="Largest accepted request body, bytes."
    )
    access_log: bool = Field(
        default=False,
        description="Log one line per HTTP request (aiohttp's access log, at INFO). Off by "
        "default: under load, formatting that line costs about as much as storing a detection.",
    )
    online_window_s: float = Field(
        default=120.0,
        gt=0,
        description="A camera without a live Socket.IO registration counts as online this "
        "long after its last message.",
    )
