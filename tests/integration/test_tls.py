"""TLS signalling and SDES-SRTP media against real peers.

The switch listens on ``tls:`` with a certificate a test CA signed, trusts
that CA (``tls_ca``) for far ends, and keeps TLS 1.2+. baresip (Debian's) is
alice's phone over TLS with mandatory SRTP, and a TLS trunk's far end; small
TLS servers with bad certificates (an unknown CA, another name, expired)
stand in for carriers that must be refused. Debian's SIPp is built without
TLS ("To use a TLS transport you must compile SIPp with OpenSSL"), so SIPp
plays the plain-UDP side of each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import ssl
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from media.analysis import tone_power
from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    TlsSwitch,
    free_port_pair,
    free_tcp_port,
    running,
)
from tests.support import sipp, sipp_reg
from tests.support.baresip import Baresip
from tests.support.certs import Issued, TestCa
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_reg import Peer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ALICE = ("alice", "alice-secret-1")  # over TLS, srtp = "mandatory"
CAROL = ("carol", "carol-secret-1")  # plain UDP phone, srtp = "mandatory"
CALLEE = "+15551230001"  # the default trunk's SIPp callee
PLAIN_CALLEE = "+17905550100"  # routed to "srtp-only": SRTP mandatory, plain SIPp callee
CALL_ENDED = r"Call with \S+ terminated|: session closed: "
"""What baresip prints when a call ends (the second when the BYE's TLS connection
closes right after: the switch sends it to the phone's Contact)."""
BAD_TRUNKS = {  # number -> (trunk, what the switch must say about its certificate)
    "+17775550100": ("unknown-ca", "The certificate is untrusted"),
    "+17785550100": ("other-name", "does not match"),
    "+17795550100": ("expired", "The certificate has expired"),
}


class TrunkSwitch(TlsSwitch):
    far_ports: dict[str, int]
    """TLS far ends of the trunks that must be refused, by trunk name."""


def tls_tables(far_ports: dict[str, int], trunk_port: int, app: str) -> str:
    """The trunks and clients of this module's switch."""
    bad_trunks = "".join(
        f"""
[[trunks]]
name = "{name}"
uri = "sips:127.0.0.1:{far_ports[name]}"
prefixes = ["{number[:5]}"]
"""
        for number, (name, _) in BAD_TRUNKS.items()
    )
    return f"""
[[trunks]]
name = "srtp-only"
uri = "sip:127.0.0.1:{trunk_port}"
prefixes = ["+1790"]
srtp = "mandatory"
{bad_trunks}
[[clients]]
identity = "{ALICE[0]}"
password = "{ALICE[1]}"
voice_url = "{app}/client"
srtp = "mandatory"

[[clients]]
identity = "{CAROL[0]}"
password = "{CAROL[1]}"
voice_url = "{app}/client"
srtp = "mandatory"
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TrunkSwitch]:
    far_ports = {name: free_tcp_port() for name, _ in BAD_TRUNKS.values()}
    handle = TrunkSwitch.create(tmp_path_factory.mktemp("tls-switch"), app_server.base)
    handle.far_ports = far_ports
    assert handle.config is not None
    tables = tls_tables(far_ports, handle.trunk_port, app_server.base)
    handle.config.write_text(handle.config.read_text() + tables)
    async with running(handle):
        yield handle


def baresip_phone(workdir: Path, switch: TrunkSwitch, *, tone_hz: int) -> Baresip:
    """alice's phone: registered over TLS, SRTP mandatory, trusting the test CA."""
    own = switch.ca.issue("baresip")
    return Baresip(
        workdir,
        identity=ALICE[0],
        password=ALICE[1],
        registrar=f"127.0.0.1:{switch.tls_port};transport=tls",
        sip_port=free_port_pair(),
        tone_hz=tone_hz,
        tls=(own, switch.ca.path),
        mediaenc="srtp-mand",
    )


# ---- a phone over TLS with SRTP ---------------------------------------------------------


async def test_phone_over_tls_gets_srtp_and_both_tones(switch, app_server, workdir):
    """A trunk caller (plain RTP, 600 Hz) dials alice, registered over TLS with
    mandatory SRTP (1000 Hz): the INVITE reaches her over TLS offering RTP/SAVP
    with SDES keys, each side decodes the other's tone, and the dual recording
    has the caller on one channel and alice on the other."""
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="10" action="/action" record="record-from-answer-dual"'
        ' recordingStatusCallback="/recording"><Client>alice</Client></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    phone = baresip_phone(workdir, switch, tone_hz=1000)
    caller_audio = RtpPeer(600)
    await caller_audio.start()
    try:
        await phone.start()
        await phone.wait_for(r"registered successfully")
        caller = Peer(
            workdir, "caller", sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=4000)
        )
        await caller.start(switch.target(), timeout_s=40)
        (action,) = await app_server.wait_for("/action", timeout=20)
        assert await caller.wait(30) == 0, caller.failure(1)
        await phone.wait_for(CALL_ENDED)
    finally:
        caller_audio.close()
        code = await phone.stop()
    assert code == 0, phone.text()[-3000:]
    # Registered and called over TLS.
    assert phone.transports() >= {"TLS"}, phone.text()[-2000:]
    invite = next(m for m in phone.received() if m.startswith("INVITE "))
    assert re.search(r"^m=audio \d+ RTP/SAVP ", invite, re.M), invite
    assert re.search(r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", invite, re.M), invite
    assert action.params["DialCallStatus"] == "completed", action.params
    # Each side decoded the other's tone.
    heard, rate = phone.heard()
    assert len(heard) > rate, "the phone decoded no audio"
    assert tone_power(heard, rate, 600) > 10 * tone_power(heard, rate, 1000)
    received = caller_audio.audio()
    assert tone_power(received, 8000, 1000) > 10 * tone_power(received, 8000, 600)
    # The dual-channel recording has the caller on one channel, alice on the other.
    (callback,) = await app_server.wait_for("/recording", timeout=20)
    first, second = await fetch_recording(switch, callback.params["RecordingSid"])
    assert tone_power(first, 8000, 600) > 10 * tone_power(first, 8000, 1000)
    assert tone_power(second, 8000, 1000) > 10 * tone_power(second, 8000, 600)


async def test_srtp_phone_and_plain_trunk_caller_are_relayed(switch, app_server, workdir):
    """The trunk caller (plain RTP, 600 Hz) and alice (SRTP over TLS, 1000 Hz): the
    pair is relayed in C (the switch decrypts with alice's keys on one side and sends
    plain RTP on the other, and back), and each decodes the other's tone."""
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="10" action="/action"><Client>alice</Client></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    phone = baresip_phone(workdir, switch, tone_hz=1000)
    caller_audio = RtpPeer(600)
    await caller_audio.start()
    try:
        await phone.start()
        await phone.wait_for(r"registered successfully")
        caller = Peer(
            workdir, "caller", sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=4000)
        )
        await caller.start(switch.target(), timeout_s=40)
        await switch.wait_relayed(1, timeout=15)
        relayed_at = asyncio.get_running_loop().time()
        (action,) = await app_server.wait_for("/action", timeout=20)
        assert await caller.wait(30) == 0, caller.failure(1)
        await phone.wait_for(CALL_ENDED)
    finally:
        caller_audio.close()
        code = await phone.stop()
    assert code == 0, phone.text()[-3000:]
    assert action.params["DialCallStatus"] == "completed", action.params
    heard, rate = phone.heard()
    assert len(heard) > rate, "the phone decoded no audio"
    assert tone_power(heard, rate, 600) > 10 * tone_power(heard, rate, 1000)
    received = caller_audio.audio(since=relayed_at)
    assert len(received) > 8000, "the caller heard nothing while relayed"
    assert tone_power(received, 8000, 1000) > 10 * tone_power(received, 8000, 600)


async def test_phone_call_over_tls_is_answered_with_srtp(switch, app_server, workdir):
    """alice's phone calls out over TLS offering RTP/SAVP only: the switch answers
    with SRTP (SDES keys in its 200), runs her app, and her RFC 4733 digits, sent
    inside SRTP, reach the <Gather>."""
    app_server.routes["/client"] = (
        '<Response><Gather numDigits="2" timeout="10" action="/gathered"/></Response>'
    )
    app_server.routes["/gathered"] = "<Response><Hangup/></Response>"
    phone = baresip_phone(workdir, switch, tone_hz=1000)
    try:
        await phone.start()
        await phone.wait_for(r"registered successfully")
        await phone.dial(f"sip:{NUMBER}@127.0.0.1:{switch.tls_port}")  # over its TLS flow
        await phone.wait_for(r"Call established")
        await asyncio.sleep(0.5)
        await phone.press("42")
        (gathered,) = await app_server.wait_for("/gathered", timeout=15)
        await phone.wait_for(CALL_ENDED)
    finally:
        code = await phone.stop()
    assert code == 0, phone.text()[-3000:]
    assert gathered.params["Digits"] == "42", gathered.params
    assert gathered.params["From"] == "client:alice", gathered.params
    offer = next(m for m in phone.sent() if m.startswith("INVITE "))
    assert re.search(r"^m=audio \d+ RTP/SAVP ", offer, re.M), offer
    answer = next(
        m
        for m in phone.received()
        if m.startswith("SIP/2.0 200") and re.search(r"^CSeq: \d+ INVITE", m, re.M)
    )
    assert re.search(r"^m=audio \d+ RTP/SAVP ", answer, re.M), answer
    assert re.search(r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", answer, re.M), answer


async def test_ringback_reaches_a_phone_over_srtp(switch, app_server, workdir):
    """alice calls out over TLS with mandatory SRTP; her app dials a number that
    only rings: the switch's ringback tone (US, 440 + 480 Hz) is what her phone
    decodes from the SRTP stream until the <Dial> gives up."""
    app_server.routes["/client"] = (
        f'<Response><Dial timeout="3" action="/rang"><Number>{CALLEE}</Number></Dial></Response>'
    )
    app_server.routes["/rang"] = "<Response><Hangup/></Response>"
    phone = baresip_phone(workdir, switch, tone_hz=1000)
    callee = sipp.Sipp(workdir, "callee", sipp.callee("ring"), port=switch.trunk_port)
    try:
        await callee.start(timeout_s=30)
        await phone.start()
        await phone.wait_for(r"registered successfully")
        await phone.dial(f"sip:{NUMBER}@127.0.0.1:{switch.tls_port}")
        (rang,) = await app_server.wait_for("/rang", timeout=20)
        await phone.wait_for(CALL_ENDED)
        await callee.finish(20)
    finally:
        code = await phone.stop()
        await callee.stop()
    assert code == 0, phone.text()[-3000:]
    assert rang.params["DialCallStatus"] == "no-answer", rang.params
    heard, rate = phone.heard()
    assert len(heard) > rate, "the phone decoded no audio"
    ringback = tone_power(heard, rate, 440) + tone_power(heard, rate, 480)
    assert ringback > 10 * tone_power(heard, rate, 1000), "no ringback over SRTP"


async def fetch_recording(switch: TrunkSwitch, sid: str) -> list[npt.NDArray[np.int16]]:
    """A recording's channels, fetched from the Recordings API as WAV."""
    url = f"{switch.http}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid}.wav"
    auth = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    async with aiohttp.ClientSession(headers=auth) as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        body = await response.read()
    with wave.open(io.BytesIO(body)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        channels = wav.getnchannels()
    return [samples[i::channels] for i in range(channels)]


# ---- SRTP refusals ----------------------------------------------------------------------


async def test_mandatory_client_with_plain_offer_gets_488(switch, app_server, workdir):
    """carol must use SRTP: her authenticated INVITE offering plain RTP gets 488
    with the reason, and her app is never asked."""
    app_server.routes["/client"] = "<Response><Hangup/></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        scenario = sipp_reg.client_call(CAROL[0], NUMBER, peer.port, expect=488)
        phone = Peer(workdir, "carol-plain", scenario, auth=CAROL)
        seen = await phone.run(switch.target())
    finally:
        peer.close()
    final = sipp_reg.final_responses(seen)[-1]
    assert final.startswith("SIP/2.0 488 SRTP Required"), final
    assert 'Warning: 399 dialswitch "SRTP Required"' in final, final
    assert app_server.hits("/client") == []


async def test_mandatory_trunk_offers_only_srtp(switch, app_server, workdir):
    """The srtp-only trunk offers RTP/SAVP with keys; a far end that answers with
    plain RTP anyway gets no call with clear media: the switch ends that leg at
    once (ACK, then BYE) and never bridges it."""
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="5" action="/action"><Number>{PLAIN_CALLEE}</Number>'
        "</Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, peer.port),
            sipp.callee("answer", hangup_after_ms=3000),
            timeout=30,
            callee_wait=30,
        )
    finally:
        peer.close()
    invite = callee.messages().received()[0]
    assert re.search(r"^m=audio \d+ RTP/SAVP ", invite, re.M), invite
    assert "a=crypto:" in invite, invite
    received = [m.split(" ", 1)[0] for m in callee.messages().received()]
    assert received[:3] == ["INVITE", "BYE", "ACK"] or received[:3] == ["INVITE", "ACK", "BYE"]
    (action,) = app_server.hits("/action")
    assert action.params["DialBridged"] == "false", action.params
    assert action.params["DialCallDuration"] == "0", action.params


# ---- certificates that must be refused --------------------------------------------------


@contextlib.asynccontextmanager
async def tls_server(port: int, issued: Issued) -> AsyncIterator[list[str]]:
    """A TLS listener presenting ``issued``; yields the handshake outcomes it saw."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.certificate, issued.private_key)
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("handshake done")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("number", list(BAD_TRUNKS))
async def test_trunk_with_a_bad_certificate_is_refused(switch, app_server, workdir, number):
    """The switch verifies a TLS trunk's certificate against tls_ca and its name:
    a far end with an untrusted, misnamed or expired certificate never gets the
    INVITE; the branch fails, and the reason is in the log and the call's
    notifications (32011)."""
    trunk, reason = BAD_TRUNKS[number]
    if trunk == "unknown-ca":
        issued = TestCa(workdir / "rogue-ca", "rogue CA").issue("far")
    elif trunk == "other-name":
        issued = switch.ca.issue("far", ("sip.other.example",))
    else:
        issued = switch.ca.issue("far", expired=True)
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="5" action="/action"><Number>{number}</Number></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio = RtpPeer(None)
    await caller_audio.start()
    try:
        async with tls_server(switch.far_ports[trunk], issued):
            caller = Peer(workdir, f"caller-{trunk}", sipp.caller(NUMBER, caller_audio.port))
            await caller.start(switch.target(), timeout_s=30)
            (action,) = await app_server.wait_for("/action", timeout=15)
            await caller.wait(30)
    finally:
        caller_audio.close()
    assert action.params["DialCallStatus"] == "failed", action.params
    call_sid = action.params["CallSid"]
    notes = [n for n in switch.notifications(call_sid) if n["code"] == 32011]
    assert notes, switch.notifications(call_sid)
    assert f"TLS certificate of 127.0.0.1:{switch.far_ports[trunk]} refused" in notes[0]["message"]
    assert reason in notes[0]["message"], notes
    assert notes[0]["level"] == "warning", notes
    assert reason in switch.log()
