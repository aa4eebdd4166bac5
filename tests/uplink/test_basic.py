"""Basic delivery over Socket.IO and REST against the real stub."""

from __future__ import annotations

import logging

from lpr_agent.identity import CameraIdentity
from lpr_agent.spool import Kind
from lpr_agent.uplink import Uplink, UplinkConfig
from tests.uplink.conftest import (
    CAMERA,
    assert_exactly_once,
    fast_config,
    new_health,
    put_detections,
    spool_empty,
    wait_until,
)


def test_drains_over_socketio_with_outcome_acks(stub, spool, run_uplink):
    ids = put_detections(spool, 200)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: spool_empty(spool), 30, "spool drained")
    st = up.stats()
    assert st.channel == "socketio"
    assert st.connected and st.ack_style == "outcome"
    assert st.acked == 200 and st.rejected == 0
    assert st.last_ack_at is not None and st.ack_latency_p50_ms is not None
    recs = stub.records()
    assert_exactly_once(recs, ids)
    assert [r["event_id"] for r in recs] == ids  # creation order, in arrival order
    assert {r["channel"] for r in recs} == {"socketio"}
    # Each new put wakes the uplink at once (listener), not on the next poll.
    hid = new_health(1)
    spool.put(Kind.HEALTH, hid)
    wait_until(lambda: any(h.get("event_id") == hid["event_id"]
                           for h in stub.health_records()), 5, "health stored")
    assert up.stop() < 3.0
    assert not up.stats().connected


def test_rest_only_when_socketio_blocked(stub, spool, run_uplink):
    stub.faults(block_socketio=True)
    ids = put_detections(spool, 50)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: spool_empty(spool), 30, "spool drained")
    st = up.stats()
    assert st.channel == "rest" and not st.connected
    recs = stub.records()
    assert_exactly_once(recs, ids)
    assert [r["event_id"] for r in recs] == ids  # creation order, in arrival order
    assert {r["channel"] for r in recs} == {"rest"}
    up.stop()


def test_health_does_not_wait_behind_detection_backlog(stub, spool, run_uplink):
    put_detections(spool, 3000)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: up.stats().acked > 200, 20, "backlog draining")
    h = new_health(7)
    spool.put(Kind.HEALTH, h)
    took = wait_until(lambda: any(x.get("event_id") == h["event_id"]
                                  for x in stub.health_records()), 5, "health stored", 0.02)
    backlog_left = spool.stats().depth["detection"]
    assert backlog_left > 0, "the backlog drained before the check: make it bigger"
    assert took < 1.0, f"health waited {took:.2f}s behind the detection backlog"
    up.stop()


def test_health_jumps_the_queue_on_a_slow_link(stub, spool, run_uplink):
    """REST at ~16 requests/s (server answers after 500 ms) with 1000 detections
    leased ahead into the uplink's buffer (no refill due for ~15 s): a new health
    snapshot goes next instead of waiting behind them."""
    stub.faults(block_socketio=True, ack_delay_ms=500)
    put_detections(spool, 1500)
    up = run_uplink(fast_config(stub.url, batch=1000))
    wait_until(lambda: up.stats().acked >= 8, 20, "backlog draining over REST")
    h = new_health(8)
    spool.put(Kind.HEALTH, h)
    took = wait_until(lambda: any(x.get("event_id") == h["event_id"]
                                  for x in stub.health_records()), 10, "health stored", 0.02)
    assert spool.stats().depth["detection"] > 0
    # a free slot (<= 0.5 s) plus its own 0.5 s, plus slack for a busy machine
    assert took < 1.6, f"health waited {took:.2f}s behind leased detections"
    up.stop()


def test_token_over_plain_http_is_warned_about_once_at_start(spool, caplog):
    caplog.set_level(logging.WARNING, logger="lpr_agent.uplink")
    identity = CameraIdentity(camera_id=CAMERA)
    Uplink(UplinkConfig(server_url="http://lpr:8765", token="s3cret"), identity, spool)
    warned = [m for m in caplog.messages if "without TLS" in m]
    assert len(warned) == 1 and "http://lpr:8765" in warned[0]
    assert "s3cret" not in warned[0]
    caplog.clear()
    Uplink(UplinkConfig(server_url="https://lpr:8765", token="s3cret"), identity, spool)
    Uplink(UplinkConfig(server_url="http://lpr:8765"), identity, spool)
    assert not [m for m in caplog.messages if "without TLS" in m]
