"""Run the server stub as a real process for tests (``python -m server_stub``).

Usage::

    with StubProcess(tmp_path / "stub.db", "--faults") as stub:
        requests.post(stub.url + "/api/detection", json=...)
        stub.faults(fail_next=3)
        stub.restart()                # same port, same database
        assert len(stub.records()) == 1
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (never 8765)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port != 8765:
            return port


class StubProcess:
    """A ``server_stub`` subprocess on a free port with its own database.

    ``args`` are extra CLI flags (``"--legacy"``, ``"--faults"``, ...); pass the
    token as ``token=`` so that the helper's own requests carry it too.
    """

    def __init__(
        self,
        db: Path | str,
        *args: str,
        token: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        log_path: Path | str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.db = Path(db)
        self.args = list(args)
        self.token = token
        self.host = host
        self.port = port or free_port(host)
        self.env = env
        self.log_path = Path(log_path) if log_path else self.db.with_suffix(".log")
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "server_stub",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            *self.args,
        ]
        if self.token is not None:
            cmd += ["--token", self.token]
        return cmd

    def start(self) -> StubProcess:
        env = dict(os.environ)
        env.pop("LPR_STUB_TOKEN", None)  # only the token given here applies
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        if self.env:
            env.update(self.env)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"stub exited with {self.proc.returncode} during start-up:\n{self.log()}"
                )
            try:
                r = requests.get(self.url + "/api/test", headers=self.headers, timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException as exc:
                last_error = exc
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"stub did not answer within {self.start_timeout}s ({last_error}):\n{self.log()}"
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def _reap(self, timeout: float) -> int | None:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit code (0 on a clean shutdown)."""
        if self.proc is None or self.proc.poll() is not None:
            return self._reap(0) if self.proc else None
        self.thaw()  # a stopped process would not handle SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        return self._reap(timeout)

    def kill(self) -> int | None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        return self._reap(10) if self.proc else None

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> StubProcess:
        """Stop (or SIGKILL) and start again on the same port with the same db."""
        self.kill() if kill else self.stop()
        return self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> StubProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- convenience API -----------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``requests`` call to ``path`` with the stub's token (if any) added."""
        kwargs.setdefault("timeout", 10)
        kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
        return requests.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def records(self, **filters: Any) -> list[dict[str, Any]]:
        """Every stored detection (``camera_id=``, ``images=1`` ...), read page by page.

        Arrival order; with ``camera_id``, the camera's creation order (``seq``).
        """
        return self._all("/api/records", filters, 100 if filters.get("images") else 1000)

    def health_records(self, **filters: Any) -> list[dict[str, Any]]:
        return self._all("/api/health_records", filters, 1000)

    def _all(self, path: str, filters: dict[str, Any], page: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {**filters, "limit": page, "after": 0}  # 0: the start
        while True:
            r = self.get(path, params=params, timeout=60)
            r.raise_for_status()
            body = r.json()
            out += body["records"]
            if not body["has_more"]:
                return out
            params["after"] = body["next_cursor"]

    def faults(self, **settings: Any) -> dict[str, Any]:
        """Merge fault settings (needs ``--faults``); no arguments = just read them."""
        r = self.post("/admin/faults", json=settings) if settings else self.get("/admin/faults")
        r.raise_for_status()
        return r.json()

    def reset_faults(self) -> dict[str, Any]:
        r = self.request("DELETE", "/admin/faults")
        r.raise_for_status()
        return r.json()
