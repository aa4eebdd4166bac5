"""Settings of the uplink to the LPR server (``[uplink]`` in agent.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class UplinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(
        default="http://127.0.0.1:8765",
        description="LPR server base URL (http:// or https://); Socket.IO and REST share it",
    )
    token: str | None = Field(
        default=None,
        description="shared secret (extension): Socket.IO auth token and REST Bearer token",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM file of CA certificates trusted for https/wss (default: system store)",
    )
    tls_verify: bool = Field(
        default=True,
        description="verify the server's TLS certificate; false only for lab setups",
    )
    transports: list[Literal["websocket", "polling"]] = Field(
        default_factory=lambda: ["websocket"],
        description="Socket.IO transports; the first is used to connect. Use "
        '["polling", "websocket"] behind proxies that do not pass WebSockets',
    )
    ack_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="a Socket.IO message not acknowledged within this time means the link "
        "is dead: the uplink switches to REST and reconnects in the background",
    )
    connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Socket.IO connect + camera_register must finish within this time",
    )
    rest_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="total timeout of one REST request",
    )
    window: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Socket.IO messages in flight when the server acks with the outcome "
        "(deployed servers that ack with no data always get one at a time)",
    )
    rest_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="REST requests in flight. 1 keeps strict creation order over REST (the "
        "fallback channel; a camera makes far fewer readings per second than one request "
        "in flight carries); more drains a REST-only backlog faster but parallel requests "
        "may be stored out of order",
    )
    retry_initial_s: float = Field(
        default=0.5,
        gt=0,
        description="first reconnect / REST retry delay; doubles per failure, full jitter",
    )
    retry_max_s: float = Field(
        default=15.0,
        gt=0,
        description="cap of the reconnect delay while the server is unreachable",
    )
    sio_probe_max_s: float = Field(
        default=1.5,
        gt=0,
        description="cap of the Socket.IO reconnect delay while REST works (the server is "
        "up, so switching back quickly is cheap)",
    )
    rest_register: bool = Field(
        default=True,
        description="register the camera over REST when Socket.IO stays unavailable (see "
        "rest_register_after_s); false: never register over REST",
    )
    rest_register_after_s: float = Field(
        default=60.0,
        ge=0,
        description="register over REST once Socket.IO has been unavailable this long while "
        "REST works (deployed servers then refuse Socket.IO for the camera until they restart, "
        "protocol.md quirk 8, so not sooner)",
    )
    in_order_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="a message the server answers with a temporary error (5xx) is resent "
        "in creation order, with everything younger held back, this many times; after that "
        "it waits out its own backoff in the spool so that it cannot block the rest forever",
    )
    poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="idle loop period: picks up spool items whose retry time came and "
        "keeps the watchdog heartbeat turning",
    )
    batch: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="spool items leased ahead of sending (at least two Socket.IO windows); "
        "a lease is one SQLite transaction",
    )

    @model_validator(mode="after")
    def _check(self) -> UplinkConfig:
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError("server_url must start with http:// or https://")
        if not self.transports:
            raise ValueError("transports must name at least one transport")
        return self

    @property
    def lease_seconds(self) -> float:
        """Lease long enough that an in-flight item is never leased twice."""
        return max(self.ack_timeout_s, self.rest_timeout_s, self.connect_timeout_s) * 2 + 10
