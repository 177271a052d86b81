"""The browser phone (GET /phone, JsSIP) in Debian's headless Chromium against the real
switch: registration, calls both ways with SIPp peers and decoded audio, DTMF,
hang-ups from either side, a wrong password, and a fork another phone answers.

Chromium's fake microphone plays 1000 Hz; SIPp peers' RTP plays 600 Hz. Screenshots
of each state go to the test's tmp path (or $DIALSWITCH_ARTIFACTS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from media.analysis import tone_power
from tests.integration.conftest import NUMBER, AppServer, running
from tests.support import sipp, sipp_reg
from tests.support.browser import PhonePage, chromium, require_chromium
from tests.support.certs import TestCa
from tests.support.rtp_peer import RtpPeer
from tests.support.webrtc_switch import WebRtcSwitch

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CLIENTS = {"alice": "alice-password"}
CALLEE = "+14155550111"


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WebRtcSwitch]:
    handle = WebRtcSwitch.create(tmp_path_factory.mktemp("switch"), app_server.base, CLIENTS)
    async with running(handle):
        yield handle


@pytest_asyncio.fixture(loop_scope="module")
async def phone(switch: WebRtcSwitch, tmp_path: Path) -> AsyncIterator[PhonePage]:
    """alice's browser phone, registered."""
    async with chromium(tmp_path, tone_hz=1000) as browser:
        page = await PhonePage.open(browser, switch.http, "alice")
        await page.login("alice", CLIENTS["alice"])
        await page.wait_registered()
        yield page
        page.assert_no_page_errors()
        await page.close()


def heard_browser(audio: object) -> bool:
    """The peer's decoded audio carries the browser's 1000 Hz, not its own 600 Hz."""
    return bool(tone_power(audio, 8000, 1000) > 10 * tone_power(audio, 8000, 600))


async def test_a_caller_rings_the_page_and_they_hear_each_other(
    switch: WebRtcSwitch, app_server: AppServer, phone: PhonePage, workdir: Path
) -> None:
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="15" action="/action"><Client>alice</Client></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    async with switch.calling(workdir, hangup_after_ms=6000) as (caller, caller_audio):
        shown = await phone.wait_incoming(15)
        assert "+14155550100" in shown
        await phone.screenshot("incoming")
        await phone.answer()
        await phone.wait_call_state("in-call")
        await phone.wait_tone(600, timeout=10)
        await phone.screenshot("in-call")
        await caller.finish(30)  # the caller hangs up
        await phone.wait_call_state("ended", 10)
        await phone.screenshot("ended-by-caller")
    assert heard_browser(caller_audio.audio())
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"


async def test_the_page_calls_out_sends_dtmf_and_hangs_up(
    switch: WebRtcSwitch, app_server: AppServer, phone: PhonePage, workdir: Path
) -> None:
    app_server.routes["/client"] = (
        '<Response><Gather numDigits="2" timeout="15" action="/gathered"/></Response>'
    )
    app_server.routes["/gathered"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    callee_audio = RtpPeer(600)
    await callee_audio.start()
    callee = sipp.Sipp(
        workdir, "callee", sipp.callee("answer", rtp_port=callee_audio.port), port=switch.trunk_port
    )
    await callee.start()
    try:
        await phone.dial("+15005550123")
        await phone.wait_call_state("in-call", 15)
        await phone.press("42")  # RFC 4733 from Chromium
        (gathered,) = await app_server.wait_for("/gathered")
        assert gathered.params["Digits"] == "42"
        await phone.wait_tone(600, timeout=15)
        await phone.screenshot("calling-out")
        await phone.hangup()
        await callee.finish(15)  # it got the switch's BYE
        await phone.wait_call_state("ended")
    finally:
        callee_audio.close()
        await callee.stop()
    assert heard_browser(callee_audio.audio())
    (client,) = app_server.hits("/client")
    assert client.params["From"] == "client:alice"
    assert client.params["To"] == "+15005550123"


async def test_a_wrong_password_is_shown(switch: WebRtcSwitch, tmp_path: Path) -> None:
    async with chromium(tmp_path, tone_hz=1000) as browser:
        page = await PhonePage.open(browser, switch.http, "mallory")
        await page.login("alice", "not-her-password")
        text = await page.wait_message("auth")
        await page.screenshot("wrong-password")
        assert "Wrong identity or password" in text
        assert await page.registration_state() != "registered"
        await page.close()


async def test_a_fork_the_phone_answers_shows_answered_elsewhere(
    switch: WebRtcSwitch, app_server: AppServer, phone: PhonePage, workdir: Path
) -> None:
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="15" action="/action"><Client>alice</Client>'
        f"<Number>{CALLEE}</Number></Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(700)
    await caller_audio.start()
    await callee_audio.start()
    try:
        await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=5000),
            sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=2500),
            timeout=40,
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    text = await phone.wait_message("answered-elsewhere")
    await phone.screenshot("answered-elsewhere")
    assert "elsewhere" in text.lower()
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"


async def test_alices_phone_and_browser_ring_and_the_phone_answers(
    switch: WebRtcSwitch, app_server: AppServer, phone: PhonePage, workdir: Path
) -> None:
    """<Dial><Client>alice</Client> rings her SIP phone (SIPp) and her browser at once;
    the phone answers, and the browser's branch is cancelled: its page says so."""
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="15" action="/action"><Client>alice</Client></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    desk_audio = RtpPeer(700)
    await desk_audio.start()
    main, answer = sipp_reg.registered_uas(
        sipp_reg.register("alice", password=CLIENTS["alice"]),
        sipp.callee("answer", rtp_port=desk_audio.port, ring_ms=2500),
    )
    desk = sipp_reg.Peer(workdir, "desk-phone", main, ooc=answer)
    try:
        await desk.start(switch.target(), timeout_s=40)
        await sipp_reg.wait_registered(desk)  # or the call may ring the browser alone
        async with switch.calling(workdir, hangup_after_ms=5000) as (caller, _):
            assert "+14155550100" in await phone.wait_incoming(15)  # both ring
            text = await phone.wait_message("answered-elsewhere", 15)
            await phone.screenshot("phone-answered-elsewhere")
            await caller.finish(30)
        assert await desk.wait(20) == 0
    finally:
        desk_audio.close()
        await desk.stop()
        unregister = sipp_reg.register("alice", password=CLIENTS["alice"], contact="*", expires=0)
        await sipp_reg.Peer(workdir, "unregister", unregister).run(switch.target(), timeout=20)
    assert "elsewhere" in text.lower()
    received = desk.messages().received()
    assert any(m.startswith("ACK ") for m in received)  # the desk phone won
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"


async def test_the_page_registers_and_calls_over_wss(
    app_server: AppServer, tmp_path: Path, workdir: Path
) -> None:
    """JsSIP over a wss: listener (Chromium trusting the switch's certificate): it
    registers and calls out, and the callee hears its microphone."""
    ca = TestCa(tmp_path / "ca")
    handle = WebRtcSwitch.create_wss(tmp_path, app_server.base, CLIENTS, ca)
    assert handle.certificate is not None
    app_server.routes["/client"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    callee_audio = RtpPeer(600)
    await callee_audio.start()
    async with running(handle):
        callee = sipp.Sipp(
            workdir,
            "callee",
            sipp.callee("answer", rtp_port=callee_audio.port, hangup_after_ms=4000),
            port=handle.trunk_port,
        )
        await callee.start()
        try:
            async with chromium(tmp_path, trusted_certificates=[handle.certificate]) as browser:
                page = await PhonePage.open(browser, handle.http, "wss")
                await page.login("alice", CLIENTS["alice"], server=handle.ws_url)
                await page.wait_registered()
                await page.dial(CALLEE)
                await page.wait_call_state("in-call", 15)
                await page.wait_tone(600, timeout=15)
                await page.screenshot("in-call-over-wss")
                await callee.finish(30)  # the callee hangs up
                await page.wait_call_state("ended", 10)
                page.assert_no_page_errors()
                await page.close()
        finally:
            callee_audio.close()
            await callee.stop()
        await handle.wait_idle()
    assert heard_browser(callee_audio.audio())
