"""Prometheus metrics of the agent: a collector over the stages' ``stats()``.

``config`` is light (imported by ``lpr_agent.config``); ``collector`` and
``server`` import prometheus_client and are loaded only by the daemon.
"""

from __future__ import annotations

from lpr_agent.metrics.config import MetricsConfig

__all__ = ["MetricsConfig"]
