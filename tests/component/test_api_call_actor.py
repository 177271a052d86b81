"""The actor of an API-created call (switch/outbound_call.py) in memory.

Each REST command is delivered in each state the call can be in (queued,
ringing, answered, ended), against fake legs and a real app; the checks are
what the callee saw, the requests the app got and the record left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

import switch.outbound_call
from switch.call.commands import CancelCall, HangUpCall, Redirect, RunTwiml
from switch.call.registry import Refused
from switch.call_request import CallRequest, parse_call_request
from switch.outbound_call import ApiCall
from switch.rcml.parser import parse
from tests.component.conftest import NUMBER, TIME_SCALE, Harness
from tests.support.fakes import FakeLeg, answers, rejects, rings

CALLEE = "+14155550101"
EVERY_EVENT = ("initiated", "ringing", "answered", "completed")


def request(harness: Harness, **form: str) -> CallRequest:
    base = {
        "To": CALLEE,
        "From": NUMBER,
        "Url": harness.url("/api-voice"),
        "StatusCallback": harness.url("/api-status"),
    }
    base.update(form)
    lists: Mapping[str, Sequence[str]] = {"StatusCallbackEvent": EVERY_EVENT}
    config = harness.services.config
    return parse_call_request(
        base,
        lists,
        numbers=[n.number for n in config.numbers],
        clients=[],
        trunks=[t.name for t in config.trunks],
    )


def start(
    harness: Harness, call: CallRequest, delay: float = 0.0, twiml: str | None = None
) -> tuple[ApiCall, asyncio.Task[None]]:
    """Create the call as the Calls resource does; it may start ``delay`` s from now."""
    services = harness.services
    document = parse(twiml) if twiml is not None else None
    loop = asyncio.get_running_loop()
    actor = ApiCall(services, call, document, services.new_call_sid(), loop.time() + delay)
    services.calls.add(actor)
    return actor, loop.create_task(actor.run())


def statuses(harness: Harness, call_sid: str) -> list[str]:
    return [p["CallStatus"] for p in harness.app.callbacks("/api-status", call_sid)]


def record(harness: Harness, call_sid: str) -> str:
    stored = harness.services.store.leg(call_sid)
    assert stored is not None, f"{call_sid} has no record"
    assert stored.direction == "outbound-api"
    return stored.status


@pytest.fixture(autouse=True)
def _scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API call's Timeout (at least 1 s) passes TIME_SCALE times faster too."""
    from tests.component.conftest import ScaledForkGroup

    monkeypatch.setattr(switch.outbound_call, "ForkGroup", ScaledForkGroup)


async def callee(harness: Harness) -> FakeLeg:
    await harness.until(lambda: harness.engine.placed_to(CALLEE))
    (leg,) = harness.engine.placed_to(CALLEE)
    return leg


# ---- queued ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [CancelCall(), HangUpCall()], ids=["canceled", "completed"])
async def test_withdrawn_while_queued_never_rings(harness: Harness, command: object) -> None:
    actor, task = start(harness, request(harness), delay=5)
    await asyncio.sleep(0.01)
    assert actor.view().status == "queued"
    assert actor.view().start_time is None
    actor.deliver(command)  # type: ignore[arg-type]
    await asyncio.wait_for(task, 2)
    assert harness.engine.placed_to(CALLEE) == []
    assert record(harness, actor.call_sid) == "canceled"
    await harness.callbacks_delivered()
    assert statuses(harness, actor.call_sid) == ["canceled"]  # initiated never happened
    assert harness.services.calls.get(actor.call_sid) is None


async def test_a_queued_call_starts_at_its_slot(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, rejects(486, "Busy Here"))
    actor, task = start(harness, request(harness), delay=0.1)
    await asyncio.sleep(0.05)
    assert harness.engine.placed_to(CALLEE) == []
    await asyncio.wait_for(task, 2)
    assert record(harness, actor.call_sid) == "busy"


# ---- ringing -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [CancelCall(), HangUpCall()], ids=["canceled", "completed"])
async def test_withdrawn_while_ringing_is_cancelled(harness: Harness, command: object) -> None:
    harness.engine.far_end(CALLEE, rings())
    actor, task = start(harness, request(harness))
    leg = await callee(harness)
    await harness.until(lambda: actor.view().status == "ringing")
    actor.deliver(command)  # type: ignore[arg-type]
    await asyncio.wait_for(task, 2)
    assert leg.sent == ["INVITE", "CANCEL"]
    assert record(harness, actor.call_sid) == "canceled"
    await harness.callbacks_delivered()
    assert statuses(harness, actor.call_sid) == ["initiated", "ringing", "canceled"]
    assert harness.app.requests("/api-voice") == []


async def test_redirect_while_ringing_is_the_document_once_answered(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers(after=0.05))
    harness.app.documents["/elsewhere"] = '<Response><Play digits="9"/></Response>'
    actor, task = start(harness, request(harness))
    await callee(harness)
    actor.deliver(Redirect(harness.url("/elsewhere"), "GET"))
    await asyncio.wait_for(task, 2)
    assert harness.app.requests("/api-voice") == []
    (fetched,) = harness.app.requests("/elsewhere")
    assert fetched.method == "GET"
    assert fetched.params["Direction"] == "outbound-api"
    assert fetched.params["CallStatus"] == "in-progress"


async def test_twiml_while_ringing_is_the_document_once_answered(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers(after=0.05))
    actor, task = start(harness, request(harness))
    leg = await callee(harness)
    actor.deliver(RunTwiml(parse('<Response><Play digits="4"/></Response>')))
    await asyncio.wait_for(task, 2)
    assert harness.app.requests("/api-voice") == []
    assert leg.dtmf_sent == "4"


@pytest.mark.parametrize(
    ("far_end", "status"),
    [
        (rejects(486, "Busy Here"), "busy"),
        (rejects(603, "Decline"), "busy"),
        (rejects(404, "Not Found"), "failed"),
        (rejects(480, "Temporarily Unavailable"), "no-answer"),
        (rings(), "no-answer"),  # the Timeout runs out
    ],
    ids=["486", "603", "404", "480", "timeout"],
)
async def test_unanswered_outcomes(harness: Harness, far_end: object, status: str) -> None:
    harness.engine.far_end(CALLEE, far_end)  # type: ignore[arg-type]
    actor, task = start(harness, request(harness, Timeout="5"))
    await asyncio.wait_for(task, 5 * TIME_SCALE + 2)
    assert record(harness, actor.call_sid) == status
    await harness.callbacks_delivered()
    assert statuses(harness, actor.call_sid)[-1] == status
    assert harness.app.requests("/api-voice") == []


async def test_an_invite_that_cannot_be_sent_fails(harness: Harness) -> None:
    harness.engine.unreachable.add(CALLEE)
    actor, task = start(harness, request(harness))
    await asyncio.wait_for(task, 2)
    assert record(harness, actor.call_sid) == "failed"


# ---- answered ----------------------------------------------------------------------------


async def test_answered_call_runs_its_document_then_reports_completed(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers(after=0.01))
    harness.app.documents["/api-voice"] = '<Response><Play digits="1"/></Response>'
    actor, task = start(harness, request(harness, SendDigits="ww2"))
    leg = await callee(harness)
    await asyncio.wait_for(task, 4)
    assert leg.sent == ["INVITE", "ACK", "BYE"]
    assert leg.dtmf_sent == "21"  # SendDigits first, then the document's digit
    assert leg.from_uri.startswith(f"sip:{NUMBER}@")
    (voice,) = harness.app.requests("/api-voice")
    assert voice.params["CallSid"] == actor.call_sid
    assert (voice.params["From"], voice.params["To"]) == (NUMBER, CALLEE)
    await harness.callbacks_delivered()
    assert statuses(harness, actor.call_sid) == ["initiated", "ringing", "in-progress", "completed"]
    sequence = [p["SequenceNumber"] for p in harness.app.callbacks("/api-status", actor.call_sid)]
    assert sequence == ["0", "1", "2", "3"]
    assert record(harness, actor.call_sid) == "completed"


async def test_commands_once_answered_go_to_the_session(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers())
    harness.app.documents["/api-voice"] = '<Response><Pause length="30"/></Response>'
    harness.app.documents["/next"] = '<Response><Play digits="3"/><Pause length="30"/></Response>'
    actor, task = start(harness, request(harness))
    leg = await callee(harness)
    await harness.until(lambda: harness.app.requests("/api-voice"))
    live = harness.services.calls.get(actor.call_sid)
    assert live is not None and live is not actor  # the session took the CallSid over
    assert live.view().status == "in-progress"
    live.deliver(CancelCall())  # an answered call stays
    live.deliver(Redirect(harness.url("/next"), "POST"))
    await harness.until(lambda: leg.dtmf_sent == "3")
    live.deliver(HangUpCall())
    await asyncio.wait_for(task, 2)
    assert leg.sent == ["INVITE", "ACK", "BYE"]
    assert record(harness, actor.call_sid) == "completed"
    with pytest.raises(Refused) as refused:
        live.deliver(HangUpCall())
    assert refused.value.code == 21220


async def test_time_limit_hangs_up(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers())
    harness.app.documents["/api-voice"] = '<Response><Pause length="30"/></Response>'
    actor, task = start(harness, request(harness, TimeLimit="1"))
    leg = await callee(harness)
    await asyncio.wait_for(task, 3)
    assert leg.sent[-1] == "BYE"


async def test_record_hears_the_callee_and_everything_played_to_it(harness: Harness) -> None:
    harness.engine.far_end(CALLEE, answers())
    harness.app.documents["/api-voice"] = "<Response><Play>/beep.wav</Play></Response>"
    actor, task = start(harness, request(harness, Record="true"))
    leg = await callee(harness)
    await asyncio.wait_for(task, 4)
    parent, child = harness.engine.recorders
    assert parent.legs == [leg.call_sid]  # channel 1: what the callee said
    (played,) = child.players  # channel 2: what it heard, the <Play>
    assert played.legs == [leg.call_sid]  # type: ignore[attr-defined]
    rows = harness.services.store.recordings(10, actor.call_sid)
    assert [r.source for r in rows] == ["OutboundAPI"]
