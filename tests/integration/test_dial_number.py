"""<Dial><Number> through a trunk, end to end: SIPp trunk caller and callee, a real
webhook app, RTP parties that send distinct tones. Each test asserts on what the
peers saw (SIP messages, decoded audio) and what the app received."""

from __future__ import annotations

import asyncio
import re

import pytest

from media.analysis import tone_power
from tests.integration.conftest import NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
SID = re.compile(r"^CA[0-9a-f]{32}$")


def dial(body: str, **attrs: str) -> str:
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return f"<Response><Dial {attributes}>{body}</Dial></Response>"


async def run_call(
    switch: SwitchProcess,
    workdir,
    callee_scenario: str | None,
    caller_scenario: str,
) -> tuple[sipp.Sipp | None, sipp.Sipp]:
    """One call (`sipp.run_call`): the caller gets 60 s, the callee 30 s more."""
    caller, callee = await sipp.run_call(
        switch, workdir, caller_scenario, callee_scenario, timeout=60, callee_wait=30
    )
    return callee, caller


def _dominant(samples, freqs: list[float]) -> float:
    powers = {f: tone_power(samples, 8000, f) for f in freqs}
    return max(powers, key=lambda f: powers[f])


async def test_answered_call_is_bridged_both_ways(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = dial(f"<Number>{CALLEE}</Number>", action="/action", timeout="10")
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    try:
        callee, caller = await run_call(
            switch,
            workdir,
            sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=800, hangup_after_ms=2500),
            sipp.caller(NUMBER, caller_audio.port),
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    # The callee was INVITEd with the caller's number as From.
    invite = callee.messages().received()[0]
    assert invite.startswith(f"INVITE sip:{CALLEE}@127.0.0.1:{switch.trunk_port}")
    assert re.search(r"^From:.*sip:\+14155550100@", invite, re.M | re.I), invite
    # Audio went both ways: each party heard the other's tone.
    heard_by_caller = caller_audio.audio()
    heard_by_callee = callee_audio.audio()
    assert tone_power(heard_by_callee, 8000, 600) > 10 * tone_power(heard_by_callee, 8000, 1000)
    assert tone_power(heard_by_caller, 8000, 1000) > 0.1 * tone_power(heard_by_caller, 8000, 440)
    # The caller heard ringback (us: 440+480 Hz) before the answer.
    first_second = heard_by_caller[: 8000 * 1]
    assert _dominant(first_second, [440, 600, 1000]) == 440
    (action,) = app_server.hits("/action")
    params = action.params
    assert params["DialCallStatus"] == "completed"
    assert SID.match(params["DialCallSid"])
    assert params["DialBridged"] == "true"
    assert 1 <= int(params["DialCallDuration"]) <= 4
    assert params["CallStatus"] == "in-progress"
    (voice,) = app_server.hits("/voice")
    assert voice.params["From"] == "+14155550100"
    assert voice.params["To"] == NUMBER
    assert voice.params["Direction"] == "inbound"
    assert voice.params["CallStatus"] == "ringing"
    assert voice.params["ApiVersion"] == "2010-04-01"
    assert voice.params["CallerName"] == "Test Caller"
    assert SID.match(voice.params["CallSid"])
    assert params["CallSid"] == voice.params["CallSid"]


@pytest.mark.parametrize(
    "behaviour,status", [("busy", "busy"), ("decline", "busy"), ("error", "failed")]
)
async def test_refused_callee_reports_status(switch, app_server, workdir, behaviour, status):
    app_server.routes["/voice"] = dial(f"<Number>{CALLEE}</Number>", action="/action")
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        await run_call(switch, workdir, sipp.callee(behaviour), sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == status
    assert action.params["DialBridged"] == "false"


async def test_no_answer_at_timeout_cancels_callee(switch, app_server, workdir):
    app_server.routes["/voice"] = dial(f"<Number>{CALLEE}</Number>", action="/action", timeout="5")
    app_server.routes["/action"] = "<Response><Say>Nobody answered.</Say></Response>"
    peer = RtpPeer(None)
    await peer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        callee, _ = await run_call(
            switch, workdir, sipp.callee("ring"), sipp.caller(NUMBER, peer.port)
        )
    finally:
        peer.close()
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "no-answer"
    # timeout 5 s + grace 1 s (the test config): the CANCEL came after about 6 s.
    elapsed = loop.time() - started
    assert 5.5 < elapsed < 15
    assert any(m.startswith("CANCEL ") for m in callee.messages().received())


async def test_unroutable_number_fails_and_action_runs(switch, app_server, workdir):
    app_server.routes["/voice"] = dial(
        f'<Number byoc="no-such-trunk">{CALLEE}</Number>', action="/action"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        await run_call(switch, workdir, None, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "failed"


async def test_time_limit_ends_the_bridge(switch, app_server, workdir):
    app_server.routes["/voice"] = dial(
        f"<Number>{CALLEE}</Number>", action="/action", timeLimit="2"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    peer, far = RtpPeer(None), RtpPeer(None)
    await peer.start()
    await far.start()
    try:
        callee, _ = await run_call(
            switch,
            workdir,
            sipp.callee("answer", rtp_port=far.port),
            sipp.caller(NUMBER, peer.port),
        )
    finally:
        peer.close()
        far.close()
    # The callee got a BYE from the switch at the limit (it never hangs up itself).
    assert any(m.startswith("BYE ") for m in callee.messages().received())
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert 1 <= int(action.params["DialCallDuration"]) <= 3


async def test_answer_on_bridge_keeps_caller_unanswered_until_callee_answers(
    switch, app_server, workdir
):
    app_server.routes["/voice"] = dial(f"<Number>{CALLEE}</Number>", answerOnBridge="true")
    peer, far = RtpPeer(500), RtpPeer(1000)
    await peer.start()
    await far.start()
    try:
        callee, caller = await run_call(
            switch,
            workdir,
            sipp.callee("answer", rtp_port=far.port, ring_ms=1500, hangup_after_ms=1500),
            sipp.caller(NUMBER, peer.port),
        )
    finally:
        peer.close()
        far.close()
    starts = caller.messages().received_starts()
    final = [s for s in starts if s.startswith("SIP/2.0 2")]
    assert final and starts.index(final[0]) > starts.index("SIP/2.0 180 Ringing")
    # The 200 to the caller was sent only after the callee's 200 (ring 1.5 s).
    assert caller_answer_delay(caller) >= 1.4


def caller_answer_delay(caller: sipp.Sipp) -> float:
    """Seconds between the caller's INVITE and the 200 it received (from SIPp's log)."""
    times = re.findall(
        r"-{10,} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
        r"(?:UDP|TCP) message (sent|received)[^\n]*\n\n?(\S+ \S+)",
        caller.messages().text,
    )
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        return datetime.strptime(stamp.replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f")

    invite = next(parse(t) for t, d, line in times if d == "sent" and line.startswith("INVITE"))
    ok = next(
        parse(t) for t, d, line in times if d == "received" and line.startswith("SIP/2.0 200")
    )
    return (ok - invite).total_seconds()


async def test_answer_on_bridge_busy_releases_caller_with_486(switch, app_server, workdir):
    app_server.routes["/voice"] = dial(f"<Number>{CALLEE}</Number>", answerOnBridge="true")
    peer = RtpPeer(None)
    await peer.start()
    try:
        await run_call(
            switch, workdir, sipp.callee("busy"), sipp.caller(NUMBER, peer.port, expect_final=486)
        )
    finally:
        peer.close()


async def test_ring_tone_is_heard_as_early_media(switch, app_server, workdir):
    # answerOnBridge + ringTone="uk": 183 with the UK ringback (400+450 Hz) as early media.
    app_server.routes["/voice"] = dial(
        f"<Number>{CALLEE}</Number>", answerOnBridge="true", ringTone="uk"
    )
    peer, far = RtpPeer(None), RtpPeer(1000)
    await peer.start()
    await far.start()
    try:
        _, caller = await run_call(
            switch,
            workdir,
            sipp.callee("answer", rtp_port=far.port, ring_ms=2500, hangup_after_ms=500),
            sipp.caller(NUMBER, peer.port),
        )
    finally:
        peer.close()
        far.close()
    assert "SIP/2.0 183 Session Progress" in caller.messages().received_starts()
    early = peer.audio()[: 8000 * 2]
    assert len(early) >= 8000
    uk = tone_power(early, 8000, 400) + tone_power(early, 8000, 450)
    us = tone_power(early, 8000, 440) + tone_power(early, 8000, 480)
    assert uk > 10 * us
