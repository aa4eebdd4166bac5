"""``pip install .`` into a fresh venv outside the checkout gives a working agent.

The wheel is built the way a user's pip builds it (isolated build, from the
checkout), then installed without dependencies into a new venv whose
dependencies come from the test venv through a path file: the test is about
*our* packaging (modules, entry points, static files, model lookup), not about
PyPI's. A path file does not run the test venv's editable-install hook, and the
commands run outside the checkout, so nothing here can fall back on the source
tree: the assertion on ``__file__`` proves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest

from lpr_agent.detect.synthetic import render_plate

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    # Build from a copy: an in-tree build leaves build/ in the checkout.
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "artifacts", "*.egg-info", "__pycache__", ".*_cache"))
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "-w", str(wheels), str(source)],
        check=True, cwd=root, timeout=300,
    )
    (wheel,) = wheels.glob("lpr_agent-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies from the test venv, appended after the new venv's own dirs.
    Path(site, "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", str(wheel)],
                   check=True, cwd=root, timeout=300)
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LPR_AGENT"))}
    return subprocess.run([str(env_dir / "bin" / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_installed_package_is_used_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, "python", "-c",
               "import lpr_agent, server_stub; print(lpr_agent.__file__, server_stub.__file__)",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for path in out.stdout.split():
        assert Path(path).is_relative_to(installed), path


def test_installed_agent_reads_a_plate(installed: Path, tmp_path: Path) -> None:
    frame = np.full((360, 640, 3), 90, np.uint8)
    plate = render_plate("KX512TR", 48)
    h, w = plate.shape[:2]
    frame[150:150 + h, 200:200 + w] = plate
    image = tmp_path / "car.jpg"
    cv2.imwrite(str(image), frame)
    out = _run(installed, "lpr-agent", "detect", str(image), "--json", "--no-progress",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["ocr_results"] for r in results] == [["KX512TR"]], out.stdout


def test_installed_stub_serves_its_dashboard(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, "python", "-c",
               "import importlib.resources as r; "
               "print(r.files('server_stub').joinpath('static/index.html').is_file())",
               cwd=tmp_path)
    assert out.stdout.strip() == "True", out.stderr
    assert _run(installed, "lpr-server-stub", "--help", cwd=tmp_path).returncode == 0
    assert _run(installed, "lpr-agent", "--version", cwd=tmp_path).returncode == 0
