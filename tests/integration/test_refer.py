"""Call transfer (REFER) is the app's decision, never the SIP stack's.

A REFER from either party of a ``<Dial>`` without ``referUrl`` is declined with 603
and nothing is dialled: the Refer-To points at a UDP socket of the test's own (a
premium-rate number behind some trunk, in real life), which must see no packet.
With ``referUrl``, the app is asked (``ReferTransferTarget``, ``SipHeader_X-...``), the
referrer gets 202 and NOTIFYs with the outcome, and the app's document runs on the
caller: its ``<Dial>`` reaches the new target.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.integration.conftest import NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.sipp_refer import referring_callee, referring_caller

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15550002222"
PREMIUM = "+19005550199"


class Sink:
    """A UDP socket standing for a number nobody may call: it records what arrives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    @property
    def uri(self) -> str:
        return f"sip:{PREMIUM}@127.0.0.1:{self.port}"

    def received(self) -> list[bytes]:
        packets = []
        while True:
            try:
                packets.append(self.sock.recv(65535))
            except BlockingIOError:
                return packets

    def close(self) -> None:
        self.sock.close()


def dial_number(**attrs: str) -> str:
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return f"<Response><Dial {attributes}><Number>{CALLEE}</Number></Dial></Response>"


def notify_bodies(peer: sipp.Sipp) -> list[str]:
    return [
        m.split("\n\n", 1)[-1].strip() if "\n\n" in m else m.split("\r\n\r\n", 1)[-1].strip()
        for m in peer.messages().received()
        if m.startswith("NOTIFY ")
    ]


async def test_refer_without_refer_url_is_declined_and_dials_nothing(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = dial_number()
    sink = Sink()
    try:
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, sipp.free_udp_port()),
            referring_callee(sink.uri, rtp_port=sipp.free_udp_port(), expect=603),
            timeout=30,
        )
        # 603 to the REFER (the scenario demands it), the call went on until the
        # callee hung up, and not one packet reached the Refer-To target.
        assert callee is not None
        (answer,) = [m for m in callee.messages().received() if "CSeq: 2 REFER" in m]
        assert answer.startswith("SIP/2.0 603")
        assert sink.received() == []
    finally:
        sink.close()
    assert not any(m.startswith("NOTIFY") for m in callee.messages().received())
    (voice,) = app_server.hits("/voice")
    codes = [n["code"] for n in switch.notifications(voice.params["CallSid"])]
    assert 13802 in codes


async def test_refer_from_the_caller_is_declined(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = dial_number(referUrl="/refer")
    sink = Sink()
    try:
        await sipp.run_call(
            switch,
            workdir,
            referring_caller(NUMBER, sink.uri, rtp_port=sipp.free_udp_port()),
            sipp.callee("answer", rtp_port=sipp.free_udp_port()),
            timeout=30,
        )
        assert sink.received() == []
    finally:
        sink.close()
    assert app_server.hits("/refer") == []


async def test_refer_with_refer_url_runs_the_apps_document(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    target = sipp.Sipp(
        workdir,
        "target",
        sipp.callee("answer", rtp_port=sipp.free_udp_port(), hangup_after_ms=1000),
    )
    target_uri = f"sip:agent@127.0.0.1:{target.port}"
    app_server.routes["/voice"] = dial_number(referUrl="/refer")
    app_server.routes["/refer"] = f"<Response><Dial><Sip>{target_uri}</Sip></Dial></Response>"
    await target.start()
    try:
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, sipp.free_udp_port()),
            referring_callee(
                "sip:agent@example.com",
                rtp_port=sipp.free_udp_port(),
                expect=202,
                x_headers={"X-Transfer-Reason": "desk"},
            ),
            timeout=40,
        )
        await target.finish(20)
    finally:
        await target.stop()
    # The app was asked, with the usual parameters and the REFER's.
    (refer,) = app_server.hits("/refer")
    assert refer.params["ReferTransferTarget"] == "sip:agent@example.com"
    assert refer.params["SipHeader_X-Transfer-Reason"] == "desk"
    (voice,) = app_server.hits("/voice")
    assert refer.params["CallSid"] == voice.params["CallSid"]
    assert refer.params["CallStatus"] == "in-progress"
    # The referrer: NOTIFY 100 Trying, then 200 OK, each a sipfrag of the refer event.
    assert callee is not None
    notifies = [m for m in callee.messages().received() if m.startswith("NOTIFY ")]
    assert len(notifies) == 2
    assert all(re.search(r"^Event: refer", m, re.M | re.I) for m in notifies)
    assert re.search(r"^Subscription-State: terminated", notifies[1], re.M | re.I)
    assert [body.splitlines()[0] for body in notify_bodies(callee)] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 200 OK",
    ]
    # The app's own <Dial> reached the new target with the caller's number.
    invite = target.messages().received()[0]
    assert invite.startswith(f"INVITE {target_uri}")
    assert re.search(r"^From:.*sip:\+14155550100@", invite, re.M | re.I), invite


@pytest.mark.parametrize(
    "answer",
    ["<Response><Reject/></Response>", "<Response/>", None],
    ids=["reject", "empty", "http-404"],
)
async def test_refer_declined_by_the_app_keeps_the_call(
    switch: SwitchProcess, app_server: AppServer, workdir, answer: str | None
):
    app_server.routes["/voice"] = dial_number(referUrl="/refer")
    if answer is not None:
        app_server.routes["/refer"] = answer
    caller, callee = await sipp.run_call(
        switch,
        workdir,
        sipp.caller(NUMBER, sipp.free_udp_port()),
        referring_callee(
            "sip:agent@example.com", rtp_port=sipp.free_udp_port(), expect=202, decline=True
        ),
        timeout=30,
    )
    assert callee is not None
    assert [body.splitlines()[0] for body in notify_bodies(callee)] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 603 Declined",
    ]
    assert len(app_server.hits("/refer")) == 1
