"""Brazil: two layouts cover every car plate, so look-alikes can be settled by slot."""

from __future__ import annotations

from lpr_agent.detect.regions import Region

REGION = Region(
    name="br",
    description="Brazil: Mercosur ABC1D23 (2018+) and the older grey ABC1234",
    layouts=("LLLNLNN", "LLLNNNN"),
    max_swaps=2,
    # Not exhaustive in practice: a read fitting neither is usually a plate
    # read with one character missing, and the tracker votes it away.
    exhaustive=False,
    all_letter=False,
    # The blue BRASIL band above the characters.
    plate_margin=0.6,
    all_digit=False,
    min_chars=7,
    max_chars=7,
)
