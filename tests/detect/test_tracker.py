"""De-duplication: one event per vehicle passage, cooldown per plate."""

from __future__ import annotations

import numpy as np

from lpr_agent.detect.reader import PlateRead
from lpr_agent.detect.tracker import PlateTracker, Sighting


def sighting(text: str, t: float, x: float = 100.0, conf: float = 0.9) -> Sighting:
    box = (x, 200.0, x + 120.0, 230.0)
    read = PlateRead(text=text, raw_text=text, confidence=conf, det_score=0.9, text_box=box,
                     plate_box=box, quad=np.zeros((4, 2), np.float32))
    return Sighting(read=read, time=t, frame=None, processing_ms=10.0)


def run_frames(tracker: PlateTracker, frames: list[list[Sighting]], t0: float, dt: float):
    events = []
    for i, sightings in enumerate(frames):
        events += tracker.update(sightings, t0 + i * dt)
    return events


def test_plate_in_30_consecutive_frames_gives_one_event() -> None:
    tracker = PlateTracker(track_timeout_s=1.0, cooldown_s=60)
    frames = [[sighting("AB123CD", i * 0.1, x=20 + 15 * i)] for i in range(30)]
    events = run_frames(tracker, frames, 0.0, 0.1)
    assert events == []  # still in view
    events = tracker.update([], 3.0 + 1.5)  # gone for longer than the timeout
    assert [e.text for e in events] == ["AB123CD"]
    assert events[0].hits == 30


def test_votes_pick_the_majority_read_and_flicker_joins_the_track() -> None:
    tracker = PlateTracker(track_timeout_s=1.0)
    reads = ["AB123CD"] * 8 + ["AB128CD", "A8123CD"] + ["AB123CD"] * 5
    frames = [[sighting(text, i * 0.1, x=50 + 10 * i)] for i, text in enumerate(reads)]
    run_frames(tracker, frames, 0.0, 0.1)
    events = tracker.flush()
    assert len(events) == 1
    assert events[0].text == "AB123CD"
    assert events[0].best.read.text == "AB123CD"


def test_two_plates_give_two_events() -> None:
    tracker = PlateTracker(track_timeout_s=1.0)
    frames = [[sighting("AB123CD", i * 0.1, x=20 + 10 * i),
               sighting("XY987ZT", i * 0.1, x=700 - 10 * i)] for i in range(30)]
    run_frames(tracker, frames, 0.0, 0.1)
    events = tracker.update([], 10.0)
    assert sorted(e.text for e in events) == ["AB123CD", "XY987ZT"]


def test_plate_returning_within_cooldown_is_suppressed_after_it_is_new() -> None:
    tracker = PlateTracker(track_timeout_s=1.0, cooldown_s=30.0)
    passes = []
    for start in (0.0, 10.0, 50.0):  # 10 s later: within cooldown; 50 s: after it
        frames = [[sighting("AB123CD", start + i * 0.1)] for i in range(10)]
        events = run_frames(tracker, frames, start, 0.1)
        events += tracker.update([], start + 5.0)
        passes.append([e.text for e in events])
    assert passes == [["AB123CD"], [], ["AB123CD"]]
    assert tracker.suppressed == 1


def test_parked_car_gives_one_event_after_max_track_time() -> None:
    tracker = PlateTracker(track_timeout_s=1.0, max_track_s=5.0, cooldown_s=30.0)
    events = []
    for i in range(200):  # 20 s in view
        events += tracker.update([sighting("AB123CD", i * 0.1)], i * 0.1)
    assert [e.text for e in events] == ["AB123CD"]  # emitted at 5 s, not again
    events += tracker.update([], 30.0)
    assert len(events) == 1


def test_min_hits_drops_one_frame_flukes() -> None:
    tracker = PlateTracker(track_timeout_s=1.0, min_hits=3)
    tracker.update([sighting("ZZ999ZZ", 0.0)], 0.0)
    assert tracker.update([], 5.0) == []


def test_partly_visible_plate_joins_the_track_and_loses_the_vote() -> None:
    tracker = PlateTracker(track_timeout_s=1.0)
    reads = ["482TR", "D482TR"] + ["KD482TR"] * 10 + ["KD48"]
    frames = [[sighting(text, i * 0.1, x=30 + 20 * i)] for i, text in enumerate(reads)]
    run_frames(tracker, frames, 0.0, 0.1)
    events = tracker.flush()
    assert [e.text for e in events] == ["KD482TR"]


def test_a_flickering_track_keeps_at_most_three_frames() -> None:
    tracker = PlateTracker(track_timeout_s=1.0)
    frame = np.zeros((720, 1280, 3), np.uint8)
    texts = ["AB123CD"] * 5 + [f"AB123C{c}" for c in "EFGHJKLM"]
    for i, text in enumerate(texts):
        s = sighting(text, i * 0.1)
        s.frame = frame
        tracker.update([s], i * 0.1)
    (track,) = tracker.tracks
    assert sum(s.frame is not None for s in track.best_by_text.values()) <= 3
    (event,) = tracker.flush()
    assert event.text == "AB123CD" and event.best.frame is not None
