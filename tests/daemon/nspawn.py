"""A real systemd (PID 1 of a ``systemd-nspawn`` container) for the daemon tests.

The container's root is a copy-on-write overlay of the host's own ``/``
(``--volatile=overlay``): it sees the host's Python and this checkout's venv
without downloading anything, and everything written inside vanishes when it
stops. It boots ``basic.target`` only, so services enabled on the host are not
started. Facts that shape this (learned on hosts whose PID 1 is not systemd):

* ``systemd-nspawn -D /`` is refused: bind-mount ``/`` elsewhere inside a
  private mount namespace (``unshare --mount``) and boot that path.
* There is no system bus on the host: ``--register=no --keep-unit``, and run
  commands inside with ``nsenter -t <container PID 1> -a``.
* nspawn runs in a cgroup of its own, so that the cgroups it creates can be
  removed afterwards.
* ``--private-network``: only loopback inside, so a server the agent should
  reach must run inside the container too.

Usage: ``with Container(lab_dir, binds=[...]) as ct: ct.run("systemctl", ...)``.
Teardown (SIGTERM to nspawn = clean poweroff, then SIGKILL) always runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil

INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unavailable_reason() -> str | None:
    """Why a container cannot be booted here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    for tool in ("systemd-nspawn", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            hint = " (apt-get install systemd-container)" if tool == "systemd-nspawn" else ""
            return f"{tool} not found{hint}"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "no systemd binary on the host to boot"
    return None


def _cgroup_dirs(name: str) -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # pure cgroup v2
        return [base / name]
    return [base / h / name for h in ("unified", "systemd") if (base / h / "cgroup.procs").exists()]


class Container:
    def __init__(self, lab: Path, binds: Sequence[tuple[Path, str, bool]] = ()) -> None:
        """``binds``: (host path, container path, read_only) mounted into the container."""
        self.lab = lab
        self.binds = list(binds)
        self.name = f"lprtest-{uuid.uuid4().hex[:8]}"
        self.root = lab / "hostroot"
        self.log = lab / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.cgroups = _cgroup_dirs(self.name)

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for d in self.cgroups:
            d.mkdir(parents=True, exist_ok=True)
        args = [
            "--register=no", "--keep-unit", "-M", self.name, "--volatile=overlay",
            "--private-network", "--console=read-only",
        ]
        for host, inside, ro in self.binds:
            args.append(f"--bind{'-ro' if ro else ''}={host}:{inside}")
        args += ["-b", "--", "systemd.unit=basic.target"]
        cgroups = self.cgroups

        def enter_cgroup() -> None:  # runs in the child before exec
            for d in cgroups:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        script = 'set -e; mount --bind / "$1"; exec systemd-nspawn -D "$@"'
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--",
                 "bash", "-c", script, "launcher", str(self.root), *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=enter_cgroup,
            )
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"container did not start:\n{self.log.read_text()[-3000:]}")
            self.leader = self._find_leader()
            time.sleep(0.1)
        state = ""
        while time.monotonic() < deadline:
            r = self.run("systemctl", "is-system-running", check=False, timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"container boot did not finish (state {state!r})")

    def _find_leader(self) -> int | None:
        """The container's PID 1 (systemd), a child of systemd-nspawn in our cgroup."""
        assert self.proc is not None
        # unshare exec's bash, which exec's nspawn: nspawn has Popen's pid.
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return None
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.name() == "systemd":
                    return child.pid
        return None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn: clean poweroff of the container
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        self.leader = None
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        for d in self.cgroups:
            # Remove the (now empty) cgroup tree, deepest first.
            if d.exists():
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()

    # --- commands inside -------------------------------------------------------------

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert self.leader is not None, "container not running"
        full = [
            "nsenter", "-t", str(self.leader), "-a",
            "env", "-i", f"PATH={INSIDE_PATH}", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=",
            "TERM=dumb", "LANG=C.UTF-8", *cmd,
        ]
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(
                f"in container: {' '.join(cmd)} -> rc {r.returncode}\n"
                f"stdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
            )
        return r

    def popen(self, *cmd: str) -> subprocess.Popen[str]:
        assert self.leader is not None
        return subprocess.Popen(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={INSIDE_PATH}",
             "SYSTEMD_PAGER=", *cmd],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def prop(self, unit: str, name: str) -> str:
        return self.run("systemctl", "show", "-p", name, "--value", unit).stdout.strip()

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, input=text)

    def journal(self, unit: str, *extra: str) -> str:
        return self.run(
            "journalctl", "-u", unit, "--no-pager", "-o", "cat", *extra, timeout=30
        ).stdout
