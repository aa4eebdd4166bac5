"""Static checks of packaging/systemd/lpr-agent.service (no root, no container)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "lpr-agent.service"


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_required_settings() -> None:
    s = _settings()
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["78"]
    assert s["StateDirectory"] == ["lpr-agent"]
    assert s["ConfigurationDirectory"] == ["lpr-agent"]
    assert s["User"] == ["lpr-agent"]
    assert "video" in s["SupplementaryGroups"][0]  # /dev/video*
    assert s["DeviceAllow"] == ["char-video4linux rw"]
    assert "AF_INET" in s["RestrictAddressFamilies"][0]  # reaches the server
    assert "PrivateNetwork" not in s and "IPAddressDeny" not in s
    assert s["ExecStart"][0].endswith("lpr-agent run --config /etc/lpr-agent/agent.toml")
    assert int(s["StartLimitBurst"][0]) >= 3
    assert re.fullmatch(r"\d+s", s["RestartSec"][0])
    assert s["WatchdogSec"] and s["LimitCORE"] == ["0"]
    # the agent's shutdown budget fits in the stop timeout
    from lpr_agent.config import DaemonConfig

    assert DaemonConfig().shutdown_timeout_s < int(s["TimeoutStopSec"][0].rstrip("s"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_security_exposure_at_most_2() -> None:
    r = subprocess.run(
        # --threshold is in tenths: 20 = exposure 2.0
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    assert float(m.group(1)) <= 2.0
    assert r.returncode == 0
