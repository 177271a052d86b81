"""Sending the torture corpus (`tests.support.torture`) to a running switch.

Each message goes on a transaction of its own: several of RFC 4475's messages share a
Via branch (``z9hG4bKkdjuw``), and a second one within 32 s would be taken for a
retransmission of the first. So the topmost Via's branch gets a per-send suffix
(a bare ``z9hG4bK``, which badbranch tests, is left as it is). Over TCP nothing else
changes: the answer comes back on the connection. Over UDP the answer goes to the
topmost Via's sent-by, a host of the RFC's examples, so that sent-by becomes the test's
own socket. RFC 5118's archive lost its CRs; those messages are sent CRLF-framed with
their Content-Length counted again (`wire`).
"""

from __future__ import annotations

import asyncio
import itertools
import re

from tests.support.torture import TortureCase, load, to_wire

_COUNTER = itertools.count(1)
_VIA = re.compile(
    rb"^((?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*\w+[ \t]+)([^;\r\n]+)", re.M | re.I
)
_BRANCH = re.compile(rb"(branch[ \t\r\n]*=[ \t\r\n]*)(z9hG4bK[^;,\s]+)", re.I)


def wire(case: TortureCase) -> bytes:
    """The message as sent: RFC 4475's exact bytes, RFC 5118's CRLF-framed."""
    data = load(case)
    if case.rfc != 5118:
        return data
    data = to_wire(data)
    head, sep, body = data.partition(b"\r\n\r\n")
    if sep and body:
        head = re.sub(
            rb"(?im)^(Content-Length|l)[ \t]*:[ \t]*\d+", b"Content-Length: %d" % len(body), head
        )
    return head + sep + body


def fresh(data: bytes) -> bytes:
    """``data`` with its first RFC 3261 branch made unique for this send."""
    suffix = b".t%d" % next(_COUNTER)
    return _BRANCH.sub(lambda m: m.group(1) + m.group(2) + suffix, data, count=1)


def via_to(data: bytes, host: str, port: int) -> bytes:
    """``data`` with its topmost Via's sent-by replaced (the UDP answer comes to us)."""
    return _VIA.sub(lambda m: m.group(1) + f"{host}:{port}".encode(), data, count=1)


def status_of(data: bytes) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3})", data)
    return int(match.group(1)) if match else None


async def over_tcp(target: str, data: bytes, wait: float = 2.0) -> list[bytes]:
    """Send ``data`` on a new TCP connection; the responses read until a final one
    (or ``wait`` s of silence, or the switch closing the connection)."""
    host, _, port = target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    responses: list[bytes] = []
    buffer = b""
    try:
        writer.write(data)
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                message, buffer = _take(buffer)
                responses.append(message)
                code = status_of(message)
                if code is not None and code >= 200:
                    return responses
    finally:
        writer.close()
    return responses


def _take(buffer: bytes) -> tuple[bytes, bytes]:
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^(?:Content-Length|l)[ \t]*:[ \t]*(\d+)", head)
    size = int(length.group(1)) if length else 0
    return head + b"\r\n\r\n" + rest[:size], rest[size:]
