"""The live dashboard in a real headless Chromium (Debian's /usr/bin/chromium)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers.payloads import TINY_JPEG_B64, detection, health, registration
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import REPO_ROOT, StubProcess

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/install-test-tools)",
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("mode", ["default", "legacy"])
def test_dashboard_shows_detection_live(browser, tmp_path: Path, mode: str) -> None:
    args = ["--legacy"] if mode == "legacy" else []
    with StubProcess(tmp_path / "dash.db", *args, token="dash-token") as stub:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(stub.url + "/?token=dash-token")
        page.wait_for_selector("#conn.online", timeout=10_000)  # Socket.IO connected

        with RecordingClient().connect(stub.url, auth={"token": "dash-token"}) as camera:
            camera.call("camera_register", registration("gate-cam-1", "north-gate"))
            page.wait_for_selector('#cameras tr[data-camera="gate-cam-1"]', timeout=5_000)
            plate = "KA01AB1234"
            t0 = time.monotonic()
            camera.emit(
                "lpr_data",
                detection(
                    "gate-cam-1", "north-gate", ocr_results=[plate], cropped_plates=[TINY_JPEG_B64]
                ),
            )
            page.wait_for_selector(f".plate:text-is('{plate}')", timeout=2_000)
            latency = time.monotonic() - t0
            assert latency < 2.0
            camera.emit(
                "health_status",
                health("gate-cam-1", "north-gate", status="warning", message="low light"),
            )
            page.wait_for_selector(
                '#cameras tr[data-camera="gate-cam-1"] .badge.warning', timeout=2_000
            )

        # the crop is served by the stub (with the token in the query) and decodes
        crop = page.locator("img.crop").first
        crop.wait_for(timeout=2_000)
        page.wait_for_function("document.querySelector('img.crop').naturalWidth > 0", timeout=2_000)
        # the header statistics follow (throttled to one refresh a second)
        page.wait_for_function(
            "document.getElementById('stats').textContent.includes('detections 1 ')",
            timeout=4_000,
        )
        row = page.locator('#cameras tr[data-camera="gate-cam-1"]').inner_text()
        assert "north-gate" in row
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{mode}.png"), full_page=True)
        # a reload shows the stored detection from REST (survives page reloads)
        page.reload()
        page.wait_for_selector(f".plate:text-is('{plate}')", timeout=5_000)
        assert errors == []
        page.close()
