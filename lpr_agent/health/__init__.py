"""Health reports: one ``health_status`` per component every ``interval_s``.

Components: ``camera``, ``detector``, ``spool``, ``uplink``, ``system``. Each
gets ``healthy`` / ``warning`` / ``error`` and a ``details`` dict. Every
component's details carry the protocol's ``cpu_usage``, ``memory_usage`` and
``disk_usage`` (percent), because deployed dashboards read those keys from
whatever component they display.

Modules: ``config`` (HealthConfig, thresholds), ``system`` (host readings:
psutil, clock, thermal state), ``rules`` (pure judgement), ``reporter`` (the
periodic task). Only the config is imported eagerly: ``import lpr_agent.config``
must not load psutil.
"""

from __future__ import annotations

from importlib import import_module

from lpr_agent.health.config import HealthConfig, State, Threshold

__all__ = [
    "COMPONENTS", "HealthConfig", "HealthReporter", "Recent", "State", "SystemSampler",
    "Threshold", "clock_state", "evaluate",
]

_LAZY = {
    "COMPONENTS": "rules", "Recent": "rules", "evaluate": "rules",
    "evaluate_system": "rules", "evaluate_camera": "rules", "evaluate_detector": "rules",
    "evaluate_spool": "rules", "evaluate_uplink": "rules",
    "SystemSampler": "system", "clock_state": "system", "max_temperature": "system",
    "HealthReporter": "reporter",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lpr_agent.health' has no attribute {name!r}")
    return getattr(import_module(f"lpr_agent.health.{module}"), name)
