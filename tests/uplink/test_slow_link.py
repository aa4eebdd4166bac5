"""Field conditions (issue 12): the real uplink, with its shipped defaults,
through a shaped link (``tests/helpers/link_shaper.py`` in its own process)
to a real stub process.

A slow link must never be taken for a dead one (no flaps, no resends), a
frozen server on a fast idle link must still be noticed within 5 s, and a
link cut in the middle of a drain loses nothing. Drain speed is a benchmark
figure (``benchmarks/link_bench.py``), not asserted here.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lpr_agent.spool import Kind, Spool
from lpr_agent.uplink import UplinkConfig
from tests.helpers.link_shaper import LinkProfile, ShaperProcess
from tests.helpers.payloads import detection
from tests.helpers.stub_process import StubProcess
from tests.uplink.conftest import (
    CAMERA,
    assert_exactly_once,
    new_health,
    spool_empty,
    wait_until,
)

IMAGE_KB = 50


def with_image(seq: int, kb: int = IMAGE_KB) -> dict[str, Any]:
    image = base64.b64encode(os.urandom(kb * 1024 * 3 // 4)).decode()
    return detection(CAMERA, event_id=str(uuid.uuid4()), ocr_results=[f"IMG{seq:05d}"],
                     annotated_image=image)


def put_backlog(spool: Spool, n: int, start: int = 0) -> list[str]:
    items = [with_image(start + i) for i in range(n)]
    spool.put_many([(Kind.DETECTION, p) for p in items])
    return [p["event_id"] for p in items]


def flaps(st: Any) -> int:
    """Socket.IO link losses (every reconnect follows one) + switches to REST."""
    return max(0, st.sio_connects - 1) + st.fallback_switches


@pytest.fixture
def stub(tmp_path) -> Iterator[StubProcess]:
    with StubProcess(tmp_path / "stub.db", "--log-level", "WARNING") as s:
        yield s


def shaped(stub: StubProcess, rate_bps: float | None, latency_s: float,
           **kw: Any) -> ShaperProcess:
    return ShaperProcess(("127.0.0.1", stub.port),
                         LinkProfile.symmetric(rate_bps, latency_s, **kw), seed=12)


# A cellular link also jitters, and loses packets: TCP turns a loss into a
# stall of a retransmission timeout (~5 per MB here).
LOSSY = {"jitter_s": 0.03, "stall_prob": 0.005, "stall_s": 0.25}


@pytest.mark.parametrize("impairments", [{}, LOSSY], ids=["clean", "jitter+stalls"])
def test_image_backlog_over_a_slow_link_without_flaps_or_resends(stub, spool, run_uplink,
                                                                 impairments):
    # ~1 MB of 50 KB images over 2 Mbit/s with 100 ms each way: the old fixed
    # window (64 messages) and fixed 3 s ack timeout flapped on this.
    ids = put_backlog(spool, 20)
    with shaped(stub, 2_000_000, 0.1, **impairments) as link:
        up = run_uplink(UplinkConfig(server_url=f"http://127.0.0.1:{link.port}"))
        wait_until(lambda: spool_empty(spool), 60, "backlog drained through the slow link")
        st = up.stats()
        up.stop()
        if impairments:
            assert link.stats.stalls >= 1, "the link was not impaired"
    recs = stub.records()
    assert_exactly_once(recs, ids)
    assert [r["event_id"] for r in sorted(recs, key=lambda r: r["seq"])] == ids
    assert flaps(st) == 0, st
    assert st.acked == len(ids)
    retry_ratio = (st.sent - len(ids)) / len(ids)
    assert retry_ratio <= 0.05, st
    assert {r["channel"] for r in recs} == {"socketio"}


def test_health_is_not_stuck_behind_images_on_a_slow_link(stub, spool, run_uplink):
    ids = put_backlog(spool, 20)  # 4 s of images at 2 Mbit/s
    with shaped(stub, 2_000_000, 0.1) as link:
        up = run_uplink(UplinkConfig(server_url=f"http://127.0.0.1:{link.port}"))
        wait_until(lambda: up.stats().acked >= 2, 30, "drain under way")
        snapshot = new_health(1)
        spool.put(Kind.HEALTH, snapshot)
        wait_until(lambda: spool_empty(spool), 60, "backlog drained")
        up.stop()
    healths = stub.health_records()
    assert [h["event_id"] for h in healths] == [snapshot["event_id"]]
    # It went out within the byte window (a few images), not after the images
    # that were already leased: most of the backlog arrived after it.
    after = [r for r in stub.records() if r["received_at"] > healths[0]["received_at"]]
    assert len(after) >= 12, f"health arrived after {20 - len(after)} of 20 images"
    assert {r["event_id"] for r in stub.records()} == set(ids)


def test_frozen_server_on_an_idle_fast_link_is_noticed_within_5s(stub, spool, run_uplink):
    with shaped(stub, None, 0.005) as link:
        up = run_uplink(UplinkConfig(server_url=f"http://127.0.0.1:{link.port}"))
        first = put_backlog(spool, 3)  # the agent has been running: the link is measured
        wait_until(lambda: spool_empty(spool), 20, "first readings delivered")
        time.sleep(1.0)  # idle
        stub.freeze()
        try:
            ids = put_backlog(spool, 1, start=100)
            t0 = time.monotonic()
            wait_until(lambda: not up.stats().connected, 10, "frozen server noticed",
                       interval=0.01)
            noticed = time.monotonic() - t0
        finally:
            stub.thaw()
        wait_until(lambda: spool_empty(spool), 30, "reading delivered after the thaw")
        up.stop()
    assert noticed <= 5.0
    assert_exactly_once(stub.records(), first + ids)


@pytest.mark.slow
@pytest.mark.parametrize("blackhole", [False, True], ids=["reset", "blackhole"])
def test_link_cut_during_a_slow_drain_loses_nothing(stub, spool, run_uplink, blackhole):
    ids = put_backlog(spool, 12)
    with shaped(stub, 2_000_000, 0.1) as link:
        up = run_uplink(UplinkConfig(server_url=f"http://127.0.0.1:{link.port}"))
        wait_until(lambda: up.stats().acked >= 3, 30, "drain under way")
        link.drop(2.0, blackhole=blackhole)
        wait_until(lambda: spool_empty(spool), 90, "backlog drained after the cut")
        st = up.stats()
        up.stop()
    assert_exactly_once(stub.records(), ids)
    assert st.acked == len(ids)


@pytest.mark.slow
def test_handover_to_a_slower_cell_mid_drain_is_waited_for(stub, spool, run_uplink):
    # The link measured at 2 Mbit/s becomes 8x slower with images in flight:
    # their deadlines came from the old rate, but acks keep coming.
    ids = put_backlog(spool, 10)
    with shaped(stub, 2_000_000, 0.1) as link:
        up = run_uplink(UplinkConfig(server_url=f"http://127.0.0.1:{link.port}"))
        wait_until(lambda: up.stats().acked >= 4, 30, "drain under way at 2 Mbit/s")
        link.set_profile(LinkProfile.symmetric(256_000, 0.1))
        wait_until(lambda: spool_empty(spool), 60, "backlog drained at 256 kbit/s")
        st = up.stats()
        up.stop()
    assert_exactly_once(stub.records(), ids)
    assert flaps(st) == 0, st
    assert st.sent == len(ids), st
