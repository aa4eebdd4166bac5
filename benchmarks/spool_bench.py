"""Spool throughput beside raw sqlite3 and persist-queue, measured in one run.

    .venv/bin/python benchmarks/spool_bench.py [--rounds 5] [--dir DIR] [--big 100000]

Every figure sits beside its baseline measured in the same run on the same disk:
each spool operation is timed right next to the same raw operation (the order
flips every time), and the medians of the per-operation times are compared,
because this machine is shared and noisy. The raw
sqlite3 baselines do the same work as the spool (WAL, same ``synchronous``;
store what every item carries: kind, event_id, creation time and the same 1 KB
dict JSON-encoded; JSON-decode it on read; one commit per put / batch / take)
with nothing else: one table, no indexes, no state, no bookkeeping. The
spool's lease hands out the stored JSON text (``SpoolItem.payload_json``, what
the uplink sends) and decodes it only when ``payload`` is read, so its
lease+ack side does no JSON decode while the raw side does: that is the
saving the lazy payload brings to the uplink, and part of the ratio.

The last line of output is one JSON object (ratios > 1 mean the spool is faster):
  put_ratio         raw single-put time / spool single-put time
  batch_put_ratio   raw 100-row batch time / spool put_many(100) time
  lease_ack_ratio   raw select+delete(100) time / spool lease(100)+ack time
  vs_persist_queue  persist-queue get+ack per item / spool lease+ack per item
  lease_flatness    spool lease(100) time with 100 k queued / with 1 k queued
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lpr_agent.spool import Kind, Spool, SpoolConfig

BATCH = 100


def detection_payload(i: int) -> dict[str, Any]:
    """A realistic ~1 KB DetectionResult.wire() dict (small image included)."""
    return {
        "type": "detection_result",
        "event_id": str(uuid.uuid4()),
        "camera_id": "camera_001",
        "checkpoint_id": "checkpoint_001",
        "timestamp": "2026-11-25T10:00:00.000+00:00",
        "vehicles_count": 1,
        "plates_count": 1,
        "ocr_results": [f"ABC{i % 10000:04d}"],
        "vehicle_detections": [{"bbox": [100, 100, 200, 200], "confidence": 0.95,
                                "class": "car"}],
        "plate_detections": [{"bbox": [150, 150, 180, 170], "confidence": 0.92,
                              "text": f"ABC{i % 10000:04d}"}],
        "processing_time_ms": 150,
        "cropped_plates": [base64.b64encode(os.urandom(540)).decode()],
    }


def raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    # What every spooled item must carry (issue: event_id, kind, creation time,
    # payload) and nothing else: no indexes, no state, no bookkeeping.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
        "event_id TEXT NOT NULL, created_at REAL NOT NULL, payload TEXT NOT NULL)"
    )
    conn.commit()
    return conn


_RAW_INSERT = "INSERT INTO q (kind, event_id, created_at, payload) VALUES (?, ?, ?, ?)"


def raw_put(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    conn.execute(_RAW_INSERT, ("detection", payload["event_id"], time.time(), json.dumps(payload)))
    conn.commit()


def raw_put_many(conn: sqlite3.Connection, payloads: list[dict[str, Any]]) -> None:
    now = time.time()
    conn.executemany(
        _RAW_INSERT, [("detection", p["event_id"], now, json.dumps(p)) for p in payloads]
    )
    conn.commit()


def raw_take(conn: sqlite3.Connection, n: int) -> int:
    rows = conn.execute(
        "SELECT id, kind, event_id, created_at, payload FROM q ORDER BY id LIMIT ?", (n,)
    ).fetchall()
    _ = [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]
    conn.executemany("DELETE FROM q WHERE id = ?", [(r[0],) for r in rows])
    conn.commit()
    return len(rows)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the databases go (default: a temp dir on /tmp's disk)")
    parser.add_argument("--puts", type=int, default=300, help="single puts per round")
    parser.add_argument("--batches", type=int, default=30, help="100-item batches per round")
    parser.add_argument("--big", type=int, default=100_000, help="depth of the 'big' spool")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    base = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path) -> int:
    from persistqueue import SQLiteAckQueue

    def spool_at(name: str) -> Spool:
        return Spool.open(SpoolConfig(path=base / name, synchronous=args.synchronous,
                                      max_bytes=10 * 2**30, max_items=10_000_000))

    raw = raw_connect(base / "raw.db", args.synchronous)
    spool = spool_at("spool.db")
    pq = SQLiteAckQueue(str(base / "pq"), multithreading=True, auto_commit=True)
    payloads = [detection_payload(i) for i in range(BATCH * args.batches)]

    # The flatness spools: same spool code, 1 k vs `big` items queued.
    small, big = spool_at("small.db"), spool_at("big.db")
    for target, depth in ((small, 1000), (big, args.big)):
        for start in range(0, depth, 1000):
            target.put_many((Kind.DETECTION, detection_payload(start + j)) for j in range(1000))

    # Per-operation samples. Each spool operation is timed right next to the
    # same raw operation (order flipped every time), so a burst of load from
    # the neighbours hits both sides alike; medians drop the bursts.
    m: dict[str, list[float]] = {k: [] for k in (
        "raw_put", "spool_put", "pq_put", "raw_batch", "spool_batch",
        "raw_take", "spool_lease_ack", "pq_get_ack", "lease_1k", "lease_big")}

    def pair(flip: bool, a: tuple[str, Callable[[], Any]], b: tuple[str, Callable[[], Any]]
             ) -> None:
        for key, fn in (b, a) if flip else (a, b):
            t0 = time.perf_counter()
            fn()
            m[key].append(time.perf_counter() - t0)

    def spool_take() -> None:
        spool.ack([i.id for i in spool.lease(BATCH)])

    flip = False
    for rnd in range(args.rounds):
        for p in payloads[: args.puts]:
            flip = not flip
            pair(flip, ("raw_put", lambda p=p: raw_put(raw, p)),
                 ("spool_put", lambda p=p: spool.put(Kind.DETECTION, p)))
        for b in range(args.batches):
            chunk = payloads[b * BATCH:(b + 1) * BATCH]
            flip = not flip
            pair(flip, ("raw_batch", lambda c=chunk: raw_put_many(raw, c)),
                 ("spool_batch", lambda c=chunk: spool.put_many((Kind.DETECTION, p) for p in c)))
        # Drain what was just queued, 100 at a time, both sides step by step.
        for _ in range(args.puts // BATCH + args.batches):
            flip = not flip
            pair(flip, ("raw_take", lambda: raw_take(raw, BATCH)),
                 ("spool_lease_ack", spool_take))
        assert spool.stats().items == 0 and raw.execute("SELECT count(*) FROM q").fetchone()[0] == 0

        # persist-queue put, then get+ack per item (compared per item with
        # the spool's lease+ack of 100).
        for p in payloads[: args.puts]:
            t0 = time.perf_counter()
            pq.put(p)
            m["pq_put"].append(time.perf_counter() - t0)
        for _ in range(args.puts):
            t0 = time.perf_counter()
            pq.ack(pq.get(block=False))
            m["pq_get_ack"].append(time.perf_counter() - t0)

        for _ in range(20):
            flip = not flip
            small_ids: list[int] = []
            big_ids: list[int] = []
            pair(flip,
                 ("lease_1k", lambda ids=small_ids: ids.extend(i.id for i in small.lease(BATCH))),
                 ("lease_big", lambda ids=big_ids: ids.extend(i.id for i in big.lease(BATCH))))
            small.release(small_ids)
            big.release(big_ids)
        print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
            f"{k}={statistics.median(v) * 1e3:.3f}ms" for k, v in m.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in m.items()}
    spool_item = med["spool_lease_ack"] / BATCH
    result = {
        "put_ratio": round(med["raw_put"] / med["spool_put"], 3),
        "batch_put_ratio": round(med["raw_batch"] / med["spool_batch"], 3),
        "lease_ack_ratio": round(med["raw_take"] / med["spool_lease_ack"], 3),
        "vs_persist_queue": round(med["pq_get_ack"] / spool_item, 1),
        "lease_flatness": round(med["lease_big"] / med["lease_1k"], 3),
        "raw_put_ms": round(med["raw_put"] * 1e3, 4),
        "spool_put_ms": round(med["spool_put"] * 1e3, 4),
        "pq_put_ms": round(med["pq_put"] * 1e3, 4),
        "raw_batch100_ms": round(med["raw_batch"] * 1e3, 4),
        "spool_batch100_ms": round(med["spool_batch"] * 1e3, 4),
        "raw_select_delete100_ms": round(med["raw_take"] * 1e3, 4),
        "spool_lease_ack100_ms": round(med["spool_lease_ack"] * 1e3, 4),
        "pq_get_ack_per_item_ms": round(med["pq_get_ack"] * 1e3, 4),
        "spool_lease_ack_per_item_ms": round(spool_item * 1e3, 4),
        "lease100_at_1k_ms": round(med["lease_1k"] * 1e3, 4),
        f"lease100_at_{args.big // 1000}k_ms": round(med["lease_big"] * 1e3, 4),
        "big_depth": args.big,
        "rounds": args.rounds,
        "samples_per_op": {k: len(v) for k, v in m.items()},
        "synchronous": args.synchronous,
        "payload_bytes": len(json.dumps(payloads[0])),
        "sqlite": sqlite3.sqlite_version,
    }
    for s in (spool, small, big):
        s.close()
    raw.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
