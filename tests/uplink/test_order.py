"""Creation order through server 5xx bursts, exactly (no tolerance).

Real stub process (``--faults``: ``fail_next`` makes the next N messages
fail with HTTP 500 / an ``error`` reply, not stored), real spool, real
sockets. Per channel: Socket.IO with the outcome-ack window (64), the legacy
server (one in flight), REST (one request in flight), and mixed (Socket.IO
dies mid-burst, REST carries, back). See ``order.py`` for what is exact in
arrival order and in the camera's ``seq`` listing.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from lpr_agent.spool import Kind, Spool, SpoolConfig
from tests.helpers.stub_process import StubProcess
from tests.uplink.conftest import (
    CAMERA,
    RunningUplink,
    assert_exactly_once,
    fast_config,
    new_detection,
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

WINDOW = 64
CHANNELS = ["socketio", "legacy", "rest"]


@pytest.fixture
def order_stub(tmp_path, request):
    args = ("--faults", "--legacy") if request.param == "legacy" else ("--faults",)
    with StubProcess(tmp_path / "order.db", *args) as stub:
        if request.param == "rest":
            stub.faults(block_socketio=True)
        yield request.param, stub


@pytest.fixture
def failures(caplog):
    """event_ids that got a 5xx, from the uplink's DEBUG lines."""
    caplog.set_level(logging.DEBUG, logger="lpr_agent.uplink.applier")
    return lambda: retried_event_ids(caplog.messages)


def _producer(spool, n: int, every_s: float,
              until: threading.Event | None = None) -> tuple[threading.Thread, list[str]]:
    """Put n readings, one every ``every_s`` (and on, while ``until`` is not set)."""
    ids: list[str] = []

    def run() -> None:
        i = 0
        while i < n or (until is not None and not until.is_set()):
            p = new_detection(20_000 + i)
            spool.put(Kind.DETECTION, p)
            ids.append(p["event_id"])
            i += 1
            time.sleep(every_s)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, ids


def _window(mode: str) -> int:
    return WINDOW if mode == "socketio" else 1


@pytest.mark.parametrize(("order_stub", "fails"),
                         [("socketio", 2), ("socketio", 70), ("legacy", 5), ("rest", 5)],
                         indirect=["order_stub"])
def test_5xx_burst_during_backlog_exact_order(order_stub, spool, run_uplink, fails):
    """The first ``fails`` arrivals fail. Exactly: the readings in flight
    behind the failed ones (already sent, not recallable) are stored first,
    then the failed ones one at a time in creation order (a resend that fails
    again included), then the rest in order. ``fails=70`` outlasts a window of
    64: the resent oldest reading fails again and again, and nothing passes it."""
    mode, stub = order_stub
    stub.faults(fail_next=fails, fail_status=500)
    ids = put_detections(spool, 300)
    up = run_uplink(fast_config(stub.url, window=WINDOW))
    wait_until(lambda: spool_empty(spool), 90, "drained despite the 500s")
    assert stub.faults()["injected_failures"] == fails
    arrived = [r["event_id"] for r in stub.records()]
    assert_exactly_once(stub.records(), ids)
    tail = arrived.index(ids[0])  # stored while the oldest was being failed
    end = (fails + tail) if tail else 0
    expected = ids[fails:end] + ids[:fails] + ids[end:] if tail else ids
    assert arrived == expected, first_difference(expected, arrived)
    assert end <= _window(mode), f"{end} readings were in flight with a window of {_window(mode)}"
    assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)
    st = up.stats()
    assert st.rejected == 0 and st.retried >= fails
    assert st.channel == ("rest" if mode == "rest" else "socketio")
    up.stop()


@pytest.mark.parametrize("order_stub", CHANNELS, indirect=True)
def test_5xx_bursts_during_live_readings_exact_order(order_stub, spool, run_uplink, failures):
    mode, stub = order_stub
    backlog = put_detections(spool, 100)
    up = run_uplink(fast_config(stub.url, window=WINDOW))
    bursts_done = threading.Event()
    producer, live = _producer(spool, 150, 0.01, until=bursts_done)
    for burst in range(1, 5):
        time.sleep(0.3)
        stub.faults(fail_next=3, fail_status=500)
        # (a new fail_next replaces the old: let each burst be used up by
        # the readings still being made)
        wait_until(lambda b=burst: stub.faults()["injected_failures"] == 3 * b, 20,
                   "the burst used up")
    bursts_done.set()
    producer.join()
    wait_until(lambda: spool_empty(spool), 60, "drained")
    assert stub.faults()["injected_failures"] == 12
    ids = backlog + live
    records = stub.records()
    assert_exactly_once(records, ids)
    arrived = [r["event_id"] for r in records]
    retried = failures()
    assert retried, "no 5xx was seen by the uplink"
    if mode == "socketio":
        assert_arrival_stop_and_wait(arrived, ids, retried)
    else:  # one in flight: arrival is creation order itself
        assert arrived == ids, first_difference(ids, arrived)
    assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)
    up.stop()


def test_socketio_dies_mid_burst_rest_carries_and_back_exact_order(stub, spool, run_uplink,
                                                                   failures):
    backlog = put_detections(spool, 400)
    up = run_uplink(fast_config(stub.url, window=WINDOW))
    wait_until(lambda: up.stats().acked > 50, 20, "draining over Socket.IO")
    producer, live = _producer(spool, 200, 0.01)
    stub.faults(fail_next=6, fail_status=500)
    time.sleep(0.05)
    stub.faults(block_socketio=True)  # dies in the middle of the burst
    wait_until(lambda: up.stats().channel == "rest", 10, "REST carries")
    stub.faults(fail_next=4, fail_status=503)
    time.sleep(1.0)
    stub.faults(block_socketio=False)
    wait_until(lambda: up.stats().channel == "socketio", 10, "back on Socket.IO")
    producer.join()
    wait_until(lambda: spool_empty(spool), 60, "drained")
    ids = backlog + live
    records = stub.records()
    assert_exactly_once(records, ids)
    assert {"rest", "socketio"} <= {r["channel"] for r in records}
    assert_arrival_stop_and_wait([r["event_id"] for r in records], ids, failures())
    assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)
    assert up.stats().rejected == 0
    up.stop()


class _Ceiling(random.Random):
    """The spool's jitter at its ceiling: a nack backs off exactly base * 2**(n-1)."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_keep_order_false_lets_younger_readings_pass_a_failing_one(tmp_path, stub, caplog):
    """The explicit escape: after in_order_retries the failing reading waits
    out its own spool backoff (5 s here), younger ones pass it, the log says
    so, and the camera's listing (seq) still gives creation order."""
    caplog.set_level(logging.WARNING, logger="lpr_agent.uplink")
    stub.faults(block_socketio=True)
    stub.faults(fail_next=2, fail_status=500)  # the oldest reading fails twice
    spool = Spool.open(SpoolConfig(path=tmp_path / "escape.db", synchronous="NORMAL",
                                   backoff_base_s=5.0, backoff_cap_s=5.0), rng=_Ceiling())
    try:
        ids = put_detections(spool, 20)
        up = RunningUplink(fast_config(stub.url, keep_order=False, in_order_retries=1),
                           spool).start()
        try:
            wait_until(lambda: len(stub.records()) == 19, 20, "the younger readings")
            arrived = [r["event_id"] for r in stub.records()]
            assert arrived == ids[1:], first_difference(ids[1:], arrived)
            wait_until(lambda: spool_empty(spool), 20, "the failing reading, after its backoff")
        finally:
            up.stop()
        assert [r["event_id"] for r in stub.records()] == ids[1:] + ids[:1]
        assert_listing_in_creation_order(stub.records(camera_id=CAMERA), ids)
    finally:
        spool.close()
    assert any("younger readings now pass it" in m for m in caplog.messages)
    assert any("keep_order = false" in m for m in caplog.messages)
