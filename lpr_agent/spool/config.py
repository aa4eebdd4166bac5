"""Settings of the local spool (``[spool]`` in agent.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        description="cap on the spooled payload bytes (JSON text); above it the spool "
        "degrades: images of the oldest detections first, then old health snapshots, "
        "then the oldest detections",
    )
    max_items: int = Field(
        default=500_000,
        gt=0,
        description="cap on the number of spooled items; above it the spool degrades "
        "(old health snapshots, then the oldest detections)",
    )
    degrade_to: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="when a cap is exceeded, degrade until this fraction of the cap is used "
        "(hysteresis, so a full spool does not degrade on every put)",
    )
    min_free_disk_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="free space wanted on the spool's filesystem; below it the spool sheds "
        "the missing amount once per shortage (images first, never the newest "
        "shed_floor_items detections) and gives file space back. 0 = off",
    )
    disk_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often (at most) the free disk space is looked at",
    )
    maintenance_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often (at most) put/ack check the caps and reclaim file space",
    )
    backoff_base_s: float = Field(
        default=1.0,
        ge=0,
        description="nack backoff: delay before attempt n+1 is uniform in "
        "[0, min(backoff_cap_s, backoff_base_s * 2**(n-1))] (full jitter)",
    )
    backoff_cap_s: float = Field(
        default=300.0,
        ge=0,
        description="upper bound of the nack backoff delay",
    )
    max_attempts: int = Field(
        default=0,
        ge=0,
        description="an item nacked this many times moves to the dead letters "
        "(0 = retry forever; failing items never block the ones behind them)",
    )
    health_keep_per_component: int = Field(
        default=3,
        ge=1,
        description="when health snapshots are coalesced, keep this many newest per component",
    )
    max_health_items: int = Field(
        default=1000,
        ge=1,
        description="coalesce health snapshots (see health_keep_per_component) when more "
        "than this many are spooled, even below the caps",
    )
    vacuum_min_free_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="give file space back to the filesystem (incremental vacuum) once "
        "this many bytes of the file are unused; lower means a smaller file, but "
        "everyday churn then shrinks and regrows it (extra I/O)",
    )
    shed_floor_items: int = Field(
        default=1000,
        ge=0,
        description="under disk pressure (free disk below min_free_disk_bytes, or a write "
        "failing with disk full) the newest this many detections are never deleted (their "
        "images may go, oldest first): the shortage may be other files' doing. The caps "
        "max_items/max_bytes still apply to them",
    )
    drop_window_s: float = Field(
        default=3600.0,
        gt=0,
        description="stats().drops_recent counts the readings shed within this many "
        "seconds (health judges the recent window; stats().drops stays the lifetime total)",
    )
    corrupt_keep_files: int = Field(
        default=3,
        ge=0,
        description="corrupt spool files moved aside (after their readable rows were "
        "salvaged) are kept for forensics: at most this many, newest first",
    )
    corrupt_keep_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="... and at most this many bytes of them (with their WAL); older "
        "copies are deleted so they cannot eat the free disk space",
    )
    busy_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="how long to wait for another process (e.g. the CLI) holding the "
        "spool's write lock",
    )

    @model_validator(mode="after")
    def _check_backoff(self) -> SpoolConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        return self
