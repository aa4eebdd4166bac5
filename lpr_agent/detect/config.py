"""Settings of frame capture and plate detection (``[source]`` and ``[detector]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="synthetic:", description="frame source")


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(default="onnx", description="detector backend")
