"""<Dial> details end to end: callReason on the wire and in the call records, and
hangupOnStar driven by a SIP INFO digit (application/dtmf-relay) from the caller."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"


async def test_call_reason_reaches_the_callee_and_the_call_record(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = (
        '<Response><Dial action="/action" callReason="Order 42 is arriving">'
        f"<Number>{CALLEE}</Number></Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    near, far = RtpPeer(None), RtpPeer(None)
    await near.start()
    await far.start()
    try:
        _, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, near.port),
            sipp.callee("answer", rtp_port=far.port, hangup_after_ms=500),
            timeout=60,
            callee_wait=30,
        )
    finally:
        near.close()
        far.close()
    assert callee is not None
    invite = callee.messages().received()[0]
    assert re.search(r"^X-Call-Reason: Order 42 is arriving\s*$", invite, re.M), invite
    (action,) = app_server.hits("/action")
    rows = switch.query(
        "SELECT call_reason FROM legs WHERE parent_call_sid = ?", action.params["CallSid"]
    )
    assert rows == [{"call_reason": "Order 42 is arriving"}]


def caller_sending_info_star(number: str, rtp_port: int, after_ms: int) -> str:
    """A trunk caller that, once answered, sends ``*`` as SIP INFO, then awaits the BYE."""
    info = sipp.send(
        f"      INFO sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "      [last_From:]\n"
        "      [last_To:]\n"
        "      Call-ID: [call_id]\n"
        "      CSeq: 2 INFO\n"
        "      Max-Forwards: 70\n"
        "      Content-Type: application/dtmf-relay\n"
        "      Content-Length: [len]\n"
        "\n"
        "      Signal=*\n"
        "      Duration=160\n",
        retrans=True,
    )
    body = (
        sipp.caller_invite(number, rtp_port)
        + sipp.CALLER_PROVISIONAL
        + '  <recv response="200"/>\n'
        + sipp.caller_ack(number)
        + f'  <pause milliseconds="{after_ms}"/>\n'
        + info
        + '  <recv response="200"/>\n'
        + sipp.answer_bye()
    )
    return sipp.scenario("caller-info-star", body)


async def test_hangup_on_star_by_sip_info_ends_the_child_and_runs_the_action(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = (
        f'<Response><Dial action="/action" hangupOnStar="true"><Number>{CALLEE}</Number>'
        "</Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    near, far = RtpPeer(600), RtpPeer(1000)
    await near.start()
    await far.start()
    try:
        # The callee never hangs up: only the caller's * can end its leg.
        _, callee = await sipp.run_call(
            switch,
            workdir,
            caller_sending_info_star(NUMBER, near.port, after_ms=2500),
            sipp.callee("answer", rtp_port=far.port),
            timeout=60,
            callee_wait=30,
        )
    finally:
        near.close()
        far.close()
    assert callee is not None
    assert any(m.startswith("BYE ") for m in callee.messages().received())
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"
