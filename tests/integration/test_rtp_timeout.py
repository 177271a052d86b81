"""``[media] rtp_timeout``: an answered leg whose far end stopped sending RTP is
hung up, the others are not.

This module's switch times legs out after 2 s. A caller bridged to a callee
that answers but never sends RTP: the callee's leg gets a BYE from the switch
a few seconds after the answer; the caller, whose RTP flows, is not timed out
but released by the app's action document. A relayed callee whose media stops
is timed out the same way. A callee that puts the call on hold sends nothing by
design, and is not timed while it holds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.conftest import NUMBER, AppServer, SwitchProcess, new_switch, running
from tests.integration.test_media_relay import on_call, relayed_parties
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
TIMEOUT = 2


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SwitchProcess]:
    handle = new_switch(tmp_path_factory.mktemp("rtp-timeout"), app_server.base)
    assert handle.config is not None
    text = handle.config.read_text()
    handle.config.write_text(
        re.sub(r"(?m)^\[log\]$", f"[media]\nrtp_timeout = {TIMEOUT}\n\n[log]", text)
    )
    async with running(handle):
        yield handle


async def test_a_silent_callee_is_hung_up_after_the_rtp_timeout(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
) -> None:
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="10" action="/action"><Number>{CALLEE}</Number></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio = RtpPeer(600)  # the caller talks
    silent = RtpPeer(None)  # the callee's media address: it receives, sends nothing
    await caller_audio.start()
    await silent.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        # The callee answers with an SDP but sends nothing; both wait for the
        # switch's BYE (without the timeout, none would come: SIPp gives up at 20 s).
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port),
            sipp.callee("answer", rtp_port=silent.port),
            timeout=20,
            callee_wait=10,
        )
    finally:
        caller_audio.close()
        silent.close()
    elapsed = loop.time() - started
    assert callee is not None
    received = [m.split(" ", 1)[0] for m in callee.messages().received()]
    assert received[:3] == ["INVITE", "ACK", "BYE"], received  # the switch hung it up
    assert elapsed < 12, f"the silent callee was not timed out ({elapsed:.1f} s)"
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert TIMEOUT <= int(action.params["DialCallDuration"]) <= TIMEOUT + 4
    assert "no RTP received for 2 s" in switch.log()


@pytest.mark.parametrize(("hold", "answer"), [("inactive", "inactive"), ("sendonly", "recvonly")])
async def test_a_callee_that_holds_the_call_is_not_timed_out_while_it_holds(
    switch: SwitchProcess, app_server: AppServer, workdir: Path, hold: str, answer: str
) -> None:
    """The callee answers without sending RTP, puts the call on hold half a second
    later (re-INVITE with ``a=inactive``, or ``a=sendonly`` and then no music),
    stays on hold, silent, for three timeouts, and hangs up itself: the switch
    sent it no BYE."""
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="10" action="/action"><Number>{CALLEE}</Number></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, silent = RtpPeer(600), RtpPeer(None)
    await caller_audio.start()
    await silent.start()
    held_ms = 3 * TIMEOUT * 1000
    try:
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port),
            sipp.callee_reinviting(
                silent.port, sipp.reoffer(silent.port, hold), before_ms=500, after_ms=held_ms
            ),
            timeout=20,
            callee_wait=10,
        )
    finally:
        caller_audio.close()
        silent.close()
    assert callee is not None
    received = callee.messages().received()
    assert not [m for m in received if m.startswith("BYE ")], received
    answers = [m for m in received if m.startswith("SIP/2.0 200")]
    assert [m for m in answers if "CSeq: 2 INVITE" in m and f"a={answer}" in m], answers
    assert [m for m in answers if "CSeq: 3 BYE" in m], answers
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert int(action.params["DialCallDuration"]) >= held_ms / 1000


async def test_a_relayed_callee_that_stops_sending_is_hung_up_after_the_rtp_timeout(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
) -> None:
    """Both parties talk and the pair is relayed; then the callee's media stops
    (its socket closes, as a phone that lost its network). The switch hangs the
    callee up about the timeout later: the relay's packets count as received."""
    app_server.routes["/voice"] = (
        f'<Response><Dial timeout="10" action="/action"><Number>{CALLEE}</Number></Dial></Response>'
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(switch, workdir)
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await switch.wait_relayed(1)
        since = asyncio.get_running_loop().time()
        await caller_audio.wait_for_audio(2 * TIMEOUT, since=since)  # relayed, > timeout
        callee_audio.close()
    received = [m.split(" ", 1)[0] for m in callee.messages().received()]
    assert received[:3] == ["INVITE", "ACK", "BYE"], received  # the switch hung it up
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    # Up for the 2 timeouts of relayed audio, then silent for one timeout at least.
    assert int(action.params["DialCallDuration"]) >= 3 * TIMEOUT
