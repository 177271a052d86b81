"""The call path end to end in memory: session, script, dial runner and fork group.

Each test plays an inbound caller and the callees (tests/support/fakes.py)
against a real ``Services`` and a real aiohttp app serving the RCML
(tests/component/conftest.py), and checks what the peers saw: the SIP each
leg got, the audio connected, and the webhook requests the app received.
"""

from __future__ import annotations

import asyncio
import gc
import types

import pytest

from switch.call.commands import CancelCall, HangUpCall, Redirect, RunTwiml
from switch.call.leg import LegState
from switch.call.registry import LiveCall, Refused
from switch.rcml.parser import parse
from tests.component.conftest import CALLER, FALLBACK_NUMBER, NUMBER, TIME_SCALE, Harness
from tests.support.fakes import FakeLeg, answers, rejects, rings

TRUNK = "127.0.0.1:5080"
ALICE = "+14155550101"
BOB = "+14155550102"
ALL_EVENTS = 'statusCallbackEvent="initiated ringing answered completed"'


def number(user: str, attrs: str = "") -> str:
    return f'<Number statusCallback="/child" {ALL_EVENTS} {attrs}>{user}</Number>'


def dial(*targets: str, attrs: str = "", timeout: int = 60) -> str:
    """A document that dials ``targets`` and reports to ``/after-dial``.

    ``timeout`` is scaled by TIME_SCALE: the default rings for 1.2 s, which no
    test but the timeout's reaches even on a loaded machine.
    """
    return (
        f'<Response><Dial action="/after-dial" timeout="{timeout}" {attrs}>'
        f"{''.join(targets)}</Dial></Response>"
    )


def actor(harness: Harness, call_sid: str) -> LiveCall:
    """The live call's actor, as the REST API finds it."""
    call = harness.services.calls.get(call_sid)
    assert call is not None, f"{call_sid} is not live"
    return call


def statuses(harness: Harness, call_sid: str) -> list[str]:
    return [p["CallStatus"] for p in harness.app.callbacks("/child", call_sid)]


async def all_ringing(harness: Harness, count: int) -> list[FakeLeg]:
    """The ``count`` callees, once the switch has seen each one ring (its callback came)."""

    def rung() -> bool:
        legs = harness.engine.outbound()
        return len(legs) == count and all(
            leg.state is LegState.RINGING and "ringing" in statuses(harness, leg.call_sid)
            for leg in legs
        )

    await harness.until(rung)
    return harness.engine.outbound()


# ---- the fork ----------------------------------------------------------------------


async def test_first_answer_wins_and_the_other_branch_is_cancelled(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, answers(after=0.02))
    call = harness.call()
    caller = call.leg

    await harness.until(lambda: len(harness.engine.connections) == 2)
    (alice,) = harness.engine.placed_to(ALICE)
    (bob,) = harness.engine.placed_to(BOB)
    assert alice.sent == ["INVITE", "CANCEL"]
    assert set(harness.engine.connections) == {
        (caller.call_sid, bob.call_sid),
        (bob.call_sid, caller.call_sid),
    }
    assert (bob.uri, bob.trunk) == (f"sip:{BOB}@{TRUNK}", "carrier")
    assert bob.from_uri == f"sip:{CALLER}@127.0.0.1"
    (ringback,) = harness.engine.players
    assert ringback.loop and ringback.legs == [caller.call_sid] and ringback.closed

    bob.far_hangup()
    await call.finished()
    assert bob.sent == ["INVITE", "ACK"]
    assert caller.sent == ["200", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialCallSid"] == bob.call_sid
    assert action.params["DialBridged"] == "true"
    assert action.params["CallSid"] == caller.call_sid
    assert (action.params["From"], action.params["To"]) == (CALLER, NUMBER)
    assert action.params["Direction"] == "inbound"
    assert action.params["SipHeader_X-Customer"] == "42"

    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "canceled"]
    assert statuses(harness, bob.call_sid) == ["initiated", "ringing", "in-progress", "completed"]
    for params in harness.app.callbacks("/child", bob.call_sid):
        assert params["ParentCallSid"] == caller.call_sid
        assert params["Direction"] == "outbound-dial"
        assert (params["From"], params["To"]) == (CALLER, BOB)
    sequence = [p["SequenceNumber"] for p in harness.app.callbacks("/child", bob.call_sid)]
    assert sequence == ["0", "1", "2", "3"]
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "completed"


async def test_all_targets_busy_releases_an_unanswered_caller_with_486(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(
        number(ALICE), number(BOB), attrs='answerOnBridge="true"'
    )
    harness.engine.far_end(ALICE, rejects(486, "Busy Here"))
    harness.engine.far_end(BOB, rejects(486, "Busy Here", after=0.01))
    call = harness.call()

    await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    (bob,) = harness.engine.placed_to(BOB)
    assert call.leg.sent == ["180", "486"]
    assert alice.sent == bob.sent == ["INVITE"]
    assert harness.engine.players == []  # answerOnBridge: the caller hears its own ringing
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "busy"
    assert action.params["DialCallSid"] == bob.call_sid
    assert action.params["DialBridged"] == "false"
    assert action.params["CallStatus"] == "ringing"
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "busy"]
    assert statuses(harness, bob.call_sid) == ["initiated", "ringing", "busy"]
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "busy"


async def test_a_busy_branch_does_not_end_the_fork(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.engine.far_end(ALICE, rejects(486, "Busy Here"))
    harness.engine.far_end(BOB, answers(after=0.03))
    call = harness.call()

    await harness.until(lambda: len(harness.engine.connections) == 2)
    (alice,) = harness.engine.placed_to(ALICE)
    assert not alice.live and alice.final_code == 486
    call.leg.far_hangup()
    await call.finished()
    (bob,) = harness.engine.placed_to(BOB)
    assert bob.sent == ["INVITE", "ACK", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialCallSid"] == bob.call_sid


async def test_nobody_answering_is_no_answer_and_every_branch_is_cancelled(
    harness: Harness,
) -> None:
    harness.app.documents["/voice"] = dial(
        number(ALICE), number(BOB), timeout=5, attrs='callerId="(415) 555-0199"'
    )
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, rings())
    call = harness.call()

    await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    (bob,) = harness.engine.placed_to(BOB)
    assert alice.sent == bob.sent == ["INVITE", "CANCEL"]
    assert alice.from_uri == "sip:+14155550199@127.0.0.1"
    assert call.leg.sent == ["200", "BYE"]
    (voice,) = harness.app.requests("/voice")
    (action,) = harness.app.requests("/after-dial")
    assert action.at - voice.at >= 5 * TIME_SCALE
    assert action.params["DialCallStatus"] == "no-answer"
    assert action.params["DialBridged"] == "false"
    assert action.params["DialCallDuration"] == "0"
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "no-answer"]
    assert statuses(harness, bob.call_sid) == ["initiated", "ringing", "no-answer"]


async def test_late_answer_after_the_winner_is_acked_and_hung_up(harness: Harness) -> None:
    """The classic race: a second 2xx that arrives after the first gets ACK then BYE."""
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, rings())
    call = harness.call()
    alice, bob = await all_ringing(harness, 2)

    alice.far_answer()
    bob.far_answer()  # before the switch has seen Alice's 200
    await harness.until(lambda: len(harness.engine.connections) == 2)
    assert all(bob.call_sid not in pair for pair in harness.engine.connections)
    await harness.until(lambda: not bob.live)
    assert bob.sent == ["INVITE", "ACK", "BYE"]
    alice.far_hangup()
    await call.finished()
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallSid"] == alice.call_sid


async def test_unreachable_targets_fail_the_dial(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(
        "<Client>nobody</Client>", number(ALICE), attrs='answerOnBridge="true"'
    )
    harness.engine.unreachable.add(ALICE)
    call = harness.call()

    await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    assert alice.sent == []
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "failed"
    assert action.params["DialCallSid"] == alice.call_sid
    assert call.leg.sent == ["180", "500"]  # the last target's own failure
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "failed"]


async def test_sip_target_reports_its_final_response(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(
        "<Sip>sip:carol@127.0.0.1:5090?X-Tenant=7</Sip>", attrs='callReason="support"'
    )
    harness.engine.far_end("carol", rejects(603, "Decline"))
    call = harness.call()

    await call.finished()
    (carol,) = harness.engine.placed_to("carol")
    assert carol.uri == "sip:carol@127.0.0.1:5090"
    assert ("X-Tenant", "7") in carol.headers
    assert ("X-Call-Reason", "support") in carol.headers
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "busy"
    assert action.params["DialSipResponseCode"] == "603"
    assert action.params["DialSipCallId"] == carol.sip_call_id


async def test_each_branch_gets_its_srtp_setting(harness: Harness) -> None:
    """Twilio's ;secure=true makes a <Sip> branch TLS with mandatory SRTP; a plain one
    and a number through a trunk take [sip] srtp and the trunk's (optional here)."""
    harness.app.documents["/voice"] = dial(
        "<Sip>sip:dave@127.0.0.1:5090;secure=true</Sip>",
        "<Sip>sip:erin@127.0.0.1:5090</Sip>",
        number(ALICE),
    )
    for user in ("dave", "erin", ALICE):
        harness.engine.far_end(user, rejects(486, "Busy Here"))
    call = harness.call()

    await call.finished()
    (dave,) = harness.engine.placed_to("dave")
    (erin,) = harness.engine.placed_to("erin")
    (alice,) = harness.engine.placed_to(ALICE)
    assert (dave.uri, dave.srtp) == ("sip:dave@127.0.0.1:5090;transport=tls", "mandatory")
    assert (erin.srtp, alice.srtp) == ("optional", "optional")


# ---- what the caller hears while the targets ring ----------------------------------


async def test_single_target_early_media_reaches_an_unanswered_caller(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='answerOnBridge="true"')
    harness.engine.far_end(ALICE, rings(early_media=True))
    call = harness.call()
    caller = call.leg

    await harness.until(lambda: len(harness.engine.connections) == 1)
    (alice,) = harness.engine.placed_to(ALICE)
    assert harness.engine.connections == [(alice.call_sid, caller.call_sid)]
    assert caller.sent == ["180", "183"] and not caller.answered

    alice.far_answer()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    assert harness.engine.connections[1] == (caller.call_sid, alice.call_sid)
    assert caller.sent == ["180", "183", "200"]
    caller.far_hangup()
    await call.finished()
    assert alice.sent == ["INVITE", "ACK", "BYE"]


async def test_early_media_waits_for_the_callers_media(harness: Harness) -> None:
    """A caller whose media comes up a little after its 183 (ICE, a browser's leg)."""
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='answerOnBridge="true"')
    harness.engine.far_end(ALICE, rings(early_media=True))
    call = harness.call()
    call.leg.media_delay = 0.01

    try:
        await harness.until(lambda: harness.engine.connections, timeout=0.3)
    finally:
        call.leg.far_hangup()
        await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    assert harness.engine.connections == [(alice.call_sid, call.leg.call_sid)]


async def test_ring_tone_is_played_to_an_unanswered_caller(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(
        number(ALICE), attrs='answerOnBridge="true" ringTone="de"'
    )
    harness.engine.far_end(ALICE, rings(early_media=True))
    call = harness.call()

    await harness.until(lambda: len(harness.engine.players) == 1)
    (tone,) = harness.engine.players
    assert "ringback-de-" in tone.path.name and tone.legs == [call.leg.call_sid]
    await asyncio.sleep(0.02)
    assert harness.engine.connections == []  # a ringTone: the callee's 183 is not relayed
    call.leg.far_hangup()
    await call.finished()
    assert call.leg.sent == ["183"]


# ---- screening, hangupOnStar, timeLimit ---------------------------------------------


async def test_whisper_runs_on_the_called_party_before_the_bridge(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE, 'url="/whisper" sendDigits="12"'))
    harness.app.documents["/whisper"] = "<Response><Play>/beep.wav</Play></Response>"
    held = harness.app.held["/whisper"] = asyncio.Event()
    harness.engine.far_end(ALICE, answers())
    call = harness.call()

    await harness.until(lambda: harness.app.requests("/whisper"))
    (alice,) = harness.engine.placed_to(ALICE)
    assert alice.dtmf_sent == "12"
    assert harness.engine.connections == []
    (whisper,) = harness.app.requests("/whisper")
    assert whisper.params["Direction"] == "outbound-dial"
    assert whisper.params["ParentCallSid"] == call.leg.call_sid
    assert whisper.params["CallSid"] == alice.call_sid
    assert whisper.params["CallStatus"] == "in-progress"
    assert (whisper.params["From"], whisper.params["To"]) == (CALLER, ALICE)

    held.set()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    beep = next(p for p in harness.engine.players if not p.loop)
    assert beep.legs == [alice.call_sid] and beep.closed
    assert harness.app.requests("/beep.wav")
    call.leg.far_hangup()
    await call.finished()
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"


async def test_whisper_hung_up_by_the_callee_is_not_an_answer(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE, 'url="/whisper"'))
    harness.app.documents["/whisper"] = "<Response><Hangup/></Response>"
    harness.engine.far_end(ALICE, answers())
    call = harness.call()

    await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    assert harness.engine.connections == []
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "busy"  # declined, like a 603 (fork.py)


async def test_star_from_the_caller_hangs_up_the_called_party(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='hangupOnStar="true"')
    harness.app.documents["/after-dial"] = '<Response><Play digits="7"/></Response>'
    harness.engine.far_end(ALICE, answers())
    call = harness.call()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    (alice,) = harness.engine.placed_to(ALICE)

    alice.far_dtmf("*")  # only the caller's star counts
    await asyncio.sleep(0.02)
    assert alice.live and alice.sent == ["INVITE", "ACK"]
    call.leg.far_dtmf("*")
    await call.finished()
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    assert call.leg.dtmf_sent == "7"  # the action's document ran
    assert call.leg.sent == ["200", "BYE"]


async def test_time_limit_hangs_up_the_bridged_call(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='timeLimit="5"')
    harness.app.documents["/after-dial"] = '<Response><Play digits="7"/></Response>'
    harness.engine.far_end(ALICE, answers())
    call = harness.call()
    loop = asyncio.get_running_loop()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    bridged = loop.time()
    (alice,) = harness.engine.placed_to(ALICE)

    await harness.until(lambda: not alice.live)
    assert loop.time() - bridged >= 5 * TIME_SCALE / 2  # seen by polling: a loose bound
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    await call.finished()
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"
    assert call.leg.dtmf_sent == "7"


# ---- the caller leaves ---------------------------------------------------------------


@pytest.mark.parametrize("answer_on_bridge", [True, False])
async def test_caller_leaving_while_targets_ring_cancels_every_branch(
    harness: Harness, answer_on_bridge: bool
) -> None:
    harness.app.documents["/voice"] = dial(
        number(ALICE), number(BOB), attrs=f'answerOnBridge="{str(answer_on_bridge).lower()}"'
    )
    harness.app.documents["/after-dial"] = '<Response><Play digits="5"/></Response>'
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, rings())
    call = harness.call()
    alice, bob = await all_ringing(harness, 2)

    call.leg.far_hangup()  # a CANCEL while unanswered, else a BYE
    await call.finished()
    assert alice.sent == bob.sent == ["INVITE", "CANCEL"]
    assert call.leg.sent == (["180"] if answer_on_bridge else ["200"])
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "no-answer"
    assert call.leg.dtmf_sent == ""  # the caller is gone: the document is not run
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "canceled"]
    assert statuses(harness, bob.call_sid) == ["initiated", "ringing", "canceled"]
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == ("no-answer" if answer_on_bridge else "completed")


# ---- REST commands --------------------------------------------------------------------


async def test_redirect_during_dial_withdraws_the_fork(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.app.documents["/redirected"] = '<Response><Play digits="3"/></Response>'
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, rings())
    call = harness.call()
    alice, bob = await all_ringing(harness, 2)

    call.session.deliver(Redirect(harness.url("/redirected"), "POST"))
    await call.finished()
    assert alice.sent == bob.sent == ["INVITE", "CANCEL"]
    assert harness.app.requests("/after-dial") == []
    (redirected,) = harness.app.requests("/redirected")
    assert redirected.method == "POST"
    assert redirected.params["CallSid"] == call.leg.call_sid
    assert redirected.params["Direction"] == "inbound"
    assert redirected.params["CallStatus"] == "in-progress"
    assert call.leg.dtmf_sent == "3"
    assert call.leg.sent == ["200", "BYE"]
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "canceled"]
    assert statuses(harness, bob.call_sid) == ["initiated", "ringing", "canceled"]


async def test_redirect_in_the_tick_the_fork_finishes_is_not_lost(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE))
    harness.app.documents["/after-dial"] = '<Response><Play digits="5"/></Response>'
    harness.app.documents["/redirected"] = '<Response><Play digits="3"/></Response>'
    harness.engine.far_end(ALICE, rings())
    call = harness.call()
    (alice,) = await all_ringing(harness, 1)

    alice.far_reject(486, "Busy Here")
    await asyncio.sleep(0)  # the 486 is queued to the dial runner first
    call.session.deliver(Redirect(harness.url("/redirected"), "POST"))
    await call.finished()
    # Inputs are taken in order: the 486 ends the Dial (its action may be asked
    # for), then the redirect replaces whatever runs: the action's document never
    # runs, the redirected one does.
    assert harness.app.requests("/redirected")
    assert call.leg.dtmf_sent == "3"


async def test_run_twiml_cuts_a_pause_short(harness: Harness) -> None:
    harness.app.documents["/voice"] = (
        '<Response><Play digits="1"/><Pause length="30"/><Play digits="2"/></Response>'
    )
    call = harness.call()
    await harness.until(lambda: call.leg.dtmf_sent == "1")
    await asyncio.sleep(0.15)  # past the digit's 0.1 s: the pause runs

    call.session.deliver(RunTwiml(parse('<Response><Play digits="9"/></Response>')))
    await call.finished(timeout=1.0)
    assert call.leg.dtmf_sent == "19"
    assert call.leg.sent == ["200", "BYE"]


async def test_cancel_call_releases_a_ringing_caller(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='answerOnBridge="true"')
    harness.app.documents["/after-dial"] = '<Response><Play digits="5"/></Response>'
    harness.engine.far_end(ALICE, rings())
    call = harness.call()
    (alice,) = await all_ringing(harness, 1)

    call.session.deliver(CancelCall())
    await call.finished()
    assert call.leg.sent == ["180", "487"]
    assert alice.sent == ["INVITE", "CANCEL"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "canceled"  # withdrawn by the REST API
    assert call.leg.dtmf_sent == ""
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "canceled"]
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "canceled"
    with pytest.raises(Refused) as refused:
        call.session.deliver(CancelCall())
    assert refused.value.code == 21220


async def test_hang_up_call_releases_a_ringing_caller(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs='answerOnBridge="true"')
    harness.engine.far_end(ALICE, rings())
    call = harness.call()
    (alice,) = await all_ringing(harness, 1)

    call.session.deliver(HangUpCall())
    await call.finished()
    assert call.leg.sent == ["180", "487"]
    assert alice.sent == ["INVITE", "CANCEL"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "canceled"  # withdrawn by the REST API
    await harness.callbacks_delivered()
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "canceled"
    with pytest.raises(Refused) as refused:
        call.session.deliver(HangUpCall())
    assert refused.value.code == 21220


async def test_cancel_call_leaves_an_answered_call_alone(harness: Harness) -> None:
    harness.app.documents["/voice"] = '<Response><Play digits="1"/><Pause length="30"/></Response>'
    call = harness.call()
    await harness.until(lambda: call.leg.answered and call.leg.dtmf_sent == "1")

    call.session.deliver(CancelCall())
    await asyncio.sleep(0.02)
    assert call.leg.live and call.leg.sent == ["200"]
    call.session.deliver(HangUpCall())
    await call.finished(timeout=1.0)
    assert call.leg.sent == ["200", "BYE"]
    await harness.callbacks_delivered()
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "completed"
    document = parse("<Response/>")
    for command in (
        HangUpCall(),
        CancelCall(),
        Redirect(harness.url("/voice"), "POST"),
        RunTwiml(document),
    ):
        with pytest.raises(Refused) as refused:
            call.session.deliver(command)
        assert refused.value.code == 21220


async def test_hang_up_call_during_a_bridge_ends_both_legs(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE))
    harness.engine.far_end(ALICE, answers())
    call = harness.call()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    (alice,) = harness.engine.placed_to(ALICE)

    call.session.deliver(HangUpCall())
    await call.finished()
    assert call.leg.sent == ["200", "BYE"]
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"


# ---- verbs outside a Dial ---------------------------------------------------------------


async def test_gather_ends_on_its_finish_key(harness: Harness) -> None:
    harness.app.documents["/voice"] = (
        '<Response><Gather numDigits="3" finishOnKey="#" timeout="5" action="/gathered"/>'
        "</Response>"
    )
    harness.app.documents["/gathered"] = '<Response><Play digits="0"/></Response>'
    call = harness.call()
    await harness.until(lambda: call.leg.answered)

    for digit in "42#":
        call.leg.far_dtmf(digit)
    try:
        await call.finished(timeout=0.5)  # not the Gather's 5 s
    finally:
        call.leg.far_hangup()
        await call.finished()
    (gathered,) = harness.app.requests("/gathered")
    assert gathered.params["Digits"] == "42"
    assert gathered.params["CallStatus"] == "in-progress"
    assert call.leg.dtmf_sent == "0"


async def test_fallback_url_runs_when_the_voice_url_fails(harness: Harness) -> None:
    harness.app.failing.add("/broken")
    harness.app.documents["/fallback"] = '<Response><Play digits="8"/></Response>'
    call = harness.call(to=FALLBACK_NUMBER)

    await call.finished()
    assert harness.app.requests("/broken")
    (fallback,) = harness.app.requests("/fallback")
    assert fallback.params["ErrorCode"] == "11217"  # HTTP 5xx
    assert fallback.params["ErrorUrl"] == harness.url("/broken")
    assert fallback.params["To"] == FALLBACK_NUMBER
    assert call.leg.dtmf_sent == "8"
    notices = harness.services.store.notifications(call.leg.call_sid)
    assert [n.code for n in notices] == [11217]


async def test_redirect_then_reject_refuses_the_caller(harness: Harness) -> None:
    harness.app.documents["/voice"] = '<Response><Redirect method="GET">/next</Redirect></Response>'
    harness.app.documents["/next"] = '<Response><Reject reason="busy"/></Response>'
    call = harness.call()

    await call.finished()
    (following,) = harness.app.requests("/next")
    assert following.method == "GET"
    assert following.params["CallStatus"] == "ringing"
    assert call.leg.sent == ["486"]
    await harness.callbacks_delivered()
    (parent_done,) = harness.app.requests("/call-status")
    assert parent_done.params["CallStatus"] == "busy"


# ---- REST commands to a <Dial>'s children ---------------------------------------------


async def test_cancel_call_on_ringing_children_cancels_the_dial(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end(BOB, rings())
    call = harness.call()
    alice, bob = await all_ringing(harness, 2)
    calls = harness.services.calls

    with pytest.raises(Refused) as refused:
        actor(harness, alice.call_sid).deliver(Redirect(harness.url("/voice"), "POST"))
    assert refused.value.code == 21220
    actor(harness, alice.call_sid).deliver(CancelCall())
    await harness.until(lambda: not alice.live)
    assert alice.sent == ["INVITE", "CANCEL"]
    assert bob.live and call.leg.live
    actor(harness, bob.call_sid).deliver(CancelCall())
    await call.finished()
    assert bob.sent == ["INVITE", "CANCEL"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "canceled"
    assert calls.get(alice.call_sid) is None and calls.get(bob.call_sid) is None
    await harness.callbacks_delivered()
    assert statuses(harness, alice.call_sid) == ["initiated", "ringing", "canceled"]


async def test_rest_commands_to_a_bridged_child(harness: Harness) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE))
    harness.app.documents["/after-dial"] = '<Response><Play digits="7"/></Response>'
    harness.engine.far_end(ALICE, answers())
    call = harness.call()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    (alice,) = harness.engine.placed_to(ALICE)
    child = actor(harness, alice.call_sid)
    assert child.view().parent_call_sid == call.leg.call_sid
    assert child.view().status == "in-progress"

    child.deliver(CancelCall())  # an answered child stays
    await asyncio.sleep(0.02)
    assert alice.live
    child.deliver(HangUpCall())
    await call.finished()
    assert alice.sent == ["INVITE", "ACK", "BYE"]
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    assert call.leg.dtmf_sent == "7"
    with pytest.raises(Refused) as refused:
        child.deliver(HangUpCall())
    assert refused.value.code == 21220


# ---- callerId --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller_id", "from_user", "notified"),
    [
        ("(415) 555-1212", "+14155551212", []),
        ("client:desk", "desk", []),
        ("front-desk", "front-desk", []),
        ("not a number!", CALLER, [13214]),
    ],
)
async def test_caller_id_is_normalised_for_the_from_header(
    harness: Harness, caller_id: str, from_user: str, notified: list[int]
) -> None:
    harness.app.documents["/voice"] = dial(number(ALICE), attrs=f'callerId="{caller_id}"')
    harness.engine.far_end(ALICE, rejects(486, "Busy Here"))
    call = harness.call()
    await call.finished()
    (alice,) = harness.engine.placed_to(ALICE)
    assert alice.from_uri.startswith(f"sip:{from_user}@"), alice.from_uri
    codes = [n.code for n in harness.services.store.notifications(call.leg.call_sid)]
    assert [c for c in codes if c == 13214] == notified


# ---- the call's inbox ------------------------------------------------------------------


async def test_everything_for_the_call_goes_through_its_one_inbox(harness: Harness) -> None:
    """The caller's leg has one listener, the session's inbox, also while a <Dial>
    runs; commands, the leg's events and the time limit are taken out in order."""
    harness.app.documents["/voice"] = dial(number(ALICE))
    harness.engine.far_end(ALICE, rings())
    call = harness.call()
    await all_ringing(harness, 1)
    assert len(call.leg._subscribers) == 1  # the inbox, not the Dial's runner
    call.session.limit_time(0.01)  # as an API call's TimeLimit
    await call.finished()
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "no-answer"  # hung up while ringing
    assert call.leg.sent[-1] in ("BYE", "603")
    assert call.session.inbox.empty()


# ---- capacity ---------------------------------------------------------------------------


async def test_a_branch_past_max_calls_is_not_dialled_and_the_others_ring(
    harness: Harness,
) -> None:
    """[dial] max_calls counts legs: with room for the caller and one more, the
    second branch fails at once (503, notification 20503) and the first is
    bridged; a metric counts the refusal."""
    harness.services.calls.capacity.max_legs = 2
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB))
    harness.engine.far_end(ALICE, answers(after=0.03))
    harness.engine.far_end(BOB, answers(after=0.01))
    call = harness.call()

    await harness.until(lambda: len(harness.engine.connections) == 2)
    assert harness.engine.placed_to(BOB) == []
    call.leg.far_hangup()
    await call.finished()
    (action,) = harness.app.requests("/after-dial")
    assert action.params["DialCallStatus"] == "completed"
    (alice,) = harness.engine.placed_to(ALICE)
    assert action.params["DialCallSid"] == alice.call_sid
    notices = harness.services.store.notifications(call.leg.call_sid)
    assert [n.code for n in notices] == [20503]
    assert "at max_calls" in notices[0].message
    refused = harness.services.metrics.registry.get_sample_value(
        "dialswitch_capacity_refused_total", {"kind": "dial"}
    )
    assert refused == 1


async def test_a_new_call_is_refused_when_it_could_not_reach_its_callee(
    harness: Harness,
) -> None:
    """A new call is let in only with room for its leg and one for its <Dial>.
    With max_calls 3 and one call up, before its branch (its leg and the one
    kept for it) and once bridged (two legs), the next INVITE is refused (503
    at the SIP screen) instead of being answered and then hung up when its
    branch finds no room; once the call ends, the next one is let in."""
    harness.services.calls.capacity.max_legs = 3
    harness.app.documents["/voice"] = dial(number(ALICE))
    harness.engine.far_end(ALICE, answers(after=0.05))
    call = harness.call()
    assert not harness.services.admit_leg("inbound")
    await harness.until(lambda: len(harness.engine.connections) == 2)  # bridged
    assert not harness.services.admit_leg("inbound")
    assert not harness.services.admit_leg("api")
    refused = harness.services.metrics.registry.get_sample_value(
        "dialswitch_capacity_refused_total", {"kind": "inbound"}
    )
    assert refused == 2
    call.leg.far_hangup()
    await call.finished()
    await harness.until(lambda: harness.services.admit_leg("inbound"))


async def test_a_finished_dial_leaves_no_reference_cycle(harness: Harness) -> None:
    """A finished <Dial> leaves no garbage that only the cycle collector can free:
    its runner, fork group, branches and session go when the last reference goes.
    The switch runs full collections rarely (switch/app.py): under load, cycles
    through each leg's subscribers and each target's status callbacks held
    hundreds of MB until one came."""
    harness.app.documents["/voice"] = dial(number(ALICE), number(BOB), number("+14155550103"))
    harness.engine.far_end(ALICE, rings())
    harness.engine.far_end("+14155550103", rings())
    harness.engine.far_end(BOB, answers(after=0.02))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
    try:
        call = harness.call()
        await harness.until(lambda: len(harness.engine.connections) == 2)
        (bob,) = harness.engine.placed_to(BOB)
        bob.far_hangup()
        await call.finished()
        await harness.callbacks_delivered()
        await asyncio.sleep(0.01)  # callbacks scheduled by the last events run
        gc.collect()
        ours = sorted({_name(o) for o in gc.garbage if _name(o).startswith("switch.")})
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _name(o: object) -> str:
    """``module.qualname`` of a function, else of the object's class."""
    if isinstance(o, types.FunctionType):
        return f"{o.__module__}.{o.__qualname__}"
    return f"{type(o).__module__}.{type(o).__qualname__}"
