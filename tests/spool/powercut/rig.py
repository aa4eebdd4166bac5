"""The power-cut rig: a LazyFS mount, a child that puts, a cut, a check.

One cut point: a forked child opens the spool on the mount and puts readings,
appending each ``event_id kind seq`` whose ``put`` returned to a report file
on the real disk (the real disk keeps it: only the child dies, not this
machine). The test SIGKILLs the child, cuts the power (every write not
fsynced is gone), and ``check`` reopens the spool the way the next boot would.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lpr_agent.spool import Kind, Spool
from lpr_agent.spool.core import SpoolCore
from lpr_agent.spool.writer import INSERT
from tests.helpers.prereq import require, require_executable, require_root

from ..conftest import config, detection, health

LAZYFS = Path(__file__).with_name("lazyfs.py")
DONE = "DONE"


class PowerCutFS:
    """``with PowerCutFS(tmp) as fs:`` mounts LazyFS at ``fs.mount``."""

    def __init__(self, base: Path) -> None:
        self.backing = base / "disk"
        self.mount = base / "mnt"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PowerCutFS:
        require_root()
        require(Path("/dev/fuse").exists(), "/dev/fuse")
        fusermount = require_executable("fusermount3")
        try:
            import mfusepy  # noqa: F401
        except (ImportError, OSError) as exc:  # OSError: libfuse3 missing
            require(False, f"mfusepy with libfuse3 ({exc})")
        self._fusermount = fusermount
        self.backing.mkdir()
        self.mount.mkdir()
        self.proc = subprocess.Popen([sys.executable, str(LAZYFS), str(self.backing),
                                      str(self.mount)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc.kill()
                raise RuntimeError(f"LazyFS did not mount: {err}")
            time.sleep(0.02)
        return self

    def cut(self, torn_seed: int | None = None) -> None:
        """Power failure: unflushed writes vanish (a random half survive when torn)."""
        with open(self.mount / ".powercut", "w") as f:
            f.write("cut" if torn_seed is None else f"cut torn {torn_seed}")

    def __exit__(self, *exc: object) -> None:
        subprocess.run([self._fusermount, "-u", str(self.mount)], check=False)
        assert self.proc is not None
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def restore_sync_bug() -> None:
    """Put back the code before the issue-10 fix, in this (child) process only:
    the durable level was set before the id block was reserved, so the block's
    NORMAL commit left the first INSERT of every block at NORMAL."""
    take_ids = SpoolCore._take_ids

    def old_take_ids(self: SpoolCore, n: int) -> int:
        self._set_sync(self._durable_sync)
        return take_ids(self, n)

    def old_insert(self: Spool, row: list[object]) -> None:
        self._conn.execute(INSERT, row)

    Spool._take_ids = old_take_ids  # type: ignore[method-assign]
    Spool._insert_durably = old_insert  # type: ignore[method-assign]


@dataclass
class Plan:
    """What one child does: ``puts`` puts then report DONE and wait (None: until killed)."""

    puts: int | None
    synchronous: str = "FULL"
    id_block: int = 5
    buggy: bool = False
    seed: int = 0


def child(db: Path, report: Path, plan: Plan) -> None:
    """Runs in the forked child; never returns (see ``fork``)."""
    if plan.buggy:
        restore_sync_bug()
    SpoolCore.id_block = plan.id_block  # small blocks: their boundaries come often
    rng = random.Random(plan.seed)
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    spool = Spool.open(config(db, synchronous=plan.synchronous, max_items=10**9,
                              max_bytes=10**12))
    n = 0
    while plan.puts is None or n < plan.puts:
        if rng.random() < 0.8:
            batch = [(Kind.HEALTH if rng.random() < 0.2 else Kind.DETECTION, None)]
        else:
            batch = [(Kind.DETECTION, None) for _ in range(rng.randint(2, 4))]
        payloads = [(k, health(n) if k is Kind.HEALTH else detection(n)) for k, _ in batch]
        if len(payloads) == 1:
            spool.put(*payloads[0])
        else:
            spool.put_many(payloads)
        # One write() per line: a kill leaves at most a partial last line.
        os.write(fd, "".join(f"{p['event_id']} {k.value} {p['seq']}\n"
                             for k, p in payloads).encode())
        n += len(payloads)
    os.write(fd, f"{DONE}\n".encode())
    time.sleep(3600)


def fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            target()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def read_report(report: Path) -> tuple[list[tuple[str, str, int]], bool]:
    """The puts that returned, in order, and whether the child reported DONE."""
    if not report.exists():
        return [], False
    lines = report.read_text().split("\n")[:-1]  # drop an unterminated tail
    done = DONE in lines
    return [(e, k, int(s)) for e, k, s in (line.split() for line in lines if line != DONE)], done


def run_child(db: Path, report: Path, plan: Plan, kill_after_s: float | None) -> None:
    """Start a child, let it put, SIGKILL it (at DONE, or after ``kill_after_s``)."""
    report.unlink(missing_ok=True)
    pid = fork(lambda: child(db, report, plan))
    deadline = time.monotonic() + 60
    if kill_after_s is not None:
        time.sleep(kill_after_s)
    else:
        while not read_report(report)[1]:
            exited, status = os.waitpid(pid, os.WNOHANG)
            assert not exited, f"child exited by itself ({status}): see its traceback"
            assert time.monotonic() < deadline, "child never finished its puts"
            time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"child exited by itself ({status}): see its traceback"


@dataclass
class Ledger:
    """What the test knows: every put that returned, which run made it, and what
    the checks drained (acked) to keep the file small."""

    returned: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # eid -> kind,seq,run
    runs: list[list[str]] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    first_seq: dict[str, int] = field(default_factory=lambda: defaultdict(lambda: 1))

    def add_run(self, puts: list[tuple[str, str, int]]) -> None:
        run = len(self.runs)
        self.runs.append([e for e, _, _ in puts])
        for e, k, s in puts:
            self.returned[e] = (k, s, run)


@dataclass
class Check:
    lost: list[str]  # returned puts not in the file
    items: int


def check(db: Path, known: Ledger, *, drain: bool = False) -> Check:
    """Reopen as the next boot would (without repairing anything) and compare.

    Raises SpoolCorruptError for a corrupt file; asserts that the counts are
    exact and that ``seq`` is gap-free per kind (going on from the last drained
    one) with each reading's own number. ``drain`` then acks everything (as
    the uplink would), durably, so that the file stays small over many cuts.
    """
    spool = Spool.open(config(db), recover=False, create=False, maintain=False)
    try:
        items = spool.list_items(10**7)
        assert spool.check_counts() == {}
        if drain and items:
            spool.ack(i.id for i in items)
            assert spool.stats().items == 0
    finally:
        spool.close()
    by_kind: dict[str, list[int]] = defaultdict(list)
    present = {}
    for item in items:
        seq = item.payload["seq"]
        by_kind[item.kind.value].append(seq)
        present[item.event_id] = seq
    for kind, seqs in by_kind.items():
        first = known.first_seq[kind]
        assert seqs == list(range(first, first + len(seqs))), (
            f"{kind} seq not gap-free from {first}: {seqs[:5]}...{seqs[-5:]}")
    lost = [e for e in known.returned if e not in present and e not in known.acked]
    for e, seq in present.items():
        if e in known.returned:
            assert known.returned[e][1] == seq, "a reading's seq changed"
    if drain:
        known.acked.update(present)
        for kind, seqs in by_kind.items():
            known.first_seq[kind] = seqs[-1] + 1
    return Check(lost=lost, items=len(items))
