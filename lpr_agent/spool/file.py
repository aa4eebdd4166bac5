"""The spool file: create it private, connect, check it, move a corrupt one aside.

Nothing here knows about items or leases; ``Spool.open`` strings these together
and ``salvage`` copies what is readable out of a file moved aside.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from lpr_agent.spool._schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from lpr_agent.spool.config import SpoolConfig
from lpr_agent.spool.records import SpoolCorruptError

log = logging.getLogger(__name__)

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
SQLITE_FULL = 13
# The file and its WAL/SHM hold plates and images: owner only, whatever the
# umask (SQLite gives the WAL and SHM the mode of the database file).
FILE_MODE = 0o600
DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm")


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return not isinstance(exc, sqlite3.OperationalError)


def make_private_dirs(directory: Path) -> None:
    """Create the missing directories 0700. Existing ones are left as they are:
    the state dir may be systemd's, or a shared parent such as /tmp."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask; chmod is not


def make_private_file(path: Path) -> None:
    """Create ``path`` empty 0600 if missing; take group/other bits off an existing
    spool file and its WAL/SHM (spools made before this rule was kept)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            if side.stat().st_mode & 0o077:
                os.chmod(side, FILE_MODE)
        except FileNotFoundError:
            pass


def move_aside(path: Path) -> Path:
    # Microseconds: the names sort by age (prune_asides keeps the newest).
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{uuid.uuid4().hex[:6]}")
    path.rename(aside)
    # Keep the WAL with the main file: it is part of the evidence, and salvage
    # reads committed rows from it. The shm is only an index of the WAL and
    # would confuse the fresh database.
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        wal.rename(aside.with_name(aside.name + "-wal"))
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return aside


def prune_asides(path: Path, keep_files: int, keep_bytes: int) -> list[Path]:
    """Delete the oldest moved-aside copies beyond ``keep_files`` or ``keep_bytes``
    (each copy counted with its WAL). Returns the deleted main files."""
    copies = sorted(
        (p for p in path.parent.glob(path.name + ".corrupt-*") if not p.name.endswith(SIDE_FILES)),
        key=lambda p: p.name,  # the name starts with the UTC time: oldest first
        reverse=True,
    )
    kept = used = 0
    deleted: list[Path] = []
    for copy in copies:
        group = [copy, *(copy.with_name(copy.name + s) for s in SIDE_FILES)]
        size = sum(p.stat().st_size for p in group if p.exists())
        if kept < keep_files and used + size <= keep_bytes:
            kept += 1
            used += size
            continue
        for p in group:
            p.unlink(missing_ok=True)
        deleted.append(copy)
        log.warning("spool: deleted the old corrupt copy %s (%d B; corrupt_keep_files=%d, "
                    "corrupt_keep_bytes=%d)", copy, size, keep_files, keep_bytes)
    return deleted


def connect(path: Path, config: SpoolConfig) -> sqlite3.Connection:
    """Open the spool file in WAL mode, check it, create or update the schema.

    Raises ``SpoolCorruptError`` for a file that fails ``quick_check``, is not
    SQLite, or is another application's database.
    """
    existed = path.exists() and path.stat().st_size > 0
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_s * 1000)}")
        if existed:
            _check(conn)
        else:
            # Must precede the first table: lets maintain() give freed pages back.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (got {mode})")
        conn.execute(f"PRAGMA synchronous = {config.synchronous}")
        # After a big backlog drained and was checkpointed, truncate the WAL
        # instead of keeping it at its high-water size.
        conn.execute("PRAGMA journal_size_limit = 8388608")
        conn.execute("PRAGMA temp_store = MEMORY")
        # Debian's SQLite zero-fills every deleted byte (SECURE_DELETE on by
        # default): acking a detection with a 60 KB image then costs ~300 us
        # of CPU instead of ~20. With the WAL, full zeroing promises less than
        # it seems anyway (the WAL keeps copies of the pages until it is
        # reused); freed pages are zeroed when written again or given back by
        # the incremental vacuum.
        conn.execute("PRAGMA secure_delete = FAST")
        _create_schema(conn)
    except SpoolCorruptError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_corruption(exc):
            raise SpoolCorruptError(str(exc)) from exc
        raise
    return conn


def _check(conn: sqlite3.Connection) -> None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        raise SpoolCorruptError("quick_check: " + "; ".join(str(r[0]) for r in rows[:5]))
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    has_tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
    ).fetchone()[0]
    if has_tables and app_id != APPLICATION_ID:
        raise SpoolCorruptError(f"not an lpr-agent spool (application_id {app_id})")


def _create_schema(conn: sqlite3.Connection) -> None:
    # Up to date already (every open but the first of each version): no write
    # transaction at all. Setting a pragma dirties page 1 even when the value
    # is the same, and the commit would cost every restart an fsync.
    if (conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            and conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID):
        return
    # Durable: a schema change must not be the commit a power cut takes back
    # while later puts (fsynced) survive it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in split_sql(SCHEMA):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def split_sql(script: str) -> list[str]:
    """The statements of a script, for running them inside our own transaction."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not line.strip() or line.strip().startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if line.rstrip().endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements


def acquire_writer_lock(path: Path, timeout_s: float) -> int:
    """Become the one process that puts into this file (see the package docstring:
    ids are committed in increasing order). Returns the fd holding the flock."""
    fd = os.open(path.with_name(path.name + ".writer"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(
                    f"another Spool (process) is putting into {path}; a spool "
                    "file has one producer"
                ) from exc
            time.sleep(0.01)
