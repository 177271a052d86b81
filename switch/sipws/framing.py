"""SIP messages between a WebSocket (RFC 7118) and the engine's loopback TCP hop.

A browser sends one SIP message per WebSocket frame; the engine reads SIP over a
TCP stream, where Content-Length delimits the body (RFC 3261 section 18.3). The
edge (switch/sipws/edge.py) relays each browser over a TCP connection of its own
to an internal listener, and this module is the pure part of that relay:

- `browser_to_engine` checks a frame, sets its Content-Length to the body's real
  size (RFC 7118 section 5 leaves it optional) and rewrites every Contact URI to
  the relay connection's address. A browser's Contact names a ``.invalid`` host
  (RFC 7118 section 5) that no one can reach, so the engine would send in-dialog
  requests nowhere; with the rewrite they go back over the same connection, and
  the edge puts them on the browser's WebSocket.
- `StreamSplitter` cuts the engine's TCP byte stream back into messages, one per
  frame, dropping the CRLF keep-alives of RFC 5626 section 3.5.1.

Errors are `FrameRefused`, whose message is what the edge logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MAX_MESSAGE", "FrameRefused", "StreamSplitter", "browser_to_engine", "is_keepalive"]

MAX_MESSAGE = 65_535
"""Largest SIP message either way, in bytes: a UDP datagram's worth."""

_HEADER_END = b"\r\n\r\n"
_START_LINE = re.compile(rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} [^\r\n]*)\r\n")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.I | re.M)
_CONTACT_LINE = re.compile(r"^((?:contact|m)[ \t]*:[ \t]*)(.*)$", re.I)
_ANGLE_URI = re.compile(r"<\s*sips?:([^>]*)>", re.I)
_BARE_URI = re.compile(r"^(\s*)sips?:([^;,\s]*)", re.I)


class FrameRefused(Exception):
    """A frame or stream the edge does not relay; the message says why, ``close_code``
    is the WebSocket close code to end that connection with (RFC 6455 section 7.4.1)."""

    def __init__(self, reason: str, close_code: int = 1007):
        super().__init__(reason)
        self.close_code = close_code  # 1007: bad payload; 1009: too big


def is_keepalive(frame: bytes | str) -> bool:
    """A CRLF keep-alive ping (RFC 5626 section 3.5.1), which some browser SIP stacks
    send over WebSocket; it is answered with a CRLF pong, not relayed."""
    return frame in ("\r\n\r\n", b"\r\n\r\n")


def browser_to_engine(frame: bytes | str, relay_host: str, relay_port: int) -> bytes:
    """One WebSocket frame from a browser as the bytes to write to the engine."""
    data = frame.encode("utf-8") if isinstance(frame, str) else frame
    if len(data) > MAX_MESSAGE:
        raise FrameRefused(f"message of {len(data)} bytes (limit {MAX_MESSAGE})", 1009)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FrameRefused(f"not UTF-8 at byte {error.start}") from None
    head, sep, body = data.partition(_HEADER_END)
    if not sep or not _START_LINE.match(head + b"\r\n"):
        raise FrameRefused("not a SIP message")
    lines = head.decode("utf-8").split("\r\n")
    relay = f"{relay_host}:{relay_port}"
    out = [lines[0]]
    for line in lines[1:]:
        if _CONTENT_LENGTH.match(line.encode("utf-8")):
            continue
        match = _CONTACT_LINE.match(line)
        if match:
            line = match.group(1) + _relay_contacts(match.group(2), relay)
        out.append(line)
    out.append(f"Content-Length: {len(body)}")
    return "\r\n".join(out).encode("utf-8") + _HEADER_END + body


def _relay_contacts(value: str, relay: str) -> str:
    """A Contact header value with each URI's host, port and transport replaced.

    The user part and the other URI parameters (``ob``, a GRUU's ``gr``) stay, so
    the Request-URI of a request to the browser still names its contact user,
    which browser SIP stacks check.
    """
    if value.strip() == "*":
        return value
    if _BARE_URI.match(value):
        return _BARE_URI.sub(lambda m: m.group(1) + _relay_uri(m.group(2), relay), value, count=1)
    return _ANGLE_URI.sub(lambda m: f"<{_relay_uri(m.group(1), relay)}>", value)


def _relay_uri(rest: str, relay: str) -> str:
    """``sip:`` + user@ + the relay's hostport + the URI's params but transport."""
    address, _, params = rest.partition(";")
    user = address.rpartition("@")[0]
    kept = [p for p in params.split(";") if p and not p.lower().startswith("transport=")]
    return (
        "sip:"
        + (f"{user}@" if user else "")
        + relay
        + "".join(f";{p}" for p in kept)
        + (";transport=tcp")
    )


@dataclass
class StreamSplitter:
    """Cuts a SIP-over-TCP byte stream into whole messages (RFC 3261 section 18.3)."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return the messages it completed, in order."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]  # keep-alive
            end = self._buffer.find(_HEADER_END)
            if end < 0:
                if len(self._buffer) > MAX_MESSAGE:
                    raise FrameRefused("header section longer than a message may be", 1009)
                return messages
            head = bytes(self._buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            total = end + len(_HEADER_END) + length
            if total > MAX_MESSAGE:
                raise FrameRefused(f"message of {total} bytes (limit {MAX_MESSAGE})", 1009)
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
