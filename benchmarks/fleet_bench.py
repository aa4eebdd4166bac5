"""Fleet benchmark: hundreds of cameras against one stub, through a restart.

N simulated cameras (``tests/helpers/fleet.py``: the real spool, one file
each, and the real uplink; readings injected at a fixed rate, 1 KB each, a
share of them with an image) run in a few processes against the real stub.
Phases:

1. steady load (after a warm-up): stored ÷ offered, put → ack latency;
2. the stub stops for ``--down-s`` seconds (backlogs build; the cameras keep
   reading, REST and Socket.IO both fail, every camera backs off);
3. the stub comes back with its database: connection attempts per second
   (peak ÷ mean over the recovery window, counted by a TCP proxy in front of
   the stub: every Socket.IO handshake and REST connection is one attempt),
   time until every camera's pre-return backlog is delivered, and its spread
   across cameras (p50/p90/max: no camera starved).

Afterwards every reading put by every camera is looked up in the stub's
database by ``event_id``: ``lost`` and ``duplicates`` must be 0.

Baseline, same run, same stub: a bare python-socketio client pipelining the
same 1 KB messages (window 64) measures what the stub can store per second;
``load_factor`` is the fleet's offered rate ÷ that capacity.

Spools live in ``--spool-dir`` (default /dev/shm): on the road every camera
has its own storage; 300 spools fsyncing to one shared disk would measure the
disk, not the fleet. The last line of output is one JSON object.

    .venv/bin/python benchmarks/fleet_bench.py [--cameras 300] [--rate 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import socketio  # noqa: E402

from tests.helpers.fleet import FleetOptions, reading, run_fleet  # noqa: E402
from tests.helpers.stub_process import StubProcess  # noqa: E402


async def stub_capacity(url: str, n: int) -> float:
    """Messages per second the stub stores from one pipelined bare client."""
    rng = random.Random(1)
    payloads = [reading("baseline", rng) for _ in range(n)]
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await client.connect(url, transports=["websocket"])
    sem = asyncio.Semaphore(64)
    done = asyncio.Event()
    left = n

    def on_ack(*_: Any) -> None:
        nonlocal left
        sem.release()
        left -= 1
        if left == 0:
            done.set()

    t0 = time.perf_counter()
    for p in payloads:
        await sem.acquire()
        await client.emit("lpr_data", p, callback=on_ack)
    await done.wait()
    rate = n / (time.perf_counter() - t0)
    await client.disconnect()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = FleetOptions()
    for f in dataclasses.fields(FleetOptions):
        if f.name == "work_dir":
            continue
        value = getattr(defaults, f.name)
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--baseline-n", type=int, default=3000)
    args = vars(ap.parse_args())
    baseline_n = args.pop("baseline_n")
    opt = FleetOptions(**args, work_dir=Path(tempfile.mkdtemp(prefix="fleet-")))
    with StubProcess(opt.work_dir / "stub.db", log_path=opt.work_dir / "stub.log") as stub:
        capacity = asyncio.run(stub_capacity(stub.url, baseline_n))
        figures = run_fleet(opt, stub)
    figures["baseline_stub_capacity_per_s"] = round(capacity, 1)
    figures["load_factor"] = round(opt.cameras * opt.rate / capacity, 3)
    print(f"{opt.cameras} cameras × {opt.rate}/s: stored {figures['stored_ratio']} of "
          f"offered, p50/p99 put→ack {figures['p50_ack_ms']}/{figures['p99_ack_ms']} ms; after "
          f"a {opt.down_s:.0f} s outage every backlog drained in {figures['drain_s']} s "
          f"(p50 {figures['drain_p50_s']} s, p90 {figures['drain_p90_s']} s); connection "
          f"attempts peak {figures['storm_peak_per_s']}/s vs mean "
          f"{figures['storm_mean_per_s']}/s; lost {figures['lost']}, duplicates "
          f"{figures['duplicates']}; stub capacity (bare client) {capacity:.0f}/s", flush=True)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
