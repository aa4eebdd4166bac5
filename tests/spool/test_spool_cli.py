"""``lpr-agent spool stats | list [--dead] | show ID | requeue-dead | purge --dead --yes``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lpr_agent.cli import main
from lpr_agent.spool import Kind, Spool

from .conftest import config, detection, health


@pytest.fixture
def spool_file(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "spool.db"
    spool = Spool.open(config(path))
    put = spool.put_many([(Kind.DETECTION, detection(i)) for i in range(3)])
    put.append(spool.put(Kind.HEALTH, health(component="disk", status="warning")))
    spool.dead_letter([put[0]], "error: Missing required field: camera_id")
    spool.lease(1, kinds=[Kind.DETECTION])
    spool.nack([put[1]], "HTTP 503")
    spool.close()
    return path, put


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["spool", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_json_and_text(spool_file, capsys) -> None:
    path, _ = spool_file
    code, out, _ = run(capsys, "--spool", str(path), "stats", "--json")
    assert code == 0
    st = json.loads(out)
    assert st["depth"] == {"detection": 2, "health": 1, "registration": 0}
    assert st["dead_letters"] == 1 and st["backing_off"] == 1
    # --spool is accepted after the action, too.
    code, out, _ = run(capsys, "stats", "--spool", str(path))
    assert code == 0 and "dead letters 1" in out and "detection 2" in out


def test_list_show_requeue_purge(spool_file, capsys) -> None:
    path, put = spool_file
    code, out, _ = run(capsys, "list", "--spool", str(path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == put[1:]
    assert rows[0]["attempts"] == 1 and rows[0]["last_error"] == "HTTP 503"
    code, out, _ = run(capsys, "list", "--spool", str(path), "--dead")
    assert code == 0 and str(put[0]) in out and "Missing required field" in out

    code, out, _ = run(capsys, "show", "--spool", str(path), str(put[0]))
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "dead" and shown["payload"]["n"] == 0
    assert shown["payload"]["seq"] == 1  # the first detection put
    code, out, err = run(capsys, "show", "--spool", str(path), "999999")
    assert code == 1 and "no item" in err

    code, out, err = run(capsys, "purge", "--spool", str(path), "--dead")
    assert code == 2 and "--yes" in err
    code, out, _ = run(capsys, "requeue-dead", "--spool", str(path))
    assert code == 0 and "requeued 1" in out
    code, out, _ = run(capsys, "purge", "--spool", str(path), "--dead", "--yes")
    assert code == 0 and "purged 0" in out

    spool = Spool.open(config(path))
    try:
        assert [i.id for i in spool.list_items()] == put
        assert spool.stats().dead_letters == 0
    finally:
        spool.close()


def test_missing_and_corrupt_spool_are_reported_not_created_or_moved(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.db"
    code, _, err = run(capsys, "--spool", str(missing), "stats")
    assert code == 1 and "no spool" in err and not missing.exists()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    code, _, err = run(capsys, "--spool", str(bad), "list")
    assert code == 3 and "corrupt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


def test_cli_runs_as_a_separate_process_while_the_daemon_holds_the_spool(spool_file) -> None:
    path, put = spool_file
    daemon = Spool.open(config(path))
    try:
        daemon.put(Kind.DETECTION, detection(9))
        leased = daemon.lease(2)
        result = subprocess.run(
            [sys.executable, "-m", "lpr_agent", "spool", "--spool", str(path), "stats", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["items"] == 4
        result = subprocess.run(
            [sys.executable, "-m", "lpr_agent", "spool", "--spool", str(path), "requeue-dead"],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        # The daemon's view is consistent with the CLI's change, and its leases hold.
        daemon.ack([i.id for i in leased])
        assert daemon.stats().items == 3 and daemon.check_counts() == {}
        assert put[0] in [i.id for i in daemon.lease(10)]
    finally:
        daemon.close()


def test_salvage_is_reported_until_acknowledged(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spool.db"
    spool = Spool.open(config(path))
    spool.put_many([(Kind.DETECTION, detection(i, image_bytes=300)) for i in range(200)])
    spool.close()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 3)
        f.write(b"\xff\x13" * (size // 6))
    # A guest never salvages: it reports the corruption and leaves the file.
    code, _, err = run(capsys, "--spool", str(path), "stats")
    assert code == 3 and "corrupt" in err
    Spool.open(config(path)).close()  # the daemon's open salvages
    code, out, _ = run(capsys, "--spool", str(path), "stats")
    assert code == 0 and "salvaged" in out and "ack-salvage" in out
    code, out, _ = run(capsys, "--spool", str(path), "stats", "--json")
    [report] = json.loads(out)["salvages"]
    assert report["recovered"] > 0 and report["recovered"] + report["lost"] == 200
    code, out, _ = run(capsys, "ack-salvage", "--spool", str(path))
    assert code == 0 and "acknowledged 1" in out
    code, out, _ = run(capsys, "--spool", str(path), "stats", "--json")
    assert json.loads(out)["salvages"] == []
