"""The ``Spool`` façade: open the file (lock, check, salvage), and the parts together.

Why our own schema rather than a queue library: persist-queue keeps acked rows
and retries a failed item at the head forever; litequeue runs
``synchronous=NORMAL`` and sorts the whole queue on every pop. The invariants
and the layout of the parts are in the package docstring.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from lpr_agent.protocol import Kind
from lpr_agent.spool import file
from lpr_agent.spool.acks import AckMixin
from lpr_agent.spool.config import SpoolConfig
from lpr_agent.spool.maintenance import MaintenanceMixin
from lpr_agent.spool.reader import ReaderMixin
from lpr_agent.spool.records import (
    DROP_REASONS,
    DeadLetter,
    SalvageRecord,
    SpoolCorruptError,
    SpoolItem,
    SpoolStats,
)
from lpr_agent.spool.salvage import salvage_into
from lpr_agent.spool.writer import WriterMixin

log = logging.getLogger(__name__)

__all__ = [
    "DROP_REASONS",
    "DeadLetter",
    "Kind",
    "SalvageRecord",
    "Spool",
    "SpoolCorruptError",
    "SpoolItem",
    "SpoolStats",
]


class Spool(WriterMixin, ReaderMixin, AckMixin, MaintenanceMixin):
    """The durable queue between the detector and the uplink. Thread-safe."""

    @classmethod
    def open(
        cls,
        config: SpoolConfig,
        *,
        recover: bool = True,
        create: bool = True,
        maintain: bool | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Spool:
        """Open (creating if needed) the spool file and check it.

        A file that fails ``PRAGMA quick_check`` (or is not an lpr-agent spool)
        is renamed to ``<name>.corrupt-<time>-<id>``, a fresh spool is created
        and every readable row of the old one is copied into it (salvage); the
        event is logged, counted (``counters["corrupt_recoveries"]``) and
        recorded (``stats().salvages`` until ``ack_salvage()``), and old copies
        beyond ``corrupt_keep_files``/``corrupt_keep_bytes`` are deleted: the
        agent never wedges on a bad file. With ``recover=False`` (the CLI,
        which must not pull the file from under a running daemon)
        ``SpoolCorruptError`` is raised instead. ``create=False`` raises
        ``FileNotFoundError`` for a missing file; ``maintain=False`` never
        degrades, folds or vacuums (for guests such as the CLI; the default is
        ``recover``, i.e. guests that do not recover do not maintain either).
        """
        path = Path(config.path)
        if not create and not path.exists():
            raise FileNotFoundError(f"no spool at {path}")
        if create:
            file.make_private_dirs(path.parent)
            file.make_private_file(path)
        recovered_from: Path | None = None
        error = ""
        try:
            conn = file.connect(path, config)
        except SpoolCorruptError as exc:
            if not recover:
                raise
            recovered_from = file.move_aside(path)
            error = str(exc)
            log.error("spool %s is corrupt (%s); moved aside to %s, salvaging what is "
                      "readable into a fresh spool", path, exc, recovered_from)
            file.make_private_file(path)
            conn = file.connect(path, config)
        spool = cls(conn, config, clock=clock, rng=rng)
        if recovered_from is not None:
            spool.recovered_from = recovered_from
            spool._salvage(recovered_from, error)
        spool._next_due = spool._min_wait_until()
        if recover if maintain is None else maintain:
            spool.maintain()
        else:
            # A guest (the CLI): leave caps and file space to the daemon.
            spool._next_maintenance = math.inf
        return spool

    def _salvage(self, aside: Path, error: str) -> None:
        with self._lock, self._txn(durable=True) as conn:
            recovered, lost = salvage_into(aside, conn)
            self._bump("corrupt_recoveries", 1)
            self._bump("salvaged_rows", recovered)
            self._bump("salvage_lost_rows", lost)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_corrupt_file', ?)",
                         (str(aside),))
            conn.execute(
                "INSERT INTO salvages(at, moved_to, recovered, lost, error) VALUES (?, ?, ?, ?, ?)",
                (self._clock(), str(aside), recovered, lost, error[:500]),
            )
        log.error("spool: salvaged %d row(s) from %s; %d could not be read", recovered, aside,
                  lost)
        file.prune_asides(self.path, self.config.corrupt_keep_files,
                          self.config.corrupt_keep_bytes)

    def ack_salvage(self) -> int:
        """An operator has seen the salvage reports: health stops reporting them.
        Returns how many were acknowledged."""
        with self._lock, self._txn(durable=True) as conn:
            n = conn.execute("UPDATE salvages SET acknowledged = ? WHERE acknowledged IS NULL",
                             (self._clock(),)).rowcount
        if n:
            log.info("spool: %d salvage report(s) acknowledged", n)
        return int(n)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
