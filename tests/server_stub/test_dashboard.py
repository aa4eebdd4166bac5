"""The live dashboard in a real headless Chromium (Debian's /usr/bin/chromium)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers.payloads import TINY_JPEG_B64, detection, health, registration
from tests.helpers.prereq import require
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import REPO_ROOT, StubProcess

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "artifacts"

pytestmark = [pytest.mark.browser]
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
    # Checked here, not at import: a skip during collection would not be
    # turned into a failure in CI (tests/conftest.py), a skip in setup is.
    require(os.access(CHROMIUM, os.X_OK), "Debian's chromium at /usr/bin/chromium")
    try:
        from playwright import sync_api
    except ImportError:
        require(False, "playwright (pip install -e .[test])")
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


def frame_jpeg(plate: str) -> tuple[str, str]:
    """(annotated frame, plate crop) as base64 JPEGs: a road scene with the
    plate boxed, as the agent sends them."""
    import base64

    import cv2
    import numpy as np

    frame = np.full((360, 640, 3), (90, 90, 90), np.uint8)
    cv2.rectangle(frame, (180, 120), (460, 300), (40, 40, 160), -1)  # the car
    cv2.rectangle(frame, (240, 240), (400, 280), (255, 255, 255), -1)  # the plate
    cv2.putText(frame, plate, (246, 268), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
    cv2.rectangle(frame, (236, 236), (404, 284), (0, 220, 0), 2)  # the detection box
    crop = frame[240:280, 240:400]
    encode = lambda img: base64.b64encode(cv2.imencode(".jpg", img)[1].tobytes()).decode()  # noqa: E731
    return encode(frame), encode(crop)


def test_dashboard_charts_search_and_frame(browser, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.helpers.payloads import event_id

    def at(minutes_ago: float) -> str:
        moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
        return moment.isoformat(timespec="milliseconds")

    cam, plate = "chart-cam", "KA01AB1234"
    frame, crop = frame_jpeg(plate)
    with StubProcess(tmp_path / "charts.db", token="dash-token") as stub:
        # History from before the page opened: 4 detections, 5 health reports.
        for minutes_ago, text in [(9, "XY11ZZ"), (6, "CD22EE"), (6, "GH33JJ"), (2, plate)]:
            images = {"annotated_image": frame, "cropped_plates": [crop]} if text == plate else {}
            msg = detection(
                cam,
                "north-gate",
                timestamp=at(minutes_ago),
                ocr_results=[text],
                event_id=event_id(),
                **images,
            )
            assert stub.post("/api/detection", json=msg).status_code == 200
        for i, minutes_ago in enumerate([10, 8, 6, 4, 2]):
            stamp = at(minutes_ago)
            for component, details in [
                (
                    "system",
                    {
                        "cpu_usage": 20 + 10 * i,
                        "memory_usage": 50 + i,
                        "disk_usage": 30,
                        "temperature_c": 50 + 2 * i,
                    },
                ),
                ("spool", {"cpu_usage": 20 + 10 * i, "spool_depth": [0, 40, 120, 60, 0][i]}),
                (
                    "uplink",
                    {
                        "link_state": [
                            "connected",
                            "disconnected",
                            "rest",
                            "connected",
                            "connected",
                        ][i],
                        "channel": "socketio",
                    },
                ),
            ]:
                msg = health(
                    cam,
                    "north-gate",
                    timestamp=stamp,
                    component=component,
                    details=details,
                    event_id=event_id(),
                )
                assert stub.post("/api/health", json=msg).status_code == 200

        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        failed: list[str] = []
        page.on(
            "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        page.goto(stub.url + "/?token=dash-token")
        page.wait_for_selector("#conn.online", timeout=10_000)
        # the charts are drawn from the history API
        page.wait_for_function("window.lprDashboard.dpm.points() === 4", timeout=5_000)
        page.wait_for_function("window.lprDashboard.health.points() === 5", timeout=5_000)
        # ...into uPlot: its own data arrays hold the points
        plotted = page.evaluate(
            "(() => { const d = window.lprDashboard.dpm.chart.data;"
            " return [d.length, d[1].reduce((a, b) => a + b, 0)]; })()"
        )
        assert plotted == [2, 4]
        cpu = page.evaluate("window.lprDashboard.health.usage.data[1]")
        assert cpu == [20, 30, 40, 50, 60]
        link = page.evaluate("window.lprDashboard.health.spool.data[2]")
        assert link == [2, 0, 1, 2, 2]
        assert page.locator("#chart-dpm canvas").count() == 1

        # live: a camera's new detection and health report move the charts
        with RecordingClient().connect(stub.url, auth={"token": "dash-token"}) as camera:
            camera.call("camera_register", registration(cam, "north-gate"))
            camera.call(
                "lpr_data",
                # the camera's 3rd reading (seq): readings 1 and 2 never came
                detection(
                    cam,
                    "north-gate",
                    timestamp=at(0),
                    ocr_results=["LIVE777"],
                    event_id=event_id(),
                    seq=3,
                ),
            )
            page.wait_for_function("window.lprDashboard.dpm.points() === 5", timeout=3_000)
            camera.call(
                "health_status",
                health(
                    cam,
                    "north-gate",
                    timestamp=at(0),
                    component="system",
                    details={"cpu_usage": 99.0},
                    event_id=event_id(),
                ),
            )
            page.wait_for_function("window.lprDashboard.health.points() === 6", timeout=3_000)
        assert page.evaluate("window.lprDashboard.health.usage.data[1].at(-1)") == 99.0
        # a camera the chart has not seen yet gets its own line
        other = detection("other-cam", "south-gate", timestamp=at(0), event_id=event_id())
        assert stub.post("/api/detection", json=other).status_code == 200
        page.wait_for_function("window.lprDashboard.dpm.points() === 6", timeout=3_000)
        lines = page.evaluate("window.lprDashboard.dpm.chart.series.map((s) => s.label)")
        assert lines[1:] == [cam, "other-cam"]
        # the gap shows in the camera table (re-read every 5 s)
        missing = f'#cameras tr[data-camera="{cam}"] td.missing'
        page.wait_for_function(
            f"document.querySelector('{missing}')?.textContent === '2 detections'", timeout=7_000
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-charts.png"), full_page=True)

        # search by a piece of the plate, then open the hit's frame
        page.fill("#search-plate", "ab12")
        page.click("#search-form button[type=submit]")
        page.wait_for_selector(f"#search-results .plate:text-is('{plate}')", timeout=5_000)
        assert page.locator("#search-results .detection").count() == 1
        assert page.inner_text("#search-status") == "1 found"
        page.click("#search-results .detection")
        page.wait_for_selector("dialog#detail[open]", timeout=2_000)
        page.wait_for_function(
            "(() => { const i = document.getElementById('detail-frame');"
            " return i.complete && i.naturalWidth > 0; })()",
            timeout=5_000,
        )
        assert page.evaluate("document.getElementById('detail-frame').naturalWidth") == 640
        assert page.inner_text("#detail-title") == plate
        page.wait_for_function(
            "[...document.querySelectorAll('#detail-crops img')]"
            ".every((i) => i.naturalWidth === 160)",
            timeout=5_000,
        )
        page.screenshot(path=str(ARTIFACTS / "dashboard-frame.png"))
        page.keyboard.press("Escape")
        page.wait_for_function("!document.getElementById('detail').open", timeout=2_000)

        # a search that matches nothing says so; a bad one shows the server's reason
        page.fill("#search-plate", "QQQQ9")
        page.click("#search-form button[type=submit]")
        page.wait_for_function(
            "document.getElementById('search-status').textContent === '0 found'", timeout=5_000
        )
        page.fill("#search-plate", "---")
        page.click("#search-form button[type=submit]")
        page.wait_for_selector("#search-status.error", timeout=5_000)
        assert "letters or digits" in page.inner_text("#search-status")
        assert errors == [], errors
        # the one failed request is the bad search, answered 400 with its reason
        assert len(failed) == 1 and failed[0].startswith("400 ") and "/api/search" in failed[0]
        page.close()


def test_detections_chart_sums_the_quieter_cameras(browser, tmp_path: Path) -> None:
    """A fleet: the nine busiest cameras get a line each, the others share one."""
    from datetime import UTC, datetime

    from tests.helpers.payloads import event_id

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with StubProcess(tmp_path / "fleet.db", token="dash-token") as stub:
        for i in range(12):  # cam-00 sends 1 detection, cam-11 sends 12
            for _ in range(i + 1):
                msg = detection(f"cam-{i:02d}", timestamp=now, event_id=event_id())
                assert stub.post("/api/detection", json=msg).status_code == 200
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(stub.url + "/?token=dash-token")
        page.wait_for_selector("#conn.online", timeout=10_000)
        page.wait_for_function("window.lprDashboard.dpm.points() === 78", timeout=5_000)
        labels = page.evaluate("window.lprDashboard.dpm.chart.series.map((s) => s.label)")
        assert labels[1:] == [f"cam-{i:02d}" for i in range(3, 12)] + ["other cameras"]
        others = "window.lprDashboard.dpm.cameras.get('other cameras').reduce((a, b) => a + b, 0)"
        assert page.evaluate(others) == 1 + 2 + 3
        # live: a grouped camera and a camera never seen go to the shared line
        for camera in ("cam-00", "cam-new"):
            msg = detection(camera, timestamp=now, event_id=event_id())
            assert stub.post("/api/detection", json=msg).status_code == 200
        page.wait_for_function("window.lprDashboard.dpm.points() === 80", timeout=3_000)
        assert page.evaluate(others) == 8
        assert page.evaluate("window.lprDashboard.dpm.chart.series.length") == 11
        assert errors == []
        page.close()
