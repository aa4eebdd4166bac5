"""United States: a few common serial layouts, and anything else may be a vanity plate.

Every state has its own schemes and personalised plates may be any 2-7
letters and digits, so the layouts are not exhaustive: a read that fits none
is kept as read, and look-alikes are only swapped where a layout needs it
and the glyphs are the same on US plates (O/0 and I/1; many states print
them identically). No context rule: vanity plates mix letters and digits
freely (``UJ3V0J``), and a confident read is never forced into another
region's layout (``6MMD595``, ``R107555``).
"""

from __future__ import annotations

from lpr_agent.detect.regions import Region

REGION = Region(
    name="us",
    description="United States: 1ABC234, ABC1234, ABC123, 123ABC, all-digit, vanity",
    layouts=(
        "NLLLNNN",  # 1ABC234 (CA and others)
        "LLLNNNN",  # ABC1234 (NY, PA, TX, OH, GA, MI, …)
        "LLLNNN",  # ABC123 (many states)
        "NNNLLL",  # 123ABC
        "NNNNNN",  # all-digit (older / small-state schemes)
        "NNNNNNN",
        "NNNNN",
    ),
    max_swaps=1,
    to_digit={"O": "0", "Q": "0", "I": "1"},
    to_letter={"0": "O", "1": "I"},
    context_correction=False,
    # Characters are under half the plate's height, a state caption above them.
    plate_margin=1.0,
    all_digit=True,
    all_letter=True,
    # Two- and three-character vanity plates exist but are rare; reads that
    # short are mostly badges (KIA, GTD, TDI) and fragments of other text.
    min_chars=4,
    max_chars=7,
)
