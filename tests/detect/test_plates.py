"""Plate-text rules: normalisation, region layouts, look-alike correction, auto (table-driven)."""

from __future__ import annotations

import pytest

from lpr_agent.detect.backends.base import CharRead
from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.plates import PlateRules, apply_format, correct_context, normalise
from lpr_agent.detect.reader import rules_from_config
from lpr_agent.detect.regions import Region, builtin_regions, resolve_region


def chars(text: str, probs: dict[int, float] | None = None,
          alts: dict[int, float] | None = None) -> list[CharRead]:
    """A confident read of ``text``; ``alts`` gives the other class a probability."""
    out = []
    for i, ch in enumerate(text):
        p = (probs or {}).get(i, 0.99)
        alt = (alts or {}).get(i, 0.0)
        out.append(CharRead(char=ch, prob=p,
                            letter=ch if ch.isalpha() else {"0": "O", "1": "I"}.get(ch, "O"),
                            letter_prob=p if ch.isalpha() else alt,
                            digit=ch if ch.isdigit() else {"O": "0", "I": "1"}.get(ch, "0"),
                            digit_prob=p if ch.isdigit() else alt, present_prob=0.99))
    return out


def rules(region: str) -> PlateRules:
    return rules_from_config(DetectorConfig(region=region))


def read(region: str, text: str, **kw: dict[int, float]) -> str | None:
    out = rules(region).apply(chars(text, **kw))
    return None if out is None else out[0]


def test_normalise_drops_everything_but_a_z_0_9() -> None:
    assert normalise("ab-12 3·cd") == "AB123CD"


def test_every_builtin_region_is_a_module_with_data() -> None:
    regions = builtin_regions()
    assert {"eu", "us", "br"} <= set(regions)
    for name, region in regions.items():
        assert region.name == name
        assert region.layouts and region.description


# (region, read, expected plate or None)
CASES = [
    # --- US: real US layouts stay exactly as read, never forced into EU/BR ones
    ("us", "6MMD595", "6MMD595"),  # 1ABC234 (CA): D is a letter here
    ("us", "R107555", "R107555"),  # fits no listed layout: kept as read
    ("us", "UJ3V0J", "UJ3V0J"),  # vanity: no context rule turning 0 into O
    ("us", "7ABC123", "7ABC123"),  # 1ABC234
    ("us", "ABC1234", "ABC1234"),  # ABC1234
    ("us", "123ABC", "123ABC"),  # 123ABC
    ("us", "482917", "482917"),  # all-digit
    ("us", "5048213", "5048213"),  # all-digit, 7 long
    ("us", "GOBLUE", "GOBLUE"),  # all-letter vanity
    ("us", "ABC12O4", "ABC1204"),  # one O in a digit slot of ABC1234: the layout justifies it
    ("us", "ABCI234", "ABC1234"),
    ("us", "AB", None),  # too short
    ("us", "ABCD12345", None),  # too long for a US plate
    # --- auto: a read fitting some region's layout is never rewritten
    ("auto", "6MMD595", "6MMD595"),
    ("auto", "R107555", "R107555"),  # confident 1: not forced into a Polish RI07555
    ("auto", "UJ3V0J", "UJ3V0J"),
    ("auto", "ABC1D23", "ABC1D23"),  # Mercosur
    ("auto", "KWV0W51", "KWV0W51"),
    ("auto", "RK865AC", "RK865AC"),
    ("auto", "482917", "482917"),  # all-digit plates exist (US)
    ("auto", "GWAGEN", "GWAGEN"),  # vanity plates exist
    ("auto", "BA3020Z", "BA302OZ"),  # O/0: one glyph; the layout decides
    ("auto", "KIA", None),  # 3 letters: a badge, not a plate, in every region
    # --- EU: layouts with up to 2 look-alike swaps, context rule
    ("eu", "RK3O5AB", "RK305AB"),
    ("eu", "1B80338", "1B80338"),  # Czech: B between digits is real
    ("eu", "KMBORAK", "KMBORAK"),  # a vanity plate keeps its letters
    ("eu", "GWAGEN", "GWAGEN"),
    ("eu", "0123456", None),  # no all-digit plates in Europe
    # --- BR: two layouts, all look-alikes by slot
    ("br", "ABC1D23", "ABC1D23"),
    ("br", "A8C1D23", "ABC1D23"),  # 8 in a letter slot
    ("br", "ABCID23", "ABC1D23"),  # I in a digit slot
    ("br", "ABC1234", "ABC1234"),  # older grey plates
    ("br", "6MMD595", "GMM0595"),  # in Brazil every plate is LLLNNNN or LLLNLNN
    ("br", "FELICIA", None),  # no all-letter plates: a word
]


@pytest.mark.parametrize(("region", "text", "expected"), CASES)
def test_region_rules(region: str, text: str, expected: str | None) -> None:
    assert read(region, text) == expected


def test_auto_swaps_other_lookalikes_only_where_the_model_doubts() -> None:
    # R107555 -> RI07555 (Polish layout) only if the model itself gave I a chance.
    assert read("auto", "R107555") == "R107555"
    assert read("auto", "R107555", alts={1: 0.3}) == "RI07555"


def test_eu_layout_settles_a_doubted_o() -> None:
    # BA 302 OZ (SK) read with a zero the model half-believes is an O.
    assert read("eu", "BA3020Z", alts={5: 0.3}) == "BA302OZ"


def test_format_swap_limit() -> None:
    assert apply_format(chars("8B0I"), "LLNN") == ("BB01", 2)
    region = Region(name="t", layouts=("LLLNNNN",), max_swaps=1)
    # Needs 2 swaps: left as read (not exhaustive) ...
    assert PlateRules(region=region).apply(chars("A8C12S4"))[0] == "A8C12S4"
    # ... or dropped when the layouts are exhaustive.
    strict = region.model_copy(update={"exhaustive": True})
    assert PlateRules(region=strict).apply(chars("A8C12S4")) is None


def test_context_rule_only_for_o_and_i() -> None:
    assert correct_context(chars("RK3O5AB")) == "RK305AB"
    assert correct_context(chars("BA2681M")) == "BA2681M"  # mixed neighbours: undecided
    assert correct_context(chars("AB1CD")) == "ABICD"
    assert correct_context(chars("1B80338")) == "1B80338"  # Czech: B between digits is real
    assert correct_context(chars("RK340A0")) == "RK340AO"  # a 0 ending a letter run


def test_mercosur_plate_is_not_context_corrected() -> None:
    assert PlateRules().apply(chars("KWV0W51"))[0] == "KWV0W51"
    assert read("eu", "KWV0W51") == "KWV0W51"


def test_old_letter_and_digit_filter_is_still_available() -> None:
    strict = PlateRules(require_letter_and_digit=True)
    assert strict.apply(chars("EXIT")) is None  # no digit
    assert strict.apply(chars("0123456")) is None  # phone number / timestamp
    assert strict.apply(chars("AB123CD"))[0] == "AB123CD"


def test_lengths() -> None:
    assert PlateRules().apply(chars("AB1")) is None  # too short everywhere
    assert PlateRules().apply(chars("AB12345678")) is None  # too long everywhere
    assert PlateRules(min_chars=3).apply(chars("AB1"))[0] == "AB1"  # operator's limits win


def test_unsure_edge_character_is_trimmed() -> None:
    # The EU strip read as a weak extra letter in front of the plate.
    read_ = chars("GRK115AN", {0: 0.3})
    read_[0].present_prob = 0.7
    text, conf = PlateRules().apply(read_)
    assert text == "RK115AN"
    assert conf > 0.9


def test_layouts_decide_an_edge_character_the_trim_kept() -> None:
    # The country strip read as a fairly sure extra R: one character less fits SK's layout.
    read_ = chars("RRK776AI", {0: 0.8})
    assert rules("eu").apply(read_)[0] == "RK776AI"
    assert PlateRules().apply(read_)[0] == "RK776AI"


def test_custom_region_from_config() -> None:
    config = DetectorConfig(region="ch", regions={"ch": {"layouts": ["LLNNNNNN", "LLNNNNN"],
                                                         "max_swaps": 1, "max_chars": 8}})
    rules_ = rules_from_config(config)
    assert rules_.region is not None and rules_.region.name == "ch"
    assert rules_.apply(chars("ZHI23456"))[0] == "ZH123456"
    assert resolve_region("ch", config.regions).layouts == ("LLNNNNNN", "LLNNNNN")
    with pytest.raises(ValueError, match="unknown plate region"):
        DetectorConfig(region="xx")
