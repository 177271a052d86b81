"""Raw SIP over UDP for the robustness tests: send exact bytes, read what comes back.

SIPp cannot send malformed messages byte for byte; these tests must (RFC 4475's
torture messages, sequences that reuse a transaction's branch). ``SipUdp`` binds one
loopback socket, sends datagrams to the switch and collects the responses it gets.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.conftest import SwitchProcess


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    text: str

    def header(self, name: str) -> str | None:
        match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", self.text, re.M | re.I)
        return match.group(1).strip() if match else None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


class SipUdp:
    """One UDP socket on ``local`` (127.0.0.1 by default) talking to the switch at
    ``target`` ("host:port")."""

    def __init__(self, target: str, local: str = "127.0.0.1"):
        host, _, port = target.rpartition(":")
        self.remote = (host, int(port))
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol = _Protocol()
        self.port = 0

    async def __aenter__(self) -> SipUdp:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, local_addr=(self.local, 0)
        )
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data, self.remote)

    async def response(self, timeout: float = 3.0) -> Response | None:
        """The next response (a request sent to us is skipped), or None after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(self.protocol.queue.get(), left)
            except TimeoutError:
                return None
            text = data.decode("utf-8", "replace")
            match = re.match(r"SIP/2\.0 (\d{3}) ?([^\r\n]*)", text)
            if match:
                return Response(int(match.group(1)), match.group(2), text)

    async def final(self, timeout: float = 3.0) -> Response | None:
        """The next final (>= 200) response, provisional ones skipped."""
        while True:
            response = await self.response(timeout)
            if response is None or response.status >= 200:
                return response

    def request(
        self,
        method: str,
        uri: str,
        *,
        branch: str | None = None,
        call_id: str | None = None,
        cseq: str | None = None,
        to_tag: str = "",
        extra: str = "",
        body: str = "",
    ) -> bytes:
        """A well-formed request from this socket (fields overridable for the tests)."""
        branch = branch or f"z9hG4bK{uuid.uuid4().hex[:16]}"
        call_id = call_id or f"{uuid.uuid4().hex}@127.0.0.1"
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:tester@{self.local}:{self.port}>;tag=t{uuid.uuid4().hex[:8]}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq or f'1 {method}'}",
            f"Contact: <sip:tester@{self.local}:{self.port}>",
        ]
        if extra:
            lines.append(extra.rstrip("\r\n"))
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def ack_for(invite: bytes, final: Response) -> bytes:
    """The ACK of a non-2xx final answer to ``invite`` (RFC 3261 17.1.1.3): the INVITE's
    Via, From, Call-ID and CSeq number, the answer's To with its tag, no body."""
    head = invite.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    fields = {line.split(":", 1)[0].lower(): line for line in head[1:]}
    number = fields["cseq"].split(":", 1)[1].split()[0]
    lines = [
        f"ACK {head[0].split(' ')[1]} SIP/2.0",
        fields["via"],
        fields["max-forwards"],
        fields["from"],
        f"To: {final.header('To')}",
        fields["call-id"],
        f"CSeq: {number} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def assert_alive(switch: SwitchProcess) -> None:
    """The switch process runs and its SIP side still answers an OPTIONS with 200."""
    assert switch.process is not None and switch.process.returncode is None
    async with SipUdp(switch.target()) as sip:
        sip.send(sip.request("OPTIONS", f"sip:{switch.target()}"))
        final = await sip.final()
    assert final is not None and final.status == 200, final
