"""SIPp peers for the integration tests: scenario texts and a process wrapper.

Scenarios are generated per test so timings and RTP ports can be written into
them. Each SIPp runs one call (``-m 1``) and writes every message it saw to a
file (``-trace_msg``); tests assert on those messages, i.e. on what the peer
saw. SIPp exits 0 when its call followed the scenario.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from pathlib import Path

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


def _sdp(port: int) -> str:
    return SDP.format(port=port)


def _scenario(name: str, body: str) -> str:
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="{name}">\n{body}\n</scenario>\n'


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
    extra = "".join(f"      {k}: {v}\n" for k, v in (extra_headers or {}).items())
    invite = (
        '  <send retrans="500">\n    <![CDATA[\n'
        "      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
        + _INVITE_HEADERS
        + "\n{sdp}    ]]>\n  </send>\n"
    ).format(number=number, caller=caller_id, name=name, extra=extra, sdp=_indent(_sdp(rtp_port)))
    provisional = """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180" optional="true"/>
"""
    ack = f"""  <send>
    <![CDATA[
      ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""
    if expect_final != 200:
        body = invite + provisional + f'  <recv response="{expect_final}"/>\n' + ack
        return _scenario("caller-refused", body)
    body = invite + provisional + '  <recv response="200" rtd="true"/>\n' + ack
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
        body += _answer_bye()
    return _scenario("caller", body)


def _answer_bye() -> str:
    return """  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


def _response(code: int, reason: str, *, sdp_port: int | None = None, tag: bool = True) -> str:
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if tag else "[last_To:]"
    if sdp_port is None:
        tail = "      Content-Length: 0\n"
        body = ""
    else:
        tail = "      Content-Type: application/sdp\n      Content-Length: [len]\n"
        body = "\n" + _indent(_sdp(sdp_port))
    return f"""  <send>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      {to}
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
{tail}{body}    ]]>
  </send>
"""


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
    ringing = (
        _response(183, "Session Progress", sdp_port=rtp_port)
        if early_media
        else _response(180, "Ringing")
    )
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
    body = f'  <recv request="INVITE" rrs="true">\n{capture}  </recv>\n' + _response(
        100, "Trying", tag=False
    )
    if behaviour in ("busy", "decline", "error"):
        code, reason = {
            "busy": (486, "Busy Here"),
            "decline": (603, "Decline"),
            "error": (500, "Server Internal Error"),
        }[behaviour]
        body += _response(code, reason) + '  <recv request="ACK"/>\n'
        return _scenario(f"callee-{behaviour}", body)
    body += ringing
    if behaviour == "ring":
        body += (
            '  <recv request="CANCEL"/>\n'
            + _response(200, "OK")
            + _response(487, "Request Terminated").replace("[last_CSeq:]", "CSeq: [$invite_cseq]")
            + '  <recv request="ACK"/>\n'
        )
        return _scenario("callee-ring", body)
    if ring_ms:
        body += f'  <pause milliseconds="{ring_ms}"/>\n'
    body += _response(200, "OK", sdp_port=rtp_port) + '  <recv request="ACK"/>\n'
    if hangup_after_ms is not None:
        body += f"""  <pause milliseconds="{hangup_after_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$remote_from]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
"""
    else:
        body += _answer_bye()
    return _scenario("callee-answer", body)


def _indent(text: str) -> str:
    return "".join(f"      {line}\n" for line in text.strip().splitlines())


def free_udp_port() -> int:
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
    """One SIPp process running a generated scenario for one call."""

    def __init__(self, workdir: Path, name: str, scenario: str, *, port: int | None = None):
        self.workdir = workdir
        self.name = name
        self.port = port or free_udp_port()
        self.scenario = workdir / f"{name}.xml"
        self.scenario.write_text(scenario)
        self.message_file = workdir / f"{name}.messages.log"
        self.error_file = workdir / f"{name}.errors.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, target: str | None = None, *, timeout_s: int = 60) -> None:
        args = [
            "sipp",
            "-sf",
            str(self.scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            "1",
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
        ]
        if target:
            args.append(target)
        self.process = await asyncio.create_subprocess_exec(
            *args,
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        return self.process.returncode or 0

    def messages(self) -> SippMessages:
        return SippMessages(self.message_file.read_text() if self.message_file.exists() else "")

    def errors(self) -> str:
        return self.error_file.read_text() if self.error_file.exists() else ""

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
