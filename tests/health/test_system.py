"""Host readings: real psutil values; a Raspberry Pi's firmware flags and thermal zones
as the kernel lays them out in sysfs (a tree in a temp dir stands in for the board)."""

from __future__ import annotations

from pathlib import Path

from lpr_agent.health.system import (
    PI_THROTTLED,
    SystemSampler,
    clock_state,
    pi_throttling,
    thermal_trips,
)


def test_system_sample_has_real_metrics(tmp_path: Path) -> None:
    sample = SystemSampler(tmp_path / "not-yet" / "state").sample()
    for key in ("cpu_usage", "memory_usage", "disk_usage"):
        assert isinstance(sample[key], float) and 0 <= sample[key] <= 100, key
    assert sample["memory_usage"] > 0 and sample["disk_usage"] > 0
    assert sample["process_rss_mb"] > 5  # a Python process with pydantic loaded
    assert sample["clock_sync"] in ("synchronized", "unsynchronized", "unknown")
    assert sample["clock_source"] in ("timesyncd", "adjtimex", "timedated", "none")
    assert len(sample["load_avg"]) == 3 and sample["cpu_count"] >= 1


def _pi(sysfs: Path, flags: str) -> None:
    path = sysfs / PI_THROTTLED
    path.parent.mkdir(parents=True)
    path.write_text(flags + "\n")


def test_raspberry_pi_throttle_flags(tmp_path: Path) -> None:
    # 0x50005: under-voltage and throttled now (bits 0, 2), both also "has occurred"
    _pi(tmp_path, "50005")
    assert pi_throttling(tmp_path) == ["under-voltage", "throttled"]
    sample = SystemSampler(tmp_path, sysfs=tmp_path).sample()
    assert sample["throttled"] == ["under-voltage", "throttled"]


def test_past_throttling_only_is_not_reported(tmp_path: Path) -> None:
    _pi(tmp_path, "50000")  # happened since boot, not now
    assert pi_throttling(tmp_path) == []
    assert "throttled" not in SystemSampler(tmp_path, sysfs=tmp_path).sample()
    assert pi_throttling(tmp_path / "no-such-board") == []


def _zone(sysfs: Path, n: int, kind: str, temp_mc: int, trips: dict[str, int]) -> None:
    zone = sysfs / "class" / "thermal" / f"thermal_zone{n}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    (zone / "temp").write_text(f"{temp_mc}\n")
    for i, (trip_type, limit) in enumerate(trips.items()):
        (zone / f"trip_point_{i}_type").write_text(trip_type + "\n")
        (zone / f"trip_point_{i}_temp").write_text(f"{limit}\n")


def test_thermal_zone_over_its_trip_points(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "cpu-thermal", 86_500, {"passive": 80_000, "hot": 85_000,
                                                 "critical": 110_000})
    _zone(tmp_path, 1, "gpu-thermal", 50_000, {"passive": 80_000})  # cool
    _zone(tmp_path, 2, "acpitz", 30_000, {"active": 20_000})  # fan trip: not throttling
    assert thermal_trips(tmp_path) == [("cpu-thermal", "hot", 86.5, 85.0)]
    sample = SystemSampler(tmp_path, sysfs=tmp_path).sample()
    assert sample["thermal_trips"] == [
        {"zone": "cpu-thermal", "trip": "hot", "temperature_c": 86.5, "trip_c": 85.0}]


def test_clock_from_timesyncd_flag_file(tmp_path: Path) -> None:
    # timesyncd creates this at its first sync; reading it needs no privilege.
    flag = tmp_path / "systemd" / "timesync" / "synchronized"
    flag.parent.mkdir(parents=True)
    flag.touch()
    state = clock_state(tmp_path)
    assert (state.synchronized, state.source) == (True, "timesyncd")
    flag.unlink()
    # no flag: the kernel's own answer (adjtimex is allowed outside the unit)
    assert clock_state(tmp_path).source in ("adjtimex", "timedated", "none")
