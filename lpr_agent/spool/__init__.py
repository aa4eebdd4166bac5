"""Durable local SQLite spool between the detector and the uplink (see spool.py)."""

from lpr_agent.spool.config import SpoolConfig
from lpr_agent.spool.spool import (
    DROP_REASONS,
    DeadLetter,
    Kind,
    Spool,
    SpoolCorruptError,
    SpoolItem,
    SpoolStats,
)

__all__ = [
    "DROP_REASONS",
    "DeadLetter",
    "Kind",
    "Spool",
    "SpoolConfig",
    "SpoolCorruptError",
    "SpoolItem",
    "SpoolStats",
]
