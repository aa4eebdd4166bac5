"""Run ``lpr-agent run`` as a real process with a real sd_notify socket.

The test plays systemd's part of the notify protocol: it binds an AF_UNIX
datagram socket, passes it as ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``), and
records every message the agent sends, with its arrival time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    def __init__(
        self,
        workdir: Path,
        config_text: str,
        *,
        env: dict[str, str] | None = None,
        watchdog_usec: int | None = 1_000_000,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "agent.toml"
        self.config_path.write_text(config_text)
        self.env = env or {}
        self.watchdog_usec = watchdog_usec
        self.messages: list[tuple[float, str]] = []  # (monotonic time, one KEY=VALUE line)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "agent.log"
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> AgentProcess:
        sock_path = self.workdir / "notify.sock"
        sock_path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self._sock.settimeout(0.2)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LPR_AGENT_", "WATCHDOG_",
                                                                          "JOURNAL_STREAM"))}
        env.update(NOTIFY_SOCKET=str(sock_path), PYTHONUNBUFFERED="1", **self.env)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lpr_agent", "run", "--config", str(self.config_path)],
            cwd=REPO_ROOT, env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )
        return self

    def _read(self) -> None:
        assert self._sock is not None
        while not self._closing:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode().splitlines():
                self.messages.append((now, line))

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._closing = True
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    # --- observing -------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def count(self, line: str, since: float = 0.0) -> int:
        return sum(1 for t, m in list(self.messages) if m == line and t >= since)

    def last(self, prefix: str) -> str | None:
        for _, m in reversed(list(self.messages)):
            if m.startswith(prefix):
                return m[len(prefix):]
        return None

    def wait_for(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) while waiting for {what}:\n"
                    f"{self.log()[-4000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n"
                             f"{self.log()[-4000:]}")

    def wait_message(self, line: str, timeout: float, since: float = 0.0) -> float:
        """Time at which ``line`` (e.g. READY=1) arrived."""
        def find() -> float | None:
            for t, m in list(self.messages):
                if m == line and t >= since:
                    return t
            return None

        return self.wait_for(find, timeout, line)
