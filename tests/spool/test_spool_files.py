"""The spool's files are private whatever the umask, and importing the spool's
config (the config loader does) pulls in neither sqlite_utils nor numpy."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from lpr_agent.spool import Kind, Spool

from .conftest import config, detection


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_and_spool_files_are_private_under_umask_022(tmp_path: Path) -> None:
    state = tmp_path / "outside-systemd" / "lpr-agent"
    old = os.umask(0o022)
    try:
        spool = Spool.open(config(state / "spool.db"))
        spool.put(Kind.DETECTION, detection())
        files = {p.name: mode(p) for p in state.iterdir()}
        spool.close()
    finally:
        os.umask(old)
    assert mode(state) == 0o700 and mode(state.parent) == 0o700  # both were created here
    # The database and, while it was open, its WAL and SHM (SQLite copies the
    # database file's mode) and the writer lock: owner only.
    assert {"spool.db", "spool.db-wal", "spool.db-shm", "spool.db.writer"} <= set(files)
    assert all(m == 0o600 for m in files.values()), files


def test_an_existing_world_readable_spool_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old = os.umask(0o022)
    try:
        Spool.open(config(path)).close()
        os.chmod(path, 0o644)  # as made by an earlier version
        before = mode(tmp_path)
        Spool.open(config(path)).close()
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(tmp_path) == before  # not our directory: untouched


def test_importing_the_spool_config_does_not_import_sqlite_utils_or_numpy() -> None:
    code = (
        "import sys, lpr_agent.spool.config, lpr_agent.spool\n"
        "bad = [m for m in ('sqlite_utils', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from lpr_agent.spool import Spool, Kind, SpoolItem, SpoolStats, SpoolConfig\n"
        "assert 'sqlite_utils' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
