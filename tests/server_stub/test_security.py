"""Issue 11: secure by default — token everywhere, same origin, JSON only, admin guarded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
import socketio

from server_stub.__main__ import parse_args
from tests.helpers.payloads import TINY_JPEG_B64, detection, registration
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import REPO_ROOT, StubProcess

TOKEN = "s3cret-token"
EVIL = "http://evil.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL = "/socket.io/?EIO=4&transport=polling"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("sec") / "sec.db"
    with StubProcess(db, "--faults", token=TOKEN) as s:
        yield s


def _get(stub: StubProcess, path: str, **kw) -> requests.Response:
    return requests.get(stub.url + path, timeout=10, **kw)


def _post(stub: StubProcess, path: str, **kw) -> requests.Response:
    return requests.post(stub.url + path, timeout=10, **kw)


def test_rest_needs_the_token_in_the_header(secured: StubProcess, cam: str) -> None:
    body = detection(cam)
    assert _post(secured, "/api/detection", json=body).status_code == 401
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert _post(secured, "/api/detection", json=body, headers=wrong).status_code == 401
    # ?token= is for <img> tags and the page only: never for the JSON API.
    assert _post(secured, f"/api/detection?token={TOKEN}", json=body).status_code == 401
    assert _get(secured, f"/api/records?token={TOKEN}").status_code == 401
    assert _get(secured, "/api/cameras").status_code == 401
    assert secured.records(camera_id=cam) == []
    assert _post(secured, "/api/detection", json=body, headers=AUTH).status_code == 200


def test_image_url_and_page_take_the_token_in_the_query(secured: StubProcess, cam: str) -> None:
    reply = secured.post("/api/detection", json=detection(cam, cropped_plates=[TINY_JPEG_B64]))
    url = f"/api/records/{reply.json()['detection_id']}/crops/0"
    assert _get(secured, url).status_code == 401
    assert _get(secured, url + "?token=nope").status_code == 401
    assert _get(secured, url + f"?token={TOKEN}").status_code == 200
    assert _get(secured, url, headers=AUTH).status_code == 200
    assert _get(secured, "/").status_code == 401
    page = _get(secured, f"/?token={TOKEN}")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_admin_needs_the_token(secured: StubProcess) -> None:
    assert _post(secured, "/admin/faults", json={"fail_next": 5}).status_code == 401
    assert _get(secured, "/admin/faults").status_code == 401
    assert requests.delete(secured.url + "/admin/faults", timeout=10).status_code == 401
    assert requests.delete(secured.url + "/api/records", timeout=10).status_code == 401
    assert _post(secured, f"/admin/faults?token={TOKEN}", json={"fail_next": 5}).status_code == 401
    assert secured.faults()["fail_next"] == 0  # nothing was injected
    assert secured.faults(fail_next=1)["fail_next"] == 1  # with the header it works
    secured.reset_faults()


def test_socketio_connect_and_dashboard_join_need_the_token(secured: StubProcess) -> None:
    for auth in (None, {"token": "nope"}, {"token": TOKEN + "x"}):
        client = RecordingClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.connect(secured.url, auth=auth, wait_timeout=3)
        # No connection, so no way into the dashboard room.
        with pytest.raises(socketio.exceptions.BadNamespaceError):
            client.call("join_dashboard", timeout=2)
    with RecordingClient().connect(secured.url, auth={"token": TOKEN}) as ok:
        assert ok.call("join_dashboard")["message"] == "Joined dashboard room"


def test_cross_origin_handshake_refused(secured: StubProcess) -> None:
    r = _get(secured, POLL, headers={"Origin": EVIL})
    assert r.status_code == 400
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "Access-Control-Allow-Credentials" not in r.headers
    with pytest.raises(socketio.exceptions.ConnectionError):
        RecordingClient().connect(
            secured.url,
            auth={"token": TOKEN},
            headers={"Origin": EVIL},
            transports=["websocket"],
            wait_timeout=3,
        )
    # The stub's own origin (a dashboard served by the stub) is accepted.
    own = _get(secured, POLL, headers={"Origin": secured.url})
    assert own.status_code == 200 and own.headers["Access-Control-Allow-Origin"] == secured.url


def test_cross_origin_api_request_refused(secured: StubProcess, cam: str) -> None:
    headers = {**AUTH, "Origin": EVIL}
    r = _post(secured, "/api/detection", json=detection(cam), headers=headers)
    assert r.status_code == 403 and r.json()["success"] is False
    assert _get(secured, "/api/records", headers=headers).status_code == 403
    assert secured.records(camera_id=cam) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_non_json_post_is_415_and_stores_nothing(
    secured: StubProcess, cam: str, content_type: str | None
) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    for path in ("/api/detection", "/api/health", "/api/cameras/register", "/admin/faults"):
        body = json.dumps(detection(cam) if path != "/admin/faults" else {"fail_next": 3})
        r = _post(secured, path, data=body.encode(), headers=headers)
        assert r.status_code == 415, (path, r.status_code, r.text)
        assert r.json() == {"success": False, "message": "Content-Type must be application/json"}
    assert secured.records(camera_id=cam) == []
    assert secured.faults()["fail_next"] == 0
    # application/json with a charset parameter is still JSON
    headers["Content-Type"] = "application/json; charset=utf-8"
    body = json.dumps(detection(cam)).encode()
    assert _post(secured, "/api/detection", data=body, headers=headers).status_code == 200


def test_legacy_mode_keeps_parsing_any_body(legacy_stub: StubProcess, cam: str) -> None:
    # The deployed server parses what it gets (protocol.md quirk 6): legacy
    # mode reproduces it; only the default mode is strict.
    body = json.dumps(registration(cam)).encode()
    r = legacy_stub.post("/api/cameras/register", data=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200


def test_cors_origin_opens_it_deliberately(tmp_path, cam: str) -> None:
    dash = "http://dash.example:8080"
    with StubProcess(tmp_path / "cors.db", "--cors-origin", dash) as s:
        r = _get(s, POLL, headers={"Origin": dash})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == dash
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert _get(s, POLL, headers={"Origin": EVIL}).status_code == 400
        api = _get(s, "/api/cameras", headers={"Origin": dash})
        assert api.status_code == 200 and api.headers["Access-Control-Allow-Origin"] == dash
        pre = requests.options(
            s.url + "/api/detection",
            headers={"Origin": dash, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        assert (
            pre.status_code == 204 and "Content-Type" in pre.headers["Access-Control-Allow-Headers"]
        )
        assert (
            _post(s, "/api/detection", json=detection(cam), headers={"Origin": EVIL}).status_code
            == 403
        )


def test_faults_refused_on_a_remote_host(tmp_path) -> None:
    cmd = [sys.executable, "-m", "server_stub", "--faults", "--host", "0.0.0.0", "--port", "0",
           "--db", str(tmp_path / "x.db")]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--allow-remote-faults" in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching anything
    config = parse_args(["--faults", "--host", "0.0.0.0", "--allow-remote-faults"])
    assert config.faults and config.allow_remote_faults
    assert parse_args(["--faults", "--host", "::1"]).faults  # loopback is fine
    assert parse_args(["--faults", "--host", "localhost"]).faults
