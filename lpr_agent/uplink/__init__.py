"""Uplink: drains the spool to the LPR server over Socket.IO, falling back to REST.

``README.md`` lists the parts (drainer, link state, settle, ...) and the
delivery and order rules; ``sio.py`` holds the Socket.IO facts that shape
them. The names below load lazily: the config loader imports
``lpr_agent.uplink.config`` and must not drag in socketio and aiohttp.
"""

from __future__ import annotations

import importlib
from typing import Any

from lpr_agent.uplink.config import UplinkConfig

_LAZY = {
    "Uplink": "lpr_agent.uplink.drainer",
    "Outcome": "lpr_agent.uplink.outcome",
    "Verdict": "lpr_agent.uplink.outcome",
    "classify_http": "lpr_agent.uplink.outcome",
    "classify_reply": "lpr_agent.uplink.outcome",
    "UplinkStats": "lpr_agent.uplink.stats",
}

__all__ = ["UplinkConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
