"""Every verb: an example in --help; quiet when the reader of a pipe goes away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lpr_agent.cli import VERB_MODULES
from tests.daemon.agent_process import REPO_ROOT

HELP_PATHS = [[verb] for verb in VERB_MODULES] + [["config", "check"], ["config", "example"]]


def lpr_agent(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lpr_agent", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("verb", HELP_PATHS, ids=" ".join)
def test_help_has_an_example(verb: list[str]) -> None:
    r = lpr_agent(*verb, "--help")
    assert r.returncode == 0, r.stderr
    assert "examples:" in r.stdout
    block = r.stdout.split("examples:", 1)[1]
    assert f"lpr-agent {verb[0]}" in block or "lpr-agent" in block, block


def _closed_pipe_run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout a pipe whose reader has already gone (as after `| head -1`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "lpr_agent", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO_ROOT,
                              env=env)
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["config", "example"],
                                  ["spool", "stats"], ["version"]], ids=" ".join)
def test_closed_pipe_exits_quietly(tmp_path: Path, args: list[str]) -> None:
    from lpr_agent.spool import Spool, SpoolConfig

    spool_path = tmp_path / "spool.db"
    Spool.open(SpoolConfig(path=spool_path)).close()
    env = {**os.environ, "LPR_AGENT_SPOOL__PATH": str(spool_path)}
    code, stderr = _closed_pipe_run(args, env)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert code == 141  # 128 + SIGPIPE, as a shell reports a process killed by it


def test_shell_pipe_into_head(tmp_path: Path) -> None:
    env = {**os.environ, "LPR_AGENT_SPOOL__PATH": str(tmp_path / "spool.db")}
    r = subprocess.run(f"{sys.executable} -m lpr_agent config example | head -1",
                       shell=True, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                       env=env)
    assert r.stdout.startswith("# lpr-agent configuration") and r.stderr == ""


def test_spool_stats_json(tmp_path: Path) -> None:
    import json

    from lpr_agent.spool import Kind, Spool, SpoolConfig

    spool = Spool.open(SpoolConfig(path=tmp_path / "spool.db"))
    spool.put(Kind.DETECTION, {"event_id": "e1", "ocr_results": ["AB123CD"]})
    spool.close()
    r = lpr_agent("spool", "stats", "--json", "--spool", str(tmp_path / "spool.db"),
                  "-c", os.devnull)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["items"] == 1 and stats["depth"]["detection"] == 1
