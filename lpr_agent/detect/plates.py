"""Plate-text normalisation, per-region formats and position-aware correction.

A format is a string of ``L`` (letter), ``N`` (digit) and ``?`` (either),
e.g. Brazil's Mercosur ``LLLNLNN``. When a read has the length of a format
but a character of the wrong class, we swap in the model's best character of
the right class - the recogniser's O/0, I/1, B/8 confusions are exactly the
cases a format can settle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lpr_agent.detect.backends.base import CharRead

_KEEP = re.compile(r"[^A-Z0-9]")

# Regions with a small set of formats. Europe and the US have too many
# national/state formats for a fixed list to help without hurting; they
# use the region-agnostic context rule in :func:`correct_context`.
REGION_FORMATS: dict[str, tuple[str, ...]] = {
    "br": ("LLLNLNN", "LLLNNNN"),  # Mercosur (2018+) and the older grey plates
    # Common one-line layouts: SK/IT/HR/FR (AB 123 CD), PL (AB 12345),
    # CZ (1A2 3456 / 1AB 2345), UK (AB12 CDE) and 3+4 layouts.
    "eu": ("LLNNNLL", "LLNNNNN", "NLNNNNN", "NLLNNNN", "LLLNNNN", "LLNNLLL"),
    "us": (),
    "auto": (),
}
# Formats whose exact match is left untouched by the context rule in every
# region: a Mercosur ``ABC1D23`` has a digit between letters on purpose.
KNOWN_FORMATS: tuple[str, ...] = tuple(sorted({f for fs in REGION_FORMATS.values() for f in fs}))

# Pairs the recogniser confuses; a correction outside these needs the model
# itself to give the other class a real probability.
LOOKALIKE_DIGIT = {"O": "0", "Q": "0", "D": "0", "U": "0", "I": "1", "L": "1", "J": "1",
                   "T": "7", "Z": "2", "S": "5", "B": "8", "G": "6", "A": "4"}
LOOKALIKE_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "8": "B", "6": "G", "7": "T",
                    "4": "A"}
MIN_ALTERNATIVE_PROB = 0.02


def normalise(text: str) -> str:
    """Upper-case and keep only A–Z and 0–9 (how plates are compared)."""
    return _KEEP.sub("", text.upper())


def _to_digit(c: CharRead) -> str | None:
    if c.char.isdigit():
        return c.char
    if c.char in LOOKALIKE_DIGIT:
        return LOOKALIKE_DIGIT[c.char]
    return c.digit if c.digit_prob >= MIN_ALTERNATIVE_PROB else None


def _to_letter(c: CharRead) -> str | None:
    if c.char.isalpha():
        return c.char
    if c.char in LOOKALIKE_LETTER:
        return LOOKALIKE_LETTER[c.char]
    return c.letter if c.letter_prob >= MIN_ALTERNATIVE_PROB else None


def _alt_prob(c: CharRead, new: str) -> float:
    if new == c.letter:
        return c.letter_prob
    if new == c.digit:
        return c.digit_prob
    return 0.0


def format_cost(chars: Sequence[CharRead], fmt: str) -> tuple[str, float] | None:
    """Like :func:`apply_format`; the cost also weighs how plausible each swap was."""
    fitted = apply_format(chars, fmt)
    if fitted is None:
        return None
    text, swaps = fitted
    doubt = sum(1.0 - _alt_prob(c, new) for c, new in zip(chars, text, strict=True)
                if new != c.char)
    # Whole swaps dominate; the model's own belief in the swapped-in
    # character only breaks ties between formats.
    return text, swaps + 0.5 * doubt / max(1, swaps)


def apply_format(chars: Sequence[CharRead], fmt: str) -> tuple[str, int] | None:
    """The read forced into ``fmt`` and the number of swaps, or None if impossible."""
    if len(chars) != len(fmt):
        return None
    out: list[str] = []
    swaps = 0
    for c, kind in zip(chars, fmt, strict=True):
        if kind == "L":
            new = _to_letter(c)
        elif kind == "N":
            new = _to_digit(c)
        else:
            new = c.char
        if new is None:
            return None
        swaps += new != c.char
        out.append(new)
    return "".join(out), swaps


def correct_formats(
    chars: Sequence[CharRead], formats: Sequence[str], max_swaps: int = 2
) -> tuple[str, bool] | None:
    """Best format fit: (text, matched) or None if no format fits within ``max_swaps``."""
    fits: dict[str, float] = {}
    for fmt in formats:
        fitted = format_cost(chars, fmt)
        if fitted is None:
            continue
        text, cost = fitted
        if cost < max_swaps + 0.5:
            fits[text] = min(cost, fits.get(text, cost))
    if not fits:
        return None
    least = min(fits.values())
    winners = [text for text, swaps in fits.items() if swaps == least]
    if len(winners) > 1:
        return None  # two formats disagree: the read stays as it is
    return winners[0], True


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
    min_chars: int = 4
    max_chars: int = 8
    require_letter_and_digit: bool = True
    formats: tuple[str, ...] = ()
    strict_formats: bool = False
    context_correction: bool = True
    max_swaps: int = 2
    known_formats: tuple[str, ...] = KNOWN_FORMATS

    def apply(self, chars: Sequence[CharRead]) -> tuple[str, float] | None:
        """(plate text, confidence) for a read, or None if it does not look like a plate.

        The confidence is the least sure character's probability: one
        doubtful character makes the whole plate doubtful.
        """
        chars = trim_edges(chars, self.min_chars)
        if not chars:
            return None
        conf = min(c.pair_prob for c in chars)
        text = self._text(chars)
        return None if text is None else (text, conf)

    def _text(self, chars: Sequence[CharRead]) -> str | None:
        text = "".join(c.char for c in chars)
        if not self.min_chars <= len(text) <= self.max_chars:
            return None
        if self.formats:
            fitted = correct_formats(chars, self.formats, self.max_swaps)
            if fitted is not None:
                return fitted[0]
            if self.strict_formats:
                return None
        elif self.known_formats:
            # No region chosen: a read one look-alike swap away from exactly
            # one known layout takes that layout. One swap only, because the
            # layouts come from other regions too.
            fitted = correct_formats(chars, self.known_formats, max_swaps=1)
            if fitted is not None:
                return fitted[0]
        if self.context_correction and not any(
            apply_format(chars, fmt) == (text, 0) for fmt in self.known_formats
        ):
            text = correct_context(chars)
        if self.require_letter_and_digit and (
            not any(ch.isalpha() for ch in text) or not any(ch.isdigit() for ch in text)
        ):
            return None
        return text
