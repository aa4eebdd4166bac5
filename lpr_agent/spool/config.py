"""Settings of the local spool (``[spool]`` in agent.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SpoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        default=Path("/var/lib/lpr-agent/spool.db"),
        description="SQLite spool file (under systemd's StateDirectory)",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL: a reading is on disk when put returns; NORMAL: faster, "
        "but the last commits may be lost on power failure (never corrupted)",
    )
