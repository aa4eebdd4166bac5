"""The JSON examples of protocol.md, sent with curl, get the documented answers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.payloads import TINY_JPEG_B64
from tests.helpers.stub_process import REPO_ROOT, StubProcess

CANDIDATES = [REPO_ROOT.parent / "shared" / "protocol.md", Path("/work/shared/protocol.md")]
PROTOCOL = next((p for p in CANDIDATES if p.is_file()), None)

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
    pytest.mark.skipif(PROTOCOL is None, reason=f"protocol.md not found in {CANDIDATES}"),
]


def _examples() -> dict[str, dict[str, Any]]:
    assert PROTOCOL is not None
    blocks = re.findall(r"```json\n(.*?)```", PROTOCOL.read_text(), flags=re.S)
    out: dict[str, dict[str, Any]] = {}
    for block in blocks:
        # The detection example has placeholders where the images go.
        block = block.replace('"<base64 JPEG>"', json.dumps(TINY_JPEG_B64))
        block = block.replace('"..."', json.dumps(TINY_JPEG_B64))
        msg = json.loads(block)
        kind = {"detection_result": "detection", "health_check": "health"}.get(
            msg.get("type"), "registration"
        )
        out[kind] = msg
    assert set(out) == {"registration", "detection", "health"}, out.keys()
    return out


def curl(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    cmd = ["curl", "-s", "-S", "--max-time", "10", "-w", "\n%{http_code}"]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        cmd += ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
    out = subprocess.run([*cmd, url], input=data, capture_output=True, check=True).stdout
    text, _, code = out.decode().rpartition("\n")
    return int(code), json.loads(text)


def test_curl_examples(any_stub: StubProcess) -> None:
    ex = _examples()
    url = any_stub.url
    camera, checkpoint = ex["registration"]["camera_id"], ex["registration"]["checkpoint_id"]

    code, body = curl(url + "/api/cameras/register", ex["registration"])
    assert code == 200
    assert body["success"] is True
    assert body["message"] == f"Camera {camera} registered successfully"
    assert (body["camera_id"], body["checkpoint_id"]) == (camera, checkpoint)
    assert body["timestamp"]

    code, body = curl(url + "/api/detection", ex["detection"])
    assert code == 200 and body["success"] is True and body["message"]
    uuid.UUID(body["detection_id"])
    assert body["timestamp"]
    detection_id = body["detection_id"]

    code, body = curl(url + "/api/health", ex["health"])
    assert code == 200 and body["success"] is True
    uuid.UUID(body["health_id"])

    code, body = curl(url + "/api/test")
    assert (code, body["success"], body["message"]) == (200, True, "Server is running")

    code, body = curl(url + "/api/statistics")
    assert code == 200 and body["success"] is True
    assert {
        "total_detections",
        "today_detections",
        "total_health_checks",
        "today_health_checks",
        "unique_cameras",
        "active_cameras",
        "connected_clients",
        "last_update",
        "server_status",
    } <= set(body["data"])

    code, body = curl(url + "/api/cameras")
    assert code == 200 and body["success"] is True and body["timestamp"]
    [cam] = [c for c in body["cameras"] if c["camera_id"] == camera]
    assert {
        "camera_id",
        "checkpoint_id",
        "registered_at",
        "last_seen",
        "status",
        "detection_count",
        "health_status",
    } <= set(cam)
    assert body["total_cameras"] == len(body["cameras"])

    code, body = curl(url + f"/api/records?limit=1&camera_id={camera}&checkpoint_id={checkpoint}")
    assert code == 200 and body["success"] is True
    assert body["returned_count"] == 1 and body["total_count"] >= 1 and body["timestamp"]
    assert body["records"][0]["detection_id"] == detection_id
    assert body["records"][0]["ocr_results"] == ex["detection"]["ocr_results"]

    for path, name in (
        ("/api/detection", "timestamp"),
        ("/api/health", "component"),
        ("/api/cameras/register", "checkpoint_id"),
    ):
        kind = {"/api/detection": "detection", "/api/health": "health"}.get(path, "registration")
        broken = {k: v for k, v in ex[kind].items() if k != name}
        code, body = curl(url + path, broken)
        assert code == 400, (path, body)
        assert body == {"success": False, "message": f"Missing required field: {name}"}


def test_curl_not_json(any_stub: StubProcess) -> None:
    code, body = curl(any_stub.url + "/api/detection", raw=b"this is not json")
    assert body["success"] is False
    if "--legacy" in any_stub.args:
        assert code == 500 and "400 Bad Request" in body["message"]
    else:
        assert code == 400
