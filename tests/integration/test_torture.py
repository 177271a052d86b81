"""RFC 4475's 49 torture messages and RFC 5118's 12 IPv6 messages against a running switch.

Each request is sent on a fresh transaction (`tests.support.torture_wire`), over TCP
(the answer comes back on the connection, the message's bytes untouched but for the
branch), and, where the RFC's answer depends on datagrams, over UDP too. The expected
answer is the one the RFC describes for a user agent server; where it allows a choice,
the comment says which one the switch makes. Responses are sent over UDP and must get
no answer. After every message the switch must still answer an OPTIONS and hold no
call object; at the end, all 61 are sent again back to back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.conftest import AppServer, SwitchProcess, new_switch, running
from tests.support.sipp_reg import ClientSwitch
from tests.support.sipraw import SipUdp, assert_alive
from tests.support.torture import CASES, TortureCase, by_name
from tests.support.torture_wire import fresh, over_tcp, status_of, via_to, wire

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NOT_FOUND, CHALLENGE = -404, 401
"""An INVITE for a user that is none of our numbers: 404, or once phones are configured
407, as a phone's own call gets (README: INVITE scans cannot tell identities apart);
a REGISTER with no credentials: 401."""

# name: (status over TCP, status over UDP); None: no answer (a response, or over TCP a
# message whose end never arrives); ... : not sent that way.
EXPECTED: dict[str, tuple[int | None | type[Ellipsis], int | None | type[Ellipsis]]] = {
    # 3.1.1 valid messages: processed normally.
    "wsinv": (481, ...),  # its To has a tag: an INVITE for a dialog that does not exist
    "intmeth": (501, ...),  # unknown method: 501 with Allow
    "esc01": (NOT_FOUND, ...),
    "escnull": (CHALLENGE, ...),
    "esc02": (501, ...),
    "lwsdisp": (200, ...),
    "longreq": (NOT_FOUND, ...),
    "dblreq": (CHALLENGE, CHALLENGE),  # the INVITE after the REGISTER's body is ignored
    "semiuri": (200, ...),
    "transports": (200, ...),
    "mpart01": (405, ...),  # parsed, body framed; MESSAGE is not served: 405 with Allow
    "unreason": (..., None),
    "noreason": (..., None),
    # 3.1.2 invalid messages.
    "badinv01": (400, ...),
    "clerr": (None, 400),  # TCP: waits for the rest of the body; UDP: 400
    "ncl": (None, 400),
    "scalar02": (400, ...),
    "scalarlg": (..., None),
    "quotbal": (400, ...),
    "ltgtruri": (400, ...),
    "lwsruri": (400, ...),
    "lwsstart": (400, ...),  # rejecting is allowed: we do
    "trws": (400, ...),  # likewise
    "escruri": (400, ...),  # headers in the Request-URI: rejected
    "baddate": (NOT_FOUND, ...),  # the Date is not used: liberal
    "regbadct": (400, ...),  # an unbracketed URI with a query: rejected
    "badaspec": (400, ...),
    "baddn": (None, 400),  # no empty line after the headers: TCP waits; UDP: 400
    "badvers": (505, ...),
    "mismatch01": (400, ...),
    "mismatch02": (400, ...),  # 400 (the CSeq mismatch) is allowed besides 501
    "bigcode": (..., None),
    # 3.2 transaction layer.
    "badbranch": (200, ...),  # liberal: a bare magic cookie is a branch
    # 3.3 application layer.
    "insuf": (400, ...),
    "unkscm": (416, ...),
    "novelsc": (416, ...),
    "unksm2": (400, ...),  # a REGISTER's To must be a SIP URI
    "bext01": (420, ...),
    "invut": (415, ...),
    "regaut01": (CHALLENGE, CHALLENGE),  # unknown scheme: a fresh challenge
    "multi01": (400, ...),
    "mcl01": (400, 400),
    "bcast": (..., None),
    "zeromf": (200, ...),  # Max-Forwards 0 means nothing to an endpoint
    "cparam01": (CHALLENGE, ...),
    "cparam02": (CHALLENGE, ...),
    "regescrt": (CHALLENGE, ...),
    "sdp01": (406, ...),
    # 3.4: RFC 2543 syntax. A dialog needs a From tag (RFC 3261 8.1.1.3): over UDP 400;
    # over TCP the message has no Content-Length, so its end never comes.
    "inv2543": (None, 400),
    # RFC 5118 (sent to a switch that also listens on ::1).
    "ipv6-good": (CHALLENGE, ...),
    "ipv6-bad": (400, ...),
    "port-ambiguous": (CHALLENGE, ...),
    "port-unambiguous": (CHALLENGE, ...),
    "via-received-param-with-delim": (481, ...),  # parsed; a BYE for no dialog
    "via-received-param-no-delim": (200, ...),
    "ipv6-in-sdp": (488, ...),  # valid; no codec or address family in common: 488
    "mult-ip-in-header": (481, ...),
    "mult-ip-in-sdp": (400, ...),  # its SDP has an empty s= line (RFC 4566 5.3): Bad SDP
    "ipv4-mapped-ipv6": (488, ...),  # likewise (G726-32 on an IPv6 address)
    "ipv6-bug-abnf-3-colons": (200, ...),  # tolerated, as RFC 5118 4.10 asks
    "ipv6-correct-abnf-2-colons": (200, ...),
}


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["numbers", "clients"])
async def switch_process(
    request: pytest.FixtureRequest,
    app_server: AppServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SwitchProcess]:
    """The switch of the integration tests, and one with phones (``[[clients]]``) too.

    Both listen on ::1 as well (RFC 5118's peers are IPv6).
    """
    workdir = tmp_path_factory.mktemp("switch")
    if request.param == "clients":
        handle: SwitchProcess = ClientSwitch.create(
            workdir, app_server.base, {"alice": "alice-secret-1"}, {}
        )
    else:
        handle = new_switch(workdir, app_server.base)
    assert handle.config is not None
    port = handle.sip_port
    text = handle.config.read_text().replace(
        f'"tcp:127.0.0.1:{port}"]',
        f'"tcp:127.0.0.1:{port}", "udp:[::1]:{port}", "tcp:[::1]:{port}"]',
    )
    Path(handle.config).write_text(text)
    async with running(handle) as started:
        yield started


def expected(switch: SwitchProcess, status: int | None) -> int | None:
    if status == NOT_FOUND:
        return 407 if isinstance(switch, ClientSwitch) else 404
    return status


async def answer(switch: SwitchProcess, case: TortureCase, transport: str) -> int | None:
    """The final status the switch answered ``case`` with over ``transport`` (None: none)."""
    if transport == "tcp":
        responses = await over_tcp(switch.target(), fresh(wire(case)), wait=1.5)
        finals = [status_of(m) for m in responses if (status_of(m) or 0) >= 200]
        return finals[0] if finals else None
    async with SipUdp(switch.target()) as sip:
        sip.send(via_to(fresh(wire(case)), "127.0.0.1", sip.port))
        final = await sip.final(timeout=1.5)
    return final.status if final is not None else None


async def test_every_message_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(case.name for case in CASES)
    assert len([c for c in CASES if c.rfc == 4475]) == 49
    assert len([c for c in CASES if c.rfc == 5118]) == 12


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"rfc{case.rfc}-{case.name}")
async def test_torture_message(switch: SwitchProcess, case: TortureCase):
    over_tcp_, over_udp = EXPECTED[case.name]
    if over_tcp_ is not ...:
        want = expected(switch, over_tcp_)  # type: ignore[arg-type]
        assert await answer(switch, case, "tcp") == want, f"{case.name} over TCP"
    if over_udp is not ...:
        want = expected(switch, over_udp)  # type: ignore[arg-type]
        assert await answer(switch, case, "udp") == want, f"{case.name} over UDP"
    await assert_alive(switch)


async def test_all_messages_back_to_back(switch: SwitchProcess):
    """All 61 at once over UDP, then each request again over TCP: the switch lives."""
    async with SipUdp(switch.target()) as sip:
        for case in CASES:
            sip.send(via_to(fresh(wire(case)), "127.0.0.1", sip.port))
    await asyncio.gather(*(over_tcp(switch.target(), fresh(wire(c)), wait=1.0) for c in CASES))
    await assert_alive(switch)
    assert by_name("mismatch01").name == "mismatch01"
