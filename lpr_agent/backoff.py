"""Backoff delays shared by the spool, the uplink and frame capture.

One place for the arithmetic so that every retry loop in the agent spreads a
fleet the same way. Pure functions: the caller owns the clock and the random
source (pass ``rng`` for reproducible tests).
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 60  # 2**60 s is far beyond any cap; bounds the float


def ceiling(failures: int, initial: float, cap: float) -> float:
    """``min(cap, initial * 2**(failures-1))``: the exponential step itself."""
    exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
    return min(cap, initial * 2.0**exponent)


def full_jitter(failures: int, initial: float, cap: float,
                rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, ceiling).

    The jitter is proportional to the delay (python-socketio's is a fixed
    ±0.5 s), so a fleet that lost the server at the same moment spreads its
    retries over the whole interval instead of arriving in lockstep.
    """
    return (rng or random).uniform(0.0, ceiling(failures, initial, cap))


def equal_jitter(failures: int, initial: float, cap: float,
                 rng: random.Random | None = None) -> float:
    """Half the step for sure, half jittered: waits at least ``ceiling/2``
    (no hammering) while a fleet hit at the same moment still spreads out."""
    step = ceiling(failures, initial, cap)
    return step / 2 + (rng or random).uniform(0.0, step / 2)


def outage_cap(cap: float, down_for: float, initial: float) -> float:
    """Never wait longer than half the outage so far: a short outage (a server
    restart) is noticed within about half its length, a long one still backs
    off to ``cap``. Both scale with the outage, so a fleet stays spread out."""
    return min(cap, max(initial, 0.5 * down_for))
