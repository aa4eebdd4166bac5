"""``--workers N``: N stub processes on one port, supervised by this one.

Each worker is an ordinary stub (``python -m server_stub ... --worker``)
listening with ``SO_REUSEPORT``, so the kernel spreads connections over
them. What makes them one server:

* storage: the same SQLite file (WAL); writes take the write lock
  (``BEGIN IMMEDIATE``) and ``event_id`` has a UNIQUE index, so an event
  sent to two workers is stored once;
* broadcasts: python-socketio's ``AsyncRedisManager`` relays every room
  emit through Redis, so a dashboard on any worker sees every camera;
* no sticky sessions: workers accept only the websocket transport, whose
  engine.io session lives on one TCP connection (long-polling would send
  a session's requests to different workers).

Per worker, not shared: fault injection and legacy mode (refused with
workers), and each camera's live-connection flag in ``/api/cameras``.

The supervisor forwards SIGTERM/SIGINT and exits 0 once every worker has;
if a worker dies on its own, it stops the others and exits 1 (systemd, or
whoever started it, decides about restarting).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)

WORKER_FLAG = "--worker"
POLL_S = 0.2
STOP_TIMEOUT_S = 10.0


def supervise(argv: list[str], workers: int) -> int:
    """Run ``workers`` copies of ``python -m server_stub *argv --worker`` until a signal."""
    command = [sys.executable, "-m", "server_stub", *argv, WORKER_FLAG]
    procs = [subprocess.Popen(command) for _ in range(workers)]
    log.info("started %d workers: pids %s", workers, [p.pid for p in procs])
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(POLL_S)
    failed = not stopping
    if failed:
        dead = [p.pid for p in procs if p.poll() is not None]
        log.error("worker(s) %s exited on their own; stopping the others", dead)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    codes = [p.returncode for p in procs]
    return 1 if failed or any(codes) else 0
