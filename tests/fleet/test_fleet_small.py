"""A small fleet through a stub restart: nothing lost, nothing stored twice.

The same machinery as ``benchmarks/fleet_bench.py`` at 20 cameras: real
spools, real uplinks in two worker processes, the real stub stopped and
started again with its database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fleet import FleetOptions, run_fleet

pytestmark = pytest.mark.slow


def test_fleet_survives_a_stub_restart(tmp_path: Path) -> None:
    opt = FleetOptions(cameras=20, rate=1.0, processes=2, warmup_s=3, steady_s=8, down_s=5,
                       recover_s=10, drain_timeout_s=60, image_share=0.2,
                       image_bytes=20_000, spool_dir=str(tmp_path), work_dir=tmp_path)
    figures = run_fleet(opt)
    assert figures["readings"] >= 20 * (3 + 8 + 5 + 10) * 0.9
    assert figures["lost"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["unacked_at_end"] == 0, figures
    # Steady state keeps up with the offered load (the stub is far from full).
    assert figures["stored_ratio"] >= 0.95, figures
    assert figures["drain_s"] <= 30, figures
