"""Config loading: TOML + LPR_AGENT_* overrides, errors naming file/variable/key, exit 78."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lpr_agent.config import EX_CONFIG, AgentConfig, ConfigError, example_toml, load_config

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("LPR_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "lpr_agent", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_no_file_gives_working_defaults() -> None:
    config = load_config(None, environ={})
    assert config == AgentConfig()
    assert config.state_dir == Path("/var/lib/lpr-agent")


def test_file_values_and_env_override_with_types(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(
        '[camera]\ncamera_id = "gate_7"\n[uplink]\nserver_url = "http://a:1"\n'
        '[health]\ninterval_s = 5\n[health.memory_percent]\nwarning = 50\n'
    )
    config = load_config(
        f,
        environ={
            "LPR_AGENT_UPLINK__SERVER_URL": "http://b:2",
            "LPR_AGENT_HEALTH__ENABLED": "false",
            "LPR_AGENT_HEALTH__MEMORY_PERCENT__ERROR": "60",
            "LPR_AGENT_LOGGING__LEVEL": "DEBUG",
            "LPR_AGENT_TEST_FREEZE_FILE": "/x",  # a test hook, not a setting
            "LPR_AGENT_CONFIG": "/y",
            "OTHER": "1",
        },
    )
    assert config.camera.camera_id == "gate_7"
    assert config.uplink.server_url == "http://b:2"  # environment wins over the file
    assert config.health.interval_s == 5.0
    assert config.health.enabled is False  # "false" coerced to bool
    assert (config.health.memory_percent.warning, config.health.memory_percent.error) == (50, 60)
    assert config.health.disk_percent.warning == 85  # untouched default
    assert config.logging.level == "DEBUG"


def test_env_override_of_a_path() -> None:
    config = load_config(None, environ={"LPR_AGENT_DAEMON__STATE_DIR": "/tmp/x"})
    assert config.state_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[uplink]\nserver_ur = 'x'\n", r"agent\.toml: key uplink\.server_ur: unknown key"),
        ("[camera]\ncamera_id = ''\n", r"agent\.toml: key camera\.camera_id: .*at least 1"),
        ("[health]\ninterval_s = 'often'\n", r"key health\.interval_s: .*valid number.*'often'"),
        ("[health.memory_percent]\nwarning = 99\n", r"key health\.memory_percent: .*must be >="),
        ("[bogus]\n", r"key bogus: unknown key"),
        ("[camera\n", r"agent\.toml: not valid TOML"),
        ("[logging]\nlevel = 'LOUD'\n", r"key logging\.level: Input should be 'DEBUG'"),
    ],
)
def test_bad_file_names_file_key_reason(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert re.search(expected, str(info.value)), str(info.value)
    assert info.value.exit_code == EX_CONFIG == 78


def test_bad_env_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment LPR_AGENT_HEALTH__INTERVAL_S: key "
                       r"health\.interval_s: "):
        load_config(None, environ={"LPR_AGENT_HEALTH__INTERVAL_S": "soon"})
    with pytest.raises(ConfigError, match=r"LPR_AGENT_UPLINK_SERVER_URL: not a setting.*"
                       r"LPR_AGENT_UPLINK__SERVER_URL"):
        load_config(None, environ={"LPR_AGENT_UPLINK_SERVER_URL": "http://x"})
    with pytest.raises(ConfigError, match=r"environment LPR_AGENT_UPLINK__NOPE: key uplink\.nope"):
        load_config(None, environ={"LPR_AGENT_UPLINK__NOPE": "1"})


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path, environ={})  # a directory


def test_example_file_is_the_generated_one() -> None:
    shipped = (ROOT / "configs" / "agent.example.toml").read_text()
    assert shipped == example_toml(), (
        "configs/agent.example.toml is stale: regenerate with "
        "`lpr-agent config example > configs/agent.example.toml`"
    )


def test_example_as_shipped_and_fully_uncommented_both_mean_defaults(tmp_path: Path) -> None:
    text = example_toml()
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(text)
    assert load_config(shipped, environ={}) == AgentConfig()
    # Uncomment every key and table header: still valid and still the defaults,
    # so the file documents the real defaults.
    lines = []
    for line in text.splitlines():
        m = re.match(r"^# (\[[a-z_.]+\]|[a-z_]+ = .*)$", line)
        if m and "(not set)" not in line and "(required)" not in line:
            lines.append(m.group(1))
        else:
            lines.append(line)
    uncommented = tmp_path / "all.toml"
    uncommented.write_text("\n".join(lines) + "\n")
    assert sum(1 for x in lines if re.match(r"^[a-z_]+ = ", x)) >= 20
    assert load_config(uncommented, environ={}) == AgentConfig()


def test_cli_config_check_and_example(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[camera]\ncamera_id = 'c9'\n[uplink]\ntoken = 'sekrit'\n")
    r = _cli("config", "check", str(good))
    assert r.returncode == 0 and "OK" in r.stdout
    r = _cli("config", "check", "--show", str(good))
    assert r.returncode == 0 and '"camera_id": "c9"' in r.stdout and "sekrit" not in r.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text("[uplink]\nserver_ur = 'x'\n")
    r = _cli("config", "check", str(bad))
    assert r.returncode == 78
    assert f"{bad}: key uplink.server_ur: unknown key" in r.stderr

    r = _cli("config", "check", str(good), env={"LPR_AGENT_SPOOL__SYNCHRONOUS": "SOMETIMES"})
    assert r.returncode == 78 and "LPR_AGENT_SPOOL__SYNCHRONOUS" in r.stderr

    r = _cli("config", "example")
    assert r.returncode == 0 and r.stdout == example_toml()
    for verb in (["config", "--help"], ["config", "check", "--help"]):
        assert _cli(*verb).returncode == 0
