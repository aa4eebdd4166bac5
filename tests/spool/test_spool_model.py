"""Model-based test: random put / lease / ack / nack / release / dead-letter / reopen
against an in-memory model; order, contents and ``seq`` must always agree."""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lpr_agent.spool import Kind, Spool

from .conftest import PAYLOADS, SCALE, Clock, config

LANE = {Kind.HEALTH: 0, Kind.REGISTRATION: 1, Kind.DETECTION: 2}
BASE, CAP = 1.0, 20.0
KINDS = st.sampled_from(list(Kind))


@dataclass
class M:
    kind: Kind
    payload: dict[str, Any]
    attempts: int = 0
    wait_until: float | None = None  # backing off until
    lease_until: float | None = None  # leased until (this instance)
    last_error: str | None = None


@dataclass
class Model:
    items: dict[int, M] = field(default_factory=dict)
    dead: dict[int, M] = field(default_factory=dict)


class SpoolMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.clock = Clock()
        self.cfg = config(self.dir / "spool.db", backoff_base_s=BASE, backoff_cap_s=CAP,
                          max_items=10**9, max_bytes=10**12)
        # Seeded jitter: a failing example must replay the same way.
        self.rng = random.Random(0)
        self.spool = Spool.open(self.cfg, clock=self.clock, rng=self.rng)
        self.model = Model()
        self.counter = 0
        # seq: per kind of reading, gap-free in put order, across restarts.
        self.next_seq = {Kind.DETECTION: 1, Kind.HEALTH: 1}

    def teardown(self) -> None:
        if hasattr(self, "spool"):
            self.spool.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------

    def _payload(self, kind: Kind) -> dict[str, Any]:
        self.counter += 1
        return PAYLOADS[kind](self.counter)

    def _numbered(self, kind: Kind, payload: dict[str, Any]) -> None:
        if kind is Kind.REGISTRATION:
            assert "seq" not in payload
            return
        assert payload["seq"] == self.next_seq[kind]
        self.next_seq[kind] += 1

    def _leased(self) -> list[int]:
        now = self.clock.now
        return sorted(i for i, m in self.model.items.items()
                      if m.lease_until is not None and m.lease_until > now)

    def _expected_lease(self, limit: int, kinds: set[Kind] | None) -> list[int]:
        if limit <= 0:
            return []  # a no-op: not even due items are made ready
        now = self.clock.now
        for m in self.model.items.values():
            if m.wait_until is not None and m.wait_until <= now:
                m.wait_until = None
            if m.lease_until is not None and m.lease_until <= now:
                m.lease_until = None
        ready = [i for i, m in self.model.items.items()
                 if m.wait_until is None and m.lease_until is None
                 and (kinds is None or m.kind in kinds)]
        ready.sort(key=lambda i: (LANE[self.model.items[i].kind],
                                  -i if self.model.items[i].kind is Kind.HEALTH else i))
        return ready[:limit]

    # --- rules -----------------------------------------------------------------

    @rule(kind=KINDS)
    def put(self, kind: Kind) -> None:
        payload = self._payload(kind)
        item_id = self.spool.put(kind, payload)
        assert item_id not in self.model.items and item_id not in self.model.dead
        assert all(item_id > i for i in self.model.items)  # ids only grow
        self._numbered(kind, payload)
        self.model.items[item_id] = M(kind, payload)

    @rule(kinds=st.lists(KINDS, min_size=0, max_size=6))
    def put_many(self, kinds: list[Kind]) -> None:
        payloads = [(k, self._payload(k)) for k in kinds]
        new = self.spool.put_many(payloads)
        assert len(new) == len(kinds) and new == sorted(new)
        for item_id, (k, p) in zip(new, payloads, strict=True):
            self._numbered(k, p)
            self.model.items[item_id] = M(k, p)

    @rule(limit=st.integers(0, 8),
          kinds=st.none() | st.sets(KINDS, min_size=1),
          lease_seconds=st.sampled_from([5.0, 50.0]))
    def lease(self, limit: int, kinds: set[Kind] | None, lease_seconds: float) -> None:
        expected = self._expected_lease(limit, kinds)
        got = self.spool.lease(limit, kinds=kinds, lease_seconds=lease_seconds)
        assert [i.id for i in got] == expected
        for item in got:
            m = self.model.items[item.id]
            assert item.payload == m.payload and item.kind is m.kind
            assert item.event_id == m.payload["event_id"]
            assert item.attempts == m.attempts and item.last_error == m.last_error
            m.lease_until = self.clock.now + lease_seconds

    @precondition(lambda self: self._leased())
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self._leased()), min_size=1, unique=True))
        self.spool.ack(chosen)
        for i in chosen:
            del self.model.items[i]

    @precondition(lambda self: self._leased())
    @rule(data=st.data(), error=st.sampled_from(["HTTP 503", "timeout", "ü-error"]))
    def nack(self, data: st.DataObject, error: str) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self._leased()), min_size=1, unique=True))
        now = self.clock.now
        self.spool.nack(chosen, error)
        for i in chosen:
            m = self.model.items[i]
            m.attempts += 1
            m.last_error = error
            m.lease_until = None
            got = self.spool.get(i)
            assert got is not None and got.attempts == m.attempts
            ceiling = min(CAP, BASE * 2 ** (m.attempts - 1))
            assert got.next_attempt_at is not None
            assert now <= got.next_attempt_at <= now + ceiling
            m.wait_until = got.next_attempt_at

    @precondition(lambda self: self._leased())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self._leased()), min_size=1, unique=True))
        self.spool.release(chosen)
        for i in chosen:
            self.model.items[i].lease_until = None

    @precondition(lambda self: self._leased())
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self._leased()), min_size=1, unique=True))
        self.spool.dead_letter(chosen, "HTTP 400")
        for i in chosen:
            m = self.model.items.pop(i)
            m.lease_until = None
            self.model.dead[i] = m

    @precondition(lambda self: self.model.dead)
    @rule()
    def requeue_dead(self) -> None:
        assert self.spool.requeue_dead() == len(self.model.dead)
        for i, m in self.model.dead.items():
            m.attempts, m.wait_until, m.last_error = 0, None, "requeued after: HTTP 400"
            self.model.items[i] = m
        self.model.dead.clear()

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 30.0, 1000.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def maintain(self) -> None:
        self.spool.maintain()

    @rule()
    def reopen(self) -> None:
        # A restart: this instance's leases end with it, everything else stays.
        self.spool.close()
        self.spool = Spool.open(self.cfg, clock=self.clock, rng=self.rng)
        for m in self.model.items.values():
            m.lease_until = None

    # --- invariants ------------------------------------------------------------

    @invariant()
    def contents_agree(self) -> None:
        if not hasattr(self, "spool"):
            return
        listed = self.spool.list_items(10_000)
        assert [i.id for i in listed] == sorted(self.model.items)
        for item in listed:
            m = self.model.items[item.id]
            assert item.payload == m.payload and item.attempts == m.attempts
        assert sorted(d.id for d in self.spool.list_dead(10_000)) == sorted(self.model.dead)
        st_ = self.spool.stats()
        for kind in Kind:
            assert st_.depth[kind.value] == sum(
                1 for m in self.model.items.values() if m.kind is kind)
        assert st_.in_flight == len(self._leased())
        assert st_.backing_off == sum(
            1 for m in self.model.items.values() if m.wait_until is not None)
        assert st_.dead_letters == len(self.model.dead)
        assert st_.bytes == sum(i.size for i in listed)
        assert st_.next_seq == {k.value: n for k, n in self.next_seq.items()}
        assert self.spool.check_counts() == {}


TestSpoolModel = SpoolMachine.TestCase
TestSpoolModel.settings = settings(
    max_examples=60 * SCALE,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
