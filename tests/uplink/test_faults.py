"""Delivery survives server faults: every event stored exactly once, none lost.

Real stub process, real sockets, real spool; faults through the stub's
``/admin/faults`` API and signals (SIGSTOP/SIGCONT, restarts).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from lpr_agent.spool import Kind
from tests.helpers.stub_process import StubProcess
from tests.uplink.conftest import (
    CAMERA,
    assert_exactly_once,
    fast_config,
    new_detection,
    new_health,
    put_detections,
    spool_empty,
    wait_until,
)
from tests.uplink.order import (
    assert_arrival_stop_and_wait,
    assert_listing_in_creation_order,
    first_difference,
    retried_event_ids,
)


def assert_exact_order(stub: StubProcess, ids: list[str]) -> None:
    """No 5xx in the test: arrival is creation order itself, and so is the
    camera's listing by seq."""
    arrived = [r["event_id"] for r in stub.records()]
    assert arrived == ids, first_difference(ids, arrived)
    assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)


def _producer(spool, n: int, every_s: float) -> tuple[threading.Thread, list[str]]:
    """Put n detections over time from another thread (as the detector does)."""
    ids: list[str] = []

    def run() -> None:
        for i in range(n):
            p = new_detection(10_000 + i)
            spool.put(Kind.DETECTION, p)
            ids.append(p["event_id"])
            time.sleep(every_s)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, ids


def test_server_down_at_start_then_up_in_creation_order(tmp_path, spool, run_uplink):
    stub = StubProcess(tmp_path / "stub.db", "--faults")
    det_ids: list[str] = []
    health_ids: list[str] = []
    up = run_uplink(fast_config(stub.url))
    for i in range(150):  # interleaved kinds, spooled while the server is down
        d = new_detection(i)
        spool.put(Kind.DETECTION, d)
        det_ids.append(d["event_id"])
        if i % 50 == 0:
            h = new_health(i)
            spool.put(Kind.HEALTH, h)
            health_ids.append(h["event_id"])
    time.sleep(2.0)
    st = up.stats()
    assert st.acked == 0 and st.channel == "none" and spool.stats().items == 153
    assert up.uplink.heartbeat > time.monotonic() - 2, "loop must keep turning while offline"
    with stub:
        wait_until(lambda: spool_empty(spool), 30, "backlog drained after the server came up")
        recs = stub.records()
        healths = stub.health_records()
        listed = stub.records(camera_id=CAMERA)
    assert_exactly_once(recs, det_ids)
    assert_exactly_once(healths, health_ids)
    # Creation order per kind, in arrival order itself (the stub lists in
    # arrival order without a camera filter).
    assert [r["event_id"] for r in recs] == det_ids
    assert [h["event_id"] for h in healths] == health_ids
    assert_listing_in_creation_order(listed, det_ids)
    assert {r["channel"] for r in recs} == {"socketio"}
    up.stop()


def test_server_restarted_ten_times_during_drain(stub, spool, run_uplink):
    ids = put_detections(spool, 600)
    up = run_uplink(fast_config(stub.url))
    producer, live_ids = _producer(spool, 200, 0.02)
    for _ in range(10):
        time.sleep(0.4)
        stub.restart(kill=True)  # crash-restart: same port, same database
    producer.join()
    wait_until(lambda: spool_empty(spool), 60, "drained after restarts")
    assert_exactly_once(stub.records(), ids + live_ids)
    assert_exact_order(stub, ids + live_ids)
    st = up.stats()
    assert st.sio_connects >= 2
    assert st.rejected == 0
    up.stop()


@pytest.mark.slow
def test_server_frozen_30s(stub, spool, run_uplink):
    ids = put_detections(spool, 300)
    up = run_uplink(fast_config(stub.url))
    producer, live_ids = _producer(spool, 300, 0.1)  # keeps producing during the freeze
    time.sleep(0.5)
    stub.freeze()
    try:
        time.sleep(30)
        hb_age = time.monotonic() - up.uplink.heartbeat
        assert hb_age < 2, f"loop stalled while the server was frozen ({hb_age:.1f}s)"
    finally:
        stub.thaw()
    producer.join()
    wait_until(lambda: spool_empty(spool), 60, "drained after thaw")
    assert_exactly_once(stub.records(), ids + live_ids)
    assert_exact_order(stub, ids + live_ids)
    assert up.stats().rejected == 0
    up.stop()


# REST carries one request at a time, so after the first 500 every further
# one hits the same resent reading, each after a pause: fewer, or the test
# spends a minute in pauses.
@pytest.mark.parametrize(("channel", "fails"), [("socketio", 40), ("rest", 10)])
def test_server_returning_500s(stub, spool, run_uplink, channel, fails, caplog):
    caplog.set_level(logging.DEBUG, logger="lpr_agent.uplink.applier")
    if channel == "rest":
        stub.faults(block_socketio=True)
    stub.faults(fail_next=fails, fail_status=500)
    ids = put_detections(spool, 200)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: spool_empty(spool), 60, "drained despite 500s")
    assert stub.faults()["injected_failures"] == fails
    assert_exactly_once(stub.records(), ids)
    arrived = [r["event_id"] for r in stub.records()]
    assert_arrival_stop_and_wait(arrived, ids, retried_event_ids(caplog.messages))
    assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)
    st = up.stats()
    assert st.retried >= fails and st.rejected == 0
    assert st.channel == channel
    up.stop()


def test_server_withholding_acks(stub, spool, run_uplink):
    """Stored but never acked over Socket.IO: REST takes over, dedup keeps it once."""
    ids = put_detections(spool, 300)
    stub.faults(withhold_acks=True)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: up.stats().acked > 0, 10, "delivery over REST while acks are withheld")
    assert up.stats().channel == "rest"
    more = put_detections(spool, 100, start=300)
    time.sleep(1.0)
    stub.faults(withhold_acks=False)
    wait_until(lambda: spool_empty(spool), 30, "drained")
    wait_until(lambda: up.stats().channel == "socketio", 10, "back on Socket.IO")
    assert_exactly_once(stub.records(), ids + more)
    assert_exact_order(stub, ids + more)
    st = up.stats()
    assert st.fallback_switches >= 1 and st.rejected == 0
    up.stop()


def test_server_stalling_everything(stub, spool, run_uplink):
    """Everything held (both channels) for a while, then answered late."""
    ids = put_detections(spool, 200)
    up = run_uplink(fast_config(stub.url))
    wait_until(lambda: up.stats().acked > 0, 10, "first acks")
    stub.faults(stall=True)
    more = put_detections(spool, 100, start=200)
    time.sleep(5)
    stub.faults(stall=False)
    wait_until(lambda: spool_empty(spool), 30, "drained after the stall")
    assert_exactly_once(stub.records(), ids + more)
    assert_exact_order(stub, ids + more)
    up.stop()


def test_server_dropping_connections(stub, spool, run_uplink):
    ids = put_detections(spool, 1500)
    up = run_uplink(fast_config(stub.url))
    producer, live_ids = _producer(spool, 100, 0.02)
    for _ in range(8):
        time.sleep(0.3)
        stub.faults(drop_connections=True)
    producer.join()
    wait_until(lambda: spool_empty(spool), 60, "drained")
    assert_exactly_once(stub.records(), ids + live_ids)
    assert_exact_order(stub, ids + live_ids)
    st = up.stats()
    assert st.sio_connects >= 2 and st.rejected == 0
    up.stop()


def test_fallback_to_rest_and_back(stub, spool, run_uplink):
    cfg = fast_config(stub.url)
    up = run_uplink(cfg)
    wait_until(lambda: up.stats().connected, 10, "Socket.IO up")
    producer, ids = _producer(spool, 250, 0.02)
    time.sleep(1.0)
    stub.faults(block_socketio=True)
    t_block = time.monotonic()
    wait_until(lambda: up.stats().channel == "rest", cfg.ack_timeout_s + 1, "switch to REST")
    acked = up.stats().acked
    wait_until(lambda: up.stats().acked > acked, cfg.ack_timeout_s + 1, "acks over REST")
    assert time.monotonic() - t_block < cfg.ack_timeout_s + 1.5
    time.sleep(1.0)
    stub.faults(block_socketio=False)
    wait_until(lambda: up.stats().channel == "socketio", 5, "back on Socket.IO")
    producer.join()
    wait_until(lambda: spool_empty(spool), 30, "drained")
    recs = stub.records()
    assert_exactly_once(recs, ids)
    assert_exact_order(stub, ids)
    assert {"rest", "socketio"} <= {r["channel"] for r in recs}
    st = up.stats()
    assert st.fallback_switches >= 1
    # the last ones went over Socket.IO again
    assert recs[-1]["channel"] == "socketio"
    up.stop()
