"""What the uplink reports back: ack, release, nack (backoff), dead letters."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from lpr_agent import backoff
from lpr_agent.spool.core import SpoolCore
from lpr_agent.spool.ledger import DEAD_LANE, Deltas, ids_json
from lpr_agent.spool.records import DeadLetter, dead_from_row

log = logging.getLogger(__name__)

_IDS = "SELECT value FROM json_each(?)"
_DELETE_IDS = f"DELETE FROM items WHERE id IN ({_IDS})"
ACK = f"DELETE FROM items WHERE id IN ({_IDS}) RETURNING id, lane, size, wait_until IS NOT NULL"
_DEAD_COLUMNS = "id, lane, event_id, created_at, payload, attempts, last_error, reason, dead_at"


class AckMixin(SpoolCore):
    def ack(self, ids: Iterable[int]) -> None:
        """The server has the items: delete them (durably)."""
        id_list = list(dict.fromkeys(int(i) for i in ids))
        if not id_list:
            return
        ids_text = json.dumps(id_list)
        leases = self._leases
        with self._lock, self._txn(durable=True) as conn:
            deltas = Deltas(conn)
            deltas.fold_if_above(conn, id_list)
            known = [leases.get(i) for i in id_list]
            fast = False
            if all(known):
                # Usual case: items we leased. Their lane and size are known,
                # and they are ready (not backing off), so the DELETE need not
                # return rows, unless one is gone already (then it must).
                conn.execute("SAVEPOINT ack")
                deleted = conn.execute(_DELETE_IDS, (ids_text,)).rowcount
                fast = deleted == len(id_list)
                if fast:
                    for item_id, lease in zip(id_list, known, strict=True):
                        assert lease is not None
                        deltas.add(lease[1], -1, -lease[2], 0, item_id)
                else:
                    conn.execute("ROLLBACK TO ack")
                conn.execute("RELEASE ack")
            if not fast:
                for item_id, lane, size, waiting in conn.execute(ACK, (ids_text,)).fetchall():
                    deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.write(conn)
            leases.forget(id_list)
        if time.monotonic() >= self._next_maintenance:
            self._maintain_quietly()

    def release(self, ids: Iterable[int]) -> None:
        """Give leased items back (ready now) without counting an attempt.

        Memory only, under the leases' own lock: never waits for a commit.
        """
        self._leases.forget(int(i) for i in ids)

    def backoff_delay(self, attempts: int) -> float:
        """Full-jitter exponential backoff after the ``attempts``-th failure."""
        return backoff.full_jitter(attempts, self.config.backoff_base_s,
                                   self.config.backoff_cap_s, self._rng)

    def nack(self, ids: Iterable[int], error: str) -> None:
        """Delivery failed (transient): count the attempt, retry after a backoff.

        Only these items wait; the ones behind them stay ready, so a failing
        item never blocks the queue. With ``max_attempts`` set, an item that
        reaches it becomes a dead letter.
        """
        id_list = [int(i) for i in ids]
        if not id_list:
            return
        now = self._clock()
        max_attempts = self.config.max_attempts
        exhausted: list[int] = []
        with self._lock, self._txn(durable=True) as conn:
            deltas = Deltas(conn)
            deltas.fold_if_above(conn, id_list)
            rows = conn.execute(
                f"SELECT id, lane, attempts, wait_until IS NOT NULL FROM items "
                f"WHERE id IN ({_IDS}) ORDER BY id",
                (json.dumps(id_list),),
            ).fetchall()
            updates = []
            for item_id, lane, attempts, waiting in rows:
                attempts += 1
                if max_attempts and attempts >= max_attempts:
                    exhausted.append(item_id)
                due = now + self.backoff_delay(attempts)
                self._next_due = min(self._next_due, due)
                updates.append((attempts, error, due, item_id))
                deltas.add(lane, 0, 0, 1 - waiting, item_id)
            conn.executemany(
                "UPDATE items SET attempts = ?, last_error = ?, wait_until = ? WHERE id = ?",
                updates,
            )
            deltas.write(conn)
            if exhausted:
                self._move_to_dead(
                    exhausted, f"gave up after {max_attempts} attempts: {error}", now
                )
            self._leases.forget(id_list)
        if exhausted:
            log.warning("spool: %d item(s) reached max_attempts=%d and became dead letters",
                        len(exhausted), max_attempts)

    # --- dead letters -------------------------------------------------------------

    def dead_letter(self, ids: Iterable[int], reason: str) -> None:
        """The server rejected the items as invalid: keep them aside, counted."""
        id_list = sorted({int(i) for i in ids})
        if not id_list:
            return
        with self._lock, self._txn(durable=True):
            moved = self._move_to_dead(id_list, reason, self._clock())
            self._leases.forget(id_list)
        if moved:
            log.warning("spool: %d item(s) moved to dead letters: %s", moved, reason)

    def _move_to_dead(self, ids: list[int], reason: str, now: float) -> int:
        conn = self._conn
        text = ids_json(ids)
        deltas = Deltas(conn)
        deltas.fold_if_above(conn, ids)
        # A requeued item that dies again replaces its old dead-letter row.
        for (size,) in conn.execute(
            f"DELETE FROM dead WHERE id IN ({_IDS}) AND id IN (SELECT id FROM items) "
            "RETURNING size",
            (text,),
        ).fetchall():
            deltas.add(DEAD_LANE, -1, -size)
        conn.execute(
            "INSERT INTO dead (id, lane, event_id, created_at, payload, size, component, "
            "has_images, attempts, last_error, reason, dead_at) "
            "SELECT id, lane, event_id, created_at, payload, size, component, has_images, "
            f"attempts, last_error, ?, ? FROM items WHERE id IN ({_IDS})",
            (reason, now, text),
        )
        moved = 0
        for item_id, lane, size, waiting in conn.execute(ACK, (text,)).fetchall():
            deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.add(DEAD_LANE, 1, size)
            moved += 1
        deltas.write(conn)
        self._bump("dead_lettered", moved)
        return moved

    def list_dead(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        rows = self._read(
            f"SELECT {_DEAD_COLUMNS} FROM dead ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
        return [dead_from_row(r) for r in rows]

    def get_dead(self, item_id: int) -> DeadLetter | None:
        rows = self._read(f"SELECT {_DEAD_COLUMNS} FROM dead WHERE id = ?", (item_id,))
        return dead_from_row(rows[0]) if rows else None

    def requeue_dead(self, ids: Iterable[int] | None = None) -> int:
        """Move dead letters (all, or ``ids``) back to the queue, attempts reset.

        They keep their id (and ``seq``), so they go back to their place in
        creation order.
        """
        where, params = ("", ()) if ids is None else (f" WHERE id IN ({_IDS})", (ids_json(ids),))
        with self._lock, self._txn(durable=True) as conn:
            deltas = Deltas(conn)
            n = 0
            for item_id, lane, size in conn.execute(
                f"SELECT id, lane, size FROM dead{where}", params
            ).fetchall():
                deltas.add(lane, 1, size, 0, item_id)
                deltas.add(DEAD_LANE, -1, -size)
                n += 1
            conn.execute(
                "INSERT INTO items (id, lane, event_id, created_at, payload, size, component, "
                "has_images, attempts, last_error) "
                "SELECT id, lane, event_id, created_at, payload, size, component, has_images, "
                f"0, 'requeued after: ' || reason FROM dead{where}",
                params,
            )
            conn.execute(f"DELETE FROM dead{where}", params)
            deltas.write(conn)
            self._bump("requeued", n)
        if n:
            log.info("spool: requeued %d dead letter(s)", n)
        return n

    def purge_dead(self, ids: Iterable[int] | None = None) -> int:
        """Delete dead letters for good (an operator's decision; counted and logged)."""
        where, params = ("", ()) if ids is None else (f" WHERE id IN ({_IDS})", (ids_json(ids),))
        with self._lock, self._txn(durable=True) as conn:
            deltas = Deltas(conn)
            rows = conn.execute(f"DELETE FROM dead{where} RETURNING size", params).fetchall()
            for (size,) in rows:
                deltas.add(DEAD_LANE, -1, -size)
            deltas.write(conn)
            self._bump("dead_purged", len(rows))
        if rows:
            log.warning("spool: purged %d dead letter(s)", len(rows))
        return len(rows)
