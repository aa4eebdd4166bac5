"""Settings of the uplink to the LPR server (``[uplink]`` in agent.toml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class UplinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(default="http://127.0.0.1:8765", description="LPR server base URL")
    token: str | None = Field(default=None, description="shared secret (extension), optional")
