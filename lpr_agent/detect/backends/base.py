"""The contract between plate logic and a model backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class RegionBox:
    """A candidate text/plate region in frame pixel coordinates."""

    quad: np.ndarray  # (4, 2) float32 corners: top-left, top-right, bottom-right, bottom-left
    score: float
    # Text too faint or broken to be a line at this scale (a small, distant
    # plate): not a candidate, but worth a second look at full resolution.
    weak: bool = False

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        x1, y1 = self.quad.min(axis=0)
        x2, y2 = self.quad.max(axis=0)
        return float(x1), float(y1), float(x2), float(y2)

    @property
    def height(self) -> float:
        q = self.quad
        return float((np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2)

    @property
    def width(self) -> float:
        q = self.quad
        return float((np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2)


@dataclass
class CharRead:
    """One decoded character with the alternatives the plate formats need.

    ``letter``/``digit`` are the most likely letter and digit at this
    position (with probabilities) so a format can choose between them
    without re-running the model.
    """

    char: str
    prob: float
    letter: str
    letter_prob: float
    digit: str
    digit_prob: float
    gap_before: bool = False  # a separator (space, dash, dot, symbol) preceded it
    present_prob: float = 1.0  # probability that any plate character is here at all

    @property
    def pair_prob(self) -> float:
        """Probability of this glyph shape: O/0 and I/1 share it on many plates."""
        other = self.digit_prob if self.char.isalpha() else self.letter_prob
        alt = self.digit if self.char.isalpha() else self.letter
        return min(1.0, self.prob + other) if (self.char, alt) in LOOKALIKE_PAIRS else self.prob


LOOKALIKE_PAIRS = {("O", "0"), ("0", "O"), ("I", "1"), ("1", "I"), ("Q", "0"), ("D", "0"),
                   ("B", "8"), ("8", "B"), ("S", "5"), ("5", "S"), ("Z", "2"), ("2", "Z")}


@dataclass
class TextRead:
    chars: list[CharRead] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c.char for c in self.chars)

    @property
    def confidence(self) -> float:
        if not self.chars:
            return 0.0
        return float(min(c.prob for c in self.chars))


class PlateBackend(Protocol):
    name: str

    def load(self) -> None:
        """Load models (may take seconds); idempotent."""

    def find_regions(self, frame: np.ndarray) -> list[RegionBox]:
        """Candidate plate/text regions in a BGR frame."""

    def read_regions(self, frame: np.ndarray, regions: list[RegionBox]) -> list[TextRead]:
        """Read each region; one result per region, same order."""

    def describe(self) -> dict[str, object]:
        """Model files, versions, hashes, threads: for stats and the README."""
