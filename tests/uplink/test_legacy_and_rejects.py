"""Deployed-server quirks (stub --legacy), rejections, auth, the check verb."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lpr_agent.spool import Kind
from lpr_agent.uplink import Verdict, classify_http, classify_reply
from tests.helpers.stub_process import REPO_ROOT, StubProcess
from tests.uplink.conftest import (
    CAMERA,
    fast_config,
    new_detection,
    put_detections,
    spool_empty,
    wait_until,
)


@pytest.fixture
def legacy_stub(tmp_path):
    with StubProcess(tmp_path / "legacy.db", "--legacy", "--faults") as s:
        yield s


def test_legacy_server_all_arrive_duplicates_bounded_and_reported(legacy_stub, spool, run_uplink):
    ids = put_detections(spool, 300)
    up = run_uplink(fast_config(legacy_stub.url))
    wait_until(lambda: up.stats().acked > 20, 15, "first acks")
    st = up.stats()
    assert st.ack_style == "legacy" and st.channel == "socketio"
    for _ in range(5):  # outages with a message in flight
        legacy_stub.faults(drop_connections=True)
        time.sleep(0.3)
    wait_until(lambda: spool_empty(spool), 60, "drained")
    recs = legacy_stub.records()
    stored = [r.get("event_id") for r in recs]
    assert set(ids) <= set(stored), "events lost"
    # Creation order: a resend after a dropped link may store a reading a
    # second time, later; first arrivals are exactly in creation order.
    assert list(dict.fromkeys(stored)) == ids
    extra = len(stored) - len(set(stored))
    st = up.stats()
    # No event_id dedup on a deployed server: a duplicate can only come from
    # a message resent after an unknown outcome, one in flight at a time.
    assert extra <= st.possible_duplicates, (extra, st)
    assert st.possible_duplicates <= 5 * 1 + st.fallback_switches
    assert st.rejected == 0
    up.stop()


def test_legacy_connect_event_and_empty_acks_over_check(legacy_stub):
    # --register: the ack style is learnt from the camera_register ack.
    r = subprocess.run([sys.executable, "-m", "lpr_agent", "check", "--server", legacy_stub.url,
                        "--register", "--json"], capture_output=True, text=True, cwd=REPO_ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"ack_style": "legacy"' in r.stdout
    assert "quirk 5" in r.stdout


def test_check_verdicts(tmp_path):
    with StubProcess(tmp_path / "tok.db", token="s3cret") as stub:
        ok = subprocess.run([sys.executable, "-m", "lpr_agent", "check", "--server", stub.url,
                             "--token", "s3cret", "--register"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "ack style: outcome" in ok.stdout and "auth: accepted" in ok.stdout
        bad = subprocess.run([sys.executable, "-m", "lpr_agent", "check", "--server", stub.url,
                              "--token", "wrong"], capture_output=True, text=True,
                             cwd=REPO_ROOT, timeout=60)
        assert bad.returncode == 2 and "auth: refused" in bad.stdout, bad.stdout
    down = subprocess.run([sys.executable, "-m", "lpr_agent", "check", "--server", stub.url,
                           "--timeout", "1"], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)
    assert down.returncode == 2 and "not reachable" in down.stdout, down.stdout


@pytest.mark.parametrize("mode", ["socketio", "rest", "legacy-socketio", "legacy-rest"])
def test_invalid_messages_are_dead_lettered_with_reason(tmp_path, spool, run_uplink, mode):
    args = ("--faults", "--legacy") if mode.startswith("legacy") else ("--faults",)
    with StubProcess(tmp_path / "rej.db", *args) as stub:
        if mode.endswith("rest"):
            stub.faults(block_socketio=True)
        good = put_detections(spool, 5)
        bad = new_detection(99)
        del bad["timestamp"]  # a required field
        spool.put(Kind.DETECTION, bad)
        good += put_detections(spool, 5, start=100)
        up = run_uplink(fast_config(stub.url))
        wait_until(lambda: spool_empty(spool), 20, "drained")
        st = up.stats()
        assert st.rejected == 1 and st.acked == 10
        dead = spool.list_dead()
        assert len(dead) == 1 and dead[0].event_id == bad["event_id"]
        assert "timestamp" in dead[0].reason, dead[0].reason
        stored = [r["event_id"] for r in stub.records()]
        assert stored == good  # in creation order; the bad one is not stored
        up.stop()


def test_wrong_token_is_not_dead_lettered(tmp_path, spool, run_uplink):
    with StubProcess(tmp_path / "auth.db", token="s3cret") as stub:
        first = put_detections(spool, 5)
        up = run_uplink(fast_config(stub.url, token="wrong"))
        wait_until(lambda: up.stats().auth_failed, 10, "auth failure reported")
        time.sleep(0.5)
        assert spool.stats().dead_letters == 0 and spool.stats().items == 5
        up.stop()
        ids = put_detections(spool, 3, start=50)
        up = run_uplink(fast_config(stub.url, token="s3cret"))
        wait_until(lambda: spool_empty(spool), 15, "drained with the right token")
        assert not up.stats().auth_failed and up.stats().channel == "socketio"
        assert [r["event_id"] for r in stub.records()] == first + ids
        up.stop()


def test_rest_registration_quirk_keeps_detections_flowing(tmp_path, spool, run_uplink):
    """Deployed server after a REST registration: Socket.IO register answers
    error 'clients' (quirk 8). The uplink must not dead-letter stored
    detections nor resend them blindly: it stays on REST, where all is fine."""
    with StubProcess(tmp_path / "q8.db", "--legacy") as stub:
        r = stub.post("/api/cameras/register", json={"camera_id": CAMERA,
                                                     "checkpoint_id": "checkpoint_001"})
        assert r.status_code == 200
        ids = put_detections(spool, 20)
        up = run_uplink(fast_config(stub.url))
        wait_until(lambda: spool_empty(spool), 20, "drained")
        st = up.stats()
        assert st.channel == "rest" and st.rejected == 0
        assert "clients" in (st.last_error or "")
        recs = stub.records()
        assert [r["event_id"] for r in recs] == ids
        up.stop()


def test_classification_of_server_answers():
    # Pure decision table; the behaviour behind it is exercised above.
    assert classify_reply({"success": True}).verdict is Verdict.DELIVERED
    assert classify_reply({"success": False, "duplicate": True}).verdict is Verdict.DELIVERED
    assert classify_reply({"message": "Missing required field: type"}).verdict is Verdict.REJECTED
    quirk = classify_reply({"message": "'detections'"})
    assert quirk.verdict is Verdict.REJECTED and quirk.maybe_stored
    assert classify_reply({"message": "Internal server error: x"}).verdict is Verdict.RETRY
    assert classify_http(200, {"success": True}, "").verdict is Verdict.DELIVERED
    assert classify_http(200, None, "<html>portal</html>").verdict is Verdict.RETRY
    assert classify_http(400, {"message": "Missing required field: x"}, "").verdict \
        is Verdict.REJECTED
    assert classify_http(401, None, "").verdict is Verdict.AUTH
    assert classify_http(500, {"message": "400 Bad Request: not JSON"}, "").verdict \
        is Verdict.REJECTED
    assert classify_http(503, None, "").verdict is Verdict.RETRY


def test_registers_over_rest_only_once_socketio_stays_unavailable(stub, spool, run_uplink):
    def cameras() -> set[str]:
        # registered_at is set only by a registration (detections alone list
        # the camera with registered_at null)
        return {c["camera_id"] for c in stub.get("/api/cameras").json()["cameras"]
                if c.get("registered_at")}

    stub.faults(block_socketio=True)
    put_detections(spool, 5)
    up = run_uplink(fast_config(stub.url, rest_register_after_s=2.0))
    wait_until(lambda: spool_empty(spool), 10, "drained over REST")
    assert CAMERA not in cameras(), "registered over REST before rest_register_after_s"
    wait_until(lambda: CAMERA in cameras(), 10, "REST registration after the delay")
    assert up.stats().channel == "rest"
    up.stop()


def test_backoff_has_full_proportional_jitter():
    from lpr_agent.backoff import full_jitter as backoff_delay

    for failures, ceiling in ((1, 0.5), (2, 1.0), (4, 4.0), (10, 15.0), (50, 15.0)):
        values = [backoff_delay(failures, 0.5, 15.0) for _ in range(2000)]
        assert all(0.0 <= v <= ceiling for v in values)
        # spread over the whole interval, not clustered around the nominal delay
        assert min(values) < 0.1 * ceiling and max(values) > 0.9 * ceiling
