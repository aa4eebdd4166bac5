"""/metrics of a real agent process: valid exposition (promtool), values that move,
and a Grafana dashboard that only names metrics that exist.

One agent run for the module (the model load is the slow part): a synthetic
camera passing two plates once, the real server stub, health every second.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.agent_process import REPO_ROOT, AgentProcess
from tests.helpers.prereq import require_executable
from tests.helpers.stub_process import StubProcess, free_port

pytestmark = pytest.mark.timeout(240)
DASHBOARD = REPO_ROOT / "packaging" / "grafana" / "lpr-agent.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(data: Samples, name: str, **labels: str) -> float:
    return data[(name, tuple(sorted(labels.items())))]


@dataclass
class Run:
    first: str  # exposition right after READY
    drained: str  # after both plates were delivered and the spool is empty
    url: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()
    with StubProcess(tmp / "stub.db") as stub:
        config = f"""\
[camera]
camera_id = "cam_m"
checkpoint_id = "cp_m"
[source]
url = "synthetic:?fps=10&plates=AB123CD,XY987ZT&once=1&seed=1"
[spool]
path = "{tmp / 'state' / 'spool.db'}"
synchronous = "NORMAL"
[uplink]
server_url = "{stub.url}"
[health]
interval_s = 1
clock_unsynced = "healthy"  # test machines may run without NTP
[daemon]
status_interval_s = 0.5
[metrics]
listen = "127.0.0.1:{port}"
"""
        url = f"http://127.0.0.1:{port}/metrics"
        with AgentProcess(tmp, config) as agent:
            agent.wait_message("READY=1", 120)
            first = scrape(url)

            def drained() -> str | None:
                text = scrape(url)
                data = samples(text)
                delivered = value(data, "lpr_agent_readings_delivered_total", kind="detection")
                waiting = sum(v for (n, lb), v in data.items() if n == "lpr_agent_spool_items"
                              and dict(lb)["kind"] == "detection")
                return text if delivered >= 2 and waiting == 0 else None

            text = agent.wait_for(drained, 120, "both readings delivered")
            yield Run(first=first, drained=text, url=url)


def test_exposition_passes_promtool(run: Run) -> None:
    promtool = require_executable("promtool")
    for text in (run.first, run.drained):
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_readings_made_equal_delivered_after_a_drain(run: Run) -> None:
    before, after = samples(run.first), samples(run.drained)
    made = value(after, "lpr_agent_readings_made_total", kind="detection")
    assert made == value(after, "lpr_agent_readings_delivered_total", kind="detection") == 2
    assert value(after, "lpr_agent_readings_spooled_total", kind="detection") == 2
    assert value(after, "lpr_agent_readings_spool_failures_total", kind="detection") == 0
    # one put->ack observation per delivered reading, one detector time per reading
    assert value(after, "lpr_agent_delivery_latency_seconds_count", kind="detection") == 2
    assert value(after, "lpr_agent_detection_latency_seconds_count") == 2
    assert 0 < value(after, "lpr_agent_delivery_latency_seconds_sum", kind="detection") < 60
    # the values moved between the scrapes
    assert value(before, "lpr_agent_readings_made_total", kind="detection") < 2
    assert (value(after, "lpr_agent_frames_processed_total")
            > value(before, "lpr_agent_frames_processed_total"))
    assert value(after, "lpr_agent_readings_delivered_total", kind="health") >= 5
    assert (value(after, "lpr_agent_readings_delivered_total", kind="health")
            <= value(after, "lpr_agent_readings_made_total", kind="health"))
    assert value(after, "lpr_agent_messages_sent_total") >= 7
    assert value(after, "lpr_agent_spool_dead_letters") == 0
    assert value(after, "lpr_agent_detector_max_fps") == 5.0


def test_link_and_identity(run: Run) -> None:
    data = samples(run.drained)
    channels = {dict(lb)["channel"]: v for (n, lb), v in data.items()
                if n == "lpr_agent_uplink_channel"}
    assert channels == {"socketio": 1, "rest": 0, "none": 0}
    assert value(data, "lpr_agent_uplink_connected") == 1
    info = [dict(lb) for (n, lb), v in data.items() if n == "lpr_agent_info" and v == 1]
    assert info and info[0]["camera_id"] == "cam_m" and info[0]["checkpoint_id"] == "cp_m"
    healthy = {dict(lb)["component"] for (n, lb), v in data.items()
               if n == "lpr_agent_health_status" and v == 1}
    assert healthy == {"camera", "detector", "spool", "uplink", "system"}


def test_grafana_dashboard_names_only_existing_metrics(run: Run) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {m for e in exprs for m in re.findall(r"\blpr_agent_[a-z0-9_]+", e)}
    exposed = {name for name, _ in samples(run.drained)}
    assert used and not used - exposed, f"not in a scrape: {sorted(used - exposed)}"
    assert len(dashboard["panels"]) >= 10


def test_metrics_can_be_disabled(tmp_path: Path) -> None:
    from lpr_agent.config import load_config

    cfg = tmp_path / "agent.toml"
    cfg.write_text('[metrics]\nlisten = ""\n')
    assert load_config(cfg, environ={}).metrics.listen == ""
    cfg.write_text('[metrics]\nlisten = "9108"\n')
    with pytest.raises(Exception, match="HOST:PORT"):
        load_config(cfg, environ={})
