"""The dashboard's read API (server_stub/history.py, plate_search.py) against a
real stub process: charts bucketed by the cameras' own time, health history,
plate search served by its index, bad input answered with 400."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpr_agent.protocol import Kind
from server_stub.history import HEALTH_SQL, detections_query
from server_stub.plate_search import CHUNK, PlateIndex, SearchQuery
from server_stub.storage import Storage
from tests.helpers.payloads import detection, event_id, health
from tests.helpers.stub_process import StubProcess

TOKEN = "dash-api-token"


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def minute_start(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    db = tmp_path_factory.mktemp("dash-api") / "stub.db"
    with StubProcess(db, "--faults", token=TOKEN) as proc:
        yield proc


def post_detection(stub: StubProcess, camera: str, plates: list[str], when: datetime) -> None:
    msg = detection(camera, timestamp=stamp(when), ocr_results=plates, event_id=event_id())
    r = stub.post("/api/detection", json=msg)
    assert r.status_code == 200, r.text


def post_health(
    stub: StubProcess, camera: str, when: datetime, component: str, status: str, **details: object
) -> None:
    msg = health(
        camera,
        timestamp=stamp(when),
        component=component,
        status=status,
        details=details,
        event_id=event_id(),
    )
    r = stub.post("/api/health", json=msg)
    assert r.status_code == 200, r.text


def get_json(stub: StubProcess, path: str, **params: object) -> dict:
    r = stub.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


# --- detections per minute -------------------------------------------------------------


def test_detections_per_minute_counts_each_camera_in_its_minute(api: StubProcess, cam: str) -> None:
    other = cam + "-b"
    base = minute_start(datetime.now(UTC)) - timedelta(minutes=20)
    # Deliberately sent out of order and late: the chart goes by the camera's clock.
    for minute, camera, n in [(12, cam, 2), (3, cam, 3), (12, other, 1), (25, cam, 1)]:
        for i in range(n):
            post_detection(
                api, camera, [f"P{minute}X{i}"], base + timedelta(minutes=minute, seconds=i)
            )
    # The same moment written with another UTC offset lands in the same minute.
    plus_two = timezone(timedelta(hours=2))
    post_detection(
        api, cam, ["OFFSET1"], (base + timedelta(minutes=3, seconds=30)).astimezone(plus_two)
    )
    since, until = base.timestamp(), (base + timedelta(minutes=30)).timestamp()
    body = get_json(api, "/api/stats/detections_per_minute", since=since, until=until)
    t = body["t"]
    assert body["bucket_s"] == 60 and len(t) == 30
    assert t[0] == since and all(b - a == 60 for a, b in itertools.pairwise(t))
    mine = body["cameras"][cam]
    assert {i: n for i, n in enumerate(mine) if n} == {3: 4, 12: 2, 25: 1}
    assert {i: n for i, n in enumerate(body["cameras"][other]) if n} == {12: 1}
    assert body["total"][12] >= 3  # other tests' cameras may add to the total
    # one camera only, and a coarser bucket
    body = get_json(
        api, "/api/stats/detections_per_minute", camera_id=cam, since=since, until=until, bucket=600
    )
    assert list(body["cameras"]) == [cam]
    first = body["t"][0]
    assert first % 600 == 0 and first <= since  # buckets start at multiples of their size
    expected = [0] * len(body["t"])
    for minute, n in [(3, 4), (12, 2), (25, 1)]:
        expected[int((since + minute * 60 - first) // 600)] += n
    assert body["cameras"][cam] == expected


def test_chart_queries_are_served_by_indexes(api: StubProcess) -> None:
    conn = sqlite3.connect(f"file:{api.db}?mode=ro", uri=True)
    try:
        since, until = "2026-01-01T00:00:00.000+00:00", "2026-01-01T01:00:00.000+00:00"
        every = plan(conn, *detections_query(0, 60, since, until, None))
        one = plan(conn, *detections_query(0, 60, since, until, "cam"))
        health_plan = plan(conn, HEALTH_SQL, ("cam", since, until, 10))
    finally:
        conn.close()
    for steps in (every, one):
        # the window through the stub's index on `at`; unreadable times (at NULL) too
        assert any("SEARCH records USING INDEX records_at (at>? AND at<?)" in p for p in steps)
        assert any("SEARCH records USING INDEX records_at (at=?)" in p for p in steps), steps
    assert any("SEARCH health USING INDEX health_camera_event_time" in p for p in health_plan)
    for steps in (every, one, health_plan):
        assert not any(p.startswith("SCAN records") or p.startswith("SCAN health") for p in steps)


def plan(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


# --- health history ---------------------------------------------------------------------


def test_health_history_merges_one_report_per_sample_time(api: StubProcess, cam: str) -> None:
    t1 = minute_start(datetime.now(UTC)) - timedelta(minutes=5)
    t2 = t1 + timedelta(seconds=30)
    # What the agent sends: one message per component, same timestamp.
    post_health(
        api,
        cam,
        t1,
        "system",
        "healthy",
        cpu_usage=12.5,
        memory_usage=40.0,
        disk_usage=20.0,
        temperature_c=51.0,
    )
    post_health(api, cam, t1, "spool", "warning", cpu_usage=12.5, spool_depth=12000)
    post_health(api, cam, t1, "uplink", "healthy", link_state="disconnected", channel="socketio")
    post_health(api, cam, t2, "system", "healthy", cpu_usage=80.0, temperature_c=63.5)
    post_health(api, cam, t2, "spool", "healthy", spool_depth=0)
    post_health(api, cam, t2, "uplink", "healthy", link_state="connected", channel="socketio")
    # A deployed client's report: only the protocol's three figures.
    t3 = t2 + timedelta(seconds=30)
    post_health(api, cam, t3, "camera", "error", cpu_usage=45.2, memory_usage=67.8, disk_usage=23.1)

    body = get_json(
        api,
        "/api/stats/health_history",
        camera_id=cam,
        since=(t1 - timedelta(minutes=1)).timestamp(),
    )
    assert body["t"] == [int(t1.timestamp()), int(t2.timestamp()), int(t3.timestamp())]
    assert body["cpu_usage"] == [12.5, 80.0, 45.2]
    assert body["memory_usage"] == [40.0, None, 67.8]
    assert body["temperature_c"] == [51.0, 63.5, None]
    assert body["spool_depth"] == [12000, 0, None]
    assert body["link_state"] == ["disconnected", "connected", None]
    assert body["status"] == ["warning", "healthy", "error"]
    assert body["messages"] == 7 and body["truncated"] is False

    newest = get_json(
        api,
        "/api/stats/health_history",
        camera_id=cam,
        limit=1,
        since=(t1 - timedelta(minutes=1)).timestamp(),
    )
    assert newest["t"] == [int(t3.timestamp())] and newest["truncated"] is True


# --- search --------------------------------------------------------------------------------


def search(stub: StubProcess, **params: object) -> list[list[str]]:
    return [r["ocr_results"] for r in get_json(stub, "/api/search", **params)["records"]]


def test_search_by_plate_prefix_substring_exact(api: StubProcess, cam: str) -> None:
    now = datetime.now(UTC)
    plates = ["QW12ER34", "qw-99 zz", "XQW12Y", "AB1"]
    for i, plate in enumerate(plates):
        post_detection(api, cam, [plate], now - timedelta(minutes=10 - i))
    # newest first; case, spaces and dashes do not matter
    assert search(api, plate="qw12", camera_id=cam) == [["XQW12Y"], ["QW12ER34"]]
    assert search(api, plate="QW", match="prefix", camera_id=cam) == [["qw-99 zz"], ["QW12ER34"]]
    assert search(api, plate="qw 99-zz", match="exact", camera_id=cam) == [["qw-99 zz"]]
    assert search(api, plate="AB1", match="exact", camera_id=cam) == [["AB1"]]
    assert search(api, plate="B", camera_id=cam) == [["AB1"]]  # short: scanned, still found
    assert search(api, plate="QW12ER35", camera_id=cam) == []
    # time range (the camera's time) and camera filters
    since = (now - timedelta(minutes=8, seconds=30)).timestamp()
    assert search(api, plate="QW", camera_id=cam, since=since) == [["XQW12Y"]]
    assert search(api, plate="QW12ER34", camera_id=cam + "-other") == []
    # the result carries what the dashboard opens: the image URLs
    record = get_json(api, "/api/search", plate="XQW12Y", camera_id=cam)["records"][0]
    assert record["camera_id"] == cam and record["cropped_plate_urls"] == []
    assert record["detection_id"] and record["received_at"]


def test_search_pages_with_a_cursor_without_repeats(api: StubProcess, cam: str) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        # two matching plates in one detection must not show it twice
        post_detection(api, cam, [f"PG{i}PAGE", f"PG{i}PAGE2"], now - timedelta(seconds=50 - i))
    pages: list[list[str]] = []
    before = None
    while True:
        params: dict[str, object] = {"plate": "PAGE", "camera_id": cam, "limit": 2}
        if before is not None:
            params["before"] = before
        body = get_json(api, "/api/search", **params)
        pages.append([r["ocr_results"][0] for r in body["records"]])
        before = body["next_before"]
        if before is None:
            break
    assert pages == [["PG4PAGE", "PG3PAGE"], ["PG2PAGE", "PG1PAGE"], ["PG0PAGE"]]


def test_plate_searches_are_index_served(api: StubProcess, cam: str) -> None:
    post_detection(api, cam, ["IDX123"], datetime.now(UTC))
    for mode in ("substring", "prefix", "exact"):  # the indexes exist and are filled
        assert search(api, plate="IDX123", match=mode) == [["IDX123"]]
    window = ("2026-01-01T00:00:00.000+00:00", "2036-01-01T00:00:00.000+00:00")
    conn = sqlite3.connect(f"file:{api.db}?mode=ro", uri=True)
    try:
        index = PlateIndex(conn)

        def steps(mode: str, filtered: bool = True) -> list[str]:
            camera, when = (cam, window) if filtered else (None, None)
            return index.explain(SearchQuery.build("IDX", mode, camera, when, 50, 1_000_000))

        # substring: FTS5 takes the LIKE constraint (idxStr "L..."); a virtual
        # table always reads "SCAN", the constraint is what makes it an index
        substring = steps("substring")
        fts = [s for s in substring if s.startswith("SCAN f VIRTUAL TABLE INDEX")]
        assert fts and ":L" in fts[0], substring
        # prefix and exact: a range / look-up in the primary key of `plates`
        prefix, exact = steps("prefix"), steps("exact")
        assert any("SEARCH p USING PRIMARY KEY (plate>? AND plate<?)" in s for s in prefix), prefix
        assert any("SEARCH p USING PRIMARY KEY (plate=? AND arrival_seq<?)" in s for s in exact), (
            exact
        )
        # without filters the plate index drives and records come by their key
        for mode in ("substring", "prefix", "exact"):
            bare = steps(mode, filtered=False)
            assert any("SEARCH r USING INTEGER PRIMARY KEY" in s for s in bare), bare
            assert not any(s.startswith(("SCAN r", "SCAN p")) for s in bare), bare
        # with camera and time filters SQLite may start from either index, but
        # never reads a whole table
        for plan_ in (substring, prefix, exact):
            assert not any(s.startswith(("SCAN r", "SCAN p")) for s in plan_), plan_
    finally:
        conn.close()


def test_search_without_plate_lists_by_camera_and_time(api: StubProcess, cam: str) -> None:
    now = datetime.now(UTC)
    post_detection(api, cam, ["TIME1"], now - timedelta(hours=3))
    post_detection(api, cam, ["TIME2"], now - timedelta(minutes=1))
    since = (now - timedelta(hours=1)).timestamp()
    assert search(api, camera_id=cam, since=since) == [["TIME2"]]
    assert search(api, camera_id=cam) == [["TIME2"], ["TIME1"]]


# --- bad input and auth -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/api/stats/detections_per_minute", {"since": "yesterday"}, "since must be"),
        ("/api/stats/detections_per_minute", {"since": 200, "until": 100}, "before until"),
        ("/api/stats/detections_per_minute", {"bucket": 0}, "bucket must be between"),
        ("/api/stats/detections_per_minute", {"bucket": "x"}, "bucket must be an integer"),
        ("/api/stats/detections_per_minute", {"since": 0, "bucket": 1}, "buckets of 1 s"),
        ("/api/stats/detections_per_minute", {"until": "nan"}, "out of range"),
        ("/api/stats/health_history", {}, "camera_id is required"),
        ("/api/stats/health_history", {"camera_id": "c", "limit": 0}, "limit must be between"),
        ("/api/search", {"plate": "--- ..."}, "letters or digits"),
        ("/api/search", {"plate": "A" * 40}, "longer than"),
        ("/api/search", {"plate": "AB", "match": "regex"}, "match must be one of"),
        ("/api/search", {"before": -1}, "before must be between"),
        ("/api/search", {"limit": 100000}, "limit must be between"),
    ],
)
def test_bad_parameters_get_400_with_the_reason(
    api: StubProcess, path: str, params: dict, words: str
) -> None:
    r = api.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and words in body["message"], body


@pytest.mark.parametrize(
    "path",
    ["/api/stats/detections_per_minute", "/api/stats/health_history?camera_id=c", "/api/search"],
)
def test_history_routes_need_the_token(api: StubProcess, path: str) -> None:
    assert requests.get(api.url + path, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(api.url + path, headers=wrong, timeout=10).status_code == 401


# --- index upkeep -------------------------------------------------------------------------


def test_search_forgets_deleted_records_and_indexes_new_ones(tmp_path: Path) -> None:
    with StubProcess(tmp_path / "del.db", "--faults", token=TOKEN) as stub:
        now = datetime.now(UTC)
        post_detection(stub, "cam-del", ["OLD111"], now)
        assert search(stub, plate="OLD111") == [["OLD111"]]
        assert stub.request("DELETE", "/api/records").status_code == 200
        # the same arrival numbers are reused after a delete: the index must not
        # attribute the old plate to the new record
        post_detection(stub, "cam-del", ["NEW222"], now)
        assert search(stub, plate="OLD111") == []
        assert search(stub, plate="NEW222") == [["NEW222"]]
        # and the index survives a restart (kept in the database)
        stub.restart()
        assert search(stub, plate="NEW222") == [["NEW222"]]


def test_catch_up_indexes_a_backlog_in_chunks(tmp_path: Path) -> None:
    """More records than one indexing chunk, written straight into a real
    storage file: every one is found, none twice."""
    storage = Storage(tmp_path / "backlog.db")
    try:
        n = CHUNK * 2 + 7
        items = [
            (Kind.DETECTION, detection("cam-bl", ocr_results=[f"BL{i:05d}"]), "rest", False)
            for i in range(n)
        ]
        storage.write_batch(items)
        index = PlateIndex(storage.conn)
        index.prepare()
        assert index.index_chunk() == CHUNK
        assert index.index_chunk() == CHUNK
        assert index.index_chunk() == 7
        assert index.index_chunk() == 0
        found = storage.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT rowid) FROM dash_plate_fts WHERE plate LIKE 'BL%'"
        ).fetchone()
        assert found == (n, n)
    finally:
        storage.close()


def test_legacy_timestamps_that_are_not_times_are_stored_and_charted(tmp_path: Path) -> None:
    """Legacy mode stores whatever a deployed client sends. 'now' in an index
    expression would make SQLite refuse the INSERT; it must be stored and
    charted at its arrival time instead."""
    with StubProcess(tmp_path / "legacy.db", "--legacy", token=TOKEN) as stub:
        for ts in ("now", "garbage", "2026-13-45T99:00:00"):
            msg = detection("cam-legacy", timestamp=ts, ocr_results=["LEG1"])
            r = stub.post("/api/detection", json=msg)
            assert r.status_code == 200, r.text
        stored = get_json(stub, "/api/records", camera_id="cam-legacy", limit=10)["records"]
        assert [r["timestamp"] for r in stored] == ["now", "garbage", "2026-13-45T99:00:00"]
        body = get_json(stub, "/api/stats/detections_per_minute", camera_id="cam-legacy")
        assert sum(body["cameras"]["cam-legacy"]) == 3
        assert body["cameras"]["cam-legacy"][-1] + body["cameras"]["cam-legacy"][-2] == 3


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        ["/api/stats/detections_per_minute", "/api/stats/health_history", "/api/search"]
    ),
    params=st.dictionaries(
        st.sampled_from(
            ["camera_id", "since", "until", "bucket", "limit", "plate", "match", "before"]
        ),
        st.one_of(
            st.text(max_size=40),
            st.integers(min_value=-(2**70), max_value=2**70).map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.sampled_from(["", "nan", "-inf", "1e308", "2026-02-30T00:00:00", "now", "%"]),
        ),
        max_size=5,
    ),
)
def test_any_query_gets_200_or_400_never_500(api: StubProcess, path: str, params: dict) -> None:
    r = api.get(path, params=params)
    assert r.status_code in (200, 400), (path, params, r.status_code, r.text)
    assert r.json()["success"] is (r.status_code == 200)
