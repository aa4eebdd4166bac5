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
        description="a Socket.IO message not acknowledged within this time (plus the time "
        "the measured link rate needs for the bytes queued ahead of it, see "
        "link_deadline_slack) means the link is dead: the uplink switches to REST and "
        "reconnects in the background",
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
    link_queue_target_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="Socket.IO byte window: measured rate x (base round trip + this) + the "
        "largest message, so the link stays busy while at most about this much data waits "
        "in queues (a health snapshot or a ping is never stuck behind seconds of images)",
    )
    link_initial_window_kb: int = Field(
        default=64,
        ge=1,
        description="Socket.IO byte window (KiB) on a new link, before the first ack measured "
        "it (one message always fits, however large)",
    )
    link_max_window_kb: int = Field(
        default=4096,
        ge=16,
        description="largest Socket.IO byte window (KiB), whatever the link measures",
    )
    link_min_rate_kbps: float = Field(
        default=64.0,
        gt=0,
        description="slowest link rate (kbit/s) assumed when extending ack deadlines for the "
        "bytes queued ahead of a message; the measured rate is used when higher",
    )
    link_deadline_slack: float = Field(
        default=2.0,
        ge=1,
        le=10,
        description="an ack may take ack_timeout_s + this x the time the measured rate "
        "needs for the message and the bytes queued ahead of it, before the link counts "
        "as dead",
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
    keep_order: bool = Field(
        default=True,
        description="after a temporary server error (5xx) the message is resent, stop-and-wait, "
        "before anything younger, however often it fails: readings reach the server in "
        "creation order. The price: a message the server keeps failing blocks the ones behind "
        "it until the spool dead-letters it ([spool] max_attempts, 0 = never) or the server "
        "rejects it. false: after in_order_retries tries it waits out its own backoff and "
        "younger readings pass it (logged)",
    )
    in_order_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="only with keep_order = false: in-order resends of a message answered "
        "with a temporary error before it waits out its own backoff in the spool",
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
