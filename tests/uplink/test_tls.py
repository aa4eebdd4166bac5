"""TLS: https + wss with a CA bundle option, and the optional token, end to end.

The stub has no TLS switch; this serves the stub's own app over TLS from a
small subprocess (``server_stub.app.create_app`` + an aiohttp TLS site).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.stub_process import REPO_ROOT, free_port
from tests.uplink.conftest import fast_config, put_detections, spool_empty, wait_until

SERVE_TLS = """
import asyncio, ssl, sys
from pathlib import Path
from aiohttp import web
from server_stub.app import create_app
from server_stub.config import StubConfig

async def main():
    port, (db, cert, key, token) = int(sys.argv[1]), sys.argv[2:6]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = create_app(StubConfig(host="127.0.0.1", port=port, db=Path(db), token=token))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.fixture
def tls_stub(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    ca, cert, key = _make_ca_and_cert(tmp_path)
    port = free_port()
    log = open(tmp_path / "tls-stub.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", SERVE_TLS, str(port), str(tmp_path / "s.db"),
                             str(cert), str(key), "tok"], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(url + "/api/test", verify=str(ca), timeout=1,
                         headers={"Authorization": "Bearer tok"})
            break
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError((tmp_path / "tls-stub.log").read_text()) from None
            time.sleep(0.1)
    yield url, ca
    proc.terminate()
    proc.wait(10)
    log.close()


def test_https_and_wss_with_ca_bundle_and_token(tls_stub, spool, run_uplink):
    url, ca = tls_stub
    # Without the CA bundle the self-signed chain is refused: nothing delivered.
    up = run_uplink(fast_config(url, token="tok"))
    ids = put_detections(spool, 20)
    time.sleep(2.0)
    assert up.stats().acked == 0 and not up.stats().connected
    up.stop()
    up = run_uplink(fast_config(url, token="tok", ca_bundle=ca))
    wait_until(lambda: spool_empty(spool), 20, "drained over TLS")
    st = up.stats()
    assert st.channel == "socketio" and st.connected and st.acked == 20
    r = requests.get(url + "/api/records", params={"limit": 100}, verify=str(ca),
                     headers={"Authorization": "Bearer tok"}, timeout=5)
    assert {x["event_id"] for x in r.json()["records"]} == set(ids)
    up.stop()
