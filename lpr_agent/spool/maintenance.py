"""Caps, degradation and file space: what keeps a full spool (or disk) working.

Degradation order (each step counted in ``counters`` ``drop:<reason>`` and in
``drop_events`` for the recent window, and logged): images of the oldest
detections, old health snapshots, the oldest detections. Under disk pressure
(free space below ``min_free_disk_bytes`` or a write failing with "disk full")
only what the deficit needs is shed (images first, of any detection), and
the newest ``shed_floor_items`` detections are never deleted: the cause may
be other files, and emptying the spool would not fix that.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import Any

from lpr_agent.spool import ledger
from lpr_agent.spool.core import SpoolCore
from lpr_agent.spool.ledger import Deltas, ids_json
from lpr_agent.spool.records import DROP_DETECTIONS, DROP_HEALTH, DROP_IMAGES, LANES, Kind

log = logging.getLogger(__name__)

_IMAGE_FIELDS = ("annotated_image", "cropped_plates")
_DEGRADE_BATCH = 200
_VACUUM_PAGES_PER_RUN = 4096  # bounds the time one maintenance run spends moving pages
_DETECTION = LANES[Kind.DETECTION]


class MaintenanceMixin(SpoolCore):
    def maintain(self, *, force_disk_check: bool = False, emergency: bool = False) -> None:
        """Enforce the caps and the free-disk threshold, coalesce health, reclaim space.

        Called (rate-limited) from put/ack; cheap when there is nothing to do.
        """
        cfg = self.config
        with self._lock:
            if self._closed:
                return
            mono = time.monotonic()
            self._next_maintenance = mono + cfg.maintenance_interval_s
            disk_deficit = self._disk_deficit(mono, force_disk_check)
            with self._txn(durable=False) as conn:
                ledger.fold(conn)
                conn.execute(
                    "DELETE FROM drop_events WHERE at < ? AND rowid NOT IN "
                    "(SELECT max(rowid) FROM drop_events GROUP BY reason)",
                    (self._clock() - cfg.drop_window_s,),
                )
            items, nbytes, health = ledger.totals(self._conn)
            goal_items, goal_bytes = items, nbytes
            if items > cfg.max_items:
                goal_items = int(cfg.max_items * cfg.degrade_to)
            if nbytes > cfg.max_bytes:
                goal_bytes = int(cfg.max_bytes * cfg.degrade_to)
            if goal_items < items or goal_bytes < nbytes:
                items, nbytes = self._degrade(items, nbytes, goal_items, goal_bytes)
            elif health > cfg.max_health_items:
                self._coalesce_health()
                items, nbytes, _ = ledger.totals(self._conn)
            # Disk pressure: shed the deficit once per shortage, not at every
            # check. Bytes shed inside the file often do not show as free disk
            # (rows shrink in place; only whole free pages go back), but new
            # readings reuse them, so the spool's share stops growing; a
            # shortage that other files cause must not empty the spool.
            shed = 0
            if disk_deficit is not None:
                if disk_deficit == 0:
                    self._disk_shed = 0  # the shortage is over
                shed = max(0, disk_deficit - self._disk_shed)
            if emergency:
                shed = max(shed, nbytes // 10)  # a write failed: a tenth, whatever the check said
            if shed and nbytes:
                before = nbytes
                items, nbytes = self._degrade(items, nbytes, items, max(0, nbytes - shed),
                                              keep_newest=cfg.shed_floor_items)
                self._disk_shed += before - nbytes
            self._approx_items, self._approx_bytes = items, nbytes
            self._reclaim_space(force=bool(disk_deficit) or emergency)

    def _disk_deficit(self, mono: float, force: bool) -> int | None:
        """Bytes missing below ``min_free_disk_bytes``; None when not checked now."""
        cfg = self.config
        if not cfg.min_free_disk_bytes or not (force or mono >= self._next_disk_check):
            return None
        self._next_disk_check = mono + cfg.disk_check_interval_s
        try:
            self.free_disk_bytes = shutil.disk_usage(self.path.parent).free
        except OSError as exc:
            log.warning("spool: cannot read free disk space: %s", exc)
            return None
        deficit = max(0, cfg.min_free_disk_bytes - self.free_disk_bytes)
        if deficit:
            log.warning("spool: free disk %s B below min_free_disk_bytes=%d",
                        self.free_disk_bytes, cfg.min_free_disk_bytes)
        return deficit

    def _floor_id(self, keep_newest: int) -> int | None:
        """Detections with this id or above are the newest ``keep_newest``: spared."""
        if keep_newest <= 0:
            return None
        row = self._conn.execute(
            "SELECT id FROM items WHERE lane = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (_DETECTION, keep_newest - 1),
        ).fetchone()
        return 0 if row is None else int(row[0])  # fewer than that: spare them all

    def _degrade(
        self, items: int, nbytes: int, goal_items: int, goal_bytes: int, keep_newest: int = 0
    ) -> tuple[int, int]:
        """Shed load in the documented order until under both goals."""
        log.warning("spool over its goal (%d items, %d B; goal %d items, %d B): degrading",
                    items, nbytes, goal_items, goal_bytes)
        floor = self._floor_id(keep_newest)
        below = "" if floor is None else f" AND id < {floor}"
        # 1. Images of the oldest detections (plate text and boxes stay), past
        #    the floor too: a reading without its image is still a reading. Only
        #    the byte goal benefits.
        dropped = 0
        while nbytes > goal_bytes:
            n = self._drop_images_batch(nbytes - goal_bytes)
            if not n:
                break
            dropped += n
            items, nbytes, _ = ledger.totals(self._conn)
        if dropped:
            log.warning("spool: dropped the images of the %d oldest detections", dropped)
        # 2. Old health snapshots: keep the newest few per component.
        if items > goal_items or nbytes > goal_bytes:
            self._coalesce_health()
            items, nbytes, _ = ledger.totals(self._conn)
        # 3. The oldest detections themselves.
        dropped = 0
        while items > goal_items or nbytes > goal_bytes:
            oldest = self._conn.execute(
                f"SELECT id, size FROM items WHERE lane = ?{below} ORDER BY id LIMIT ?",
                (_DETECTION, 10 * _DEGRADE_BATCH),
            ).fetchall()
            # Exactly as many as both goals need (not a fixed batch: a few big
            # items may be all that has to go).
            need_items = max(0, items - goal_items)
            excess, need_bytes = nbytes - goal_bytes, 0
            while excess > 0 and need_bytes < len(oldest):
                excess -= oldest[need_bytes][1]
                need_bytes += 1
            victims = [r[0] for r in oldest[: max(need_items, need_bytes)]]
            if not victims:
                break
            dropped += self._delete_counted(
                "DELETE FROM items WHERE id IN (SELECT value FROM json_each(?)) "
                "RETURNING id, lane, size, wait_until IS NOT NULL",
                (ids_json(victims),),
                DROP_DETECTIONS,
            )
            items, nbytes, _ = ledger.totals(self._conn)
        if dropped:
            log.warning("spool: dropped the %d oldest detections", dropped)
        if items > goal_items or nbytes > goal_bytes:
            log.error("spool still over its goal after degrading (%d items, %d B%s)", items,
                      nbytes, f"; the newest {keep_newest} detections are kept" if floor else "")
        return items, nbytes

    def _record_drop(self, reason: str, n: int) -> None:
        """Caller is in a write txn: the lifetime counter and the recent window."""
        if n:
            self._bump(f"drop:{reason}", n)
            self._conn.execute("INSERT INTO drop_events(at, reason, n) VALUES (?, ?, ?)",
                               (self._clock(), reason, n))

    def _delete_counted(self, sql: str, params: tuple[Any, ...], reason: str) -> int:
        with self._txn(durable=False) as conn:
            ledger.fold(conn)  # rows leave only at or below the watermark (seqs)
            deltas = Deltas(conn)
            rows = conn.execute(sql, params).fetchall()
            for item_id, lane, size, waiting in rows:
                deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.write(conn)
            self._record_drop(reason, len(rows))
        self._leases.forget(r[0] for r in rows)
        return len(rows)

    def _drop_images_batch(self, excess: int) -> int:
        """Strip the images of the oldest detections until ``excess`` bytes are saved."""
        with self._txn(durable=False) as conn:
            rows = conn.execute(
                "SELECT id, payload, size FROM items WHERE id >= ? AND has_images = 1 "
                "ORDER BY id LIMIT ?",
                (self._images_watermark, _DEGRADE_BATCH),
            ).fetchall()
            deltas = Deltas(conn)
            updates = []
            for item_id, text, size in rows:
                if excess <= 0:
                    break
                payload = json.loads(text)
                for key in _IMAGE_FIELDS:
                    payload.pop(key, None)
                # Tell the server (and the operator) that there were images.
                payload["images_dropped"] = True
                new = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
                updates.append((new, len(new), item_id))
                deltas.add(_DETECTION, 0, len(new) - size, 0, item_id)
                excess -= size - len(new)
            conn.executemany(
                "UPDATE items SET payload = ?, size = ?, has_images = 0 WHERE id = ?", updates
            )
            for _, size, item_id in updates:
                self._leases.resize(item_id, size)
            deltas.write(conn)
            self._record_drop(DROP_IMAGES, len(updates))
        if updates:
            self._images_watermark = updates[-1][2] + 1
        return len(updates)

    def _coalesce_health(self) -> int:
        keep = self.config.health_keep_per_component
        n = self._delete_counted(
            "DELETE FROM items WHERE lane = 0 AND id IN ("
            " SELECT id FROM (SELECT id, row_number() OVER ("
            "  PARTITION BY component ORDER BY id DESC) AS rn FROM items WHERE lane = 0)"
            " WHERE rn > ?) RETURNING id, lane, size, wait_until IS NOT NULL",
            (keep,),
            DROP_HEALTH,
        )
        if n:
            log.warning("spool: coalesced %d old health snapshot(s) (kept the newest %d "
                        "per component)", n, keep)
        return n

    def _reclaim_space(self, *, force: bool = False) -> None:
        conn = self._conn
        free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if not free_pages or (
            free_pages * page_size < self.config.vacuum_min_free_bytes and not force
        ):
            return
        self._set_sync("NORMAL")
        # incremental_vacuum moves pages from the end of the file into the free
        # slots and truncates; bounded per run to keep put latency low.
        # (executescript: through execute() the pragma frees a single page.)
        conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES_PER_RUN});")
        # The file only shrinks when the WAL is checkpointed into it.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        log.info("spool: gave %d free page(s) back to the filesystem",
                 min(free_pages, _VACUUM_PAGES_PER_RUN))

