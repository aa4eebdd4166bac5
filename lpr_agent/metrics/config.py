"""Settings of the Prometheus endpoint (``[metrics]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` / ``"[::1]:9108"`` / ``":9108"`` (all addresses) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:9108 (got {listen!r})")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = Field(
        default="127.0.0.1:9108",
        description="HOST:PORT where Prometheus scrapes /metrics ('[::1]:9108' for IPv6, "
        "':9108' for every address); empty: no metrics endpoint. The default serves only "
        "this machine: expose it on purpose, the page is not authenticated",
    )

    @field_validator("listen")
    @classmethod
    def _valid(cls, value: str) -> str:
        value = value.strip()
        if value:
            split_listen(value)
        return value
