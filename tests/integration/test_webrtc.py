"""Browsers as clients, with an aiortc peer as the browser: SIP over WebSocket
(RFC 7118) with digest auth, ICE, DTLS-SRTP and opus, against the real switch,
SIPp callers and callees, and decoded audio both ways.

The peer (tests/support/ws_peer.py) registers with a ``.invalid`` Contact as
browser SIP stacks do, so every request the switch sends it must come back over
its own WebSocket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from media.analysis import tone_power
from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    free_tcp_port,
    running,
)
from tests.support import sipp
from tests.support.certs import TestCa
from tests.support.recording_checks import RecordingsClient, peak_tone_share, tone_share
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_reg import DOMAIN, require_tool
from tests.support.webrtc_switch import WebRtcSwitch
from tests.support.ws_peer import SipMsg, WsPhone, with_telephone_event

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CLIENTS = {"alice": "alice-password", "bob": "bob-password"}
CALLEE = "+14155550111"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WebRtcSwitch]:
    handle = WebRtcSwitch.create(tmp_path_factory.mktemp("switch"), app_server.base, CLIENTS)
    async with running(handle):
        yield handle


@pytest_asyncio.fixture(loop_scope="module")
async def alice(switch: WebRtcSwitch) -> AsyncIterator[WsPhone]:
    phone = switch.phone("alice", CLIENTS["alice"])
    await phone.connect()
    response = await phone.register()
    assert response.status == 200, response.start
    yield phone
    await phone.close()


def dial_client(identity: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f'<Response><Dial timeout="10"{extra}><Client>{identity}</Client></Dial></Response>'


async def next_invite(phone: WsPhone, timeout: float = 15.0) -> SipMsg:
    return await asyncio.wait_for(phone.incoming.get(), timeout)


async def test_a_caller_reaches_a_browser_and_they_hear_each_other(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="10" action="/action">'
        '<Client>alice?X-Custom=1234<Parameter name="foo" value="bar"/></Client>'
        "</Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    async with switch.calling(workdir, hangup_after_ms=4000) as (caller, caller_audio):
        invite = await next_invite(alice)
        # Late offer: the switch's INVITE has no SDP, the browser offers in its 200.
        assert invite.body == "", invite.body
        assert invite.start.startswith(f"INVITE sip:{alice.contact_user}@127.0.0.1:")
        # <Parameter> and RestComm's ?X-Custom= arrive as headers the browser reads.
        assert (invite.header("X-foo"), invite.header("X-Custom")) == ("bar", "1234")
        call = await alice.answer(invite)
        assert await call.listener.hears(600, timeout=10), call.listener.dominant()
        await caller.finish(30)
        await asyncio.wait_for(call.ended.wait(), 10)
    assert call.end_reason == "remote BYE"
    heard = caller_audio.audio()
    assert tone_power(heard, 8000, 1000) > 10 * tone_power(heard, 8000, 600)
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"


async def test_a_dual_recording_keeps_the_browser_on_its_own_channel(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    app_server.routes["/voice"] = dial_client(
        "alice", action="/action", record="record-from-answer-dual"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    async with switch.calling(workdir, hangup_after_ms=4000) as (caller, _):
        call = await alice.answer(await next_invite(alice))
        assert await call.connected()
        await caller.finish(30)
    (action,) = await app_server.wait_for("/action")
    recordings = RecordingsClient(switch.http, ACCOUNT_SID, AUTH_TOKEN)
    wav = await recordings.wav(action.params["RecordingUrl"])
    assert wav.channels == 2
    # Channel 1 the caller (600 Hz), channel 2 the browser (1000 Hz), each alone.
    for channel, present, absent in ((1, 600, 1000), (2, 1000, 600)):
        samples = wav.channel(channel)
        assert tone_share(samples, present) > 0.5, (channel, tone_share(samples, present))
        assert peak_tone_share(samples, absent) < 0.05, (channel, absent)


async def call_out(
    switch: WebRtcSwitch, alice: WsPhone, workdir: Path, sdp_edit: object = None
) -> tuple[SipMsg, RtpPeer]:
    """Alice calls CALLEE through her app's <Dial><Number>: a SIPp callee sending 600 Hz
    answers and hangs up after 4 s. Returns the 200 to her INVITE and the callee's RTP
    party, after checking she heard the callee."""
    callee_audio = RtpPeer(600)
    await callee_audio.start()
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee("answer", rtp_port=callee_audio.port, hangup_after_ms=4000),
        port=switch.trunk_port,
    )
    await callee.start()
    try:
        call, response = await alice.dial(CALLEE, sdp_edit=sdp_edit)
        assert response.status == 200, response.start
        assert await call.listener.hears(600, timeout=10), call.listener.dominant()
        await callee.finish(30)
        await asyncio.wait_for(call.ended.wait(), 10)
    finally:
        callee_audio.close()
        await callee.stop()
    return response, callee_audio


async def test_a_browser_calls_out_through_its_app(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    app_server.routes["/client"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    response, callee_audio = await call_out(switch, alice, workdir)
    assert "a=fingerprint:" in response.body and "a=candidate" in response.body
    # aiortc offers opus first; [webrtc] codecs answers with PCMU first.
    assert answered_formats(response.body)[0] == "0", response.body
    heard = callee_audio.audio()
    assert tone_power(heard, 8000, 1000) > 10 * tone_power(heard, 8000, 600)
    (client,) = app_server.hits("/client")
    assert client.params["From"] == "client:alice"
    assert client.params["To"] == CALLEE


def answered_formats(sdp: str) -> list[str]:
    (line,) = [x for x in sdp.splitlines() if x.startswith("m=audio ")]
    return line.split()[3:]


def opus_only(sdp: str) -> str:
    """An offer of opus alone, as a browser configured for it would send."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("m=audio "):
            line = " ".join(line.split(" ")[:3] + ["96"])
        elif line.startswith("a=rtpmap:") and not line.startswith("a=rtpmap:96 "):
            continue
        lines.append(line)
    return "\r\n".join(lines)


async def test_an_opus_only_browser_gets_narrowband_opus_both_ways(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    """Opus runs at the bridge's 8 kHz and says so in the answer (RFC 7587 section
    6.1); the tones still decode at both ends."""
    app_server.routes["/client"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    response, callee_audio = await call_out(switch, alice, workdir, sdp_edit=opus_only)
    assert answered_formats(response.body)[0] == "96", response.body
    (fmtp,) = [x for x in response.body.splitlines() if x.startswith("a=fmtp:96 ")]
    assert "maxplaybackrate=8000" in fmtp and "sprop-maxcapturerate=8000" in fmtp, fmtp
    heard = callee_audio.audio()
    assert tone_power(heard, 8000, 1000) > 10 * tone_power(heard, 8000, 600)


async def test_a_browsers_dtmf_reaches_gather_and_hangs_up_on_star(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    app_server.routes["/client"] = (
        '<Response><Gather numDigits="2" timeout="10" action="/gathered"/></Response>'
    )
    app_server.routes["/gathered"] = (
        f'<Response><Dial hangupOnStar="true" action="/dialled"><Number>{CALLEE}</Number>'
        "</Dial><Hangup/></Response>"
    )
    app_server.routes["/dialled"] = "<Response><Hangup/></Response>"
    callee_audio = RtpPeer(600)
    await callee_audio.start()
    callee = sipp.Sipp(
        workdir, "callee", sipp.callee("answer", rtp_port=callee_audio.port), port=switch.trunk_port
    )
    await callee.start()
    try:
        call, response = await alice.dial("+15005550123")
        assert response.status == 200, response.start
        assert await call.connected()
        for digit in "42":
            assert (await call.dtmf_info(digit)).status == 200
        (gathered,) = await app_server.wait_for("/gathered")
        assert gathered.params["Digits"] == "42"
        assert await call.listener.hears(600, timeout=10), call.listener.dominant()
        assert (await call.dtmf_info("*")).status == 200
        await callee.finish(15)  # the switch BYEd it: hangupOnStar ended the child
        (dialled,) = await app_server.wait_for("/dialled")
        await asyncio.wait_for(call.ended.wait(), 10)
    finally:
        callee_audio.close()
        await callee.stop()
    assert dialled.params["DialCallStatus"] == "completed"
    assert any(m.startswith("BYE ") for m in callee.messages().received())


async def test_digits_played_to_a_browser_arrive_as_rfc4733_events(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone
) -> None:
    """<Play digits> (the path of sendDigits) towards a browser leg: RFC 4733 events on
    the telephone-event the browser offered, at opus's 48 kHz clock."""
    app_server.routes["/client"] = (
        '<Response><Say>Hi.</Say><Pause length="1"/><Play digits="19#"/>'
        '<Pause length="1"/><Hangup/></Response>'
    )
    call, response = await alice.dial(CALLEE, sdp_edit=with_telephone_event)
    assert response.status == 200, response.start
    assert "telephone-event/48000" in response.body
    await asyncio.wait_for(call.ended.wait(), 20)  # <Hangup/>: the switch's BYE
    assert call.listener.digits == "19#"


async def test_a_whisper_plays_to_the_browser_before_the_bridge(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    """<Client url> runs its whisper on the browser's leg once it answers: the browser
    gets the whisper's digits (RFC 4733), and only then hears the caller."""
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="10" action="/action"><Client url="/whisper">alice</Client>'
        "</Dial></Response>"
    )
    app_server.routes["/whisper"] = '<Response><Play digits="19#"/><Pause length="1"/></Response>'
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    async with switch.calling(workdir, hangup_after_ms=6000) as (caller, _):
        call = await alice.answer(await next_invite(alice), sdp_edit=with_telephone_event)
        assert await call.listener.hears(600, timeout=15), call.listener.dominant()
        assert call.listener.digits == "19#"  # the whisper came first
        await caller.finish(20)
        await asyncio.wait_for(call.ended.wait(), 10)
    (whisper,) = app_server.hits("/whisper")
    assert whisper.params["Direction"] == "outbound-dial"
    assert whisper.params["To"] == "client:alice"
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"


async def test_a_browser_call_is_challenged_and_a_wrong_password_refused(
    switch: WebRtcSwitch, app_server: AppServer
) -> None:
    phone = WsPhone(switch.ws_url, "alice", "not-her-password", DOMAIN)
    await phone.connect()
    try:
        response = await phone.register()
        assert response.status == 403, response.start
        _, response = await phone.dial(CALLEE)
        assert response.status == 403, response.start
    finally:
        await phone.close()
    assert not app_server.hits("/client")


async def test_an_offer_without_a_fingerprint_gets_488(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone
) -> None:
    app_server.routes["/client"] = "<Response><Hangup/></Response>"

    def strip(sdp: str) -> str:
        return "".join(
            line + "\r\n" for line in sdp.splitlines() if not line.startswith("a=fingerprint")
        )

    _, response = await alice.dial(CALLEE, sdp_edit=strip)
    assert response.status == 488, response.start
    assert response.start == "SIP/2.0 488 DTLS Fingerprint Required"
    assert not app_server.hits("/client")


async def test_a_closed_socket_unregisters_and_ends_the_call(
    switch: WebRtcSwitch, app_server: AppServer, workdir: Path
) -> None:
    app_server.routes["/voice"] = dial_client("bob", action="/action")
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    bob = switch.phone("bob", CLIENTS["bob"])
    await bob.connect()
    assert (await bob.register()).status == 200
    async with switch.calling(workdir) as (caller, _):
        call = await bob.answer(await next_invite(bob))
        assert await call.listener.hears(600, timeout=10)
        await bob.close()  # the tab is closed: no BYE, only the socket goes
        await caller.finish(20)  # the switch hung the caller up (BYE after the action)
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"
    # Its registration went with the socket: dialling bob now finds nobody.
    assert switch.query("SELECT * FROM bindings WHERE identity = 'bob'") == []


async def test_a_browser_gone_while_ringing_ends_its_branch_at_once(
    switch: WebRtcSwitch, app_server: AppServer, workdir: Path
) -> None:
    """The INVITE it never answered gets 430 Flow Failed from the edge as the socket
    closes, and the branch is withdrawn: the Dial ends now (no-answer, as a tab closed
    while ringing is nobody answering), not at its timeout (10 s) or the INVITE's
    (32 s)."""
    app_server.routes["/voice"] = dial_client("bob", action="/action")
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    bob = switch.phone("bob", CLIENTS["bob"])
    await bob.connect()
    assert (await bob.register()).status == 200
    loop = asyncio.get_running_loop()
    async with switch.calling(workdir) as (caller, _):
        await next_invite(bob)
        closed = loop.time()
        await bob.close()
        (action,) = await app_server.wait_for("/action", timeout=9)
        elapsed = loop.time() - closed
        await caller.finish(20)
    assert elapsed < 3, elapsed
    assert action.params["DialCallStatus"] == "no-answer"
    assert action.params["DialBridged"] == "false"


async def fork_the_phone_answers(
    switch: WebRtcSwitch, app_server: AppServer, browser: WsPhone, workdir: Path, ring_ms: int
) -> SipMsg:
    """<Dial> the browser's identity and CALLEE at once; the SIPp callee answers after
    ``ring_ms``. Returns the CANCEL the browser got for its INVITE."""
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="10" action="/action"><Client>{browser.identity}</Client>'
        f"<Number>{CALLEE}</Number></Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    try:
        await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=2000 + ring_ms),
            sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=ring_ms),
            timeout=40,
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    invite = await next_invite(browser, timeout=1)
    assert invite.header("Call-ID") in browser.cancelled, [m.start for m in browser.received]
    (cancel,) = [m for m in browser.received if m.start.startswith("CANCEL ")]
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "completed"
    return cancel


async def test_a_fork_to_a_browser_and_a_phone_cancels_the_browser(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    cancel = await fork_the_phone_answers(switch, app_server, alice, workdir, ring_ms=1500)
    assert cancel.header("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'


async def test_a_browser_not_yet_ringing_is_cancelled_at_once_as_answered_elsewhere(
    switch: WebRtcSwitch, app_server: AppServer, workdir: Path
) -> None:
    """The phone answers before the browser sent anything (browser stacks send no 100
    over a WebSocket): the edge's 100 Trying lets the switch CANCEL now, with the
    Reason that says another phone answered, instead of a CANCEL of pjsua's own,
    without it, once the browser rings."""
    bob = switch.phone("bob", CLIENTS["bob"])
    bob.rings = False
    await bob.connect()
    assert (await bob.register()).status == 200
    try:
        cancel = await fork_the_phone_answers(switch, app_server, bob, workdir, ring_ms=300)
    finally:
        await bob.close()
    assert cancel.header("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'


async def test_a_browser_whose_media_never_starts_fails_its_branch(
    switch: WebRtcSwitch, app_server: AppServer, alice: WsPhone, workdir: Path
) -> None:
    app_server.routes["/voice"] = dial_client("alice", action="/action")
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    async with switch.calling(workdir) as (caller, _):
        call = await alice.answer(await next_invite(alice), media=False)
        await asyncio.wait_for(call.ended.wait(), 20)  # the switch's BYE
        await caller.finish(20)
    assert call.end_reason == "remote BYE"
    (action,) = await app_server.wait_for("/action")
    assert action.params["DialCallStatus"] == "failed"
    assert action.params["DialBridged"] == "false"
    assert "did not start within 10 s" in switch.log()


async def test_a_crlf_keepalive_gets_a_pong_and_keeps_the_socket(
    switch: WebRtcSwitch, alice: WsPhone
) -> None:
    """RFC 5626 section 3.5.1 pings, which SIP.js sends over WebSocket when asked to."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(switch.ws_url, protocols=("sip",)) as ws,
    ):
        await ws.send_str("\r\n\r\n")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.TEXT, "\r\n")
        assert not ws.closed
    assert (await alice.register()).status == 200


async def test_a_browser_registers_and_calls_over_wss(
    app_server: AppServer, tmp_path: Path
) -> None:
    """A wss: listener serves [sip] tls_certificate; a browser trusting its CA
    registers and calls through it, one that does not is refused at the handshake."""
    ca = TestCa(tmp_path / "ca")
    handle = WebRtcSwitch.create_wss(tmp_path, app_server.base, CLIENTS, ca)
    url = f"{handle.ws_url}any/path"
    app_server.routes["/client"] = "<Response><Say>Hello.</Say><Hangup/></Response>"
    async with running(handle):
        trusting = ssl.create_default_context(cafile=str(ca.path))
        phone = WsPhone(url, "alice", CLIENTS["alice"], DOMAIN, ssl=trusting)
        await phone.connect()
        try:
            assert (await phone.register()).status == 200
            call, response = await phone.dial(CALLEE)
            assert response.status == 200, response.start
            assert await call.connected()
            await asyncio.wait_for(call.ended.wait(), 15)  # <Hangup/>: the switch's BYE
        finally:
            await phone.close()
        stranger = WsPhone(url, "alice", CLIENTS["alice"], DOMAIN)
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await stranger.connect()
        await stranger.close()
        await handle.wait_idle()


async def test_a_socket_without_the_sip_subprotocol_is_refused(switch: WebRtcSwitch) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(switch.ws_url, protocols=("chat",))
        assert refused.value.status == 400
        async with session.get(switch.ws_url.replace("ws:", "http:")) as plain:
            assert plain.status == 400


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b"\xff\xfe\xfd", aiohttp.WSCloseCode.INVALID_TEXT), ("x" * 70_000, 1009)],
)
async def test_bad_frames_close_only_their_socket(
    switch: WebRtcSwitch, alice: WsPhone, frame: bytes | str, code: int
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(switch.ws_url, protocols=("sip",)) as ws,
    ):
        if isinstance(frame, bytes):
            # aiohttp will not send invalid UTF-8 as text: write the raw frame.
            await ws._writer.send_frame(frame, aiohttp.WSMsgType.TEXT)  # type: ignore[attr-defined]
        else:
            await ws.send_str(frame)
        message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == code
    # The switch and the other browsers go on.
    assert (await alice.register()).status == 200
    assert (await switch.health())["status"] == "ok"


async def test_a_hundred_browsers_register_at_once(switch: WebRtcSwitch) -> None:
    """A burst of browsers is accepted at once, not a few at a time (a listen backlog
    of 5 made most wait seconds for the kernel's SYN retries), and their REGISTERs
    share the edge's one connection into the engine. Five sources, within the
    per-source limits."""
    phones = [
        WsPhone(switch.ws_url, "bob", CLIENTS["bob"], DOMAIN, local_host=f"127.0.0.{20 + i % 5}")
        for i in range(100)
    ]
    started = asyncio.get_running_loop().time()
    try:

        async def register(phone: WsPhone) -> int:
            await phone.connect()
            # Expires 0: the whole round trip (challenge, digest), and no binding left.
            return (await phone.register(expires=0)).status

        statuses = await asyncio.gather(*(register(phone) for phone in phones))
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await asyncio.gather(*(phone.close() for phone in phones))
    assert statuses == [200] * 100
    assert elapsed < 3.0, elapsed


async def test_a_source_opening_many_sockets_is_throttled_alone(
    switch: WebRtcSwitch, alice: WsPhone
) -> None:
    """1000 idle sockets from one address: past [registrar] register_rate per second
    (burst twice that) and [sip] ws_per_source at once, it gets 503; others do not."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0), limit=0)
    opened: list[aiohttp.ClientWebSocketResponse] = []
    refused: list[int] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            try:
                opened.append(await session.ws_connect(switch.ws_url, protocols=("sip",)))
            except aiohttp.WSServerHandshakeError as error:
                assert error.headers is not None and error.headers.get("Retry-After") == "5"
                refused.append(error.status)

        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(one() for _ in range(1000)))
        elapsed = asyncio.get_running_loop().time() - started
        # The burst (twice register_rate, 20/s by default), plus what the rate refilled
        # while the 1000 attempts went on.
        allowed = 40 + 20 * elapsed + 1
        assert 40 <= len(opened) <= allowed, (len(opened), elapsed)
        assert set(refused) == {503} and len(refused) == 1000 - len(opened)
        # A browser elsewhere (127.0.0.1) is not affected.
        assert (await alice.register()).status == 200
        for ws in opened:
            await ws.close()


async def test_turn_from_ice_servers_gives_relayed_candidates(
    app_server: AppServer, tmp_path: Path
) -> None:
    """[webrtc] ice_servers: the switch's answers to browsers carry relayed candidates
    from the TURN server (coturn on loopback), and the page is told the same list."""
    require_tool("turnserver", "coturn")
    turn_port, relay_low = free_tcp_port(), 49200 + 100 * (os.getpid() % 50)
    turn = await asyncio.create_subprocess_exec(
        "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--lt-cred-mech",
        "--listening-ip=127.0.0.1", f"--listening-port={turn_port}", "--relay-ip=127.0.0.1",
        f"--min-port={relay_low}", f"--max-port={relay_low + 99}", "--realm=dialswitch.test",
        "--user=dialswitch:turn-secret", "--allow-loopback-peers", "--log-file=stdout",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    handle = WebRtcSwitch.create(tmp_path, app_server.base, CLIENTS)
    assert handle.config is not None
    handle.config.write_text(
        handle.config.read_text()
        + "\n[webrtc]\nice_servers = [\n"
        + f'  {{ urls = "turn:127.0.0.1:{turn_port}", username = "dialswitch",'
        + ' credential = "turn-secret" },\n]\n'
    )
    app_server.routes["/client"] = (
        '<Response><Say>Hello.</Say><Pause length="3"/><Hangup/></Response>'
    )
    try:
        async with running(handle):
            phone = handle.phone("alice", CLIENTS["alice"])
            await phone.connect()
            try:
                assert (await phone.register()).status == 200
                call, response = await phone.dial(CALLEE)
                assert response.status == 200, response.start
                relayed = [
                    line.split() for line in response.body.splitlines() if "typ relay" in line
                ]
                assert relayed, response.body
                # a=candidate:F 1 UDP PRIO 127.0.0.1 PORT typ relay: coturn's relay port
                assert all(relay_low <= int(c[5]) < relay_low + 100 for c in relayed), relayed
                assert await call.connected()
                await asyncio.wait_for(call.ended.wait(), 15)
            finally:
                await phone.close()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{handle.http}/phone/config.json") as page_config,
            ):
                servers = (await page_config.json())["ice_servers"]
            assert servers == [
                {
                    "urls": [f"turn:127.0.0.1:{turn_port}"],
                    "username": "dialswitch",
                    "credential": "turn-secret",
                }
            ]
            await handle.wait_idle()
    finally:
        turn.terminate()
        await turn.wait()


@pytest.mark.parametrize("taken", ["ws", "http"])
async def test_a_listener_port_in_use_stops_the_start_with_one_line(
    app_server: AppServer, tmp_path: Path, taken: str
) -> None:
    handle = WebRtcSwitch.create(tmp_path, app_server.base, CLIENTS)
    assert handle.config is not None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", handle.ws_port if taken == "ws" else handle.http_port))
        squatter.listen()
        switch = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switch",
            "--config",
            str(handle.config),
            cwd=Path(__file__).resolve().parents[2],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(switch.communicate(), 30)
    log = out.decode()
    assert switch.returncode == 1, log[-2000:]
    assert "ERROR dialswitch cannot start: [Errno 98]" in log and "address already in use" in log
    assert "Traceback" not in log
