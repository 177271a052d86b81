"""The registry of live calls, its admission, pacing of API calls, and CallView."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from switch.call.capacity import (
    ENGINE_SLOTS,
    LAG_BEHIND,
    LAG_CAUGHT_UP,
    LAG_SMOOTHING,
    MAX_LEGS,
    QUIET,
    Admission,
    Capacity,
    LoopLoad,
)
from switch.call.commands import Command
from switch.call.pacing import Pacer
from switch.call.registry import CallRegistry, CallView
from switch.call.rtp_watch import RtpWatch
from switch.call.status import CallStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Live:
    call_sid: str
    got: list[Command] = field(default_factory=list)

    def view(self) -> CallView:
        return CallView(
            self.call_sid, None, "+1", "+2", CallStatus.RINGING, "inbound", T0, None, None
        )

    def deliver(self, command: Command) -> None:
        self.got.append(command)


def test_admission_counts_live_legs_and_api_calls_not_placed_yet() -> None:
    registry = CallRegistry(max_calls=4)
    assert registry.admit(legs=2, now=0.0).admitted  # legs of calls no longer registered
    registry.add(Live("CA1"), unplaced=True)  # an API call, queued: its leg is promised
    assert registry.kept == 1  # and one for its <Dial>
    assert registry.admit(legs=0, now=0.0).admitted
    assert registry.admit(legs=1, now=0.0) is Admission.NEWLY_FULL
    registry.placed("CA1")  # now one of the engine's legs: the same count
    assert registry.admit(legs=1, now=0.0).admitted
    assert registry.admit(legs=2, now=0.0) is Admission.FULL  # the same episode
    registry.add(Live("CA2"), unplaced=True)
    registry.remove("CA2")  # withdrawn before it was placed
    assert registry.admit(legs=1, now=0.0).admitted and registry.kept == 1


def test_a_call_let_in_keeps_a_leg_for_its_dial_that_other_branches_cannot_take() -> None:
    """At capacity the next caller is refused, not answered and left without a
    leg for its <Dial>: each call that has placed no branch yet holds one."""
    registry = CallRegistry(max_calls=5)
    registry.add(Live("CA1"))  # an inbound call: 1 leg, 1 kept
    assert registry.admit(legs=1, now=0.0).admitted  # 1 + 1 held, room for 2 more
    registry.add(Live("CA2"))
    assert registry.admit(legs=2, now=0.0) is Admission.NEWLY_FULL  # 2 + 2 held, 1 free
    assert registry.admit(legs=2, now=0.0, parent="CA1").admitted  # takes CA1's kept leg
    registry.add(Live("CB1"), parent="CA1")
    assert registry.kept == 1
    assert registry.admit(legs=3, now=0.0, parent="CA1").admitted  # the one free leg: a 2nd branch
    registry.add(Live("CB2"), parent="CA1")
    assert registry.admit(legs=4, now=0.0, parent="CA1") is Admission.FULL  # not CA2's kept leg
    assert registry.admit(legs=4, now=0.0, parent="CA2").admitted
    registry.add(Live("CB3"), parent="CA2")
    assert registry.kept == 0


def test_the_kept_leg_goes_with_the_first_branch_and_does_not_come_back() -> None:
    """Nothing held grows while calls end: a branch that ends gives its leg back
    to everyone, not to its call (whose next <Dial> takes what is free)."""
    registry = CallRegistry(max_calls=10)
    registry.add(Live("CA1"))
    registry.add(Live("CB1"), parent="CA1")
    registry.remove("CB1")
    assert registry.kept == 0
    registry.add(Live("CA2"))
    registry.remove("CA2")  # ended without a <Dial>
    assert registry.kept == 0 and registry.top_level == 1


def test_incoming_calls_not_handed_over_yet_count_with_their_kept_leg() -> None:
    """The INVITEs of one poll are screened before any reaches the registry."""
    registry = CallRegistry(max_calls=5)
    assert registry.admit(legs=0, now=0.0).admitted
    assert registry.admit(legs=1, now=0.0, arriving=1).admitted  # 2 held: room for 2 more
    assert registry.admit(legs=2, now=0.0, arriving=2) is Admission.NEWLY_FULL  # 4 held, 1 free


def test_reaching_capacity_is_news_once_until_a_quiet_spell() -> None:
    """Calls let in between refusals do not make each refusal news: an episode
    ends after QUIET seconds without one."""
    capacity = Capacity(max_legs=2)
    steps = [(1, 0.0), (2, 0.0), (2, 1.0), (3, 2.0), (1, 3.0), (2, 4.0), (2, 4.0 + QUIET)]
    assert [capacity.admit(legs, now) for legs, now in steps] == [
        Admission.ADMITTED,
        Admission.NEWLY_FULL,
        Admission.FULL,
        Admission.FULL,
        Admission.ADMITTED,
        Admission.FULL,  # room a moment ago, but the same episode
        Admission.NEWLY_FULL,
    ]


def test_a_loop_running_late_refuses_new_calls_but_not_branches_of_admitted_ones() -> None:
    capacity = Capacity(max_legs=100)
    for _ in range(20):
        capacity.load.observe(0.4)  # every probe 400 ms late
    assert capacity.load.behind
    assert capacity.admit(10, 0.0) is Admission.NEWLY_BEHIND
    assert capacity.admit(10, 0.0) is Admission.BEHIND
    assert capacity.admit(10, 0.0, new_call=False) is Admission.ADMITTED  # a <Dial> branch
    assert capacity.admit(10, 0.0) is Admission.BEHIND  # the same episode: not news again
    assert capacity.admit(100, 0.0, new_call=False) is Admission.FULL


def test_the_loop_is_behind_after_sustained_lateness_and_caught_up_with_hysteresis() -> None:
    load = LoopLoad()
    load.observe(1.0)  # one long pause: smoothed, not yet behind
    assert not load.behind and load.lag == pytest.approx(LAG_SMOOTHING)
    for _ in range(5):
        load.observe(1.0)
    assert load.behind
    for _ in range(5):
        load.observe(0.0)
    assert load.behind and LAG_CAUGHT_UP < load.lag < LAG_BEHIND  # still settling
    for _ in range(20):
        load.observe(0.0)
    assert not load.behind
    capacity = Capacity(max_legs=100)
    capacity.load = load
    assert capacity.admit(10, 0.0) is Admission.ADMITTED


def test_stopping_admits_nothing() -> None:
    registry = CallRegistry(max_calls=10)
    registry.stopping = True
    assert registry.admit(legs=0, now=0.0) is Admission.STOPPING


def test_replace_keeps_the_call() -> None:
    registry = CallRegistry(max_calls=1)
    registry.add(Live("CA1"))
    answered = Live("CA1")
    registry.replace(answered)
    assert registry.get("CA1") is answered
    registry.remove("CA1")
    assert registry.get("CA1") is None


def test_the_engine_slots_match_the_pjsua2_build() -> None:
    header = Path(__file__).parents[2] / "deploy" / "pjsua2" / "config_site.h"
    defined = re.search(r"#define PJSUA_MAX_CALLS\s+(\d+)", header.read_text())
    assert defined is not None and int(defined[1]) == ENGINE_SLOTS
    assert 0 < MAX_LEGS < ENGINE_SLOTS


def test_pacer_spaces_calls_by_the_rate() -> None:
    pacer = Pacer(rate=10)
    assert [pacer.slot(100.0) for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    assert pacer.slot(105.0) == 105.0  # idle since: no backlog


def test_duration_is_null_while_live_and_zero_unanswered() -> None:
    live = CallView("CA1", None, "a", "b", CallStatus.IN_PROGRESS, "inbound", T0, None, T0)
    assert live.duration() is None
    ended = CallView("CA1", None, "a", "b", CallStatus.BUSY, "inbound", T0, T0, None)
    assert ended.duration() == 0
    answered = CallView(
        "CA1", None, "a", "b", CallStatus.COMPLETED, "inbound", T0, T0 + timedelta(seconds=7.9), T0
    )
    assert answered.duration() == 7


def test_a_leg_whose_rtp_stopped_is_silent_after_the_timeout() -> None:
    watch = RtpWatch(timeout=60)
    assert not watch.silent("a", packets=10, receiving=lambda: True, now=0)
    assert not watch.silent("a", packets=500, receiving=lambda: True, now=30)  # moving
    assert not watch.silent("a", packets=500, receiving=lambda: True, now=89)
    assert watch.silent("a", packets=500, receiving=lambda: True, now=90)


def test_a_held_leg_is_not_timed_and_its_clock_restarts_after_the_hold() -> None:
    watch = RtpWatch(timeout=60)
    watch.silent("a", packets=10, receiving=lambda: True, now=0)
    assert not watch.silent("a", packets=10, receiving=lambda: False, now=100)  # on hold
    assert not watch.silent("a", packets=10, receiving=lambda: True, now=150)
    assert watch.silent("a", packets=10, receiving=lambda: True, now=160)
    watch.keep_only([])
    assert not watch.silent("a", packets=10, receiving=lambda: True, now=500)  # forgotten: anew


def test_whether_a_leg_is_held_is_asked_only_when_its_count_stands_still() -> None:
    watch = RtpWatch(timeout=60)
    asked: list[float] = []

    def receiving() -> bool:
        asked.append(now)
        return True

    for now, packets in ((0, 1), (5, 50), (10, 100), (15, 100)):
        watch.silent("a", packets=packets, receiving=receiving, now=now)
    assert asked == [15]
