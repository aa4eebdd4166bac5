"""Put / lease / ack / nack / release / dead letters on a real spool file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lpr_agent.spool import Kind, Spool, SpoolConfig

from .conftest import Clock, config, detection, health, registration


def ids(items: list) -> list[int]:
    return [i.id for i in items]


def test_put_returns_increasing_ids_and_roundtrips_payload(spool_factory, clock: Clock) -> None:
    spool = spool_factory(clock=clock)
    p = detection(1, image_bytes=64)
    first = spool.put(Kind.DETECTION, p)
    batch = spool.put_many([(Kind.DETECTION, detection(2)), ("health", health(3))])
    assert batch == [first + 1, first + 2]
    item = spool.get(first)
    assert item is not None
    assert item.payload == p and item.event_id == p["event_id"]
    assert item.kind is Kind.DETECTION and item.attempts == 0
    assert item.created_at == clock.now


def test_put_requires_event_id_and_batch_is_all_or_nothing(spool_factory) -> None:
    spool = spool_factory()
    with pytest.raises(ValueError, match="event_id"):
        spool.put(Kind.DETECTION, {"camera_id": "x"})
    with pytest.raises(ValueError):
        spool.put_many([(Kind.DETECTION, detection(1)), (Kind.DETECTION, {"no": "id"})])
    with pytest.raises(ValueError):
        spool.put(Kind("detection"), detection(1) | {"event_id": ""})
    assert spool.stats().items == 0
    assert spool.list_items() == []


def test_lease_order_health_newest_first_then_registration_then_fifo(spool_factory) -> None:
    spool = spool_factory()
    d1 = spool.put(Kind.DETECTION, detection(1))
    h1 = spool.put(Kind.HEALTH, health(1))
    d2 = spool.put(Kind.DETECTION, detection(2))
    r1 = spool.put(Kind.REGISTRATION, registration(1))
    h2 = spool.put(Kind.HEALTH, health(2, component="disk"))
    d3 = spool.put(Kind.DETECTION, detection(3))
    assert ids(spool.lease(4)) == [h2, h1, r1, d1]
    assert ids(spool.lease(10)) == [d2, d3]
    assert spool.lease(10) == []


def test_lease_filters_kinds_and_never_hands_out_a_leased_item_twice(spool_factory) -> None:
    spool = spool_factory()
    d = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(5)])
    h = spool.put(Kind.HEALTH, health())
    assert ids(spool.lease(2, kinds=[Kind.DETECTION])) == d[:2]
    assert ids(spool.lease(2, kinds=["detection"])) == d[2:4]
    assert ids(spool.lease(10, kinds=[Kind.HEALTH, Kind.REGISTRATION])) == [h]
    assert ids(spool.lease(10)) == [d[4]]
    assert spool.stats().in_flight == 6


def test_ack_deletes_durably_and_survives_reopen(tmp_path: Path) -> None:
    cfg = config(tmp_path / "s.db")
    spool = Spool.open(cfg)
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(4)])
    spool.ack(ids(spool.lease(2)))
    spool.close()
    spool = Spool.open(cfg)
    try:
        assert ids(spool.lease(10)) == put[2:]
        assert spool.check_counts() == {}
    finally:
        spool.close()


def test_nack_backs_off_with_full_jitter_and_does_not_block_the_rest(
    spool_factory, clock: Clock
) -> None:
    spool = spool_factory(clock=clock, backoff_base_s=2.0, backoff_cap_s=10.0)
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(3)])
    head = spool.lease(1)
    assert ids(head) == [put[0]]
    spool.nack([put[0]], "HTTP 503")
    # Head-of-line: the items behind the failing one go out now.
    assert ids(spool.lease(10)) == put[1:]
    item = spool.get(put[0])
    assert item is not None and item.attempts == 1 and item.last_error == "HTTP 503"
    assert item.next_attempt_at is not None
    assert clock.now <= item.next_attempt_at <= clock.now + 2.0
    assert spool.stats().backing_off == 1
    # Ceiling doubles per attempt up to the cap.
    seen_max = 0.0
    for attempt in range(2, 8):
        clock.advance(11.0)
        assert ids(spool.lease(1)) == [put[0]]
        spool.nack([put[0]], "again")
        item = spool.get(put[0])
        assert item is not None and item.attempts == attempt
        delay = item.next_attempt_at - clock.now
        assert 0.0 <= delay <= min(10.0, 2.0 * 2 ** (attempt - 1))
        seen_max = max(seen_max, delay)
    assert seen_max > 2.0  # jitter reaches beyond the first ceiling at some point
    assert spool.check_counts() == {}


def test_backoff_delay_distribution_is_full_jitter(spool_factory) -> None:
    spool = spool_factory(backoff_base_s=1.0, backoff_cap_s=8.0)
    samples = [spool.backoff_delay(3) for _ in range(2000)]  # ceiling 4 s
    assert min(samples) >= 0.0 and max(samples) <= 4.0
    assert min(samples) < 0.2 and max(samples) > 3.8  # spread over [0, ceiling]
    assert all(spool.backoff_delay(50) <= 8.0 for _ in range(100))  # capped


def test_max_attempts_moves_item_to_dead_letters(spool_factory, clock: Clock) -> None:
    spool = spool_factory(clock=clock, max_attempts=2, backoff_base_s=0.5, backoff_cap_s=1)
    item_id = spool.put(Kind.DETECTION, detection())
    for _ in range(2):
        clock.advance(5)
        assert ids(spool.lease()) == [item_id]
        spool.nack([item_id], "HTTP 500")
    assert spool.get(item_id) is None
    dead = spool.list_dead()
    assert [d.id for d in dead] == [item_id] and "2 attempts" in dead[0].reason
    assert spool.stats().dead_letters == 1


def test_lease_expiry_and_release(spool_factory, clock: Clock) -> None:
    spool = spool_factory(clock=clock)
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(3)])
    assert ids(spool.lease(2, lease_seconds=5)) == put[:2]
    assert ids(spool.lease(10, lease_seconds=5)) == [put[2]]
    spool.release([put[2]])
    assert ids(spool.lease(10)) == [put[2]]
    clock.advance(5.01)
    # Expired leases: ready again, no attempt counted.
    again = spool.lease(10)
    assert ids(again) == put[:2] and all(i.attempts == 0 for i in again)


def test_dead_letter_list_requeue_purge(spool_factory) -> None:
    spool = spool_factory()
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(4)])
    spool.lease(4)
    spool.dead_letter([put[1], put[2]], "error: Missing required field: camera_id")
    spool.ack([put[0], put[3]])
    st = spool.stats()
    assert st.items == 0 and st.dead_letters == 2 and st.counters["dead_lettered"] == 2
    assert [d.id for d in spool.list_dead()] == [put[1], put[2]]
    assert spool.get_dead(put[1]).reason.startswith("error:")
    assert spool.requeue_dead([put[2]]) == 1
    requeued = spool.lease(10)
    assert ids(requeued) == [put[2]] and requeued[0].attempts == 0
    assert spool.purge_dead() == 1
    st = spool.stats()
    assert st.dead_letters == 0 and st.counters["dead_purged"] == 1
    assert spool.check_counts() == {}


def test_requeued_dead_letter_keeps_its_place_in_creation_order(spool_factory) -> None:
    spool = spool_factory()
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(3)])
    spool.dead_letter([put[0]], "bad")
    spool.requeue_dead()
    assert ids(spool.lease(10)) == put


def test_listener_runs_after_commit_in_putting_thread(spool_factory) -> None:
    spool = spool_factory()
    seen: list[tuple[str, int]] = []

    def listener() -> None:
        seen.append((threading.current_thread().name, spool.stats().items))

    def broken() -> None:
        raise RuntimeError("listener bug must not fail the put")

    spool.add_listener(broken)
    spool.add_listener(listener)
    spool.put(Kind.DETECTION, detection())
    t = threading.Thread(target=spool.put_many, args=([(Kind.HEALTH, health())],), name="det")
    t.start()
    t.join()
    # The item is visible (committed) when the listener runs.
    assert seen == [("MainThread", 1), ("det", 2)]
    spool.remove_listener(listener)
    spool.put(Kind.DETECTION, detection())
    assert len(seen) == 2


def test_stats_are_cheap_and_exact(spool_factory, clock: Clock) -> None:
    import time

    spool = spool_factory(clock=clock)
    spool.put_many([(Kind.DETECTION, detection(i, image_bytes=100)) for i in range(300)])
    spool.put(Kind.HEALTH, health())
    clock.advance(42)
    leased = spool.lease(10, kinds=[Kind.DETECTION])
    spool.nack(ids(leased[:3]), "x")
    st = spool.stats()
    assert st.depth == {"detection": 300, "health": 1, "registration": 0}
    assert st.items == 301 and st.in_flight == 7 and st.backing_off == 3
    assert st.ready == 301 - 7 - 3
    assert st.oldest_age_s == pytest.approx(42)
    assert st.bytes == sum(i.size for i in spool.list_items(1000))
    t0 = time.perf_counter()
    for _ in range(50):
        spool.stats()
    assert (time.perf_counter() - t0) / 50 < 0.005  # "< 1 ms" with headroom for a busy CI


def test_closed_spool_refuses_work(spool_factory) -> None:
    spool = spool_factory()
    spool.close()
    spool.close()
    with pytest.raises(RuntimeError):
        spool.put(Kind.DETECTION, detection())


def test_config_rejects_cap_below_base() -> None:
    with pytest.raises(ValueError):
        SpoolConfig(backoff_base_s=10, backoff_cap_s=1)


def test_ack_stays_exact_when_leased_items_changed_or_vanished(spool_factory) -> None:
    spool = spool_factory(max_bytes=10**9)
    put = spool.put_many([(Kind.DETECTION, detection(i, image_bytes=2000)) for i in range(6)])
    spool.maintain()  # fold: the counts of these rows are now kept, not derived
    leased = spool.lease(6)
    # Images dropped while leased: the item shrank under the lease.
    spool.config = spool.config.model_copy(update={"max_bytes": spool.stats().bytes - 3000})
    spool.maintain()
    assert spool.stats().drops["images_dropped"] > 0
    spool.ack([i.id for i in leased[:3]])
    assert spool.check_counts() == {}
    # Another process (here: a second instance) acks one of ours meanwhile.
    other = spool_factory()
    other.ack([put[5]])
    other.close()
    spool.ack([i.id for i in leased[3:]] + [put[3]])  # a duplicate id, too
    assert spool.stats().items == 0
    assert spool.check_counts() == {}


def test_close_checkpoints_and_removes_the_wal_after_stats(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool.open(config(path))
    spool.put(Kind.DETECTION, detection())
    spool.stats()  # opens the second (read) connection
    spool.close()
    assert not path.with_name("s.db-wal").exists()
