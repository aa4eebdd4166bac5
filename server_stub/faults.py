"""Run-time fault injection (only with ``--faults``), driven by /admin/faults.

Tests of the agent's uplink need a server that fails, lags, forgets to
answer, hangs and drops connections on demand; these settings say which.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FaultSettings(BaseModel):
    """What to break. Every POST to /admin/faults is merged into these."""

    model_config = ConfigDict(extra="forbid")

    fail_next: int = Field(
        default=0,
        ge=0,
        description="The next N detection/health messages fail without being stored "
        "(REST: HTTP fail_status; Socket.IO: `error` event and an error ack).",
    )
    fail_status: int = Field(default=500, ge=400, le=599, description="HTTP status of a fail.")
    ack_delay_ms: int = Field(
        default=0, ge=0, le=600_000, description="Delay every reply/ack, REST and Socket.IO."
    )
    withhold_acks: bool = Field(
        default=False,
        description="Socket.IO detection/health messages are stored, but neither the reply "
        "event nor the ack is sent.",
    )
    stall: bool = Field(
        default=False,
        description="Every Socket.IO event and REST /api request is held unanswered while set "
        "(then processed normally once cleared); /admin still answers.",
    )
    block_socketio: bool = Field(
        default=False,
        description="Refuse new Socket.IO connections and drop the existing ones.",
    )
    drop_connections: bool = Field(
        default=False,
        description="One-shot: abort every Socket.IO connection now (reads back as false).",
    )


class Faults:
    """Current settings plus the bookkeeping that acting on them needs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.settings = FaultSettings()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self.injected_failures = 0

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        """Merge ``changes``; raises pydantic.ValidationError on bad keys/values."""
        merged = self.settings.model_dump()
        merged.update(changes)
        self.settings = FaultSettings.model_validate(merged)
        self._sync_stall()
        return self.settings

    def reset(self) -> None:
        self.settings = FaultSettings()
        self._sync_stall()

    def _sync_stall(self) -> None:
        if self.settings.stall:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    async def wait_unstalled(self) -> None:
        if self.enabled and not self._unstalled.is_set():
            await self._unstalled.wait()

    def take_failure(self) -> bool:
        """True when this message must fail (consumes one of ``fail_next``)."""
        if not self.enabled or self.settings.fail_next <= 0:
            return False
        self.settings.fail_next -= 1
        self.injected_failures += 1
        return True

    async def delay(self) -> None:
        if self.enabled and self.settings.ack_delay_ms > 0:
            await asyncio.sleep(self.settings.ack_delay_ms / 1000)

    @property
    def withhold(self) -> bool:
        return self.enabled and self.settings.withhold_acks

    @property
    def socketio_blocked(self) -> bool:
        return self.enabled and self.settings.block_socketio

    def snapshot(self) -> dict[str, Any]:
        data = self.settings.model_dump()
        data["injected_failures"] = self.injected_failures
        return data
