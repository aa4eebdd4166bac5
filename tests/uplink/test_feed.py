"""Feed: the lease-ahead buffer (sizes, hand-back on release), and its bound
on slow links."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lpr_agent.protocol import Kind
from lpr_agent.uplink.feed import Feed, lease_ahead
from tests.uplink.conftest import fast_config


class FakeOps:
    def __init__(self) -> None:
        self.leases: list[int] = []
        self.released: list[list[int]] = []

    async def lease(self, limit: int, kinds: Any, lease_seconds: float) -> list[Any]:
        self.leases.append(limit)
        return []

    def release(self, ids: list[int]) -> None:
        self.released.append(list(ids))


def _feed(ops: FakeOps) -> Feed:
    return Feed(ops, 30.0, 64, 0.5, lambda: None, lambda _: None,  # type: ignore[arg-type]
                lambda *_: None)


def _top_up(feed: Feed, ahead: int) -> None:
    async def go() -> None:
        feed.top_up(ahead, (Kind.DETECTION,))
        assert feed.task is not None
        await feed.task

    asyncio.run(go())


def test_a_lease_tops_the_buffer_up_to_ahead():
    ops = FakeOps()
    _top_up(_feed(ops), 128)
    _top_up(_feed(ops), 4)
    assert ops.leases == [128, 4]


CFG = fast_config("http://127.0.0.1:9", batch=64, rest_concurrency=8)  # lease_seconds 14


@pytest.mark.parametrize(("channel", "window", "size", "rtt", "rate", "ahead"), [
    ("socketio", 64, 1000, None, 1e8, 128),  # two windows
    # Before the first ack: the link's rate floor (64 kbit/s) x half a lease.
    ("socketio", 64, 1000, None, None, 56),
    ("socketio", 64, 50_000, None, None, 4),
    ("socketio", 1, 1000, None, None, 4),  # stop-and-wait / legacy
    ("rest", 8, 1000, None, None, 256),  # four batches: fewer hops to the worker thread
    ("rest", 8, 1000, 0.002, None, 256),  # a fast server does not bound it
    ("rest", 8, 1000, 0.5, None, 112),  # 8 in flight / 0.5 s x half a lease (7 s)
    ("socketio", 64, 50_000, None, 125_000.0, 17),  # 1 Mbit/s, 50 KB: 7 s of sending
    ("socketio", 64, 60_000, None, 1e8, 128),  # fast link, images: two windows (7.7 MB)
    ("socketio", 64, 200_000, None, 1e8, 41),  # bigger images: ~8 MB
    ("socketio", 64, 50_000, None, 1_000.0, 4),  # never below a few items
])
def test_lease_ahead(channel, window, size, rtt, rate, ahead):
    assert CFG.lease_seconds == 14
    assert lease_ahead(channel, window, CFG, size, rtt, rate) == ahead
