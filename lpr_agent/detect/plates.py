"""Plate-text rules: normalisation, region layouts and position-aware correction.

What a region's plates look like is data (:mod:`lpr_agent.detect.regions`,
one file per region); this module applies it. A layout is a string of ``L``
(letter), ``N`` (digit) and ``?`` (either), e.g. Brazil's Mercosur
``LLLNLNN``. When a read has the length of a layout but a character of the
wrong class, we swap in the right class where the region allows that
look-alike - the recogniser's O/0, I/1, B/8 confusions are exactly the cases
a layout can settle - and never rewrite a read that already fits a layout.

``auto`` chooses per plate: a read that fits any region's layout, or that
any region accepts as it is, stays; otherwise it takes the one layout (of
any region) that a single swap reaches *where the model itself doubted the
character*. A confident read is never forced into another region's layout:
``R107555`` stays, although one swap makes it a Polish ``RI07555``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from lpr_agent.detect.backends.base import CharRead
from lpr_agent.detect.regions import (
    DIGIT_LOOKALIKES,
    LETTER_LOOKALIKES,
    Region,
    builtin_regions,
)

_KEEP = re.compile(r"[^A-Z0-9]")

# Kept for callers of the old names.
LOOKALIKE_DIGIT = DIGIT_LOOKALIKES
LOOKALIKE_LETTER = LETTER_LOOKALIKES
# A swap outside the region's look-alike tables needs the model itself to
# give the other class a real probability.
MIN_ALTERNATIVE_PROB = 0.02
# In ``auto`` a swap needs the model's doubt: the other class must have at
# least this probability at that position (a look-alike table alone is not
# evidence when the region, and so the layout, is unknown).
AUTO_MIN_DOUBT = 0.05
# ... except O↔0: one glyph on most plates (SK, DE, many US states), so only
# a layout can tell them apart and the model's certainty means nothing.
AUTO_FREE_SWAPS = frozenset({("O", "0"), ("0", "O")})
# Edge characters the layout may take back from (or give to) the trimming,
# and how sure a character may be for the layout to drop it.
LAYOUT_TRIM_MAX = 1
LAYOUT_TRIM_PROB = 0.9
# The layouts of every built-in region: an exact fit is never context-corrected.
KNOWN_FORMATS: tuple[str, ...] = tuple(sorted(
    {f for r in builtin_regions().values() for f in r.layouts}))


def normalise(text: str) -> str:
    """Upper-case and keep only A–Z and 0–9 (how plates are compared)."""
    return _KEEP.sub("", text.upper())


def _to_digit(c: CharRead, region: Region | None = None) -> str | None:
    table = DIGIT_LOOKALIKES if region is None else region.to_digit
    if c.char.isdigit():
        return c.char
    if c.char in table:
        return table[c.char]
    return c.digit if c.digit_prob >= MIN_ALTERNATIVE_PROB else None


def _to_letter(c: CharRead, region: Region | None = None) -> str | None:
    table = LETTER_LOOKALIKES if region is None else region.to_letter
    if c.char.isalpha():
        return c.char
    if c.char in table:
        return table[c.char]
    return c.letter if c.letter_prob >= MIN_ALTERNATIVE_PROB else None


def _alt_prob(c: CharRead, new: str) -> float:
    if new == c.letter:
        return c.letter_prob
    if new == c.digit:
        return c.digit_prob
    return 0.0


def format_cost(
    chars: Sequence[CharRead], fmt: str, region: Region | None = None, min_doubt: float = 0.0
) -> tuple[str, float] | None:
    """Like :func:`apply_format`; the cost also weighs how plausible each swap was.

    With ``min_doubt`` a swap is allowed only where the model gives the
    swapped-in character at least that probability.
    """
    fitted = apply_format(chars, fmt, region)
    if fitted is None:
        return None
    text, swaps = fitted
    alts = [_alt_prob(c, new) for c, new in zip(chars, text, strict=True) if new != c.char]
    if min_doubt > 0 and any(
        _alt_prob(c, new) < min_doubt and (c.char, new) not in AUTO_FREE_SWAPS
        for c, new in zip(chars, text, strict=True) if new != c.char
    ):
        return None
    doubt = sum(1.0 - p for p in alts)
    # Whole swaps dominate; the model's own belief in the swapped-in
    # character only breaks ties between formats.
    return text, swaps + 0.5 * doubt / max(1, swaps)


def apply_format(
    chars: Sequence[CharRead], fmt: str, region: Region | None = None
) -> tuple[str, int] | None:
    """The read forced into ``fmt`` and the number of swaps, or None if impossible."""
    if len(chars) != len(fmt):
        return None
    out: list[str] = []
    swaps = 0
    for c, kind in zip(chars, fmt, strict=True):
        if kind == "L":
            new = _to_letter(c, region)
        elif kind == "N":
            new = _to_digit(c, region)
        else:
            new = c.char
        if new is None:
            return None
        swaps += new != c.char
        out.append(new)
    return "".join(out), swaps


def _fits(
    chars: Sequence[CharRead], formats: Sequence[str], max_swaps: int,
    region: Region | None = None, min_doubt: float = 0.0,
) -> dict[str, float]:
    """Texts reachable within ``max_swaps`` → their least cost."""
    fits: dict[str, float] = {}
    for fmt in formats:
        fitted = format_cost(chars, fmt, region, min_doubt)
        if fitted is None:
            continue
        text, cost = fitted
        if cost <= max_swaps + 0.5:
            fits[text] = min(cost, fits.get(text, cost))
    return fits


def _unique_best(fits: dict[str, float]) -> str | None:
    if not fits:
        return None
    least = min(fits.values())
    winners = [text for text, cost in fits.items() if cost == least]
    return winners[0] if len(winners) == 1 else None  # layouts disagree: leave the read


def correct_formats(
    chars: Sequence[CharRead], formats: Sequence[str], max_swaps: int = 2,
    region: Region | None = None,
) -> tuple[str, bool] | None:
    """Best format fit: (text, matched) or None if no format fits within ``max_swaps``."""
    best = _unique_best(_fits(chars, formats, max_swaps, region))
    return None if best is None else (best, True)


def correct_context(chars: Sequence[CharRead]) -> str:
    """Region-agnostic fix: an O/I/etc. among digits is a digit, a 0/1 among letters a letter.

    Plates group letters and digits in runs (``AB 123 CD``); a character
    whose neighbours on both sides (within its separator group) are digits
    is read as a digit, and likewise for letters. Characters at a group
    edge are left alone because ``1B8`` style mixes are real.
    """
    text = [c.char for c in chars]
    for i in range(1, len(chars) - 1):
        c = chars[i]
        if c.gap_before or chars[i + 1].gap_before:
            continue
        left, right = text[i - 1], text[i + 1]
        # Only the near-identical glyphs: B, S, Z between digits are real on
        # some plates (Czech ``1B8 0338``), O and I practically never are.
        if c.char in "OIQ" and left.isdigit() and right.isdigit():
            text[i] = LOOKALIKE_DIGIT[c.char]
        elif c.char in "01" and left.isalpha() and right.isalpha():
            text[i] = LOOKALIKE_LETTER[c.char]
    # A 0/1 ending a letter run (``AB 123 AO``) is a letter; the start of a
    # run is left alone because plates like ``1T4 3213`` begin with a digit.
    last = len(chars) - 1
    if (last >= 2 and chars[last].char in "01" and not chars[last].gap_before
            and text[last - 1].isalpha() and text[last - 2].isalnum()):
        text[last] = LOOKALIKE_LETTER[chars[last].char]
    return "".join(text)


EDGE_TRIM_PROB = 0.6
# An inner character the model half-believes is not there at all is a
# CTC artefact (a stroke read twice), not a plate character.
INNER_DROP_PROB = 0.55


def _sureness(c: CharRead) -> float:
    return min(c.pair_prob, c.present_prob)


def trim_edges(chars: Sequence[CharRead], min_chars: int) -> Sequence[CharRead]:
    """Drop unsure characters at either end.

    The text box often takes in the plate's border, a screw or the EU
    country strip, which the recogniser turns into a low-confidence extra
    character at an end of the line.
    """
    chars = list(chars)
    while len(chars) > min_chars:
        first, last = chars[0], chars[-1]
        weakest = first if _sureness(first) <= _sureness(last) else last
        if _sureness(weakest) >= EDGE_TRIM_PROB:
            break
        if weakest is first:
            del chars[0]
        else:
            chars.pop()
    if len(chars) > min_chars:
        chars = [c for c in chars if c.present_prob >= INNER_DROP_PROB] or chars
    return chars


@dataclass(frozen=True)
class PlateRules:
    """The text rules of one region, or of ``auto`` (``region=None``) over ``regions``."""

    region: Region | None = None
    regions: tuple[Region, ...] = field(
        default_factory=lambda: tuple(builtin_regions().values()))
    min_chars: int | None = None  # None: the region's
    max_chars: int | None = None
    # The old filter, for operators who want it: needs a letter and a digit.
    require_letter_and_digit: bool = False

    @property
    def length_range(self) -> tuple[int, int]:
        pool = [self.region] if self.region is not None else list(self.regions)
        lo = self.min_chars if self.min_chars is not None else min(r.min_chars for r in pool)
        hi = self.max_chars if self.max_chars is not None else max(r.max_chars for r in pool)
        return lo, hi

    def fits_layout(self, text: str) -> bool:
        """``text`` is exactly a layout of the region (of any region for ``auto``)."""
        pool = [self.region] if self.region is not None else self.regions
        return any(r.fits(text) for r in pool)

    def apply(self, chars: Sequence[CharRead]) -> tuple[str, float] | None:
        """(plate text, confidence) for a read, or None if it does not look like a plate.

        The confidence is the least sure character's probability: one
        doubtful character makes the whole plate doubtful.
        """
        chars = self._trim(chars)
        if not chars:
            return None
        conf = min(c.pair_prob for c in chars)
        text = self._text(chars)
        return None if text is None else (text, conf)

    def _trim(self, chars: Sequence[CharRead]) -> Sequence[CharRead]:
        """Unsure edge characters dropped, unless the layouts say otherwise.

        The country strip read as an extra ``R`` (``RRK776AI``) or a last
        ``I`` the model was unsure of (``RK857A``): when the plain trim fits
        no layout but moving one edge by one character makes exactly one
        mixed layout fit (with the region's corrections), that is the plate.
        """
        trimmed = list(trim_edges(chars, self.length_range[0]))
        if not trimmed or self._layout_cost(trimmed) is not None:
            return trimmed
        full = [c for c in chars if c.present_prob >= INNER_DROP_PROB] or list(chars)
        start = _find(full, trimmed)
        if start is None:
            return trimmed
        end = start + len(trimmed)
        options: list[tuple[float, list[CharRead]]] = []
        for d_start in range(-LAYOUT_TRIM_MAX, LAYOUT_TRIM_MAX + 1):
            for d_end in range(-LAYOUT_TRIM_MAX, LAYOUT_TRIM_MAX + 1):
                a, b = start + d_start, end + d_end
                dropped = full[start:a] + full[b:end]  # sure characters stay
                if any(_sureness(c) >= LAYOUT_TRIM_PROB for c in dropped):
                    continue
                if (d_start or d_end) and 0 <= a < b <= len(full):
                    cost = self._layout_cost(full[a:b])
                    if cost is not None:
                        options.append((cost, full[a:b]))
        if not options:
            return trimmed
        options.sort(key=lambda o: o[0])
        if len(options) > 1 and options[1][0] - options[0][0] < 0.1:
            return trimmed  # two ways to fit: the layouts do not decide
        return options[0][1]

    def _layout_cost(self, chars: Sequence[CharRead]) -> float | None:
        """Swaps (weighed by the model's doubt) to make ``chars`` a mixed layout, or None."""
        lo, hi = self.length_range
        if not lo <= len(chars) <= hi:
            return None
        region = self.region
        text = self._auto(chars) if region is None else self._in_region(chars, region)
        if text is None or text.isdigit() or text.isalpha() or not self.fits_layout(text):
            return None
        return sum(1.0 + (1.0 - _alt_prob(c, new)) for c, new in zip(chars, text, strict=True)
                   if new != c.char)

    def _text(self, chars: Sequence[CharRead]) -> str | None:
        lo, hi = self.length_range
        if not lo <= len(chars) <= hi:
            return None
        region = self.region
        text = self._auto(chars) if region is None else self._in_region(chars, region)
        if text is None or not self._accepted(text):
            return None
        return text

    def _in_region(self, chars: Sequence[CharRead], region: Region) -> str | None:
        text = "".join(c.char for c in chars)
        if region.fits(text):
            return text
        if text.isalpha() or text.isdigit():
            # A vanity (or all-digit) plate is a layout of its own: KMBORAK
            # must not become the UK-style KM80RAK. Where such plates do not
            # exist, a read without a single letter (digit) is a number or a
            # word, and swapping one in would make up a plate.
            return text if region.accepts_kind(text) else None
        fitted = correct_formats(chars, region.layouts, region.max_swaps, region)
        if fitted is not None:
            return fitted[0]
        if region.exhaustive and region.layouts:
            return None
        # A plate of another region's layout (a Mercosur car in Europe) keeps
        # its digit between letters.
        if region.context_correction and not any(_matches(text, f) for f in KNOWN_FORMATS):
            text = correct_context(chars)
        return text

    def _auto(self, chars: Sequence[CharRead]) -> str:
        text = "".join(c.char for c in chars)
        if any(r.fits(text) for r in self.regions):
            return text
        fits: dict[str, float] = {}
        for region in self.regions:
            for fitted, cost in _fits(chars, region.layouts, min(1, region.max_swaps),
                                      region, AUTO_MIN_DOUBT).items():
                fits[fitted] = min(cost, fits.get(fitted, cost))
        return _unique_best(fits) or text

    def accepting(self, text: str) -> list[Region]:
        """The regions whose rules accept ``text`` as a plate (kind and length)."""
        if self.region is not None:
            return [self.region] if self._accepted(text) else []
        n = len(text)
        return [r for r in self.regions if r.accepts_kind(text)
                and (self.min_chars is not None or r.min_chars <= n)
                and (self.max_chars is not None or n <= r.max_chars)]

    def _accepted(self, text: str) -> bool:
        if self.require_letter_and_digit and (text.isdigit() or text.isalpha()):
            return False
        if self.region is not None:
            return self.region.accepts_kind(text)
        # auto: a region whose plates can have this length accepts its kind
        # (a 3-letter vanity plate is American, not European).
        n = len(text)
        return any(r.accepts_kind(text)
                   and (self.min_chars is not None or r.min_chars <= n)
                   and (self.max_chars is not None or n <= r.max_chars)
                   for r in self.regions)


def _find(chars: list[CharRead], part: list[CharRead]) -> int | None:
    for i in range(len(chars) - len(part) + 1):
        if all(a is b for a, b in zip(chars[i:i + len(part)], part, strict=True)):
            return i
    return None


def _matches(text: str, layout: str) -> bool:
    return len(text) == len(layout) and all(
        k == "?" or (k == "L" and ch.isalpha()) or (k == "N" and ch.isdigit())
        for ch, k in zip(text, layout, strict=True))
