"""Capacity against real peers: ``[dial] max_calls`` counts legs, and RTP ports
come from one range for every account.

This module's switch allows two legs (one bridged call) and has an RTP range of
130 pairs whose first 110 pairs the test holds itself, so every leg's ports lie
past a busy stretch longer than the SIP stack's old limit of 100 tries (patch
0019 of deploy/pjsua2: one cursor for all accounts, the whole range scanned).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from twilio.rest import Client

from media.analysis import tone_power
from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    SwitchProcess,
    new_switch,
    running,
)
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipraw import SipUdp, ack_for

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
RTP_LOW = 7000  # outside the ephemeral ports, the peers' (10000-19999) and switches' ranges
RTP_PAIRS = 240
HELD_PAIRS = 230  # more than twice pjsua's 100 tries before patch 0019
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@contextlib.contextmanager
def held_ports(low: int, pairs: int) -> Iterator[None]:
    """Bind the RTP and RTCP ports of ``pairs`` pairs from ``low`` for the duration."""
    sockets = []
    try:
        for port in range(low, low + 2 * pairs):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", port))
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def limit(handle: SwitchProcess) -> None:
    """Two legs at most, on a range of RTP_PAIRS pairs."""
    assert handle.config is not None
    text = handle.config.read_text()
    text = re.sub(
        r'(?m)^rtp_ports = ".*"$', f'rtp_ports = "{RTP_LOW}-{RTP_LOW + 2 * RTP_PAIRS - 1}"', text
    )
    text = re.sub(r"(?m)^max_calls = \d+$", "max_calls = 2", text)
    handle.config.write_text(text)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SwitchProcess]:
    handle = new_switch(tmp_path_factory.mktemp("capacity"), app_server.base)
    limit(handle)
    with held_ports(RTP_LOW, HELD_PAIRS):
        async with running(handle):
            yield handle


async def test_at_max_calls_the_next_invite_gets_503_and_the_call_up_keeps_its_audio(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
) -> None:
    """One bridged call holds both legs: an INVITE meanwhile gets 503 with
    Retry-After before any leg is made for it, and the call keeps its audio
    both ways, on RTP ports past the held stretch."""
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="10" action="/action"><Number>{CALLEE}</Number></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee("answer", rtp_port=callee_audio.port, hangup_after_ms=4000),
        port=switch.trunk_port,
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    try:
        await callee.start(timeout_s=30)
        await caller.start(switch.target(), timeout_s=30)
        await callee_audio.wait_for_audio(1.0, timeout=15)
        async with SipUdp(switch.target()) as extra:
            extra.send(extra.request("INVITE", f"sip:{NUMBER}@{switch.target()}", body=SDP))
            refused = await extra.final()
        await callee.finish(30)
        await caller.finish(30)
    finally:
        caller_audio.close()
        callee_audio.close()
    assert refused is not None and refused.status == 503, refused
    assert refused.header("Retry-After") == "5", refused.text
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    heard_by_caller, heard_by_callee = caller_audio.audio(), callee_audio.audio()
    assert len(heard_by_caller) > 8000 * 3 and len(heard_by_callee) > 8000 * 3
    assert tone_power(heard_by_caller, 8000, 1000) > 10 * tone_power(heard_by_caller, 8000, 600)
    assert tone_power(heard_by_callee, 8000, 600) > 10 * tone_power(heard_by_callee, 8000, 1000)
    # Its INVITE was answered at once: no 500 for want of RTP ports (the SIP
    # stack used to give up after 100 busy pairs in a row).
    assert [m.split("\n", 1)[0] for m in caller.messages().received()][:2] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 200 OK",
    ]
    invite = callee.messages().received()[0]
    port = int(re.search(r"^m=audio (\d+) ", invite, re.M)[1])  # type: ignore[index]
    assert RTP_LOW + 2 * HELD_PAIRS <= port < RTP_LOW + 2 * RTP_PAIRS, invite
    health = await switch.health()
    assert "at capacity" in switch.log(), "reaching max_calls is logged"
    assert health["calls"] == 0


async def test_with_every_rtp_port_taken_new_legs_fail_and_the_switch_says_why_once(
    switch: SwitchProcess, app_server: AppServer
) -> None:
    """Another process takes the rest of the range. An INVITE gets 503 with
    Retry-After (a shortage, not a fault of the switch), two API calls fail at once
    (no INVITE can offer media), each reported failed, and the switch's log says
    once, at WARNING, what ran out and which setting to change."""
    app_server.routes["/voice"] = "<Response><Hangup/></Response>"
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = switch.http
    said = "no free RTP port pair in [sip] rtp_ports"
    before = switch.log().count(said)
    with held_ports(RTP_LOW + 2 * HELD_PAIRS, RTP_PAIRS - HELD_PAIRS):
        async with SipUdp(switch.target()) as caller:
            invite = caller.request("INVITE", f"sip:{NUMBER}@{switch.target()}", body=SDP)
            caller.send(invite)
            refused = await caller.final()
            assert refused is not None, "the INVITE got no final answer"
            caller.send(ack_for(invite, refused))
        assert (refused.status, refused.reason) == (
            503,
            "Service Unavailable (no free RTP port)",
        ), refused.text
        assert refused.header("Retry-After") == "5", refused.text
        assert switch.log().count(said) == before + 1, "the inbound shortage is said"
        sids = []
        for _ in range(2):
            created = await asyncio.to_thread(
                client.calls.create, to=CALLEE, from_=NUMBER, url=app_server.url("/voice")
            )
            sids.append(created.sid)
        async with asyncio.timeout(15):
            while True:
                fetched = [await asyncio.to_thread(client.calls(sid).fetch) for sid in sids]
                if all(call.status == "failed" for call in fetched):
                    break
                await asyncio.sleep(0.1)
    await switch.wait_idle()
    lines = [line for line in switch.log().splitlines() if said in line]
    assert len(lines) == before + 1, lines
    assert " WARNING " in lines[-1] and "widen [sip] rtp_ports" in lines[-1], lines[-1]
