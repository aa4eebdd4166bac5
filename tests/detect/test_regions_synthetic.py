"""Synthetic plates of every region, read with the region set and with ``auto`` (≥ 95 % exact)."""

from __future__ import annotations

import random

import pytest

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.regions import builtin_regions
from lpr_agent.detect.synthetic import plate_scene, random_plate

PER_LAYOUT = 3
PER_SCENE = 3


def _plates(style: str, seed: int) -> list[str]:
    """Every layout of the region the same number of times, and vanity plates where
    they exist (US: 1ABC234, ABC1234, ABC123, 123ABC, all-digit, vanity)."""
    region = builtin_regions()[style]
    rng = random.Random(seed)
    out = []
    for fmt in (*region.layouts, *(["VANITY"] if region.all_letter else [])):
        for _ in range(PER_LAYOUT):
            if fmt == "VANITY":
                out.append("".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
                                   for _ in range(rng.randint(5, 7))))
            else:
                out.append(random_plate(rng, fmt))
    rng.shuffle(out)
    return out


def _reader(shared: PlateReader, region: str) -> PlateReader:
    reader = PlateReader(DetectorConfig(region=region), backend=shared.backend)
    reader.loaded = True
    return reader


@pytest.mark.parametrize("style", ["eu", "us", "br"])
def test_synthetic_plates_of_every_region(reader: PlateReader, style: str) -> None:
    plates = _plates(style, seed={"eu": 1, "us": 2, "br": 3}[style])
    readers = {name: _reader(reader, name) for name in (style, "auto")}
    rng = random.Random(5)
    correct = dict.fromkeys(readers, 0)
    false: dict[str, list[str]] = {name: [] for name in readers}
    misses: dict[str, list[str]] = {name: [] for name in readers}
    for start in range(0, len(plates), PER_SCENE):
        texts = plates[start:start + PER_SCENE]
        # Plate heights of a 720p checkpoint camera: 40 px (far) to 80 px (near).
        frame = plate_scene(texts, style, plate_height=rng.choice([40, 48, 60, 80]),
                            seed=start)
        for name, region_reader in readers.items():
            read = [p.text for p in region_reader.read(frame.image).plates]
            correct[name] += sum(t in read for t in texts)
            misses[name] += [t for t in texts if t not in read]
            false[name] += [t for t in read if t not in texts]
    for name in readers:
        rate = correct[name] / len(plates)
        assert rate >= 0.95, f"{style} plates read with region={name}: {rate:.1%}, " \
                             f"missed {misses[name]}"
        # Captions (state names, BRASIL) and car bodies are not plates.
        assert not false[name], f"region={name}: false plates {false[name]}"
