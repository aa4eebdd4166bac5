"""The dashboard's queries at scale, and what their indexes cost the writes.

In the same run, on real SQLite files written through the stub's own
``Storage.write_batch`` (the group-commit path):

* write cost: the same detections stored into a plain stub database
  (baseline) and into one with the dashboard's indexes
  (``history.prepare_indexes`` + the plate search tables); goal: the
  dashboard costs the writes at most 10 % (ratio >= 0.9);
* plate search (substring via the trigram index, prefix via the stub's
  ``plates`` table), detections-per-minute and health-history queries,
  beside the same question answered without those indexes (a scan: what a
  ``LIKE '%..%'`` on ``ocr_results`` or an unindexed GROUP BY costs); goals:
  search and chart queries p50 <= 20 ms at 100 k records, >= 10x the scan;
* catching the trigram index up on a database that has never been searched
  (records indexed per second).

The last line printed is one JSON object.

    python benchmarks/dashboard_bench.py [--records 100000] [--cameras 20] [--queries 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import string
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lpr_agent.protocol import Kind
from server_stub.history import (
    HEALTH_SQL,
    detections_query,
    iso,
    prepare_indexes,
)
from server_stub.plate_search import PlateIndex, SearchQuery
from server_stub.storage import Storage

BATCH = 100  # messages per group commit, a busy stub's typical batch
ROUNDS = 10


def plate(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase + string.digits, k=7))


def workload(n: int, cameras: int, seed: int = 1) -> tuple[list[Any], list[Any], list[str]]:
    """Detections and health reports over the last 24 h, oldest first."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=24)
    step = 86_400 / n
    detections, healths, plates = [], [], []
    for i in range(n):
        text = plate(rng)
        plates.append(text)
        when = (start + timedelta(seconds=i * step)).isoformat(timespec="milliseconds")
        msg = {
            "type": "detection_result",
            "camera_id": f"cam-{i % cameras:03d}",
            "checkpoint_id": "cp",
            "timestamp": when,
            "event_id": f"{seed}-{i}",
            "vehicles_count": 1,
            "plates_count": 1,
            "ocr_results": [text],
        }
        detections.append((Kind.DETECTION, msg, "socketio", True))
        if i % 5 == 0:
            report = {
                "type": "health_check",
                "camera_id": f"cam-{i // 5 % cameras:03d}",  # every camera reports
                "checkpoint_id": "cp",
                "timestamp": when,
                "event_id": f"h{seed}-{i}",
                "component": "system",
                "status": "healthy",
                "details": {"cpu_usage": rng.uniform(0, 100), "temperature_c": 50.0},
            }
            healths.append((Kind.HEALTH, report, "socketio", True))
    return detections, healths, plates


def write(storage: Storage, items: list[Any]) -> float:
    """Store ``items`` in batches; microseconds per message."""
    t0 = time.perf_counter()
    for i in range(0, len(items), BATCH):
        storage.write_batch(items[i : i + BATCH])
    return (time.perf_counter() - t0) / max(1, len(items)) * 1e6


def timed(fn: Any, runs: list[Any]) -> float:
    """Median milliseconds of ``fn(arg)`` over ``runs``."""
    times = []
    for arg in runs:
        t0 = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    detections, healths, plates = workload(args.records, args.cameras)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
        # Alternating rounds, each side first in turn, so that a noisy
        # neighbour hurts both alike; the ratio is the median of the rounds'.
        base, dash = Storage(Path(tmp) / "base.db"), Storage(Path(tmp) / "dash.db")
        prepare_indexes(dash.conn)  # (the stub's own indexes are in both)
        PlateIndex(dash.conn).prepare()
        size = max(BATCH, len(detections) // ROUNDS)
        us: dict[str, list[float]] = {"base": [], "dash": []}
        for n, i in enumerate(range(0, len(detections), size)):
            chunk = detections[i : i + size]
            for name in ("base", "dash") if n % 2 == 0 else ("dash", "base"):
                us[name].append(write(base if name == "base" else dash, chunk))
        ratios = [b / d for b, d in zip(us["base"], us["dash"], strict=True)]
        us_base, us_dash = statistics.median(us["base"]), statistics.median(us["dash"])
        write(dash, healths)
        write(base, healths)
        conn = dash.conn

        index = PlateIndex(conn)
        t0 = time.perf_counter()
        asyncio.run(index.catch_up())
        catch_up_s = time.perf_counter() - t0

        pieces = [p[rng.randrange(0, 4) :][:3] for p in rng.sample(plates, args.queries)]
        prefixes = [p[:3] for p in rng.sample(plates, args.queries)]

        def search(mode: str) -> Any:
            def run(text: str) -> None:
                q = SearchQuery.build(text, mode, None, None, 50, None)
                asyncio.run(index.search(q))

            return run

        def scan(pattern: str) -> None:
            conn.execute(
                "SELECT rowid FROM records WHERE upper(ocr_results) LIKE ? "
                "ORDER BY rowid DESC LIMIT 51",
                (pattern,),
            ).fetchall()

        substring_ms = timed(search("substring"), pieces)
        substring_scan_ms = timed(scan, [f"%{p}%" for p in pieces])
        prefix_ms = timed(search("prefix"), prefixes)
        prefix_scan_ms = timed(scan, [f'["{p}%' for p in prefixes])

        now = time.time()
        windows = [
            (f"cam-{rng.randrange(args.cameras):03d}", now - rng.uniform(3600, 86_400))
            for _ in range(args.queries)
        ]

        def detections_chart(indexed: bool) -> Any:
            # All cameras at once, as the dashboard asks; without the index:
            # the same statement with NOT INDEXED (a scan).
            def run(arg: tuple[str, float]) -> None:
                until = arg[1]
                start = int((until - 3600) // 60 * 60)
                sql, params = detections_query(start, 60, iso(start), iso(until), None)
                if not indexed:
                    sql = sql.replace("FROM records", "FROM records NOT INDEXED")
                conn.execute(sql, params).fetchall()

            return run

        def health_chart(indexed: bool) -> Any:
            sql = (
                HEALTH_SQL
                if indexed
                else HEALTH_SQL.replace("FROM health", "FROM health NOT INDEXED")
            )

            def run(arg: tuple[str, float]) -> None:
                camera, until = arg
                conn.execute(sql, (camera, iso(until - 3600), iso(until), 2000)).fetchall()

            return run

        dpm_ms = timed(detections_chart(True), windows)
        dpm_scan_ms = timed(detections_chart(False), windows)
        health_ms = timed(health_chart(True), windows)
        health_scan_ms = timed(health_chart(False), windows)
        base.close()
        dash.close()

    summary = {
        "records": args.records,
        "write_us_per_msg_base": round(us_base, 1),
        "write_us_per_msg_dashboard": round(us_dash, 1),
        "write_ratio": round(statistics.median(ratios), 3),
        "catch_up_records_per_s": round(args.records / catch_up_s),
        "substring_search_ms_p50": round(substring_ms, 2),
        "substring_scan_ms_p50": round(substring_scan_ms, 2),
        "prefix_search_ms_p50": round(prefix_ms, 2),
        "prefix_scan_ms_p50": round(prefix_scan_ms, 2),
        "dpm_ms_p50": round(dpm_ms, 2),
        "dpm_scan_ms_p50": round(dpm_scan_ms, 2),
        "health_history_ms_p50": round(health_ms, 2),
        "health_history_scan_ms_p50": round(health_scan_ms, 2),
        "target_write_ratio": 0.9,
        "target_query_ms": 20,
        "target_speedup_vs_scan": 10,
    }
    print(f"{'':<22}{'indexed ms':>12}{'scan ms':>10}")
    for name in ("substring_search", "prefix_search", "dpm", "health_history"):
        fast = summary.get(f"{name}_ms_p50")
        slow = summary.get(f"{name.replace('_search', '')}_scan_ms_p50")
        print(f"{name:<22}{fast:>12}{slow:>10}")
    print(
        f"writes: {us_base:.1f} us/msg plain, {us_dash:.1f} us/msg with the dashboard's indexes"
        f" (ratio {summary['write_ratio']:.2f}); trigram catch-up"
        f" {summary['catch_up_records_per_s']:,}/s"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
