"""Host readings for the ``system`` component: psutil, the clock, the board's thermal state.

Everything here only reads, and everything works under the hardened systemd
unit (packaging/systemd/lpr-agent.service): that unit blocks the ``@clock``
syscalls (so ``adjtimex`` fails with EPERM) and hides other users' processes,
so each reading has a fallback or is simply left out. ``sysfs`` and ``run``
roots are parameters so that tests can stand in for a Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2) return value: clock not synchronised

# Raspberry Pi firmware flags (vcgencmd get_throttled): bit -> what it means now.
PI_THROTTLE_BITS = {
    0: "under-voltage",
    1: "ARM frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
PI_THROTTLED = Path("devices/platform/soc/soc:firmware/get_throttled")


@dataclass(frozen=True)
class ClockState:
    synchronized: bool | None  # None: no source could tell
    source: str  # which check answered: timesyncd, adjtimex, timedated, none


def _adjtimex_state() -> int | None:
    """adjtimex(2) with modes=0 (read only); None where the syscall is refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # >= sizeof(struct timex); zeroed: modes=0
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    return state if state >= 0 else None


def _timedated(timeout: float = 2.0) -> bool | None:
    """systemd-timedated's NTPSynchronized over D-Bus (works for any user, no @clock)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


def clock_state(run: Path = Path("/run"), *, dbus: bool = True) -> ClockState:
    """Is the clock NTP-synchronised? Tries the checks that work under the unit first.

    1. timesyncd's flag file (``/run/systemd/timesync/synchronized``, created at
       its first sync): a file read, allowed everywhere.
    2. the kernel's own state via ``adjtimex`` — blocked (EPERM) under the unit.
    3. timedated over D-Bus (``timedatectl``), which reads the kernel state for us.
    """
    if (run / "systemd/timesync/synchronized").exists():
        return ClockState(True, "timesyncd")
    state = _adjtimex_state()
    if state is not None:
        return ClockState(state != _TIME_ERROR, "adjtimex")
    if dbus:
        synced = _timedated()
        if synced is not None:
            return ClockState(synced, "timedated")
    return ClockState(None, "none")


def max_temperature() -> float | None:
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return None
    try:
        readings = sensors()
    except (OSError, RuntimeError):
        return None
    temps = [t.current for entries in readings.values() for t in entries if t.current]
    return round(max(temps), 1) if temps else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def pi_throttling(sysfs: Path = Path("/sys")) -> list[str]:
    """What the Raspberry Pi firmware is doing to the board right now (empty elsewhere)."""
    raw = _read(sysfs / PI_THROTTLED)
    if not raw:
        return []
    try:
        flags = int(raw, 16)
    except ValueError:
        return []
    return [what for bit, what in PI_THROTTLE_BITS.items() if flags & (1 << bit)]


def thermal_trips(sysfs: Path = Path("/sys")) -> list[tuple[str, str, float, float]]:
    """Thermal zones at or over a trip point: (zone type, trip type, temp °C, trip °C).

    Only the highest trip each zone has reached is listed. ``passive``/``hot``
    trips are where the kernel starts throttling; ``critical`` is shutdown.
    """
    out = []
    for zone in sorted((sysfs / "class/thermal").glob("thermal_zone*")):
        temp = _read(zone / "temp")
        if temp is None or not temp.lstrip("-").isdigit():
            continue
        celsius = int(temp) / 1000
        reached: tuple[str, float] | None = None
        for trip in zone.glob("trip_point_*_temp"):
            kind = _read(trip.with_name(trip.name.replace("_temp", "_type")))
            limit = _read(trip)
            if kind not in ("passive", "hot", "critical") or not limit \
                    or not limit.lstrip("-").isdigit():
                continue
            limit_c = int(limit) / 1000
            if limit_c > 0 and celsius >= limit_c and (reached is None or limit_c > reached[1]):
                reached = (kind, limit_c)
        if reached is not None:
            out.append((_read(zone / "type") or zone.name, reached[0], celsius, reached[1]))
    return out


class SystemSampler:
    """Host and process metrics; cheap enough to call every few seconds."""

    def __init__(self, disk_path: Path, *, sysfs: Path = Path("/sys"),
                 run: Path = Path("/run")) -> None:
        self.disk_path = disk_path
        self.sysfs = sysfs
        self.run = run
        self.process = psutil.Process()
        self.started = time.monotonic()
        # cpu_percent(None) measures since the previous call; the first call is
        # meaningless, so prime both counters now.
        psutil.cpu_percent(None)
        self.process.cpu_percent(None)

    def sample(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        details: dict[str, Any] = {
            "cpu_usage": round(psutil.cpu_percent(None), 1),
            "memory_usage": round(vm.percent, 1),
            "disk_usage": None,
            "memory_available_mb": round(vm.available / 2**20, 1),
            "process_rss_mb": round(self.process.memory_info().rss / 2**20, 1),
            "process_cpu": round(self.process.cpu_percent(None), 1),
            "process_threads": self.process.num_threads(),
            "cpu_count": os.cpu_count(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "system_uptime_s": round(time.time() - psutil.boot_time(), 1),
        }
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent  # the state dir may not exist yet: measure its file system
        try:
            du = psutil.disk_usage(str(path))
            details["disk_usage"] = round(du.percent, 1)
            details["disk_free_mb"] = round(du.free / 2**20, 1)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            details["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        temp = max_temperature()
        if temp is not None:
            details["temperature_c"] = temp
        throttled = pi_throttling(self.sysfs)
        if throttled:
            details["throttled"] = throttled
        trips = thermal_trips(self.sysfs)
        if trips:
            details["thermal_trips"] = [
                {"zone": z, "trip": k, "temperature_c": t, "trip_c": c} for z, k, t, c in trips
            ]
        clock = clock_state(self.run)
        details["clock_sync"] = {True: "synchronized", False: "unsynchronized",
                                 None: "unknown"}[clock.synchronized]
        details["clock_source"] = clock.source
        return details
