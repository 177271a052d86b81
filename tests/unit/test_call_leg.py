"""The leg state machine: its transition table and the CallStatus it implies."""

from __future__ import annotations

import itertools
import logging

import pytest

from switch.call.leg import IllegalTransition, LegInput, LegMachine, LegState
from switch.call.status import CallStatus

S, In = LegState, LegInput

# Written out independently of switch.call.leg so that a changed table shows up here.
EXPECTED = {
    (S.NEW, In.INVITED): S.CALLING,
    (S.NEW, In.ENDED): S.ENDED,
    (S.CALLING, In.RANG): S.RINGING,
    (S.CALLING, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.CALLING, In.ANSWERED): S.ANSWERED,
    (S.CALLING, In.ENDED): S.ENDED,
    (S.RINGING, In.RANG): S.RINGING,
    (S.RINGING, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.RINGING, In.ANSWERED): S.ANSWERED,
    (S.RINGING, In.ENDED): S.ENDED,
    (S.EARLY_MEDIA, In.RANG): S.EARLY_MEDIA,
    (S.EARLY_MEDIA, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.EARLY_MEDIA, In.ANSWERED): S.ANSWERED,
    (S.EARLY_MEDIA, In.ENDED): S.ENDED,
    (S.ANSWERED, In.ANSWERED): S.ANSWERED,
    (S.ANSWERED, In.ENDED): S.ENDED,
    (S.ENDED, In.ENDED): S.ENDED,
}
PAIRS = list(itertools.product(LegState, LegInput))


def leg_in(state: LegState, outbound: bool = True) -> LegMachine:
    return LegMachine(call_sid="CA" + "0" * 32, outbound=outbound, state=state)


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED, key=str), ids=str)
def test_edges_of_the_table(state: LegState, event: LegInput) -> None:
    leg = leg_in(state)
    changed = leg.process(event)
    assert leg.state is EXPECTED[(state, event)]
    assert changed == (state is not EXPECTED[(state, event)])


@pytest.mark.parametrize(
    ("state", "event"), [p for p in PAIRS if p not in EXPECTED], ids=lambda v: v.value
)
def test_inputs_without_an_edge_raise_and_keep_state(state: LegState, event: LegInput) -> None:
    leg = leg_in(state)
    with pytest.raises(IllegalTransition) as raised:
        leg.process(event)
    assert str(raised.value) == f"{leg.call_sid}: {event.value} in {state.value}"
    assert leg.state is state


def test_ended_is_terminal_and_not_live() -> None:
    leg = leg_in(S.ANSWERED)
    assert leg.process(In.ENDED)
    assert not leg.live
    assert leg.process(In.ENDED) is False  # a second report of the end changes nothing
    for event in (In.INVITED, In.RANG, In.EARLY_MEDIA, In.ANSWERED):
        with pytest.raises(IllegalTransition):
            leg.process(event)


def test_a_ringing_after_early_media_keeps_the_media() -> None:
    leg = LegMachine(call_sid="CA2")
    for event in (In.INVITED, In.RANG, In.EARLY_MEDIA, In.RANG, In.ANSWERED, In.ENDED):
        leg.process(event)
        if event is In.RANG and leg.state is not S.RINGING:
            assert leg.state is S.EARLY_MEDIA
    assert leg.state is S.ENDED


def test_every_change_is_logged_with_the_call_sid(caplog: pytest.LogCaptureFixture) -> None:
    leg = LegMachine(call_sid="CA3", outbound=False)
    with caplog.at_level(logging.DEBUG, logger="dialswitch.leg"):
        leg.process(In.INVITED)
        leg.process(In.ANSWERED)
        leg.process(In.ANSWERED)  # no change, no line
    assert [r.getMessage() for r in caplog.records] == [
        "CA3: leg new -> calling",
        "CA3: leg calling -> answered",
    ]


@pytest.mark.parametrize(
    ("state", "outbound", "status"),
    [
        (S.NEW, True, CallStatus.QUEUED),
        (S.CALLING, True, CallStatus.INITIATED),
        (S.CALLING, False, CallStatus.RINGING),
        (S.RINGING, True, CallStatus.RINGING),
        (S.EARLY_MEDIA, False, CallStatus.RINGING),
        (S.ANSWERED, True, CallStatus.IN_PROGRESS),
        (S.ANSWERED, False, CallStatus.IN_PROGRESS),
        (S.ENDED, True, CallStatus.COMPLETED),
    ],
    ids=str,
)
def test_live_call_status(state: LegState, outbound: bool, status: CallStatus) -> None:
    assert leg_in(state, outbound).call_status is status
