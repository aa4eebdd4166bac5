"""Issue 11: bounded under abuse — floods of bogus requests leave no memory behind,
an oversized Socket.IO frame is answered before the connection closes."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import aiohttp
import psutil
import pytest

from tests.helpers.payloads import detection
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess

TOKEN = "flood-token"
SCALE = int(os.environ.get("LPR_SOAK_SCALE", "1"))
FLOOD = 5000 * SCALE
WARM_UP = 500
MB = 1024 * 1024


def rss(stub: StubProcess) -> int:
    assert stub.pid is not None
    return psutil.Process(stub.pid).memory_info().rss


async def _bogus_sid_gets(url: str, n: int, concurrency: int = 16) -> None:
    """GETs of websocket URLs with made-up engine.io session ids (refused with 400)."""

    async def worker(session: aiohttp.ClientSession, count: int) -> None:
        for _ in range(count):
            sid = uuid.uuid4().hex
            async with session.get(f"{url}/socket.io/?EIO=4&transport=websocket&sid={sid}") as r:
                assert r.status == 400, r.status
                await r.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, n // concurrency) for _ in range(concurrency)))


async def _refused_connects(url: str, n: int, concurrency: int = 16) -> None:
    """Engine.IO websocket sessions whose Socket.IO connect (no token) is refused.

    The client never closes: the stub must end the session itself.
    """
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    async def worker(session: aiohttp.ClientSession, count: int) -> None:
        for _ in range(count):
            async with session.ws_connect(ws_url) as ws:
                opened = await ws.receive_str(timeout=10)
                assert opened.startswith("0"), opened
                await ws.send_str("40")  # Socket.IO CONNECT, no auth
                refused = await ws.receive_str(timeout=10)
                assert refused.startswith("44"), refused  # CONNECT_ERROR
                assert "Unauthorized" in refused
                # Do not close: wait for the stub to end the session.
                msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) or (
                    msg.type == aiohttp.WSMsgType.TEXT and msg.data == "1"  # engine.io CLOSE
                ), msg

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, n // concurrency) for _ in range(concurrency)))


@pytest.mark.slow
def test_floods_of_bogus_sids_and_refused_connects_leave_rss_flat(tmp_path) -> None:
    with StubProcess(tmp_path / "flood.db", token=TOKEN) as stub:
        # Warm-up: allocator pools, caches and code paths reach their steady size.
        asyncio.run(_bogus_sid_gets(stub.url, WARM_UP))
        asyncio.run(_refused_connects(stub.url, WARM_UP))
        before = rss(stub)
        asyncio.run(_bogus_sid_gets(stub.url, FLOOD))
        asyncio.run(_refused_connects(stub.url, FLOOD))
        after = rss(stub)
        assert after - before <= 5 * MB, f"RSS grew {(after - before) / MB:.1f} MiB"
        # Still serving, and the refused sessions are gone (statistics count
        # only accepted connections; this probe itself is REST).
        r = stub.get("/api/statistics")
        assert r.status_code == 200 and r.json()["data"]["connected_clients"] == 0


def test_oversized_frame_gets_an_error_event_before_the_close(tmp_path, cam: str) -> None:
    limit = 20_000
    with StubProcess(tmp_path / "big.db", "--body-limit", str(limit)) as stub:
        client = RecordingClient().connect(stub.url, transports=["websocket"])
        big = detection(cam, padding="x" * (limit + 1000))
        assert len(json.dumps(big)) > limit
        client.emit("lpr_data", big)
        error = client.wait_for("error", timeout=10)
        assert "too large" in error["message"] and str(limit) in error["message"]
        client.wait_for("disconnect", timeout=10)
        names = [name for name, _ in client.events]
        assert names.index("error") < names.index("disconnect")
        assert stub.records(camera_id=cam) == []
        # a message under the limit on a new connection is stored as usual
        with RecordingClient().connect(stub.url, transports=["websocket"]) as again:
            assert again.call("lpr_data", detection(cam))["success"] is True
