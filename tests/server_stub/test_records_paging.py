"""/api/records and /api/health_records: caps, cursor paging, filters, and every
filter served by an index (asserted with EXPLAIN QUERY PLAN on a real file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpr_agent.protocol import Kind
from server_stub.queries import RecordQuery
from server_stub.storage import Storage
from tests.helpers.payloads import TINY_JPEG_B64, detection, health
from tests.helpers.stub_process import StubProcess


def _ids(records: list[dict]) -> list[str]:
    return [r["detection_id"] for r in records]


def test_limit_is_capped(stub: StubProcess) -> None:
    assert stub.get("/api/records", params={"limit": 1000}).status_code == 200
    r = stub.get("/api/records", params={"limit": 1001})
    assert r.status_code == 400 and "between 0 and 1000" in r.json()["message"]
    assert stub.get("/api/records", params={"limit": 100, "images": 1}).status_code == 200
    r = stub.get("/api/records", params={"limit": 101, "images": 1})
    assert r.status_code == 400 and "images=1" in r.json()["message"]
    assert stub.get("/api/health_records", params={"limit": 1001}).status_code == 400
    for bad in ({"after": "x"}, {"after": -1}, {"after": 1, "before": 2}, {"since": "yesterday"},
                {"plate": "--"}):  # fmt: skip
        assert stub.get("/api/records", params=bad).status_code == 400, bad
    assert stub.get("/api/health_records", params={"plate": "AB"}).status_code == 400


def test_cursor_pages_through_everything_once(stub: StubProcess, cam: str) -> None:
    sent = [
        stub.post("/api/detection", json=detection(cam, ocr_results=[f"PG{n}"])).json()[
            "detection_id"
        ]
        for n in range(23)
    ]
    seen: list[str] = []
    params: dict = {"camera_id": cam, "limit": 10, "after": 0}
    pages = 0
    while True:
        body = stub.get("/api/records", params=params).json()
        pages += 1
        assert body["total_count"] == 23 and body["order"] == "camera"
        seen += _ids(body["records"])
        if not body["has_more"]:
            break
        params["after"] = body["next_cursor"]
    assert pages == 3 and seen == sent
    # Asking again from the last cursor gives the last page again; past its
    # end, an empty page keeps the cursor, so a poller can keep asking.
    again = stub.get("/api/records", params=params).json()
    assert _ids(again["records"]) == sent[20:]
    end = stub.get("/api/records", params={**params, "after": body["next_cursor"]}).json()
    assert end["records"] == [] and end["next_cursor"] == body["next_cursor"]
    # Without a cursor: the newest N, oldest first (deployed behaviour) ...
    newest = stub.get("/api/records", params={"camera_id": cam, "limit": 5}).json()
    assert _ids(newest["records"]) == sent[-5:] and newest["has_more"] is True
    # ... and paging backwards from there.
    older = stub.get(
        "/api/records", params={"camera_id": cam, "limit": 5, "before": newest["prev_cursor"]}
    ).json()
    assert _ids(older["records"]) == sent[-10:-5]
    # A camera-order cursor must name a stored record.
    r = stub.get("/api/records", params={"camera_id": cam, "after": 10**12})
    assert r.status_code == 400 and "cursor" in r.json()["message"]


def test_arrival_order_cursor_and_images_page(stub: StubProcess, cam: str) -> None:
    first = stub.post("/api/detection", json=detection(cam, cropped_plates=[TINY_JPEG_B64]))
    stub.post("/api/detection", json=detection(cam, cropped_plates=[TINY_JPEG_B64]))
    [mine] = [
        r
        for r in stub.get("/api/records", params={"limit": 1000}).json()["records"]
        if r["detection_id"] == first.json()["detection_id"]
    ]
    body = stub.get(
        "/api/records", params={"after": mine["arrival_seq"] - 1, "limit": 2, "images": 1}
    ).json()
    assert body["order"] == "arrival"
    assert body["records"][0]["detection_id"] == mine["detection_id"]
    assert body["records"][0]["cropped_plates"] == [TINY_JPEG_B64]


def test_filters_plate_time_checkpoint(stub: StubProcess, cam: str) -> None:
    stub.post("/api/detection", json=detection(cam, "chk-F", ocr_results=["KA 01-AB 1234"],
                                               timestamp="2024-12-19T10:00:00Z"))  # fmt: skip
    stub.post("/api/detection", json=detection(cam, "chk-F", ocr_results=["KA01XY9"],
                                               timestamp="2024-12-19T12:00:00+02:00"))  # fmt: skip
    stub.post("/api/detection", json=detection(cam, "chk-G", ocr_results=["MH12ZZ1"],
                                               timestamp="2024-12-20T10:00:00Z"))  # fmt: skip

    def plates(**params) -> list[list[str]]:
        body = stub.get("/api/records", params={"camera_id": cam, **params}).json()
        assert body["success"], body
        return [r["ocr_results"] for r in body["records"]]

    assert plates(plate="ka01") == [["KA 01-AB 1234"], ["KA01XY9"]]
    assert plates(plate="KA01AB") == [["KA 01-AB 1234"]]
    assert plates(plate="ZZ") == []  # a prefix, not a substring
    assert plates(checkpoint_id="chk-G") == [["MH12ZZ1"]]
    # 12:00+02:00 is 10:00Z: the range is in UTC whatever offset was sent
    assert plates(since="2024-12-19T10:00:00Z", until="2024-12-19T10:00:00.001Z") == [
        ["KA 01-AB 1234"],
        ["KA01XY9"],
    ]
    assert plates(since="2024-12-20T00:00:00+00:00") == [["MH12ZZ1"]]
    body = stub.get("/api/records", params={"since": "2024-12-19T00:00:00Z", "plate": "MH12"})
    assert [r["camera_id"] for r in body.json()["records"]].count(cam) == 1


def test_health_records_page_too(stub: StubProcess, cam: str) -> None:
    for n in range(3):
        stub.post("/api/health", json=health(cam, message=f"h{n}"))
    body = stub.get("/api/health_records", params={"camera_id": cam, "limit": 2}).json()
    assert [r["message"] for r in body["records"]] == ["h1", "h2"] and body["has_more"]
    assert body["total_count"] == 3


# --- query plans ------------------------------------------------------------------------

QUERIES = {
    "camera": RecordQuery(camera_id="c"),
    "camera, after": RecordQuery(camera_id="c", after=0),
    "checkpoint": RecordQuery(checkpoint_id="k"),
    "checkpoint, before": RecordQuery(checkpoint_id="k", before=9),
    "plate": RecordQuery(plate="KA01"),
    "since": RecordQuery(since="2024-01-01T00:00:00.000+00:00"),
    "until": RecordQuery(until="2024-01-01T00:00:00.000+00:00"),
    "range, after": RecordQuery(
        since="2024-01-01T00:00:00.000+00:00", until="2024-02-01T00:00:00.000+00:00", after=0
    ),
    "camera, plate": RecordQuery(camera_id="c", plate="KA"),
}


@pytest.fixture(scope="module", params=["as written", "analyzed"])
def filled(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Storage:
    storage = Storage(Path(tmp_path_factory.mktemp("plan")) / "plan.db")
    items = [
        (
            Kind.DETECTION,
            detection(f"c{n % 7}", f"k{n % 3}", ocr_results=[f"KA{n:04d}"]),
            "rest",
            True,
        )
        for n in range(300)
    ] + [(Kind.HEALTH, health(f"c{n % 7}", f"k{n % 3}"), "rest", True) for n in range(100)]
    storage.write_batch(items)
    if request.param == "analyzed":  # the stub never runs ANALYZE; someone else might
        storage.conn.execute("ANALYZE")
    return storage


@pytest.mark.parametrize("kind", [Kind.DETECTION, Kind.HEALTH])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_every_filter_is_served_by_an_index(filled: Storage, name: str, kind: Kind) -> None:
    query = QUERIES[name]
    if kind == Kind.HEALTH and query.plate:
        pytest.skip("not applicable: plate search is for detections")
    sql, params, _ = filled.page_sql(kind, query)
    count_sql, count_params = filled.count_sql(kind, query)
    for statement, args in ((sql, params), (count_sql, count_params)):
        plan = [row[3] for row in filled.conn.execute("EXPLAIN QUERY PLAN " + statement, args)]
        table = "records" if kind == Kind.DETECTION else "health"
        scans = [step for step in plan if step.startswith(f"SCAN {table}")]
        assert scans == [], (name, statement, plan)
        assert any(step.startswith("SEARCH") for step in plan), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
    # and the query gives the right rows
    page = filled.page(kind, query)
    assert page.total >= len(page.records)
