"""Tracking and de-duplication: one event per vehicle passage.

A plate seen in many consecutive frames is one track. Sightings join a
track when the text is the same or nearly so (OCR flickers by a character
between frames) and the box is near where the track was last seen. When a
track ends (not seen for ``track_timeout_s``, or in view longer than
``max_track_s``) it yields one event with the text that won the vote across
frames (confidence-weighted) and the frame/crop of its best read. The
cooldown stops the same plate on this camera from giving a second event
while it keeps being seen (a parked car, a car waiting at a barrier).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lpr_agent.detect.reader import Box, PlateRead

log = logging.getLogger(__name__)

_ids = itertools.count(1)
MAX_FRAMES_PER_TRACK = 3


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _partial(text: str, others: dict[str, float]) -> bool:
    return len(text) >= 3 and any(text in o or o in text for o in others if len(o) >= 3)


@dataclass
class Sighting:
    read: PlateRead
    time: float
    frame: np.ndarray | None = field(repr=False)
    processing_ms: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Track:
    track_id: int
    first_seen: float
    last_seen: float
    last_box: Box
    votes: dict[str, float] = field(default_factory=dict)
    hits: int = 0
    best_by_text: dict[str, Sighting] = field(default_factory=dict)
    emitted: bool = False

    def add(self, sighting: Sighting, keep_frame: bool) -> None:
        read = sighting.read
        self.hits += 1
        self.last_seen = sighting.time
        self.last_box = read.plate_box
        self.votes[read.text] = self.votes.get(read.text, 0.0) + read.confidence
        # The crop/photo of the event must show the text the vote picks, so
        # keep the best sighting of every candidate text. An emitted track
        # (parked car) needs no more photos.
        keep_frame = keep_frame and not self.emitted
        best = self.best_by_text.get(read.text)
        if best is None or read.confidence > best.read.confidence:
            self.best_by_text[read.text] = sighting if keep_frame else Sighting(
                read, sighting.time, None, sighting.processing_ms, sighting.meta)
        if len(self.best_by_text) > MAX_FRAMES_PER_TRACK:
            # Frames are megabytes: only the leading candidates keep theirs.
            ranked = sorted(self.best_by_text, key=lambda t: self.votes[t], reverse=True)
            for text in ranked[MAX_FRAMES_PER_TRACK:]:
                old = self.best_by_text[text]
                if old.frame is not None:
                    self.best_by_text[text] = Sighting(old.read, old.time, None,
                                                       old.processing_ms, old.meta)

    @property
    def text(self) -> str:
        return max(self.votes.items(), key=lambda kv: (kv[1], len(kv[0])))[0]

    @property
    def best(self) -> Sighting | None:
        return self.best_by_text.get(self.text) if self.votes else None


@dataclass
class TrackEvent:
    """A finished (or long-running) track turned into one reading."""

    track_id: int
    text: str
    confidence: float
    hits: int
    first_seen: float
    last_seen: float
    best: Sighting
    votes: dict[str, float]


class PlateTracker:
    def __init__(
        self,
        track_timeout_s: float = 2.0,
        max_track_s: float = 10.0,
        cooldown_s: float = 60.0,
        min_hits: int = 1,
        max_distance: float = 2.5,
    ) -> None:
        self.track_timeout_s = track_timeout_s
        self.max_track_s = max_track_s
        self.cooldown_s = cooldown_s
        self.min_hits = min_hits
        # How far (in plate widths) a plate may move between two sightings
        # and still be the same vehicle.
        self.max_distance = max_distance
        self.tracks: list[Track] = []
        self._last_event: dict[str, float] = {}  # plate text -> last time seen in an event
        self.suppressed = 0

    def _match(self, read: PlateRead, now: float, taken: set[int]) -> Track | None:
        best: tuple[float, Track] | None = None
        for track in self.tracks:
            if track.track_id in taken:
                continue
            text = track.text
            dist_text = min(edit_distance(read.text, t) for t in track.votes)
            bx1, by1, bx2, by2 = read.plate_box
            tx1, ty1, tx2, ty2 = track.last_box
            width = max(bx2 - bx1, tx2 - tx1, 1.0)
            dx = ((bx1 + bx2) - (tx1 + tx2)) / 2 / width
            dy = ((by1 + by2) - (ty1 + ty2)) / 2 / width
            dist_px = (dx * dx + dy * dy) ** 0.5
            if read.text == text or read.text in track.votes:
                cost = dist_px * 0.1  # same text: same vehicle wherever it went
            elif dist_text <= max(1, len(read.text) // 4) and dist_px <= self.max_distance:
                cost = 1.0 + dist_text + dist_px
            elif dist_px <= self.max_distance and _partial(read.text, track.votes):
                # A plate entering or leaving the view is read in part.
                cost = 2.0 + dist_px
            else:
                continue
            if best is None or cost < best[0]:
                best = (cost, track)
        return best[1] if best else None

    def update(self, sightings: list[Sighting], now: float, keep_frames: bool = True
               ) -> list[TrackEvent]:
        """Add one frame's sightings (``now`` = the frame's time); return finished events."""
        taken: set[int] = set()
        for sighting in sorted(sightings, key=lambda s: -s.read.confidence):
            track = self._match(sighting.read, now, taken)
            if track is None:
                track = Track(track_id=next(_ids), first_seen=sighting.time,
                              last_seen=sighting.time, last_box=sighting.read.plate_box)
                self.tracks.append(track)
            track.add(sighting, keep_frames)
            taken.add(track.track_id)
        return self._expire(now)

    def flush(self) -> list[TrackEvent]:
        """End every track (source finished, shutdown)."""
        events = [e for t in self.tracks if (e := self._finish(t)) is not None]
        self.tracks = []
        return events

    def _expire(self, now: float) -> list[TrackEvent]:
        if len(self._last_event) > 1000:
            # Forget plates whose cooldown is long over (bounded memory).
            self._last_event = {t: seen for t, seen in self._last_event.items()
                                if now - seen < self.cooldown_s + self.track_timeout_s}
        events: list[TrackEvent] = []
        alive: list[Track] = []
        for track in self.tracks:
            if now - track.last_seen > self.track_timeout_s:
                event = self._finish(track)
                if event is not None:
                    events.append(event)
                continue
            if not track.emitted and now - track.first_seen >= self.max_track_s:
                event = self._finish(track)
                if event is not None:
                    events.append(event)
                track.emitted = True  # still tracked, so its later sightings give no event
            alive.append(track)
        self.tracks = alive
        return events

    def _finish(self, track: Track) -> TrackEvent | None:
        text = track.text
        last_event = self._last_event.get(text)
        # Every sighting of the plate refreshes its cooldown, so a car parked
        # in view does not produce an event every cooldown period.
        self._last_event[text] = track.last_seen
        best = track.best
        if track.emitted or best is None or track.hits < self.min_hits:
            return None
        if last_event is not None and track.first_seen - last_event < self.cooldown_s:
            self.suppressed += 1
            log.debug("plate %s seen again within the cooldown: no new event", text)
            return None
        total = sum(track.votes.values()) or 1.0
        return TrackEvent(
            track_id=track.track_id, text=text,
            confidence=min(1.0, best.read.confidence * track.votes[text] / total),
            hits=track.hits, first_seen=track.first_seen, last_seen=track.last_seen,
            best=best, votes=dict(track.votes),
        )
