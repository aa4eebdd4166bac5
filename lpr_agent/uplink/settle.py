"""What to do with one settled message: a pure function of its outcome.

``settle(outcome, channel, policy, tries)`` turns a classified server answer
(``outcome.py``) into one spool operation and a set of effects on the link
state. No I/O and no clock: the drainer applies the result. Unit-tested by a
table of every ``Verdict`` × every channel × order policy
(``tests/uplink/test_settle.py``).

The spool operations:

* ``ACK`` — delivered: the item leaves the spool.
* ``DEAD_LETTER`` — rejected (or out of attempts): kept aside with the reason.
* ``RELEASE`` — back to the spool, ready at once, no attempt counted: it is
  resent first (the spool leases in creation order) once the uplink resumes.
* ``NACK`` — back to the spool with its own backoff: younger items pass it.
  Only when order is given up for it (``keep_order = false``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lpr_agent.uplink.outcome import Outcome, Verdict


class Op(enum.Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    RELEASE = "release"
    NACK = "nack"


class Effect(enum.Flag):
    NONE = 0
    REST_OK = enum.auto()  # the REST server answered
    REST_FAILED = enum.auto()  # a REST request failed at the link level: back off REST
    SIO_OK = enum.auto()  # a Socket.IO message was acked: the link is proven
    AUTH_FAILED = enum.auto()  # credentials refused on this channel: back off long
    HOLD = enum.auto()  # server trouble: pause all sending briefly
    STOP_AND_WAIT = enum.auto()  # one message in flight until the oldest unsettled is delivered
    OWED = enum.auto()  # this item must be delivered before the window reopens
    ORDER_GIVEN_UP = enum.auto()  # this item waits alone; younger ones may pass it (logged)
    POSSIBLE_DUPLICATE = enum.auto()  # may be stored already; a resend may store it twice
    SERVER_DUPLICATE = enum.auto()  # the server said "duplicate": it deduplicated a resend
    DELIVERED = enum.auto()  # counts as a delivery (latency, trouble over)


@dataclass(frozen=True, slots=True)
class OrderPolicy:
    """``[uplink] keep_order``, ``in_order_retries`` and the spool's ``max_attempts``."""

    keep_order: bool = True
    in_order_retries: int = 3  # only when keep_order is False
    max_attempts: int = 0  # 0 = never give up


@dataclass(frozen=True, slots=True)
class Actions:
    op: Op
    reason: str = ""
    effects: Effect = Effect.NONE

    def __contains__(self, effect: Effect) -> bool:
        return effect in self.effects


def settle(outcome: Outcome, channel: str, policy: OrderPolicy, tries: int = 1) -> Actions:
    """The actions for one item. ``tries``: how many times in a row this item
    got a temporary server error, this one included (attempts it already
    carries in the spool count too)."""
    verdict = outcome.verdict
    reason = outcome.reason
    maybe = Effect.POSSIBLE_DUPLICATE if outcome.maybe_stored else Effect.NONE
    answered = Effect.REST_OK if channel == "rest" else Effect.NONE
    if verdict is Verdict.DELIVERED:
        link = Effect.REST_OK if channel == "rest" else Effect.SIO_OK
        dup = Effect.SERVER_DUPLICATE if outcome.duplicate else Effect.NONE
        return Actions(Op.ACK, "", link | dup | Effect.DELIVERED)
    if verdict is Verdict.REJECTED:
        # The server answered: the link works, the item is settled for good.
        return Actions(Op.DEAD_LETTER, reason or "rejected", answered)
    if verdict is Verdict.AUTH:
        # Not the item's fault: resend it in order once credentials work.
        return Actions(Op.RELEASE, reason, Effect.AUTH_FAILED | Effect.STOP_AND_WAIT)
    if verdict is Verdict.LINK_DOWN:
        failed = Effect.REST_FAILED if channel == "rest" else Effect.NONE
        return Actions(Op.RELEASE, reason, failed | maybe | Effect.STOP_AND_WAIT)
    # RETRY: the server answered but could not take it now (5xx).
    reason = reason or "retry"
    trouble = maybe | Effect.STOP_AND_WAIT
    if policy.max_attempts and tries >= policy.max_attempts:
        return Actions(Op.DEAD_LETTER, f"gave up after {tries} attempts: {reason}",
                       trouble | Effect.HOLD)
    if policy.keep_order or tries <= policy.in_order_retries:
        return Actions(Op.RELEASE, reason, trouble | Effect.HOLD | Effect.OWED)
    return Actions(Op.NACK, reason, trouble | Effect.ORDER_GIVEN_UP)
