from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lpr_agent.spool import Kind, Spool, SpoolConfig
from tests.health.builders import Clock, detection, health

OpenSpool = Callable[..., Spool]


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[OpenSpool]:
    opened: list[Spool] = []

    def open_(clock: Callable[[], float] = time.time, **config: Any) -> Spool:
        # No automatic maintenance or disk check: the tests decide when the spool degrades.
        config = {"maintenance_interval_s": 3600, "min_free_disk_bytes": 0, **config}
        spool = Spool.open(SpoolConfig(path=tmp_path / f"spool{len(opened)}.db", **config),
                           clock=clock)
        opened.append(spool)
        return spool

    yield open_
    for spool in opened:
        spool.close()


@pytest.fixture
def good_spool(open_spool: OpenSpool) -> Spool:
    """Two detections and one health snapshot, the oldest waiting for 2 s."""
    clock = Clock()
    spool = open_spool(clock)
    spool.put_many([(Kind.DETECTION, detection()), (Kind.DETECTION, detection()),
                    (Kind.HEALTH, health("camera"))])
    clock.now += 2.0
    return spool
