"""What every frame source produces and promises: :class:`Frame`, :class:`FrameSource`.

This module imports nothing else from ``lpr_agent.detect``: the sources
(``sources.py``) and the synthetic camera (``synthetic.py``) both build on it
without importing each other at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

import numpy as np

__all__ = ["Frame", "FrameSource", "SourceError", "url_options"]


class SourceError(RuntimeError):
    """The source cannot deliver frames now (it may be reopened later)."""


@dataclass
class Frame:
    image: np.ndarray
    index: int
    wall_time: float  # time.time() at capture
    monotonic: float  # time.monotonic() at capture
    name: str | None = None  # file name for folder sources
    truth: list[Any] = field(default_factory=list)  # synthetic ground truth


class FrameSource(Protocol):
    description: str
    live: bool  # frames keep coming whether we read them or not (camera, stream)

    def open(self) -> None: ...
    def read(self) -> Frame | None:
        """The next frame; None at the end of a finite source; SourceError on failure."""
    def close(self) -> None: ...


def url_options(url: str) -> dict[str, str]:
    """The query options of a source URL (``synthetic:?a=1&b=2`` → ``{"a": "1", "b": "2"}``)."""
    query = url.split("?", 1)[1] if "?" in url else ""
    return {k: v[-1] for k, v in parse_qs(query).items()}
