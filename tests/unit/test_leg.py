"""The leg state machine: its transition table, CallStatus and final CallStatus."""

from __future__ import annotations

import itertools
import logging

import pytest

from switch.leg import IllegalTransition, LegMachine, LegState, final_call_status

S = LegState

# Written out independently of switch.leg so that a changed table shows up here.
ALLOWED = {
    (S.NEW, S.CALLING),
    (S.NEW, S.ENDED),
    (S.CALLING, S.RINGING),
    (S.CALLING, S.EARLY_MEDIA),
    (S.CALLING, S.ANSWERED),
    (S.CALLING, S.ENDED),
    (S.RINGING, S.EARLY_MEDIA),
    (S.RINGING, S.ANSWERED),
    (S.RINGING, S.ENDED),
    (S.EARLY_MEDIA, S.RINGING),
    (S.EARLY_MEDIA, S.ANSWERED),
    (S.EARLY_MEDIA, S.ENDED),
    (S.ANSWERED, S.ENDED),
}
EDGES = [(a, b) for a, b in itertools.product(LegState, LegState) if a is not b]


def leg_in(state: LegState) -> LegMachine:
    return LegMachine(call_sid="CA" + "0" * 32, state=state)


def test_new_leg_starts_new_and_live() -> None:
    leg = LegMachine(call_sid="CA1")
    assert leg.state is S.NEW
    assert leg.live
    assert leg.call_status == "queued"


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str), ids=str)
def test_allowed_transitions(old: LegState, new: LegState) -> None:
    leg = leg_in(old)
    assert leg.move(new) is True
    assert leg.state is new


@pytest.mark.parametrize(
    ("old", "new"), [e for e in EDGES if e not in ALLOWED], ids=lambda s: s.value
)
def test_illegal_transitions_raise_and_keep_state(old: LegState, new: LegState) -> None:
    leg = leg_in(old)
    with pytest.raises(IllegalTransition) as raised:
        leg.move(new)
    assert str(raised.value) == f"{leg.call_sid}: {old.value} -> {new.value}"
    assert leg.state is old


@pytest.mark.parametrize("state", list(LegState), ids=lambda s: s.value)
def test_repeated_state_returns_false(state: LegState) -> None:
    leg = leg_in(state)
    assert leg.move(state) is False
    assert leg.state is state


def test_ended_is_terminal_and_not_live() -> None:
    leg = leg_in(S.ANSWERED)
    assert leg.move(S.ENDED)
    assert not leg.live
    for state in LegState:
        if state is not S.ENDED:
            with pytest.raises(IllegalTransition):
                leg.move(state)


def test_typical_outbound_path() -> None:
    leg = LegMachine(call_sid="CA2")
    for state in (S.CALLING, S.RINGING, S.EARLY_MEDIA, S.RINGING, S.ANSWERED, S.ENDED):
        assert leg.move(state)
    assert leg.state is S.ENDED


def test_move_logs_the_change(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.leg")
    leg = LegMachine(call_sid="CA3", log=logging.LoggerAdapter(logger, {}))
    with caplog.at_level(logging.DEBUG, logger="test.leg"):
        leg.move(S.CALLING)
        leg.move(S.CALLING)  # no change, no line
    assert [r.getMessage() for r in caplog.records] == ["leg new -> calling"]


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.NEW, "queued"),
        (S.CALLING, "initiated"),
        (S.RINGING, "ringing"),
        (S.EARLY_MEDIA, "ringing"),
        (S.ANSWERED, "in-progress"),
        (S.ENDED, "completed"),
    ],
    ids=str,
)
def test_call_status(state: LegState, status: str) -> None:
    assert leg_in(state).call_status == status


@pytest.mark.parametrize(
    ("answered", "code", "cancelled", "status"),
    [
        (True, 200, False, "completed"),
        (True, None, False, "completed"),
        (True, None, True, "completed"),
        (False, 486, False, "busy"),
        (False, 600, False, "busy"),
        (False, 603, False, "busy"),
        (False, 486, True, "busy"),
        (False, 408, False, "no-answer"),
        (False, 480, False, "no-answer"),
        (False, 480, True, "no-answer"),
        (False, 487, False, "canceled"),
        (False, None, True, "canceled"),
        (False, 487, True, "canceled"),
        (False, 404, False, "failed"),
        (False, 500, False, "failed"),
        (False, 503, False, "failed"),
        (False, None, False, "failed"),
        (False, 0, False, "failed"),
    ],
)
def test_final_call_status(answered: bool, code: int | None, cancelled: bool, status: str) -> None:
    assert final_call_status(answered, code, cancelled) == status
