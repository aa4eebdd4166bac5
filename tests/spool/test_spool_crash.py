"""Real processes, really killed: SIGKILL a writer at random moments while a
consumer process acks; nothing whose put returned is lost or duplicated, and the
file stays sound. Also: the leases of a killed consumer do not strand its items.

Children are forked from the test process (after which they only touch a fresh
Spool and then ``os._exit``) because starting 200+ interpreters would cost
minutes on a small CI machine; they are real, separate processes all the same.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from lpr_agent.spool import Kind, Spool

from .conftest import SCALE, config, detection, health
from .powercut.rig import fork

# At least 200 kill points; more with LPR_CRASH_KILLS (or LPR_SOAK_SCALE).
KILLS = int(os.environ.get("LPR_CRASH_KILLS", str(200 * SCALE)))




def append_line(fd: int, text: str) -> None:
    # One write() per line on an O_APPEND fd: a SIGKILL leaves at most a
    # partial last line, which the reader ignores.
    os.write(fd, (text + "\n").encode())


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = path.read_text()
    lines = data.split("\n")
    return [line for line in lines[:-1] if line]  # drop an unterminated tail


def writer(db: Path, put_log: Path, seed: int) -> None:
    rng = random.Random(seed)
    spool = Spool.open(config(db, max_items=10**9, max_bytes=10**12))
    fd = os.open(put_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        if rng.random() < 0.5:
            p = detection(rng.randrange(10**6), image_bytes=rng.choice([0, 200]))
            spool.put(Kind.DETECTION, p)
            append_line(fd, p["event_id"])
        else:
            batch = [(Kind.DETECTION, detection(i)) for i in range(rng.randint(1, 5))]
            batch.append((Kind.HEALTH, health(seed)))
            spool.put_many(batch)
            for _, p in batch:
                append_line(fd, p["event_id"])


def consumer(db: Path, ack_log: Path, stop: Path) -> None:
    spool = Spool.open(config(db, max_items=10**9, max_bytes=10**12))
    fd = os.open(ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    rng = random.Random(1)
    while not stop.exists():
        items = spool.lease(rng.randint(1, 40))
        if not items:
            time.sleep(0.002)
            continue
        if rng.random() < 0.1:  # some go back (a failed send) and come again later
            spool.nack([i.id for i in items], "simulated 503")
            continue
        spool.ack([i.id for i in items])
        for i in items:
            append_line(fd, i.event_id)
    spool.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkilled_writer_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    db, put_log, ack_log, stop = (tmp_path / n for n in ("s.db", "put.log", "ack.log", "stop"))
    Spool.open(config(db, backoff_base_s=0.01, backoff_cap_s=0.05)).close()
    consumer_pid = fork(lambda: consumer(db, ack_log, stop))
    rng = random.Random(int(os.environ.get("LPR_CRASH_SEED", "7")))
    try:
        for k in range(KILLS):
            pid = fork(lambda k=k: writer(db, put_log, seed=k))
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            # Killed, not failed on its own (an exception would exit with 1).
            assert os.WIFSIGNALED(status), f"writer {k} exited by itself: {status}"
    finally:
        stop.touch()
        _, status = os.waitpid(consumer_pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "consumer failed"

    put = read_lines(put_log)
    acked = read_lines(ack_log)
    assert len(put) > KILLS  # the kills landed while puts were happening
    assert not [e for e, n in Counter(acked).items() if n > 1], "acked twice"

    spool = Spool.open(config(db))
    try:
        present = Counter(i.event_id for i in spool.list_items(10**7))
        assert not [e for e, n in present.items() if n > 1], "duplicate rows"
        acked_set = set(acked)
        lost = [e for e in put if e not in present and e not in acked_set]
        assert not lost, f"{len(lost)} acknowledged puts lost"
        assert not [e for e in acked_set if e in present], "acked but still queued"
        assert spool.check_counts() == {}
        assert spool._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        spool.close()
    conn = sqlite3.connect(db)  # and for any other reader, too
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def test_leases_of_a_killed_consumer_are_available_at_once(tmp_path: Path) -> None:
    db, marker = tmp_path / "s.db", tmp_path / "leased"
    spool = Spool.open(config(db))
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(20)])
    spool.close()

    def hold() -> None:
        s = Spool.open(config(db))
        got = s.lease(10, lease_seconds=3600)
        marker.write_text(",".join(str(i.id) for i in got))
        time.sleep(60)

    pid = fork(hold)
    deadline = time.monotonic() + 30
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "child never leased"
        time.sleep(0.01)
    assert [int(x) for x in marker.read_text().split(",")] == put[:10]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    # The restarted process gets the crashed one's items now, not in an hour.
    spool = Spool.open(config(db))
    try:
        assert [i.id for i in spool.lease(100)] == put
    finally:
        spool.close()
