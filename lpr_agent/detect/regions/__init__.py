"""Plate regions as data: one module per region, each declaring a :class:`Region`.

A region says what its plates look like - layouts (``L`` letter, ``N``
digit, ``?`` either), which look-alike corrections its layouts justify and
how many, whether all-digit and all-letter plates exist - and nothing else;
the code that applies it is :mod:`lpr_agent.detect.plates`. Adding a region
is one file here (a module-level ``REGION``) or, without code, a table in the
config::

    [detector.regions.ch]
    layouts = ["LLNNNNNN", "LLNNNNN"]
    max_swaps = 1

and ``region = "ch"``. ``auto`` is not a region but a choice made per plate
among all of them (:mod:`lpr_agent.detect.plates`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AUTO", "DIGIT_LOOKALIKES", "LETTER_LOOKALIKES", "Region", "builtin_regions",
           "resolve_region"]

AUTO = "auto"

# Look-alike pairs the recogniser confuses. A region may allow a subset.
DIGIT_LOOKALIKES: dict[str, str] = {  # letter read in a digit slot → that digit
    "O": "0", "Q": "0", "D": "0", "U": "0", "I": "1", "L": "1", "J": "1", "T": "7",
    "Z": "2", "S": "5", "B": "8", "G": "6", "A": "4"}
LETTER_LOOKALIKES: dict[str, str] = {  # digit read in a letter slot → that letter
    "0": "O", "1": "I", "2": "Z", "5": "S", "8": "B", "6": "G", "7": "T", "4": "A"}


class Region(BaseModel):
    """What one region's plates look like (also a ``[detector.regions.NAME]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", description="region name (the key of its table)")
    description: str = Field(default="", description="one line for people")
    layouts: tuple[str, ...] = Field(
        default=(), description="plate layouts as strings of L (letter), N (digit), ? (either)"
    )
    exhaustive: bool = Field(
        default=False, description="every plate of the region fits a layout, so a read that "
        "fits none after corrections is dropped (true for Brazil)"
    )
    max_swaps: int = Field(
        default=1, ge=0, le=4, description="look-alike characters that may be swapped to make "
        "a read fit a layout (0 = never rewrite a read)"
    )
    to_digit: dict[str, str] = Field(
        default_factory=lambda: dict(DIGIT_LOOKALIKES), description="letters that may be read "
        "as a digit in a digit slot of a layout, e.g. {O = '0'}"
    )
    to_letter: dict[str, str] = Field(
        default_factory=lambda: dict(LETTER_LOOKALIKES), description="digits that may be read "
        "as a letter in a letter slot of a layout, e.g. {'0' = 'O'}"
    )
    context_correction: bool = Field(
        default=False, description="plates group letters and digits in runs (AB 123 CD): an "
        "O/I between two digits becomes 0/1 and a 0/1 between letters O/I, also outside "
        "the layouts"
    )
    all_digit: bool = Field(default=False, description="plates of only digits exist")
    all_letter: bool = Field(default=False, description="plates of only letters exist "
                             "(vanity/personalised plates)")
    plate_margin: float = Field(
        default=0.3, ge=0.0, le=2.0, description="how far the plate's top and bottom edges "
        "are from the characters, in character heights (the plate-shape evidence looks "
        "that far)"
    )
    min_chars: int = Field(default=4, ge=1, le=16, description="shortest plate")
    max_chars: int = Field(default=8, ge=1, le=16, description="longest plate")

    @field_validator("layouts")
    @classmethod
    def _check_layouts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for layout in value:
            if not layout or set(layout) - set("LN?"):
                raise ValueError(f"plate layout {layout!r} may contain only L, N and ?")
        return value

    def fits(self, text: str) -> bool:
        """``text`` matches one of the layouts as it is (no correction)."""
        return any(_matches(text, layout) for layout in self.layouts)

    def accepts_kind(self, text: str) -> bool:
        """All-digit / all-letter texts only where such plates exist."""
        if text.isdigit():
            return self.all_digit
        if text.isalpha():
            return self.all_letter
        return True


def _matches(text: str, layout: str) -> bool:
    return len(text) == len(layout) and all(
        k == "?" or (k == "L" and ch.isalpha()) or (k == "N" and ch.isdigit())
        for ch, k in zip(text, layout, strict=True))


@lru_cache(maxsize=1)
def builtin_regions() -> Mapping[str, Region]:
    """Every region module of this package (``eu.py``, ``us.py``, …) by name."""
    found: dict[str, Region] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        region = getattr(module, "REGION", None)
        if isinstance(region, Region):
            found[region.name] = region
    return found


def resolve_region(name: str, custom: Mapping[str, Region] | None = None) -> Region:
    """The region called ``name``: a config table first, then a built-in module."""
    custom = custom or {}
    if name in custom:
        region = custom[name]
        return region if region.name == name else region.model_copy(update={"name": name})
    regions = builtin_regions()
    if name not in regions:
        known = sorted({*regions, *custom, AUTO})
        raise ValueError(f"unknown plate region {name!r} (known: {', '.join(known)})")
    return regions[name]
