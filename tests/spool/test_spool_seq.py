"""``seq``: per kind, gap-free in put order, written into the stored JSON,
continued across restarts (also after the rows carrying the highest number
were acked); and the stored JSON handed out as it is (``payload_json``)."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

from lpr_agent.spool import Kind, Spool

from .conftest import config, detection, health, registration
from .test_spool_crash import fork


def seqs(spool: Spool, kind: Kind) -> list[int]:
    return [i.payload["seq"] for i in spool.list_items(10**6, kind=kind)]


def test_each_kind_counts_from_one_without_gaps(spool_factory) -> None:
    spool = spool_factory()
    d = [detection(i) for i in range(5)]
    h = [health(i) for i in range(3)]
    r = registration()
    spool.put(Kind.DETECTION, d[0])
    spool.put(Kind.HEALTH, h[0])
    spool.put_many([(Kind.DETECTION, d[1]), (Kind.HEALTH, h[1]), (Kind.DETECTION, d[2])])
    spool.put(Kind.REGISTRATION, r)
    spool.put_many([(Kind.DETECTION, d[3]), (Kind.DETECTION, d[4]), (Kind.HEALTH, h[2])])
    # The caller's dict gets its number too ...
    assert [p["seq"] for p in d] == [1, 2, 3, 4, 5] and [p["seq"] for p in h] == [1, 2, 3]
    assert "seq" not in r  # registrations are not readings
    # ... and the stored JSON has it.
    assert seqs(spool, Kind.DETECTION) == [1, 2, 3, 4, 5]
    assert seqs(spool, Kind.HEALTH) == [1, 2, 3]
    assert spool.stats().next_seq == {"detection": 6, "health": 4}


def test_a_callers_seq_is_replaced_not_duplicated(spool_factory) -> None:
    spool = spool_factory()
    p = detection(0)
    p["seq"] = 999
    item_id = spool.put(Kind.DETECTION, p)
    text = spool.get(item_id).payload_json
    assert text.count('"seq"') == 1 and json.loads(text)["seq"] == 1 and p["seq"] == 1


def test_seq_survives_restarts_even_when_everything_was_acked(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for round_ in range(3):
        spool = Spool.open(config(db, maintenance_interval_s=3600))
        spool.put_many([(Kind.DETECTION, detection(i)) for i in range(4)])
        p = detection(9)
        spool.put(Kind.DETECTION, p)
        assert p["seq"] == 5 * round_ + 5
        # Acked before any fold: the rows with the highest numbers are gone,
        # the number must not come back.
        spool.ack([i.id for i in spool.lease(100)])
        assert spool.stats().items == 0
        spool.close()


def test_seq_survives_a_sigkill_between_put_and_fold(tmp_path: Path) -> None:
    db, marker = tmp_path / "s.db", tmp_path / "done"

    def putter() -> None:
        spool = Spool.open(config(db, maintenance_interval_s=3600))
        for i in range(7):
            spool.put(Kind.HEALTH, health(i))
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork(putter)
    os.waitpid(pid, 0)
    assert marker.exists()
    spool = Spool.open(config(db))
    try:
        p = health(8)
        spool.put(Kind.HEALTH, p)
        assert p["seq"] == 8
        assert seqs(spool, Kind.HEALTH) == list(range(1, 9))
    finally:
        spool.close()


def test_a_dropped_reading_leaves_a_gap_the_server_can_see(spool_factory) -> None:
    spool = spool_factory(max_items=10, degrade_to=0.5, maintenance_interval_s=3600)
    spool.put_many([(Kind.DETECTION, detection(i)) for i in range(10)])
    spool.put(Kind.DETECTION, detection(10))  # over the cap: the 6 oldest go
    left = seqs(spool, Kind.DETECTION)
    assert left == [7, 8, 9, 10, 11]
    assert spool.stats().drops["detections_dropped"] == 6


def test_lease_hands_out_the_stored_text_and_decodes_only_on_demand(spool_factory) -> None:
    spool = spool_factory()
    p = detection(1, image_bytes=100)
    spool.put(Kind.DETECTION, p)
    [item] = spool.lease(1)
    assert "payload" not in item.__dict__  # not decoded by lease
    assert json.loads(item.payload_json) == p  # the caller's dict, seq included
    assert item.payload == p and item.payload is item.payload  # decoded once, cached
    assert item.size == len(item.payload_json)


def test_seq_stays_gap_free_with_random_puts_acks_and_restarts(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rng = random.Random(5)
    expected = {Kind.DETECTION: 0, Kind.HEALTH: 0}
    for _ in range(8):
        spool = Spool.open(config(db, maintenance_interval_s=rng.choice([0.001, 3600.0])))
        for _ in range(rng.randint(1, 30)):
            kind = rng.choice([Kind.DETECTION, Kind.HEALTH, Kind.REGISTRATION])
            payload = {Kind.DETECTION: detection, Kind.HEALTH: health,
                       Kind.REGISTRATION: registration}[kind](0)
            spool.put(kind, payload)
            if kind in expected:
                expected[kind] += 1
                assert payload["seq"] == expected[kind]
            if rng.random() < 0.3:
                spool.ack([i.id for i in spool.lease(rng.randint(1, 10))])
            if rng.random() < 0.1:
                spool.dead_letter([i.id for i in spool.lease(1)], "rejected")
        spool.close()


def test_a_version_1_spool_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "s.db"
    spool = Spool.open(config(db))
    old = [detection(i) for i in range(3)]
    spool.put_many([(Kind.DETECTION, p) for p in old])
    spool.close()
    conn = sqlite3.connect(db)  # what version 1 files look like: no seq anywhere
    conn.executescript(
        "DROP TABLE seqs; DROP TABLE drop_events; DROP TABLE salvages; "
        "UPDATE items SET payload = json_remove(payload, '$.seq'); PRAGMA user_version = 1;")
    conn.close()
    spool = Spool.open(config(db))
    try:
        assert [i.event_id for i in spool.list_items()] == [p["event_id"] for p in old]
        p = detection(9)
        spool.put(Kind.DETECTION, p)
        assert p["seq"] == 1
        assert spool._conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert spool.stats().salvages == [] and spool.check_counts() == {}
    finally:
        spool.close()
