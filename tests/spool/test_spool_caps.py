"""Caps, the degradation order, the free-disk threshold and giving file space back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lpr_agent.spool import Kind

from .conftest import detection, health


def drops(spool) -> dict[str, int]:
    return spool.stats().drops


def test_byte_cap_drops_images_of_oldest_detections_first(spool_factory) -> None:
    spool = spool_factory(max_bytes=60_000, degrade_to=0.9)
    put = [spool.put(Kind.DETECTION, detection(i, image_bytes=1500)) for i in range(40)]
    st = spool.stats()
    assert st.bytes <= 60_000
    assert drops(spool)["images_dropped"] > 0
    assert drops(spool)["health_coalesced"] == 0 and drops(spool)["detections_dropped"] == 0
    items = spool.list_items(100)
    assert [i.id for i in items] == put  # nothing dropped, only images
    stripped = [i for i in items if i.payload.get("images_dropped")]
    kept = [i for i in items if "annotated_image" in i.payload]
    assert stripped and kept
    # Oldest first: every stripped item is older than every item with images.
    assert max(i.id for i in stripped) < min(i.id for i in kept)
    for i in stripped:
        assert "annotated_image" not in i.payload and "cropped_plates" not in i.payload
        assert i.payload["ocr_results"] and i.payload["plate_detections"]  # text and boxes stay
    assert spool.check_counts() == {}


def test_degradation_order_images_then_health_then_oldest_detections(spool_factory) -> None:
    spool = spool_factory(max_bytes=10**9, max_items=10**6, health_keep_per_component=2,
                          max_health_items=10**6)
    det = spool.put_many([(Kind.DETECTION, detection(i, image_bytes=800)) for i in range(30)])
    hl = spool.put_many([(Kind.HEALTH, health(i, component=c))
                         for i in range(10) for c in ("camera", "disk")])
    total = spool.stats().bytes

    # 1. A byte cap that images alone can satisfy: only images go.
    spool.config = spool.config.model_copy(update={"max_bytes": total - 5000, "degrade_to": 1.0})
    spool.maintain()
    d = drops(spool)
    assert 0 < d["images_dropped"] < 30 and d["health_coalesced"] == 0
    assert d["detections_dropped"] == 0

    # 2. An item cap: images cannot help; old health goes before any detection.
    n_items = spool.stats().items
    spool.config = spool.config.model_copy(
        update={"max_items": n_items - 10})
    spool.maintain()
    d = drops(spool)
    assert d["health_coalesced"] == 16 and d["detections_dropped"] == 0
    left_health = [i.id for i in spool.list_items(100, kind=Kind.HEALTH)]
    assert left_health == sorted(hl[-4:])  # the newest 2 per component

    # 3. Tighter still: the oldest detections go, the newest stay, FIFO intact.
    spool.config = spool.config.model_copy(update={"max_items": 14})
    spool.maintain()
    d = drops(spool)
    assert d["detections_dropped"] == 20
    assert [i.id for i in spool.list_items(100, kind=Kind.DETECTION)] == det[-10:]
    st = spool.stats()
    assert st.items == 14
    assert spool.check_counts() == {}
    assert [i.id for i in spool.lease(100)] == [*sorted(hl[-4:], reverse=True), *det[-10:]]


def test_too_many_health_snapshots_are_coalesced_below_the_caps(spool_factory) -> None:
    spool = spool_factory(max_health_items=5, health_keep_per_component=1)
    hl = [spool.put(Kind.HEALTH, health(i, component=f"c{i % 2}")) for i in range(8)]
    spool.maintain()
    assert [i.id for i in spool.lease(10)] == [hl[7], hl[6]]
    assert drops(spool)["health_coalesced"] == 6


def test_item_cap_is_enforced_on_put_without_waiting_for_the_timer(spool_factory) -> None:
    spool = spool_factory(max_items=100, degrade_to=0.5, maintenance_interval_s=3600)
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(100)])
    assert drops(spool)["detections_dropped"] == 0
    spool.put(Kind.DETECTION, detection(100))  # crosses the cap
    st = spool.stats()
    assert st.items == 50 and drops(spool)["detections_dropped"] == 51
    assert spool.list_items(1)[0].id == put[51]


def test_low_free_disk_triggers_the_same_degradation(spool_factory) -> None:
    # A threshold above any real disk: with no floor the spool sheds everything
    # it may, in order, and counts each step (the only deterministic setting on
    # a shared disk).
    spool = spool_factory(min_free_disk_bytes=2**62, disk_check_interval_s=3600,
                          shed_floor_items=0)
    spool.put_many([(Kind.DETECTION, detection(i, image_bytes=500)) for i in range(10)])
    spool.put_many([(Kind.HEALTH, health(i)) for i in range(5)])
    spool.maintain(force_disk_check=True)
    d = drops(spool)
    assert d["images_dropped"] == 10 and d["health_coalesced"] == 2
    assert d["detections_dropped"] == 10
    st = spool.stats()
    assert st.depth == {"detection": 0, "health": 3, "registration": 0}
    assert st.free_disk_bytes is not None and st.free_disk_bytes > 0


def test_disk_check_is_rate_limited(spool_factory) -> None:
    spool = spool_factory(min_free_disk_bytes=1, disk_check_interval_s=3600,
                          maintenance_interval_s=0.001)
    first = spool.free_disk_bytes
    assert first is not None
    # Fill the disk a bit: a non-rate-limited check would see a different figure.
    big = Path(spool.path).with_name("filler")
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    os.fsync(os.open(big, os.O_RDONLY))
    for i in range(20):
        spool.put(Kind.DETECTION, detection(i))
    assert spool.free_disk_bytes == first


def test_file_space_is_given_back_after_a_backlog_drains(spool_factory) -> None:
    spool = spool_factory(vacuum_min_free_bytes=1024 * 1024)
    for start in range(0, 1200, 200):
        spool.put_many([(Kind.DETECTION, detection(i, image_bytes=6000))
                        for i in range(start, start + 200)])
    full = spool.stats().file_bytes
    assert full > 8 * 1024 * 1024
    while items := spool.lease(200):
        spool.ack([i.id for i in items])
    for _ in range(10):  # bounded work per run; a few runs give everything back
        spool.maintain()
    st = spool.stats()
    assert st.items == 0
    assert st.file_bytes < 1024 * 1024, st.file_bytes
    spool.close()
    # The file on disk shrank too (the WAL was checkpointed into it at close).
    assert Path(spool.path).stat().st_size < 1024 * 1024


def test_a_full_disk_on_put_degrades_and_the_put_succeeds(spool_factory) -> None:
    spool = spool_factory(max_bytes=10**9, vacuum_min_free_bytes=0)
    put = spool.put_many([(Kind.DETECTION, detection(i, image_bytes=3000)) for i in range(200)])
    spool.maintain()
    # The file may not grow: what a full disk looks like to SQLite (SQLITE_FULL).
    pages = spool._conn.execute("PRAGMA page_count").fetchone()[0]
    spool._conn.execute(f"PRAGMA max_page_count = {pages}")
    extra = [spool.put(Kind.DETECTION, detection(1000 + i, image_bytes=3000)) for i in range(5)]
    assert all(spool.get(i) is not None for i in extra)  # every put returned and is there
    d = drops(spool)
    assert d["images_dropped"] > 0 and d["detections_dropped"] == 0
    assert spool.get(put[0]).payload["images_dropped"] is True  # the oldest lost images
    assert spool.check_counts() == {}


class FakeDisk:
    """``shutil.disk_usage`` of a disk that other files have filled: free space
    is ``free`` plus whatever the spool file gave back since."""

    def __init__(self, spool_path: Path, free: int) -> None:
        self.path, self.free, self.size0 = spool_path, free, spool_path.stat().st_size

    def __call__(self, _where: object) -> shutil._ntuple_diskusage:
        free = self.free + max(0, self.size0 - self.path.stat().st_size)
        return shutil._ntuple_diskusage(10**12, 10**12 - free, free)


def test_low_disk_sheds_only_the_deficit_images_first(spool_factory, monkeypatch) -> None:
    spool = spool_factory(min_free_disk_bytes=10**9, disk_check_interval_s=3600,
                          vacuum_min_free_bytes=0)
    spool.put_many([(Kind.DETECTION, detection(i, image_bytes=3000)) for i in range(40)])
    before = spool.stats().bytes
    deficit = 20_000
    monkeypatch.setattr(shutil, "disk_usage", FakeDisk(spool.path, 10**9 - deficit))
    spool.maintain(force_disk_check=True)
    d = drops(spool)
    shed = before - spool.stats().bytes
    # Enough images to cover the deficit (each frees ~5 KB), no more than one over.
    assert deficit <= shed < deficit + 6000
    assert 0 < d["images_dropped"] < 40 and d["detections_dropped"] == 0
    # Checked again while the disk is as short as before: the space shed is
    # freed inside the file (or given back), so nothing more goes.
    spool.maintain(force_disk_check=True)
    assert drops(spool) == d


def test_low_disk_never_sheds_the_newest_readings(spool_factory, monkeypatch) -> None:
    # Another program filled the disk: the spool cannot free the deficit, and
    # must not empty itself trying. The newest shed_floor_items stay (their
    # images may go, oldest first).
    spool = spool_factory(min_free_disk_bytes=10**9, disk_check_interval_s=3600,
                          shed_floor_items=5)
    payloads = [detection(i, image_bytes=500) for i in range(20)]
    spool.put_many([(Kind.DETECTION, p) for p in payloads])
    monkeypatch.setattr(shutil, "disk_usage", FakeDisk(spool.path, 1000))
    for _ in range(3):  # every check finds the disk as full as before
        spool.maintain(force_disk_check=True)
    left = spool.list_items(100)
    assert [i.event_id for i in left] == [p["event_id"] for p in payloads[-5:]]
    assert drops(spool)["detections_dropped"] == 15
    assert all(i.payload["ocr_results"] == [f"ABC{15 + k:04d}"] for k, i in enumerate(left))
    # The caps are the operator's: they still apply below the floor.
    spool.config.max_items = 2
    spool.maintain()
    assert spool.stats().items == 1


def test_recent_drops_are_counted_in_a_window_and_the_total_kept(spool_factory, clock) -> None:
    spool = spool_factory(clock=clock, max_items=10, degrade_to=0.5, drop_window_s=600,
                          maintenance_interval_s=3600)
    spool.put_many([(Kind.DETECTION, detection(i)) for i in range(11)])
    spool.maintain()
    st = spool.stats()
    assert st.drops["detections_dropped"] == 6 and st.drops_recent["detections_dropped"] == 6
    assert st.last_drop_at == {"detections_dropped": clock.now} and st.drops_window_s == 600
    clock.advance(601)
    spool.maintain()  # prunes the window's table, keeps the last time
    st = spool.stats()
    assert st.drops["detections_dropped"] == 6  # the lifetime counter stays
    assert st.drops_recent["detections_dropped"] == 0  # health can recover
    assert st.last_drop_at == {"detections_dropped": clock.now - 601}
