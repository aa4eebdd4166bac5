from __future__ import annotations

import os
from pathlib import Path

import pytest

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.reader import PlateReader

REPO = Path(__file__).resolve().parents[2]
EU_DATA = (REPO / ".." / "shared" / "data" / "openalpr-eu").resolve()


@pytest.fixture(scope="session")
def reader() -> PlateReader:
    """The default reader with its models loaded once for the whole session."""
    r = PlateReader(DetectorConfig())
    r.load()
    return r


@pytest.fixture(scope="session")
def eu_data() -> Path:
    if not EU_DATA.is_dir():
        message = f"shared evaluation data not found at {EU_DATA}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must never pass by skipping what it cannot check
        pytest.skip(message)
    return EU_DATA
