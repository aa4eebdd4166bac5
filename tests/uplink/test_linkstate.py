"""``LinkState``: the link state machine, with a fake clock, by tables."""

from __future__ import annotations

import random

import pytest

from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.linkstate import LinkState


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**overrides) -> tuple[LinkState, Clock]:
    clock = Clock()
    cfg = UplinkConfig(**{"retry_initial_s": 0.5, "retry_max_s": 15.0, "sio_probe_max_s": 1.5,
                          "rest_concurrency": 4, **overrides})
    return LinkState(cfg, clock, random.Random(7)), clock


# --- channel choice ------------------------------------------------------------------

# (setup, sio_alive, sio_proven, expected)
CHOICES = [
    ("fresh", False, False, "none"),  # Socket.IO first: wait for one connect attempt
    ("fresh", True, True, "socketio"),
    ("fresh", True, False, "rest"),  # on probation: REST carries, the link gets probes
    ("attempted", False, False, "rest"),
    ("attempted", True, False, "rest"),
    ("rest_down", True, False, "socketio"),  # probation link beats a dead REST
    ("rest_down", False, False, "none"),  # REST backing off, no Socket.IO
    ("hold", True, True, "none"),  # server trouble: nothing goes out
    ("hold", False, False, "none"),
]


def _setup(state: LinkState, name: str) -> None:
    if name == "attempted":
        state.sio_connect_failed()
    elif name == "rest_down":
        state.sio_connect_failed()
        assert state.rest_failed() is not None
    elif name == "hold":
        state.sio_connect_failed()
        state.hold()


@pytest.mark.parametrize(("setup", "alive", "proven", "expected"), CHOICES)
def test_choose(setup, alive, proven, expected):
    state, _ = make()
    _setup(state, setup)
    assert state.choose(alive, proven) == expected


def test_channel_comes_back_by_time_alone():
    state, clock = make()
    state.sio_connect_failed()
    delay = state.rest_failed()
    assert delay is not None and 0 <= delay <= 0.5
    assert state.choose(False, False) == "none"
    clock.t += delay + 1e-6
    assert state.choose(False, False) == "rest"
    pause = state.hold()
    assert state.choose(False, False) == "none"
    assert state.resume_at() == clock.t + pause
    clock.t += pause
    assert state.choose(False, False) == "rest"


def test_rest_failure_counted_once_per_round():
    state, clock = make()
    first = state.rest_failed()
    assert first is not None and state.rest_failures == 1
    assert state.rest_failed() is None  # the other requests of the same round
    clock.t += first
    assert state.rest_failed() is not None and state.rest_failures == 2


# --- window and one channel at a time ---------------------------------------------------

# (recovering, rest_failures, channel, busy socketio, busy rest, window, may_send)
WINDOWS = [
    (False, 0, "socketio", 0, 0, 64, True),
    (False, 0, "socketio", 63, 0, 64, True),
    (False, 0, "socketio", 0, 1, 64, False),  # REST still has one in flight
    (False, 0, "rest", 0, 0, 4, True),
    (False, 0, "rest", 3, 0, 4, False),  # Socket.IO still has some in flight
    (False, 1, "rest", 0, 0, 1, True),  # half-open REST: one request
    (True, 0, "socketio", 0, 0, 1, True),  # stop-and-wait: one in total
    (True, 0, "socketio", 1, 0, 1, False),
    (True, 0, "rest", 0, 1, 1, False),
    (True, 0, "rest", 0, 0, 1, True),
]


@pytest.mark.parametrize(("recovering", "rest_failures", "channel", "b_sio", "b_rest", "window",
                          "may"), WINDOWS)
def test_window_and_may_send(recovering, rest_failures, channel, b_sio, b_rest, window, may):
    state, _ = make()
    state.recovering = recovering
    state.rest_failures = rest_failures
    assert state.window(channel, 64) == window
    assert state.may_send(channel, {"socketio": b_sio, "rest": b_rest}) is may


# --- stop-and-wait -----------------------------------------------------------------------


def test_stop_and_wait_reopens_only_after_a_solo_delivery_with_nothing_owed():
    state, _ = make()
    state.failed(owe=10)  # 10 got a 5xx
    state.failed(owe=15)  # 15, already in flight, too
    assert state.recovering and state.owed == {10, 15}
    # 12 was in flight before the failure and is delivered: not a reopening
    assert state.settled(12, delivered=True, solo=False) is False
    # 10 resent alone and delivered: 15 is still owed
    assert state.settled(10, delivered=True, solo=True) is False
    assert state.recovering and state.owed == {15}
    # 15 resent alone and delivered: nothing owed, window reopens
    assert state.settled(15, delivered=True, solo=True) is True
    assert not state.recovering and state.window("socketio", 64) == 64


def test_stop_and_wait_after_link_failure_reopens_at_first_solo_delivery():
    state, _ = make()
    state.failed()  # a link failure owes nothing in particular
    assert state.window("rest", 64) == 1
    assert state.settled(3, delivered=True, solo=True) is True
    assert not state.recovering


def test_dead_letter_settles_an_owed_item_without_reopening():
    state, _ = make()
    state.failed(owe=10)
    assert state.settled(10, delivered=False, solo=True) is False
    assert state.recovering and not state.owed
    assert state.settled(11, delivered=True, solo=True) is True


def test_gone_forgets_owed_items_older_than_the_spools_head():
    state, _ = make()
    state.failed(owe=10)
    state.failed(owe=20)
    state.gone(15)  # the spool's oldest detection is 15: 10 is gone (dead letter)
    assert state.owed == {20}


def test_hold_grows_with_repeats_bounded_by_half_the_trouble_and_resets_on_delivery():
    state, clock = make(retry_max_s=4.0)
    pauses = []
    for _ in range(30):
        pauses.append(state.hold())
        clock.t = state.hold_until  # the resend fails again as soon as it goes out
    assert 0.125 <= pauses[0] <= 0.25  # a first burst is over quickly
    assert 0.125 <= pauses[1] <= 0.25  # never more than half the trouble so far
    elapsed = 0.0
    for p in pauses:
        assert p <= max(0.25, 0.5 * elapsed) + 1e-9
        elapsed += p
    assert all(2.0 <= p <= 4.0 for p in pauses[-3:])  # up to retry_max_s
    state.settled(1, delivered=True, solo=False)
    assert 0.125 <= state.hold() <= 0.25


# --- Socket.IO reconnect schedule ----------------------------------------------------------


def test_sio_reconnect_is_quick_while_rest_works_and_slow_otherwise():
    state, clock = make()
    for _ in range(10):
        state.sio_connect_failed()
    clock.t += 600  # a long outage: the outage cap no longer limits
    slow = max(state.sio_delay() for _ in range(200))
    assert 7.5 < slow <= 15.0
    state.rest_ok()
    for _ in range(10):
        state.sio_connect_failed()
    quick = max(state.sio_delay() for _ in range(200))
    assert quick <= 1.5


def test_server_down_one_timer_socketio_follows_rest():
    # Both channels fail: the server is down. Socket.IO does not keep a timer
    # of its own but tries just after REST's next try, so that a fleet's
    # first attempts after the server's return are not the sooner of two
    # timers (densest right at the return).
    state, clock = make()
    for _ in range(10):
        state.sio_connect_failed()
    clock.t += 600
    rest_delay = state.rest_failed()
    assert rest_delay is not None
    for _ in range(200):
        delay = state.sio_delay()
        assert rest_delay <= delay <= rest_delay + 0.25
    # REST idle (its retry time passed, nothing tried): Socket.IO's own
    # backoff again, never a hot loop.
    clock.t = state.rest_retry_at + 1
    delays = [state.sio_delay() for _ in range(200)]
    assert max(delays) > 1.0 and min(delays) >= 0


def test_refused_registration_backs_off_the_long_way_even_when_rest_works():
    state, clock = make()
    state.rest_ok()
    for _ in range(10):
        state.sio_connect_failed(registration_refused=True)
    clock.t += 600
    assert max(state.sio_delay() for _ in range(200)) > 1.5


def test_ack_timeout_puts_the_next_link_on_probation_until_an_ack():
    state, _ = make()
    state.sio_connected()
    state.sio_lost(timed_out=True)
    assert state.sio_probation and state.sio_failures == 1
    state.sio_connected()
    state.sio_delivered()
    assert not state.sio_probation and state.sio_failures == 0


def test_auth_refusal_backs_off_at_least_five_seconds():
    state, clock = make()
    delay = state.auth_failed("socketio")
    assert delay is not None and delay >= 5.0
    assert state.sio_auth_blocked() == pytest.approx(delay)
    rest_delay = state.auth_failed("rest")
    assert rest_delay is not None and state.rest_retry_at == clock.t + rest_delay
    assert state.auth_failed("rest") is None  # same round


# --- REST registration (protocol quirk 8) ----------------------------------------------------


def test_no_rest_registration_when_socketio_returns_right_after_a_long_outage():
    """Both down for 120 s; REST works again at once, Socket.IO a second
    later: registering over REST would break Socket.IO on a deployed server."""
    state, clock = make(rest_register_after_s=60.0)
    state.sio_connect_failed()
    state.rest_failed()
    clock.t += 120
    state.rest_ok()  # REST back after the outage
    assert not state.should_register_over_rest()
    clock.t += 1
    state.sio_connected()  # Socket.IO back a second later
    clock.t += 600
    state.rest_ok()
    assert not state.should_register_over_rest()


def test_rest_registration_counts_from_when_rest_works_and_socketio_does_not():
    state, clock = make(rest_register_after_s=60.0)
    state.sio_connect_failed()
    clock.t += 300  # nothing works for 5 minutes
    state.rest_ok()
    clock.t += 59.9
    state.rest_ok()
    assert not state.should_register_over_rest()
    clock.t += 0.1
    assert state.should_register_over_rest()
    state.rest_registered = True
    assert not state.should_register_over_rest()


def test_rest_failure_restarts_the_registration_count():
    state, clock = make(rest_register_after_s=60.0)
    state.sio_connect_failed()
    state.rest_ok()
    clock.t += 50
    state.rest_failed()
    clock.t += 20
    state.rest_ok()
    assert not state.should_register_over_rest()
    clock.t += 60
    assert state.should_register_over_rest()


def test_rest_registration_can_be_switched_off():
    state, clock = make(rest_register=False, rest_register_after_s=0.0)
    state.sio_connect_failed()
    state.rest_ok()
    clock.t += 1000
    assert not state.should_register_over_rest()
