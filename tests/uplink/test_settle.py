"""``settle``: every Verdict × every channel × order policy, as one table."""

from __future__ import annotations

import pytest

from lpr_agent.uplink.outcome import Outcome, Verdict
from lpr_agent.uplink.settle import Effect, Op, OrderPolicy, settle

E = Effect
KEEP = OrderPolicy(keep_order=True, in_order_retries=3, max_attempts=0)
ESCAPE = OrderPolicy(keep_order=False, in_order_retries=3, max_attempts=0)
CAPPED = OrderPolicy(keep_order=True, in_order_retries=3, max_attempts=5)

DELIVERED = Outcome(Verdict.DELIVERED, "", {"success": True})
DUPLICATE = Outcome(Verdict.DELIVERED, "", {"success": True, "duplicate": True})
REJECTED = Outcome(Verdict.REJECTED, "Missing required field: camera_id")
REJECTED_MAYBE = Outcome(Verdict.REJECTED, "server error after a possible store", None,
                         maybe_stored=True)
RETRY = Outcome(Verdict.RETRY, "HTTP 500: injected fault", None, maybe_stored=True)
LINK_DOWN = Outcome(Verdict.LINK_DOWN, "REST connect failed")
LINK_DOWN_MAYBE = Outcome(Verdict.LINK_DOWN, "timed out", maybe_stored=True)
AUTH = Outcome(Verdict.AUTH, "HTTP 401: unauthorized")

# (outcome, channel, policy, tries) -> (op, effects exactly)
TABLE = [
    # delivered: ack; the channel that carried it is proven
    (DELIVERED, "socketio", KEEP, 0, Op.ACK, E.SIO_OK | E.DELIVERED),
    (DELIVERED, "rest", KEEP, 0, Op.ACK, E.REST_OK | E.DELIVERED),
    (DUPLICATE, "socketio", KEEP, 0, Op.ACK, E.SIO_OK | E.DELIVERED | E.SERVER_DUPLICATE),
    (DUPLICATE, "rest", ESCAPE, 0, Op.ACK, E.REST_OK | E.DELIVERED | E.SERVER_DUPLICATE),
    # rejected: dead letter, never stop-and-wait (the item is settled for good)
    (REJECTED, "socketio", KEEP, 0, Op.DEAD_LETTER, E.NONE),
    (REJECTED, "rest", KEEP, 0, Op.DEAD_LETTER, E.REST_OK),
    (REJECTED_MAYBE, "socketio", ESCAPE, 0, Op.DEAD_LETTER, E.NONE),
    # temporary server error, keep order: released, owed, hold, stop-and-wait
    (RETRY, "socketio", KEEP, 1, Op.RELEASE,
     E.HOLD | E.STOP_AND_WAIT | E.OWED | E.POSSIBLE_DUPLICATE),
    (RETRY, "rest", KEEP, 1, Op.RELEASE,
     E.HOLD | E.STOP_AND_WAIT | E.OWED | E.POSSIBLE_DUPLICATE),
    (RETRY, "socketio", KEEP, 50, Op.RELEASE,  # keeps order however often it fails
     E.HOLD | E.STOP_AND_WAIT | E.OWED | E.POSSIBLE_DUPLICATE),
    # keep order with max_attempts: dead letter at the limit, not before
    (RETRY, "rest", CAPPED, 4, Op.RELEASE,
     E.HOLD | E.STOP_AND_WAIT | E.OWED | E.POSSIBLE_DUPLICATE),
    (RETRY, "rest", CAPPED, 5, Op.DEAD_LETTER,
     E.HOLD | E.STOP_AND_WAIT | E.POSSIBLE_DUPLICATE),
    # order given up (keep_order = false): in order for in_order_retries, then nack
    (RETRY, "socketio", ESCAPE, 3, Op.RELEASE,
     E.HOLD | E.STOP_AND_WAIT | E.OWED | E.POSSIBLE_DUPLICATE),
    (RETRY, "socketio", ESCAPE, 4, Op.NACK,
     E.STOP_AND_WAIT | E.ORDER_GIVEN_UP | E.POSSIBLE_DUPLICATE),
    (RETRY, "rest", ESCAPE, 4, Op.NACK,
     E.STOP_AND_WAIT | E.ORDER_GIVEN_UP | E.POSSIBLE_DUPLICATE),
    # link failure: released, resent in order; REST backs off, Socket.IO's
    # death is handled by its connector
    (LINK_DOWN, "socketio", KEEP, 0, Op.RELEASE, E.STOP_AND_WAIT),
    (LINK_DOWN, "rest", KEEP, 0, Op.RELEASE, E.STOP_AND_WAIT | E.REST_FAILED),
    (LINK_DOWN_MAYBE, "socketio", ESCAPE, 0, Op.RELEASE,
     E.STOP_AND_WAIT | E.POSSIBLE_DUPLICATE),
    (LINK_DOWN_MAYBE, "rest", KEEP, 0, Op.RELEASE,
     E.STOP_AND_WAIT | E.REST_FAILED | E.POSSIBLE_DUPLICATE),
    # credentials refused: not the item's fault, released, no attempt counted
    (AUTH, "socketio", KEEP, 0, Op.RELEASE, E.AUTH_FAILED | E.STOP_AND_WAIT),
    (AUTH, "rest", CAPPED, 0, Op.RELEASE, E.AUTH_FAILED | E.STOP_AND_WAIT),
]


@pytest.mark.parametrize(("outcome", "channel", "policy", "tries", "op", "effects"), TABLE)
def test_settle_table(outcome, channel, policy, tries, op, effects):
    actions = settle(outcome, channel, policy, tries)
    assert actions.op is op
    assert actions.effects == effects


def test_every_verdict_and_channel_is_in_the_table():
    covered = {(row[0].verdict, row[1]) for row in TABLE}
    assert covered == {(v, c) for v in Verdict for c in ("socketio", "rest")}


def test_reasons_are_the_servers_words():
    assert settle(REJECTED, "rest", KEEP).reason == "Missing required field: camera_id"
    assert settle(RETRY, "rest", CAPPED, 5).reason == "gave up after 5 attempts: HTTP 500: " \
        "injected fault"
    assert settle(Outcome(Verdict.REJECTED), "rest", KEEP).reason == "rejected"
