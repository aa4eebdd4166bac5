"""Europe: the common one-line layouts; letters and digits come in runs."""

from __future__ import annotations

from lpr_agent.detect.regions import Region

REGION = Region(
    name="eu",
    description="European one-line plates (SK/IT/HR/FR, PL, CZ, UK, 3+4)",
    # SK/IT/HR/FR AB 123 CD, PL AB 12345 and 1A 23456, CZ 1AB 2345, 3+4 ABC 1234,
    # UK AB12 CDE. Many national formats are missing, so the list is not
    # exhaustive: a read fitting none is kept as read.
    layouts=("LLNNNLL", "LLNNNNN", "NLNNNNN", "NLLNNNN", "LLLNNNN", "LLNNLLL"),
    max_swaps=2,
    # Every European scheme groups letters and digits in runs, which justifies
    # reading an O among digits as 0 even outside the listed layouts.
    context_correction=True,
    # Personalised plates exist (UK, SK, DE…): GWAGEN, KMBORAK; all-digit ones do not.
    all_letter=True,
    # Characters fill most of the plate's height.
    plate_margin=0.3,
    all_digit=False,
)
