"""Twilio's Calls resource on the real switch, driven by the ``twilio`` library unchanged
(only ``client.api.base_url`` points at the switch). SIPp plays the called parties and
the trunk caller; a real aiohttp app serves the documents and records every callback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    SwitchProcess,
    bounded,
)
from tests.support import sipp, sipp_fork
from tests.support.recording_checks import RecordingsClient, peak_tone_share
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
SID = re.compile(r"^CA[0-9a-f]{32}$")
T = TypeVar("T")


def client_for(switch: SwitchProcess, token: str = AUTH_TOKEN) -> Client:
    client = Client(ACCOUNT_SID, token)
    client.api.base_url = switch.http
    return client


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The twilio library blocks: run it off the loop that serves the app."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` (run off the loop) until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def trunk_callee(
    switch: SwitchProcess,
    workdir,
    behaviour: str,
    tone: float | None = None,
    calls: int = 1,
    **options: Any,
) -> AsyncIterator[sipp.Sipp]:
    """The SIPp party behind the trunk (``sipp.callee``, for ``calls`` calls), with an
    RTP peer sending ``tone``; both stopped when the block ends."""
    audio = RtpPeer(tone)
    await audio.start()
    peer = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee(behaviour, rtp_port=audio.port, **options),
        port=switch.trunk_port,
    )
    peer.calls = calls
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
        audio.close()


@bounded(60)
async def test_created_call_is_answered_runs_its_document_and_reports_every_event(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    app_server.routes["/api-voice"] = '<Response><Pause length="1"/><Hangup/></Response>'
    app_server.routes["/status"] = "<Response/>"
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "answer", tone=1000, ring_ms=300) as callee:
        created = await call(
            client.calls.create,
            to="(555) 123-0001",
            from_=NUMBER,
            url=app_server.url("/api-voice"),
            status_callback=app_server.url("/status"),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
        )
        assert SID.match(created.sid)
        assert created.status == "queued"
        assert created.direction == "outbound-api"
        assert created.to == CALLEE and created._from == NUMBER
        assert created.to_formatted == "(555) 123-0001"
        await callee.finish(20)
    (voice,) = await app_server.wait_for("/api-voice")
    assert voice.params["Direction"] == "outbound-api"
    assert voice.params["CallStatus"] == "in-progress"
    assert voice.params["CallSid"] == created.sid
    assert (voice.params["From"], voice.params["To"]) == (NUMBER, CALLEE)
    received = callee.messages().received()
    assert received[0].startswith(f"INVITE sip:{CALLEE}@")
    assert any(m.startswith("BYE ") for m in received)
    statuses = await app_server.wait_for("/status", 4)
    assert [s.params["CallStatus"] for s in statuses] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [s.params["SequenceNumber"] for s in statuses] == ["0", "1", "2", "3"]
    assert all(s.params["CallSid"] == created.sid for s in statuses)
    assert int(statuses[-1].params["CallDuration"]) >= 1
    ended = await until(
        lambda: (c := client.calls(created.sid).fetch()).status == "completed" and c
    )
    assert ended.direction == "outbound-api"
    assert int(ended.duration) >= 1
    assert ended.start_time is not None and ended.end_time is not None
    listed = await call(client.calls.list, to=CALLEE, status="completed")
    assert created.sid in [c.sid for c in listed]


@bounded(40)
async def test_twiml_runs_without_a_url_and_send_digits_go_first(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "answer") as callee:
        created = await call(
            client.calls.create,
            to=CALLEE,
            from_=NUMBER,
            twiml="<Response><Hangup/></Response>",
            send_digits="1#",
        )
        await callee.finish(20)
    assert any(m.startswith("BYE ") for m in callee.messages().received())
    assert app_server.requests == []  # nothing was fetched
    ended = await until(
        lambda: (c := client.calls(created.sid).fetch()).status != "in-progress" and c
    )
    assert ended.status == "completed"


@bounded(40)
async def test_notifications_tell_what_was_not_carried_out(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "busy") as callee:
        created = await call(
            client.calls.create,
            to=CALLEE,
            from_=NUMBER,
            twiml="<Response/>",
            machine_detection="Enable",
        )
        await callee.finish(20)
    notes = await call(client.calls(created.sid).notifications.list)
    assert [(n.error_code, n.log) for n in notes] == [("12200", "1")]
    assert "MachineDetection" in notes[0].message_text
    assert notes[0].call_sid == created.sid
    await until(lambda: client.calls(created.sid).fetch().status == "busy")


@bounded(40)
async def test_cancel_while_ringing_sends_cancel_and_reports_canceled(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    app_server.routes["/status"] = "<Response/>"
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "ring") as callee:
        created = await call(
            client.calls.create,
            to=CALLEE,
            from_=NUMBER,
            url=app_server.url("/never"),
            status_callback=app_server.url("/status"),
        )
        await until(lambda: client.calls(created.sid).fetch().status == "ringing")
        updated = await call(client.calls(created.sid).update, status="canceled")
        assert updated.sid == created.sid
        await callee.finish(20)
    assert any(m.startswith("CANCEL ") for m in callee.messages().received())
    (completed,) = await app_server.wait_for("/status")
    assert completed.params["CallStatus"] == "canceled"
    assert completed.params["CallDuration"] == "0"
    ended = await until(lambda: (c := client.calls(created.sid).fetch()).status == "canceled" and c)
    assert ended.duration == "0"
    assert app_server.hits("/never") == []
    with pytest.raises(TwilioRestException) as raised:
        await call(client.calls(created.sid).update, status="completed")
    assert (raised.value.status, raised.value.code) == (400, 21220)


@bounded(40)
async def test_hang_up_a_live_call_sends_bye(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    app_server.routes["/api-voice"] = '<Response><Pause length="30"/></Response>'
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "answer") as callee:
        created = await call(
            client.calls.create, to=CALLEE, from_=NUMBER, url=app_server.url("/api-voice")
        )
        await app_server.wait_for("/api-voice")
        live = await call(client.calls(created.sid).fetch)
        assert live.status == "in-progress"
        assert live.duration is None and live.end_time is None
        await call(client.calls(created.sid).update, status="completed")
        await callee.finish(10)
    assert any(m.startswith("BYE ") for m in callee.messages().received())
    await until(lambda: client.calls(created.sid).fetch().status == "completed")


@bounded(40)
async def test_update_with_twiml_replaces_the_running_document(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    app_server.routes["/api-voice"] = '<Response><Pause length="30"/></Response>'
    app_server.routes["/next"] = "<Response><Hangup/></Response>"
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "answer") as callee:
        created = await call(
            client.calls.create, to=CALLEE, from_=NUMBER, url=app_server.url("/api-voice")
        )
        await app_server.wait_for("/api-voice")
        await call(
            client.calls(created.sid).update,
            twiml=f"<Response><Redirect>{app_server.url('/next')}</Redirect></Response>",
        )
        (following,) = await app_server.wait_for("/next")
        await callee.finish(10)
    assert following.params["CallSid"] == created.sid
    assert following.params["Direction"] == "outbound-api"


@bounded(60)
async def test_redirect_in_the_middle_of_a_ringing_dial(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    first = sipp.Sipp(workdir, "first", sipp.callee("ring"))
    second = sipp.Sipp(workdir, "second", sipp.callee("ring"))
    targets = "".join(
        f'<Sip statusCallback="/child">sip:callee@127.0.0.1:{p.port}</Sip>' for p in (first, second)
    )
    app_server.routes["/voice"] = (
        f'<Response><Dial action="/action" timeout="30">{targets}</Dial></Response>'
    )
    app_server.routes["/elsewhere"] = "<Response><Hangup/></Response>"
    app_server.routes["/child"] = "<Response/>"
    audio = RtpPeer(None)
    await audio.start()
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, audio.port))
    client = client_for(switch)
    await first.start()
    await second.start()
    try:
        await caller.start(switch.target())
        (voice,) = await app_server.wait_for("/voice")
        sid = voice.params["CallSid"]
        children = await until(
            lambda: (
                [c for c in client.calls.list(parent_call_sid=sid) if c.status == "ringing"]
                if len(client.calls.list(parent_call_sid=sid, status="ringing")) == 2
                else None
            )
        )
        assert {c.parent_call_sid for c in children} == {sid}
        assert {c.direction for c in children} == {"outbound-dial"}
        await call(client.calls(sid).update, url=app_server.url("/elsewhere"), method="POST")
        (redirected,) = await app_server.wait_for("/elsewhere")
        await caller.finish(20)
        await first.finish(10)
        await second.finish(10)
    finally:
        for peer in (caller, first, second):
            await peer.stop()
        audio.close()
    assert redirected.params["CallSid"] == sid
    for peer in (first, second):
        assert any(m.startswith("CANCEL ") for m in peer.messages().received())
    assert app_server.hits("/action") == []
    callbacks = await app_server.wait_for("/child", 2)
    assert {c.params["CallStatus"] for c in callbacks} == {"canceled"}
    assert any(m.startswith("BYE ") for m in caller.messages().received())
    records = await until(
        lambda: len(found := client.calls.list(parent_call_sid=sid)) == 2 and found
    )
    assert {r.status for r in records} == {"canceled"}


@bounded(40)
async def test_cancel_a_ringing_inbound_call(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """An inbound call kept unanswered by <Dial answerOnBridge>: Status=canceled
    refuses it with 487, its target is cancelled, and it ends ``canceled``."""
    ringing = sipp.Sipp(workdir, "ringing", sipp.callee("ring"))
    app_server.routes["/voice"] = (
        '<Response><Dial answerOnBridge="true" timeout="30">'
        f"<Sip>sip:callee@127.0.0.1:{ringing.port}</Sip></Dial></Response>"
    )
    audio = RtpPeer(None)
    await audio.start()
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, audio.port, expect_final=487))
    client = client_for(switch)
    await ringing.start()
    try:
        await caller.start(switch.target())
        (voice,) = await app_server.wait_for("/voice")
        sid = voice.params["CallSid"]
        await until(lambda: client.calls.list(parent_call_sid=sid, status="ringing"))
        assert (await call(client.calls(sid).fetch)).status == "ringing"
        await call(client.calls(sid).update, status="canceled")
        await caller.finish(20)
        await ringing.finish(10)
    finally:
        for peer in (caller, ringing):
            await peer.stop()
        audio.close()
    assert any(m.startswith("CANCEL ") for m in ringing.messages().received())
    ended = await until(lambda: (c := client.calls(sid).fetch()).status != "ringing" and c)
    assert ended.status == "canceled"


@bounded(40)
async def test_cancel_one_dial_child_makes_dial_call_status_canceled(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    ringing = sipp.Sipp(workdir, "ringing", sipp.callee("ring"))
    app_server.routes["/voice"] = (
        '<Response><Dial action="/action" timeout="30">'
        f"<Sip>sip:callee@127.0.0.1:{ringing.port}</Sip></Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    audio = RtpPeer(None)
    await audio.start()
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, audio.port))
    client = client_for(switch)
    await ringing.start()
    try:
        await caller.start(switch.target())
        (voice,) = await app_server.wait_for("/voice")
        sid = voice.params["CallSid"]
        (child,) = await until(lambda: client.calls.list(parent_call_sid=sid, status="ringing"))
        await call(client.calls(child.sid).update, status="canceled")
        (action,) = await app_server.wait_for("/action")
        await caller.finish(20)
        await ringing.finish(10)
    finally:
        for peer in (caller, ringing):
            await peer.stop()
        audio.close()
    assert action.params["DialCallStatus"] == "canceled"
    assert action.params["DialCallSid"] == child.sid
    assert any(m.startswith("CANCEL ") for m in ringing.messages().received())


@bounded(60)
async def test_record_makes_a_dual_recording_of_the_api_call(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Channel 1: what the called party said (its 1000 Hz); channel 2: what it heard
    (the document's 600 Hz prompt)."""
    app_server.routes["/tone.wav"] = serve_wav(sine(600, 1.5))
    app_server.routes["/api-voice"] = "<Response><Play>/tone.wav</Play><Hangup/></Response>"
    app_server.routes["/rec"] = "<Response/>"
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "answer", tone=1000) as callee:
        created = await call(
            client.calls.create,
            to=CALLEE,
            from_=NUMBER,
            url=app_server.url("/api-voice"),
            record=True,
            recording_status_callback=app_server.url("/rec"),
        )
        await callee.finish(20)
    (done,) = await app_server.wait_for("/rec", timeout=30)
    params = done.params
    assert params["CallSid"] == created.sid
    assert params["RecordingStatus"] == "completed"
    assert params["RecordingSource"] == "OutboundAPI"
    assert params["RecordingChannels"] == "2"
    recordings = RecordingsClient(switch.http, ACCOUNT_SID, AUTH_TOKEN)
    wav = await recordings.wav(params["RecordingUrl"])
    assert wav.channels == 2
    assert peak_tone_share(wav.channel(1), 1000) > 0.5
    assert peak_tone_share(wav.channel(2), 600) > 0.5
    listed = await call(client.recordings.list, call_sid=created.sid)
    assert [r.sid for r in listed] == [params["RecordingSid"]]


@bounded(40)
async def test_calls_created_faster_than_the_rate_wait_as_queued(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The test switch runs the default 10 calls/s: four creations at once go out
    about 100 ms apart, the later ones ``queued`` meanwhile."""
    callee = sipp.Sipp(workdir, "callee", sipp.callee("busy"), port=switch.trunk_port)
    callee.calls = 4
    await callee.start()
    client = client_for(switch)
    try:
        created = [
            await call(client.calls.create, to=CALLEE, from_=NUMBER, twiml="<Response/>", timeout=5)
            for _ in range(4)
        ]
        early = await call(client.calls(created[-1].sid).fetch)
        await callee.finish(20)
    finally:
        await callee.stop()
    assert early.status == "queued"
    invites = [
        t
        for t, way, m in sipp_fork.timeline(callee)
        if way == "received" and m.startswith("INVITE")
    ]
    assert len(invites) == 4
    gaps = [(b - a).total_seconds() for a, b in zip(invites, invites[1:], strict=False)]
    assert min(gaps) > 0.07, gaps
    for sid in (c.sid for c in created):
        ended = await until(lambda sid=sid: (c := client.calls(sid).fetch()).status == "busy" and c)
        assert ended.duration == "0"


def sine(freq: float, seconds: float, rate: int = 8000) -> npt.NDArray[np.int16]:
    index = np.arange(int(seconds * rate))
    return (np.sin(2 * math.pi * freq * index / rate) * 0.5 * 32767).astype(np.int16)


def serve_wav(samples: npt.NDArray[np.int16]) -> Callable[[web.Request], web.Response]:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(samples.astype("<i2").tobytes())
    body = buffer.getvalue()
    return lambda request: web.Response(body=body, content_type="audio/wav")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"to": "", "from_": NUMBER, "url": "http://x.test/"}, 400, 21201),
        ({"to": CALLEE, "from_": "", "url": "http://x.test/"}, 400, 21213),
        ({"to": "not a number", "from_": NUMBER, "url": "http://x.test/"}, 400, 21211),
        ({"to": "client:nobody", "from_": NUMBER, "url": "http://x.test/"}, 400, 21211),
        ({"to": "sip:@@", "from_": NUMBER, "url": "http://x.test/"}, 400, 21211),
        ({"to": CALLEE, "from_": "+15550009999", "url": "http://x.test/"}, 400, 21210),
        ({"to": CALLEE, "from_": "client:alice", "url": "http://x.test/"}, 400, 21210),
        ({"to": CALLEE, "from_": NUMBER}, 400, 21205),
        ({"to": CALLEE, "from_": NUMBER, "url": "ftp://x.test/"}, 400, 21205),
        ({"to": CALLEE, "from_": NUMBER, "url": "http://x.test/", "method": "PUT"}, 400, 21209),
        ({"to": CALLEE, "from_": NUMBER, "twiml": "<Response><Say>"}, 400, 12100),
        (
            {
                "to": CALLEE,
                "from_": NUMBER,
                "url": "http://x.test/",
                "status_callback_event": ["exploded"],
            },
            400,
            21626,
        ),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(map(str, v.values()))[:40],
)
async def test_creation_errors_are_twilio_errors(
    switch: SwitchProcess, kwargs: dict[str, Any], status: int, code: int
) -> None:
    client = client_for(switch)
    with pytest.raises(TwilioRestException) as raised:
        await call(client.calls.create, **kwargs)
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.msg  # names what is wrong
    assert await call(lambda: [c for c in client.calls.list() if c.status == "queued"]) == []


async def test_wrong_token_is_20003_and_unknown_call_is_20404(switch: SwitchProcess) -> None:
    with pytest.raises(TwilioRestException) as raised:
        await call(client_for(switch, "wrong-token").calls("CA" + "0" * 32).fetch)
    assert (raised.value.status, raised.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as raised:
        await call(
            client_for(switch, "wrong-token").calls.create,
            to=CALLEE,
            from_=NUMBER,
            twiml="<Response/>",
        )
    assert (raised.value.status, raised.value.code) == (401, 20003)
    with pytest.raises(TwilioRestException) as raised:
        await call(client_for(switch).calls("CA" + "0" * 32).fetch)
    assert (raised.value.status, raised.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as raised:
        await call(client_for(switch).calls("CA" + "0" * 32).update, status="completed")
    assert (raised.value.status, raised.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as raised:
        await call(client_for(switch).calls("not-a-sid").fetch)
    assert (raised.value.status, raised.value.code) == (404, 20404)


@bounded(40)
async def test_list_pages_newest_first_and_delete_removes_an_ended_call(
    switch: SwitchProcess, workdir
) -> None:
    client = client_for(switch)
    async with trunk_callee(switch, workdir, "busy", calls=5) as callee:
        for _ in range(5):
            await call(client.calls.create, to=CALLEE, from_=NUMBER, twiml="<Response/>")
        await callee.finish(20)
    await until(
        lambda: not client.calls.list(status="queued") and not client.calls.list(status="ringing")
    )
    everything = await call(client.calls.list)
    assert len(everything) >= 5
    starts = [c.start_time for c in everything]
    assert starts == sorted(starts, reverse=True)
    paged = await call(client.calls.list, page_size=2)
    assert [c.sid for c in paged] == [c.sid for c in everything]
    page = await call(client.calls.page, page_size=2)
    assert page.next_page_url is not None
    before = await call(client.calls.list, start_time_before=everything[-1].start_time)
    assert everything[-1].sid not in [c.sid for c in before]
    victim = everything[-1].sid
    assert await call(client.calls(victim).delete) is True
    with pytest.raises(TwilioRestException) as raised:
        await call(client.calls(victim).fetch)
    assert raised.value.code == 20404
