"""Settings of the health reporter (``[health]``): thresholds beside the rules that use them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

State = Literal["healthy", "warning", "error"]


class Threshold(BaseModel):
    """A metric is ``warning`` at or above ``warning`` and ``error`` at or above ``error``."""

    model_config = ConfigDict(extra="forbid")

    warning: float = Field(description="value from which the component reports warning")
    error: float = Field(description="value from which the component reports error")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.error < self.warning:
            raise ValueError(f"error ({self.error}) must be >= warning ({self.warning})")
        return self

    def state(self, value: float | None) -> State:
        if value is None:
            return "healthy"
        if value >= self.error:
            return "error"
        if value >= self.warning:
            return "warning"
        return "healthy"


def _t(warning: float, error: float, what: str) -> Any:
    return Field(default_factory=lambda: Threshold(warning=warning, error=error), description=what)


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="send health_status messages at all")
    interval_s: float = Field(
        default=30.0, ge=1.0, description="seconds between two rounds of health reports"
    )
    clock_unsynced: State = Field(
        default="warning",
        description="status of the system component while the clock is not NTP-synchronised "
        "(timestamps of readings may be wrong)",
    )
    # A camera running plate detection flat out is meant to use its CPU: CPU is
    # reported (cpu_usage) but judged through the detector's frame rate instead.
    cpu_percent: dict[str, float] | None = Field(
        default=None,
        description="no longer used (accepted so that older config files still load): CPU "
        "use is reported, not judged; the detector is judged by the frame rate it achieves",
    )
    memory_percent: Threshold = _t(85, 95, "system memory usage, percent")
    disk_percent: Threshold = _t(85, 95, "usage of the file system holding the spool, percent")
    temperature_c: Threshold | None = Field(
        default=None,
        description="optional fixed limits for the hottest temperature sensor, °C, as "
        "{ warning = 75, error = 85 }; not set: the temperature is reported and the board's "
        "own verdict counts (thermal trip points, throttling flags)",
    )
    fps_shortfall_percent: Threshold = _t(
        20, 60, "how far the processed frame rate falls below its target ([source] max_fps, "
        "or the camera's own rate when that is lower), percent; judged over the last "
        "report interval"
    )
    frame_age_s: Threshold = _t(10, 60, "seconds since the camera delivered a frame")
    # A reading is late by this much after its frame; speed itself is judged by
    # the frame rate above, so this only bounds how stale a reading may be.
    detector_latency_ms: Threshold = _t(
        2500, 10000, "detector time per frame, milliseconds (how late a reading is made)")
    spool_depth: Threshold = _t(10_000, 100_000, "readings waiting in the spool")
    spool_oldest_age_s: Threshold = _t(600, 3600, "age of the oldest undelivered reading, s")
    dead_letters: Threshold = _t(1, 1000, "readings the server rejected for good")
    ack_age_s: Threshold = _t(
        300, 1800, "seconds since the server last acknowledged, while readings are waiting"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_thresholds(cls, data: Any) -> Any:
        # `[health.memory_percent] warning = 50` (or LPR_AGENT_HEALTH__MEMORY_PERCENT__WARNING)
        # changes one bound and keeps the default of the other.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            value = merged.get(name)
            if field.annotation is Threshold and isinstance(value, dict):
                default = field.get_default(call_default_factory=True)
                merged[name] = {**default.model_dump(), **value}
        return merged
