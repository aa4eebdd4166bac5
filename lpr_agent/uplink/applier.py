"""Applies the actions of ``settle`` to the spool, the link state and the stats.

The drainer hands over each batch of finished messages (``Done``); for each,
``settle.settle`` decides, and this module carries it out: acks group-committed,
releases / nacks / dead letters in order off the loop (``SpoolOps``), the
lease-ahead buffer handed back after any failure (``Feed.give_back``), and the
link effects (``LinkState``): REST up or down, Socket.IO proven, credentials
refused, server trouble hold, stop-and-wait.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from lpr_agent.protocol import Kind
from lpr_agent.uplink.feed import Feed
from lpr_agent.uplink.linkstate import LinkState
from lpr_agent.uplink.outcome import Outcome, Verdict
from lpr_agent.uplink.settle import Effect, Op, OrderPolicy, settle
from lpr_agent.uplink.spoolops import SpoolOps
from lpr_agent.uplink.stats import LatencyWindow, RateLimitedLog, UplinkStats

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)


class Done:
    """A message whose outcome is known."""

    __slots__ = ("channel", "item", "outcome", "sent_at", "solo")

    def __init__(self, item: Any, outcome: Outcome, sent_at: float, channel: str,
                 solo: bool) -> None:
        self.item = item
        self.outcome = outcome
        self.sent_at = sent_at
        self.channel = channel
        self.solo = solo  # sent stop-and-wait


class Applier:
    def __init__(self, state: LinkState, policy: OrderPolicy, stats: UplinkStats,
                 latency: LatencyWindow, ops: SpoolOps, feed: Feed,
                 sio_down_rest_back: Callable[[], None],
                 sio_auth_failed: Callable[[str], None],
                 note_error: Callable[[str], None]) -> None:
        self.state = state
        self.policy = policy
        self.stats = stats
        self.latency = latency
        self.ops = ops
        self.feed = feed
        self.sio_down_rest_back = sio_down_rest_back  # kick the Socket.IO connector
        self.sio_auth_failed = sio_auth_failed
        self.note_error = note_error
        self.tries: dict[int, int] = {}  # spool id -> temporary errors in a row

    def apply(self, done: list[Done]) -> None:
        now = time.monotonic()
        acks: list[int] = []
        ops: dict[tuple[Op, str], list[int]] = defaultdict(list)
        effects = Effect.NONE
        for d in done:
            item_id = d.item.id
            tries = self.tries.get(item_id, 0) + (d.outcome.verdict is Verdict.RETRY)
            actions = settle(d.outcome, d.channel, self.policy, d.item.attempts + tries)
            effects |= actions.effects
            if actions.op is Op.ACK:
                acks.append(item_id)
                self.latency.add(now - d.sent_at)
            else:
                ops[(actions.op, actions.reason)].append(item_id)
                log.debug("uplink: %s %s over %s: %s", actions.op.value, d.item.event_id,
                          d.channel, d.outcome.verdict.value)
            self._order(d, actions.op, actions.effects, tries)
            self._count(actions.effects)
        self._link(effects, done)
        self._spool(acks, ops)

    def _order(self, d: Done, op: Op, effects: Effect, tries: int) -> None:
        item_id = d.item.id
        if op is Op.RELEASE and Effect.OWED in effects:
            self.tries[item_id] = tries
        else:
            self.tries.pop(item_id, None)
        if Effect.STOP_AND_WAIT in effects:
            owe = Effect.OWED in effects and d.item.kind == Kind.DETECTION
            self.state.failed(item_id if owe else None)
        if (op is Op.ACK or op is Op.DEAD_LETTER) and self.state.settled(
                item_id, delivered=op is Op.ACK, solo=d.solo):
            log.debug("uplink: the oldest unsettled reading is delivered; window reopened")
        if Effect.ORDER_GIVEN_UP in effects:
            _rlog(logging.WARNING, "order", "uplink: reading %s failed %d times in a row; "
                  "younger readings now pass it (keep_order = false)", d.item.event_id, tries)

    def _count(self, effects: Effect) -> None:
        st = self.stats
        if Effect.POSSIBLE_DUPLICATE in effects:
            st.possible_duplicates += 1
        if Effect.SERVER_DUPLICATE in effects:
            st.server_duplicates += 1

    def _link(self, effects: Effect, done: list[Done]) -> None:
        state = self.state
        if Effect.DELIVERED in effects and self.stats.auth_failed:
            self.stats.auth_failed = False
            state.auth_ok()
        if Effect.REST_OK in effects and state.rest_ok():
            log.info("uplink: REST reachable again")
            _rlog.reset("rest_down")
            self.sio_down_rest_back()
        if Effect.SIO_OK in effects:
            state.sio_delivered()
        failures = [d for d in done if d.outcome.verdict is not Verdict.DELIVERED]
        reason = failures[-1].outcome.reason if failures else ""
        if Effect.REST_FAILED in effects:
            delay = state.rest_failed()
            self.note_error(reason)
            if delay is not None:
                _rlog(logging.WARNING, "rest_down", "uplink: REST failed (%s); retrying in "
                      "%.1f s", reason, delay)
        if Effect.AUTH_FAILED in effects:
            auth = next(d for d in failures if d.outcome.verdict is Verdict.AUTH)
            self._auth_failed(auth.outcome.reason, auth.channel)
        if Effect.HOLD in effects:
            self.note_error(reason)
            pause = state.hold()
            _rlog(logging.WARNING, "hold", "uplink: server trouble (%s); resending in order, "
                  "one at a time, after %.1fs", reason, pause)

    def _auth_failed(self, reason: str, channel: str) -> None:
        if channel != "rest":
            self.sio_auth_failed(reason)
            return
        delay = self.state.auth_failed("rest")
        if delay is None:
            return  # already counted for this round of requests
        self.stats.auth_failed = True
        self.note_error(reason)
        _rlog(logging.ERROR, "auth", "uplink: server refused our credentials (%s); "
              "check [uplink] token; retrying in %.0f s", reason, delay)

    def _spool(self, acks: list[int], ops: dict[tuple[Op, str], list[int]]) -> None:
        st = self.stats
        if acks:
            self.ops.ack(acks)
            st.acked += len(acks)
            st.last_ack_at = time.time()
        releases: list[int] = []
        for (op, reason), ids in ops.items():
            if op is Op.DEAD_LETTER:
                self.ops.dead_letter(ids, reason)
                st.rejected += len(ids)
                _rlog(logging.WARNING, "rejected", "uplink: %d message(s) dead-lettered: %s",
                      len(ids), reason)
            elif op is Op.NACK:
                self.ops.nack(ids, reason)
                st.retried += len(ids)
                self.note_error(reason)
            else:
                releases.extend(ids)
        if releases or any(op is Op.NACK for op, _ in ops):
            st.retried += len(releases)
            # The lease-ahead buffer holds younger items: hand them back too so
            # the next lease returns everything in creation order again.
            self.feed.give_back(releases)
