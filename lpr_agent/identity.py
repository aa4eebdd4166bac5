"""Who this camera is on the server: a leaf module every stage may import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CameraIdentity(BaseModel):
    """``[camera]``: the ids carried in every message."""

    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(
        default="camera_001",
        min_length=1,
        max_length=128,
        description="this camera's id on the server (camera_id in every message)",
    )
    checkpoint_id: str = Field(
        default="checkpoint_001",
        min_length=1,
        max_length=128,
        description="the checkpoint (site) this camera belongs to",
    )
