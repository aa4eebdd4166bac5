"""The collector without a daemon: stages not running, and the spool tap on a real spool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lpr_agent.metrics.collector import AgentMetrics, Sources
from lpr_agent.metrics.spooltap import DeliveryTap
from lpr_agent.spool import Kind, Spool, SpoolConfig
from tests.helpers.prereq import require_executable


def test_scrape_with_no_stage_running_is_valid() -> None:
    def broken() -> None:
        raise RuntimeError("stats failed")

    metrics = AgentMetrics(Sources(spool=broken))  # a failing stage must not fail the scrape
    text = generate_latest(metrics.registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"lpr_agent_readings_made", "lpr_agent_spool_items", "lpr_agent_uplink_channel",
            "lpr_agent_delivery_latency_seconds"} <= names
    r = subprocess.run([require_executable("promtool"), "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_two_agents_do_not_share_metrics() -> None:
    a, b = AgentMetrics(Sources()), AgentMetrics(Sources())
    a.spooled(Kind.HEALTH, 5)
    assert a.tally.get("spooled", "health") == 5 and b.tally.get("spooled", "health") == 0


def test_delivery_tap_counts_only_acked_items(tmp_path: Path) -> None:
    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"))
    try:
        metrics = AgentMetrics(Sources())
        tap = DeliveryTap(spool, metrics.delivered)
        spool.put_many([(Kind.DETECTION, {"event_id": f"d{i}"}) for i in range(3)]
                       + [(Kind.HEALTH, {"event_id": "h1", "component": "system"})])
        items = tap.lease(10)
        by_kind = {i.payload["event_id"]: i.id for i in items}
        tap.ack([by_kind["d0"], by_kind["h1"]])
        tap.nack([by_kind["d1"]], "server error")
        tap.release([by_kind["d2"]])
        assert metrics.tally.get("delivered", "detection") == 1
        assert metrics.tally.get("delivered", "health") == 1
        assert tap.stats().items == 2  # d1 backing off, d2 released: through to the spool
        again = tap.lease(10)  # d2 leased again and delivered: counted once, now
        tap.ack([i.id for i in again])
        assert metrics.tally.get("delivered", "detection") == 1 + len(again)
        text = generate_latest(metrics.registry).decode()
        assert (f'lpr_agent_delivery_latency_seconds_count{{kind="detection"}} '
                f'{1.0 + len(again)}') in text
    finally:
        spool.close()
