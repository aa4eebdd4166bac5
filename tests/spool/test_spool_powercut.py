"""Power cuts, simulated for real: a process putting into the spool is killed and
everything it wrote but did not fsync is thrown away (``powercut/lazyfs.py``).

With ``synchronous=FULL`` no put that returned may be lost and the file must
never be corrupt, at any cut point: right after the first put of a restarted
process (a new id block), right after the first put of a later id block,
after a crash and restart without a cut, in the middle of a put. With
``NORMAL`` the file must not be corrupt either, and what is lost is only the
newest puts since the last sync. And the rig must be able to fail: run
against the code before the issue-10 fix (restored in the child only) it
has to find the lost readings.

Sizes: ``LPR_CRASH_KILLS`` cut points for FULL (default 200, more with
``LPR_SOAK_SCALE``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .conftest import SCALE
from .powercut.rig import Ledger, Plan, PowerCutFS, check, read_report, run_child

CUTS = int(os.environ.get("LPR_CRASH_KILLS", str(200 * SCALE)))
ID_BLOCK = 5


def cut_points(rng: random.Random, n: int, synchronous: str) -> list[tuple[str, list[Plan],
                                                                          float | None, bool]]:
    """(label, the children run before the cut, kill delay of the last, torn?)."""
    points = []
    for k in range(n):
        r = rng.random()
        kill_after: float | None = None
        if r < 0.25:
            label, puts = "first put after a restart", 1
        elif r < 0.40:
            label, puts = "first put of a later id block", ID_BLOCK + 1
        elif r < 0.75:
            label, puts = "after some puts", rng.randint(2, 3 * ID_BLOCK)
        else:
            label, puts, kill_after = "in the middle of a put", None, rng.uniform(0.0, 0.05)
        runs = [Plan(puts, synchronous, ID_BLOCK, seed=k)]
        if rng.random() < 0.3:  # a crash and restart before the power cut
            runs.insert(0, Plan(rng.randint(1, 2 * ID_BLOCK), synchronous, ID_BLOCK,
                                seed=10**6 + k))
            label += ", after a restart"
        points.append((label, runs, kill_after, rng.random() < 0.5))
    return points


def run_cut_points(tmp: Path, n: int, synchronous: str, *, buggy: bool = False,
                   seed: int = 1) -> tuple[Ledger, list[list[str]], dict[str, int]]:
    """Returns what was put, the readings lost at each cut, and the cut labels seen."""
    rng = random.Random(seed)
    known = Ledger()
    lost_per_cut: list[list[str]] = []
    labels: dict[str, int] = {}
    report = tmp / "report.txt"  # on the real disk, outside the mount
    with PowerCutFS(tmp) as fs:
        db = fs.mount / "state" / "spool.db"
        lost_before: set[str] = set()
        for k, (label, runs, kill_after, torn) in enumerate(cut_points(rng, n, synchronous)):
            window: list[str] = []
            for i, plan in enumerate(runs):
                plan.buggy = buggy
                last = i == len(runs) - 1
                run_child(db, report, plan, kill_after if last else None)
                puts, _ = read_report(report)
                known.add_run(puts)
                window += [e for e, _, _ in puts]
            fs.cut(torn_seed=k if torn else None)
            # Raises on a corrupt file; every 10th check drains the spool (acks,
            # as the uplink would) so that the file stays small over many cuts.
            result = check(db, known, drain=k % 10 == 9)
            new_lost = [e for e in result.lost if e not in lost_before]
            lost_before.update(new_lost)
            if new_lost:  # whatever is lost is the newest puts since the last sync
                assert new_lost == window[len(window) - len(new_lost):], (
                    f"cut {k} ({label}): lost puts are not the newest ones")
            lost_per_cut.append(new_lost)
            labels[label] = labels.get(label, 0) + 1
    return known, lost_per_cut, labels


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_no_returned_put_is_lost_at_any_cut_point(tmp_path: Path) -> None:
    known, lost, labels = run_cut_points(tmp_path, CUTS, "FULL")
    print(f"FULL: {CUTS} cut points, {len(known.returned)} returned puts, "
          f"{sum(map(len, lost))} lost; cut points: {labels}")
    assert len(known.returned) > CUTS  # the cuts landed while puts were happening
    assert {"first put after a restart", "first put of a later id block",
            "in the middle of a put"} <= {label.split(",")[0] for label in labels}
    assert not [x for x in lost if x], "returned puts lost with synchronous=FULL"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_normal_never_corrupts_and_loses_only_the_newest_puts(tmp_path: Path) -> None:
    n = max(30, CUTS // 5)
    known, lost, _ = run_cut_points(tmp_path, n, "NORMAL", seed=2)
    print(f"NORMAL: {n} cut points, {len(known.returned)} returned puts, "
          f"{sum(map(len, lost))} lost, at most {max(map(len, lost))} at one cut")
    # Nothing syncs between checkpoints, so a cut takes back every put since
    # the last one: always the newest (checked at each cut), never corrupt.
    assert sum(map(len, lost)) > 0, "NORMAL lost nothing: is the rig cutting at all?"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_normal_loss_is_bounded_by_the_checkpoint_interval(tmp_path: Path) -> None:
    # The documented bound: SQLite checkpoints (and syncs) every 1000 WAL
    # pages and every put writes at least one, so a cut takes back at most
    # the last 1000 puts, however long the spool has been running.
    known = Ledger()
    report = tmp_path / "report.txt"
    with PowerCutFS(tmp_path) as fs:
        db = fs.mount / "spool.db"
        run_child(db, report, Plan(2500, "NORMAL", seed=3), None)
        known.add_run(read_report(report)[0])
        fs.cut()
        lost = check(db, known).lost
    print(f"NORMAL, 2500 puts in one run: {len(lost)} lost at the cut")
    assert 0 < len(lost) <= 1000
    assert lost == known.runs[0][-len(lost):]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_rig_finds_the_old_sync_bug(tmp_path: Path) -> None:
    # The code before the fix, cut right after the first put of each restart
    # (the first of an id block): those puts committed at NORMAL.
    buggy_dir, fixed_dir = tmp_path / "buggy", tmp_path / "fixed"
    buggy_dir.mkdir()
    fixed_dir.mkdir()
    with_bug = run_cut_points_first_put(buggy_dir, buggy=True)
    fixed = run_cut_points_first_put(fixed_dir, buggy=False)
    print(f"first-put cuts: {with_bug} of 20 lost with the old code, {fixed} with the fix")
    assert with_bug > 0, "the rig did not notice the old bug"
    assert fixed == 0


def run_cut_points_first_put(tmp: Path, *, buggy: bool) -> int:
    known = Ledger()
    lost = 0
    report = tmp / "report.txt"
    with PowerCutFS(tmp) as fs:
        db = fs.mount / "spool.db"
        for k in range(20):
            run_child(db, report, Plan(1, "FULL", ID_BLOCK, buggy=buggy, seed=k), None)
            known.add_run(read_report(report)[0])
            fs.cut()
            lost = len(check(db, known).lost)
    return lost
