"""Plate-text rules: normalisation, formats, position-aware correction."""

from __future__ import annotations

from lpr_agent.detect.backends.base import CharRead
from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.plates import PlateRules, apply_format, correct_context, normalise
from lpr_agent.detect.reader import rules_from_config


def chars(text: str, probs: dict[int, float] | None = None) -> list[CharRead]:
    out = []
    for i, ch in enumerate(text):
        p = (probs or {}).get(i, 0.99)
        out.append(CharRead(char=ch, prob=p, letter=ch if ch.isalpha() else "O",
                            letter_prob=p if ch.isalpha() else 0.0,
                            digit=ch if ch.isdigit() else "0",
                            digit_prob=p if ch.isdigit() else 0.0, present_prob=0.99))
    return out


def test_normalise_drops_everything_but_a_z_0_9() -> None:
    assert normalise("ab-12 3·cd") == "AB123CD"


def test_brazil_format_fixes_letter_digit_confusions() -> None:
    rules = rules_from_config(DetectorConfig(region="br"))
    assert rules.apply(chars("ABC1D23"))[0] == "ABC1D23"  # Mercosur, untouched
    assert rules.apply(chars("A8C1D23"))[0] == "ABC1D23"  # 8 in a letter slot
    assert rules.apply(chars("ABCID23"))[0] == "ABC1D23"  # I in a digit slot
    assert rules.apply(chars("ABC1234"))[0] == "ABC1234"  # old format


def test_format_swap_limit() -> None:
    assert apply_format(chars("8B0I"), "LLNN") == ("BB01", 2)
    rules = PlateRules(formats=("LLLNNNN",), max_swaps=1)
    # Needs 2 swaps: left as read (non-strict) ...
    assert rules.apply(chars("A8C12S4"))[0] == "A8C12S4"
    # ... or dropped when formats are strict.
    assert PlateRules(formats=("LLLNNNN",), max_swaps=1, strict_formats=True).apply(
        chars("A8C12S4")) is None


def test_context_rule_only_for_o_and_i() -> None:
    assert correct_context(chars("RK3O5AB")) == "RK305AB"
    assert correct_context(chars("BA2681M")) == "BA2681M"  # mixed neighbours: undecided
    assert correct_context(chars("AB1CD")) == "ABICD"
    assert correct_context(chars("1B80338")) == "1B80338"  # Czech: B between digits is real
    assert correct_context(chars("RK340A0")) == "RK340AO"  # a 0 ending a letter run


def test_mercosur_plate_is_not_context_corrected() -> None:
    rules = PlateRules()
    assert rules.apply(chars("KWV0W51"))[0] == "KWV0W51"


def test_plate_filter_rejects_words_numbers_and_wrong_lengths() -> None:
    rules = PlateRules()
    assert rules.apply(chars("EXIT")) is None  # no digit
    assert rules.apply(chars("0123456")) is None  # phone number / timestamp
    assert rules.apply(chars("AB1")) is None  # too short
    assert rules.apply(chars("AB12345678")) is None  # too long
    assert rules.apply(chars("AB123CD"))[0] == "AB123CD"


def test_unsure_edge_character_is_trimmed() -> None:
    # The EU strip read as a weak extra letter in front of the plate.
    read = chars("GRK115AN", {0: 0.3})
    read[0].present_prob = 0.7
    text, conf = PlateRules().apply(read)
    assert text == "RK115AN"
    assert conf > 0.9
