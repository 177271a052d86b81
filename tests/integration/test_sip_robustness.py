"""Network input cannot end or hang the switch.

Each test sends what an attacker could, unauthenticated, over UDP on loopback, and
asserts on the answers the sender got, that the switch still answers, and that no
call object leaked (the ``switch`` fixture's leak check).
"""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.sipp_refer import callee_sending
from tests.support.sipraw import SipUdp, assert_alive

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

UNKNOWN = "+15009990000"


async def test_request_reusing_a_finished_invites_branch_gets_400(switch: SwitchProcess):
    """INVITE refused and ACKed, then another method on its branch with ``CSeq: 1 INVITE``.

    This aborted the process in pjsip's transaction layer (an assertion) before the
    lookup matched requests by their own method (deploy/pjsua2 patch 0013).
    """
    uri = f"sip:{UNKNOWN}@{switch.target()}"
    branch = "z9hG4bK-same-branch-0001"
    async with SipUdp(switch.target()) as sip:
        invite = sip.request("INVITE", uri, branch=branch, call_id="three-packets@127.0.0.1")
        sip.send(invite)
        refused = await sip.final()
        assert refused is not None and refused.status == 404
        to = refused.header("To")
        from_ = re.search(rb"^From: (.*)\r$", invite, re.M)
        assert to is not None and from_ is not None
        sip.send(
            (
                f"ACK {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{sip.port};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: {from_.group(1).decode()}\r\n"
                f"To: {to}\r\n"
                "Call-ID: three-packets@127.0.0.1\r\n"
                "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        for method in ("OPTIONS", "BYE", "INFO"):
            sip.send(
                sip.request(
                    method, uri, branch=branch, call_id="three-packets@127.0.0.1", cseq="1 INVITE"
                )
            )
            answer = await sip.final()
            assert answer is not None and answer.status == 400, (method, answer)
            assert "CSeq" in answer.reason
    await assert_alive(switch)


async def test_refer_outside_a_dialog_is_refused(switch: SwitchProcess):
    """A REFER that belongs to no call is refused; nothing is dialled."""
    async with SipUdp(switch.target()) as sip:
        refer_to = f"Refer-To: <sip:+19005550199@127.0.0.1:{sip.port}>"
        sip.send(sip.request("REFER", f"sip:{UNKNOWN}@{switch.target()}", extra=refer_to))
        answer = await sip.final()
        assert answer is not None and answer.status == 403
        assert "REFER" in answer.reason
        # In a dialog that does not exist: 481 from the dialog layer.
        sip.send(
            sip.request(
                "REFER", f"sip:{UNKNOWN}@{switch.target()}", to_tag="nosuchdialog", extra=refer_to
            )
        )
        answer = await sip.final()
        assert answer is not None and answer.status == 481
        assert await sip.response(timeout=0.5) is None  # and no INVITE came our way
    await assert_alive(switch)


async def test_methods_the_switch_does_not_serve_in_a_dialog(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    """In a live call: OPTIONS gets 200 (a session audit), an unknown method 501,
    SUBSCRIBE and MESSAGE 405, NOTIFY 481 (there is no subscription); the call goes on
    until the callee hangs up."""
    app_server.routes["/voice"] = "<Response><Dial><Number>+15550002222</Number></Dial></Response>"
    caller, callee = await sipp.run_call(
        switch,
        workdir,
        sipp.caller(NUMBER, sipp.free_udp_port()),
        callee_sending(
            {"OPTIONS": 200, "FROBNICATE": 501, "SUBSCRIBE": 405, "NOTIFY": 481, "MESSAGE": 405},
            rtp_port=sipp.free_udp_port(),
        ),
        timeout=30,
    )
    assert callee is not None
    answers = [m for m in callee.messages().received() if m.startswith("SIP/2.0 501")]
    assert len(answers) == 1 and "Allow:" in answers[0]


async def test_invite_replacing_a_call_is_refused(switch: SwitchProcess):
    """RFC 3891 Replaces would hand a live call to whoever names its dialog: 403."""
    async with SipUdp(switch.target()) as sip:
        sip.send(
            sip.request(
                "INVITE",
                f"sip:+15005550100@{switch.target()}",
                extra="Replaces: some-call@127.0.0.1;to-tag=a;from-tag=b",
            )
        )
        answer = await sip.final()
    assert answer is not None and answer.status == 403
    assert "Replaces" in answer.reason
    await assert_alive(switch)


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


async def test_empty_ipv6_reference_in_a_contact_is_refused(
    switch: SwitchProcess, app_server: AppServer
):
    """``sip:caller@[]`` is no address (RFC 3261 25.1: an IPv6reference holds one).

    pjsip took it for an empty host, and the INVITE carrying it as its Contact aborted
    the process (an assertion in pj_inet_pton, found while chasing the fuzzer's crash
    of the next test; fixed upstream after 2.15, deploy/pjsua2 patch 0015). Now that
    INVITE gets 400.
    """
    app_server.routes["/voice"] = "<Response><Hangup/></Response>"
    async with SipUdp(switch.target()) as sip:
        invite = sip.request("INVITE", f"sip:{NUMBER}@{switch.target()}", body=SDP)
        sip.send(invite.replace(b"Contact: <sip:tester@127.0.0.1:", b"Contact: <sip:caller@[]:"))
        answer = await sip.final()
    assert answer is not None and answer.status == 400
    assert app_server.hits("/voice") == []
    await assert_alive(switch)


async def test_record_route_that_is_not_a_sip_uri_is_refused(
    switch: SwitchProcess, app_server: AppServer
):
    """``Record-Route: <tel:...>`` was read as a SIP URI by pjsua when it built the
    answer's Contact, and its empty host aborted the process (found by
    bench/sip_fuzz.py; deploy/pjsua2 patch 0016). The switch answers 400 before that."""
    app_server.routes["/voice"] = "<Response><Hangup/></Response>"
    async with SipUdp(switch.target()) as sip:
        uri = f"sip:{NUMBER}@{switch.target()}"
        sip.send(sip.request("INVITE", uri, extra="Record-Route: <tel:+15551234567>", body=SDP))
        answer = await sip.final()
    assert answer is not None and answer.status == 400
    assert "Record-Route" in answer.reason
    assert app_server.hits("/voice") == []
    await assert_alive(switch)
