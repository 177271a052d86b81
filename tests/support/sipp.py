"""SIPp peers for the integration tests: scenario texts and a process wrapper.

Scenarios are generated per test so timings and RTP ports can be written into
them. Each SIPp runs one call (``-m 1``) and writes every message it saw to a
file (``-trace_msg``); tests assert on those messages, i.e. on what the peer
saw. SIPp exits 0 when its call followed the scenario.

The scenario pieces (``scenario``, ``send``, ``response``, ``answer_bye``, ...)
are shared with the other scenario modules (``sipp_more``, ``sipp_fork``,
``sipp_reg``).
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import SwitchProcess

SDP = """v=0
o=sipp 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}
"""The reason phrase `response` writes for a status code."""

CALLEE_BYE = """      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$remote_from]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
"""
"""The lines of a callee's own BYE (the caller's From captured as ``remote_from``)."""


def scenario(name: str, body: str) -> str:
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="{name}">\n{body}</scenario>\n'


def indent(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.strip().splitlines())


def send(lines: str, *, retrans: bool = False, next_label: str | None = None) -> str:
    """A ``<send>`` of one message; ``lines`` are indented and end with a newline."""
    attrs = ' retrans="500"' if retrans else ""
    if next_label:
        attrs += f' next="{next_label}"'
    return f"  <send{attrs}>\n    <![CDATA[\n{lines}    ]]>\n  </send>\n"


def response(
    code: int,
    *,
    sdp_port: int | None = None,
    tag: bool = True,
    cseq: str = "[last_CSeq:]",
    headers: dict[str, str] | None = None,
    next_label: str | None = None,
) -> str:
    """A UAS's response to the request just received (``tag``: the To gets ours)."""
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if tag else "[last_To:]"
    extra = "".join(f"      {k}: {v}\n" for k, v in (headers or {}).items())
    if sdp_port is None:
        tail, body = "      Content-Length: 0\n", ""
    else:
        tail = "      Content-Type: application/sdp\n      Content-Length: [len]\n"
        body = "\n" + indent(SDP.format(port=sdp_port))
    lines = (
        f"      SIP/2.0 {code} {REASONS.get(code, 'Session Progress')}\n"
        "      [last_Via:]\n"
        "      [last_From:]\n"
        f"      {to}\n"
        "      [last_Call-ID:]\n"
        f"      {cseq}\n"
        "      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>\n"
        f"{extra}{tail}{body}"
    )
    return send(lines, next_label=next_label)


def ok_to_request(next_label: str | None = None) -> str:
    """200 OK to the request just received (CANCEL, BYE, INFO), its To as it came."""
    lines = (
        "      SIP/2.0 200 OK\n"
        "      [last_Via:]\n"
        "      [last_From:]\n"
        "      [last_To:]\n"
        "      [last_Call-ID:]\n"
        "      [last_CSeq:]\n"
        "      Content-Length: 0\n"
    )
    return send(lines, next_label=next_label)


def answer_bye(next_label: str | None = None) -> str:
    """Wait for the other side's BYE and answer it 200."""
    return '  <recv request="BYE"/>\n' + ok_to_request(next_label)


def caller_ack(number: str) -> str:
    """The trunk caller's ACK to the final response to its INVITE of ``number``."""
    return send(
        f"      ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "      [last_From:]\n"
        "      [last_To:]\n"
        "      Call-ID: [call_id]\n"
        "      CSeq: 1 ACK\n"
        "      Max-Forwards: 70\n"
        "      Content-Length: 0\n"
    )


_INVITE_HEADERS = """      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{name}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
{extra}      Content-Type: application/sdp
      Content-Length: [len]
"""


CALLER_PROVISIONAL = """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180" optional="true"/>
"""
"""The provisional responses a trunk caller accepts after its INVITE."""


def caller_invite(
    number: str,
    rtp_port: int,
    *,
    caller_id: str = "+14155550100",
    name: str = "Test Caller",
    extra_headers: dict[str, str] | None = None,
) -> str:
    """A trunk caller's INVITE of ``number`` (retransmitted), offering ``rtp_port``."""
    extra = "".join(f"      {k}: {v}\n" for k, v in (extra_headers or {}).items())
    return (
        '  <send retrans="500">\n    <![CDATA[\n'
        "      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
        + _INVITE_HEADERS
        + "\n{sdp}    ]]>\n  </send>\n"
    ).format(
        number=number,
        caller=caller_id,
        name=name,
        extra=extra,
        sdp=indent(SDP.format(port=rtp_port)),
    )


def caller(
    number: str,
    rtp_port: int,
    *,
    caller_id: str = "+14155550100",
    name: str = "Test Caller",
    hangup_after_ms: int | None = None,
    expect_final: int = 200,
    extra_headers: dict[str, str] | None = None,
) -> str:
    """A trunk calling one of our numbers.

    ``expect_final`` 200: answered, then either we BYE after ``hangup_after_ms``
    or we wait for the switch's BYE. Another code: the call must be refused
    with it (we ACK). A caller that CANCELs is ``sipp_fork.caller_cancel``.
    """
    invite = caller_invite(
        number, rtp_port, caller_id=caller_id, name=name, extra_headers=extra_headers
    )
    ack = caller_ack(number)
    if expect_final != 200:
        body = invite + CALLER_PROVISIONAL + f'  <recv response="{expect_final}"/>\n' + ack
        return scenario("caller-refused", body)
    body = invite + CALLER_PROVISIONAL + '  <recv response="200" rtd="true"/>\n' + ack
    if hangup_after_ms is not None:
        body += f"""  <pause milliseconds="{hangup_after_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
"""
    else:
        body += answer_bye()
    return scenario("caller", body)


def reinvites(
    offers: tuple[str, ...], before_ms: int, in_dialog: Callable[[str, int], str], user: str
) -> str:
    """For each SDP of ``offers`` in turn (CSeq 2 on), ``before_ms`` after the
    previous ACK: a re-INVITE (Contact ``user`` at this SIPp), its 200 and the ACK.
    ``in_dialog(method, cseq)`` gives the lines of a request in the call's dialog up
    to its Max-Forwards (the caller's and the callee's differ)."""
    body = ""
    for cseq, offer in enumerate(offers, start=2):
        reinvite = (
            in_dialog("INVITE", cseq)
            + f"      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>\n"
            + "      Content-Type: application/sdp\n"
            + "      Content-Length: [len]\n\n"
            + indent(offer)
        )
        body += (
            f'  <pause milliseconds="{before_ms}"/>\n'
            + send(reinvite, retrans=True)
            + '  <recv response="100" optional="true"/>\n'
            + '  <recv response="200"/>\n'
            + send(in_dialog("ACK", cseq) + "      Content-Length: 0\n")
        )
    return body


def caller_reinviting(
    number: str,
    rtp_port: int,
    *offers: str,
    caller_id: str = "+14155550100",
    before_ms: int = 2500,
    after_ms: int = 2500,
) -> str:
    """`caller`'s trunk caller (media at ``rtp_port``) that, once answered,
    re-INVITEs with each SDP of ``offers`` (`reoffer`) in turn, ``before_ms`` after
    the previous ACK, ACKs each 200, and hangs up ``after_ms`` after the last."""
    body = (
        caller_invite(number, rtp_port, caller_id=caller_id)
        + CALLER_PROVISIONAL
        + '  <recv response="200" rtd="true"/>\n'
        + caller_ack(number)
    )

    def in_dialog(method: str, cseq: int) -> str:
        return (
            f"      {method} sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            "      [last_From:]\n"
            "      [last_To:]\n"
            "      Call-ID: [call_id]\n"
            f"      CSeq: {cseq} {method}\n"
            "      Max-Forwards: 70\n"
        )

    body += reinvites(offers, before_ms, in_dialog, caller_id)
    bye = in_dialog("BYE", len(offers) + 2) + "      Content-Length: 0\n"
    body += f'  <pause milliseconds="{after_ms}"/>\n' + send(bye, retrans=True)
    body += '  <recv response="200"/>\n'
    return scenario("caller-reinvite", body)


def callee(
    behaviour: str,
    *,
    rtp_port: int = 0,
    ring_ms: int = 0,
    hangup_after_ms: int | None = None,
    early_media: bool = False,
) -> str:
    """The far end behind a trunk.

    ``behaviour``: ``answer`` (ring ``ring_ms`` then 200; wait for BYE, or BYE
    after ``hangup_after_ms``), ``busy`` (486), ``decline`` (603), ``error``
    (500), ``ring`` (ring until CANCELled: 200 to the CANCEL, 487 to the INVITE).
    ``early_media`` sends 183 with SDP instead of 180.
    """
    ringing = response(183, sdp_port=rtp_port) if early_media else response(180)
    if behaviour == "ring":
        capture = (
            '    <action>\n      <ereg regexp="[0-9]+ INVITE" search_in="hdr" header="CSeq:"'
            ' assign_to="invite_cseq"/>\n    </action>\n'
        )
    elif behaviour == "answer" and hangup_after_ms is not None:
        capture = (
            '    <action>\n      <ereg regexp=".*" search_in="hdr" header="From:"'
            ' assign_to="remote_from"/>\n    </action>\n'
        )
    else:
        capture = ""
    body = f'  <recv request="INVITE" rrs="true">\n{capture}  </recv>\n' + response(100, tag=False)
    if behaviour in ("busy", "decline", "error"):
        code = {"busy": 486, "decline": 603, "error": 500}[behaviour]
        body += response(code) + '  <recv request="ACK"/>\n'
        return scenario(f"callee-{behaviour}", body)
    body += ringing
    if behaviour == "ring":
        body += (
            '  <recv request="CANCEL"/>\n'
            + response(200)
            + response(487, cseq="CSeq: [$invite_cseq]")
            + '  <recv request="ACK"/>\n'
        )
        return scenario("callee-ring", body)
    if ring_ms:
        body += f'  <pause milliseconds="{ring_ms}"/>\n'
    body += response(200, sdp_port=rtp_port) + '  <recv request="ACK"/>\n'
    if hangup_after_ms is not None:
        body += (
            f'  <pause milliseconds="{hangup_after_ms}"/>\n'
            + send(CALLEE_BYE, retrans=True)
            + '  <recv response="200"/>\n'
        )
    else:
        body += answer_bye()
    return scenario("callee-answer", body)


def only_codec(text: str, payload_type: int, rtpmap: str) -> str:
    """A scenario (or SDP) of this module offering or answering one codec instead of
    PCMU: ``payload_type`` as ``rtpmap`` (``"PCMA/8000"``, ``"opus/48000/2"``)."""
    text = text.replace("RTP/AVP 0 101", f"RTP/AVP {payload_type} 101")
    return text.replace("a=rtpmap:0 PCMU/8000", f"a=rtpmap:{payload_type} {rtpmap}")


def reoffer(port: int, direction: str = "sendrecv", version: int = 2) -> str:
    """`SDP` as version ``version``, with the media at ``port`` and ``direction``
    (``inactive`` or ``sendonly`` puts the call on hold)."""
    offer = SDP.format(port=port).replace("o=sipp 1 1", f"o=sipp 1 {version}")
    return offer.replace("a=sendrecv", f"a={direction}")


def callee_reinviting(
    rtp_port: int, *offers: str, ring_ms: int = 300, before_ms: int = 2500, after_ms: int = 2500
) -> str:
    """`callee`'s answering callee (media at ``rtp_port``) that re-INVITEs with each
    SDP of ``offers`` (`reoffer`) in turn, ``before_ms`` after the previous ACK, ACKs
    each 200, and hangs up ``after_ms`` after the last."""
    answered = callee("answer", rtp_port=rtp_port, ring_ms=ring_ms, hangup_after_ms=after_ms)
    head, bye = answered.split(f'  <pause milliseconds="{after_ms}"/>\n', 1)
    head_lines = CALLEE_BYE.split("CSeq:", 1)[0].replace("BYE [next_url]", "{method} [next_url]")

    def in_dialog(method: str, cseq: int) -> str:
        return head_lines.format(method=method) + (
            f"      CSeq: {cseq} {method}\n      Max-Forwards: 70\n"
        )

    body = head.split("<scenario", 1)[1].split(">", 1)[1].rsplit("</scenario>", 1)[0]
    body += reinvites(offers, before_ms, in_dialog, "callee")
    bye_cseq = f"CSeq: {len(offers) + 2} BYE"
    body += f'  <pause milliseconds="{after_ms}"/>\n' + bye.split("</scenario>", 1)[0].replace(
        "CSeq: 2 BYE", bye_cseq
    )
    return scenario("callee-reinvite", body)


PEER_PORTS = range(10000, 20000)
"""Where test peers bind: below every switch's RTP range (the tests give switches
ranges from 20000 up), so a switch's RTP socket never takes a peer's port between the
moment it is picked and the moment SIPp binds it. The kernel's ephemeral ports
(32768-60999) overlap those RTP ranges."""


def free_udp_port() -> int:
    for _ in range(100):
        port = random.choice(PEER_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SippMessages:
    """Messages SIPp saw, from its ``-message_file``."""

    text: str

    def received(self) -> list[str]:
        return [m for d, m in self._messages() if d == "received"]

    def sent(self) -> list[str]:
        return [m for d, m in self._messages() if d == "sent"]

    def _messages(self) -> list[tuple[str, str]]:
        parts = re.split(r"-{10,} [^\n]*\n(UDP|TCP) message (received|sent)[^\n]*\n", self.text)
        found: list[tuple[str, str]] = []
        for i in range(1, len(parts) - 2, 3):
            found.append((parts[i + 1], parts[i + 2].strip()))
        return found

    def received_starts(self) -> list[str]:
        return [m.splitlines()[0] for m in self.received() if m]


class Sipp:
    """One SIPp process running a generated scenario (one call, unless ``calls`` says)."""

    ip: str = "127.0.0.1"
    """The local address SIPp binds and writes in Via/Contact (``-i``)."""
    transport: str | None = None
    """SIPp's ``-t``; None: SIPp's default (UDP, one socket)."""
    calls: int = 1
    """SIPp's ``-m``."""

    def __init__(self, workdir: Path, name: str, scenario: str, *, port: int | None = None):
        self.workdir = workdir
        self.name = name
        self.port = port or free_udp_port()
        self.scenario = workdir / f"{name}.xml"
        self.scenario.write_text(scenario)
        self.message_file = workdir / f"{name}.messages.log"
        self.error_file = workdir / f"{name}.errors.log"
        self.process: asyncio.subprocess.Process | None = None

    def options(self) -> list[str]:
        """Command-line options a subclass adds after the common ones."""
        return []

    async def start(self, target: str | None = None, *, timeout_s: int = 60) -> None:
        args = ["sipp", "-sf", str(self.scenario), "-i", self.ip, "-p", str(self.port)]
        if self.transport is not None:
            args += ["-t", self.transport]
        args += [
            "-m",
            str(self.calls),
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(self.message_file),
            "-trace_err",
            "-error_file",
            str(self.error_file),
            "-timeout",
            f"{timeout_s}s",
            "-timeout_error",
            "-max_recv_loops",
            "1000",
            "-nd",
            *self.options(),
        ]
        if target:
            args.append(target)
        self.process = await asyncio.create_subprocess_exec(
            *args,
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if not target:
            await self._listening()

    async def _listening(self, timeout: float = 5.0) -> None:
        """A SIPp that waits for requests (no target): return once its UDP port is bound
        (seen in /proc/net/udp, without touching the port), so that nothing is sent to
        it before it listens."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        port = f":{self.port:04X}"
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                return  # exited: wait() and its logs say why
            with open("/proc/net/udp") as table:
                if any(line.split()[1].endswith(port) for line in list(table)[1:]):
                    return
            await asyncio.sleep(0.01)

    async def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        return self.process.returncode or 0

    async def finish(self, timeout: float) -> None:
        """Wait for the end of the scenario; fail with SIPp's logs unless it exited 0."""
        code = await self.wait(timeout)
        assert code == 0, f"{self.name} failed: {self.errors()}\n{self.messages().text[-3000:]}"

    def messages(self) -> SippMessages:
        return SippMessages(self.message_file.read_text() if self.message_file.exists() else "")

    def errors(self) -> str:
        return self.error_file.read_text() if self.error_file.exists() else ""

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def run_call(
    switch: SwitchProcess,
    workdir: Path,
    caller_scenario: str,
    callee_scenario: str | None = None,
    *,
    timeout: float = 30,
    callee_wait: float = 15,
) -> tuple[Sipp, Sipp | None]:
    """One call through ``switch``; returns (caller, callee or None).

    The callee (if any) answers on the trunk's port; the caller's SIPp gives up
    after ``timeout`` s. Both must follow their scenario, the callee ending within
    ``callee_wait`` s of the caller. Both processes are stopped whatever happens.
    """
    callee = None
    if callee_scenario is not None:
        callee = Sipp(workdir, "callee", callee_scenario, port=switch.trunk_port)
        await callee.start()
    caller = Sipp(workdir, "caller", caller_scenario)
    try:
        await caller.start(switch.target(), timeout_s=int(timeout))
        await caller.finish(timeout + 5)
        if callee is not None:
            await callee.finish(callee_wait)
    finally:
        await caller.stop()
        if callee is not None:
            await callee.stop()
    return caller, callee
