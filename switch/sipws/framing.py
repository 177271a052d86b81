"""SIP messages between a WebSocket (RFC 7118) and the engine's loopback TCP hop.

A browser sends one SIP message per WebSocket frame; the engine reads SIP over a
TCP stream, where Content-Length delimits the body (RFC 3261 section 18.3). The
edge (switch/sipws/edge.py) relays every browser over one shared TCP connection
to the engine's internal listener, acting as a stateless proxy in front of it,
and this module is the pure part of that relay. Each browser's WebSocket is a
*flow* with an id (``ws-7``):

- `browser_to_engine` checks a frame, sets its Content-Length to the body's real
  size (RFC 7118 section 5 leaves it optional), puts the edge's own Via on top of
  a request with the flow in its branch (RFC 3261 section 16.6 step 8), and
  rewrites every Contact URI to the shared connection's address with a
  ``flow`` parameter. A browser's Contact names a ``.invalid`` host that no one
  can reach (RFC 7118 section 5); rewritten, the engine's requests to the browser
  (a Request-URI made from that Contact) come back over the shared connection
  and carry the flow that leads to the browser's WebSocket.
- `engine_to_browser` finds the flow of what the engine sends: a request's
  Request-URI parameter, a response's top Via (which it removes, RFC 3261
  section 16.7 step 3).
- `flow_failed` answers a request for a browser that is gone with 430 Flow
  Failed (RFC 5626 section 5.3), so the engine's transaction ends at once;
  `trying` answers each INVITE handed to a browser with 100 Trying, so the engine
  can CANCEL it at once.
- `prefer_codecs` orders the formats of a browser's SDP offer by the switch's
  codec preference (``[webrtc] codecs``), which the engine's answer follows.
- `StreamSplitter` cuts the engine's TCP byte stream back into messages, one per
  frame, dropping the CRLF keep-alives of RFC 5626 section 3.5.1.

Errors are `FrameRefused`, whose message is what the edge logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_MESSAGE",
    "FrameRefused",
    "StreamSplitter",
    "browser_to_engine",
    "engine_to_browser",
    "flow_failed",
    "flow_of_uri",
    "flow_of_via",
    "is_keepalive",
    "prefer_codecs",
    "trying",
]

MAX_MESSAGE = 65_535
"""Largest SIP message either way, in bytes: a UDP datagram's worth."""

_HEADER_END = b"\r\n\r\n"
_START_LINE = re.compile(rb"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} [^\r\n]*)\r\n")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.I | re.M)
_CONTACT_LINE = re.compile(r"^((?:contact|m)[ \t]*:[ \t]*)(.*)$", re.I)
_ANGLE_URI = re.compile(r"<\s*sips?:([^>]*)>", re.I)
_BARE_URI = re.compile(r"^(\s*)sips?:([^;,\s]*)", re.I)
_VIA_LINE = re.compile(r"^(?:via|v)[ \t]*:[ \t]*(.*)$", re.I)
_BRANCH = re.compile(r";[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.I)
_COOKIE = "z9hG4bK"  # RFC 3261 section 8.1.1.7
_OUR_BRANCH = re.compile(_COOKIE + r"\.([A-Za-z0-9-]+)\.")
_FLOW_PARAM = re.compile(r";flow=([A-Za-z0-9-]+)", re.I)
_AUDIO_LINE = re.compile(r"^(m=audio [^ ]+ [^ ]+ )([^\r\n]*)", re.M)
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)", re.M)
_STATIC_PAYLOADS = (("0", "pcmu"), ("8", "pcma"), ("9", "g722"))  # RFC 3551 table 4
_ECHOED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


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


def browser_to_engine(
    frame: bytes | str, flow: str, relay: str, codecs: Sequence[str] = ()
) -> bytes:
    """One WebSocket frame from the browser on ``flow`` as the bytes to write to the
    engine, whose shared connection from the edge it sees as ``relay`` (host:port);
    an SDP offer's audio formats are put in the order of ``codecs`` (`prefer_codecs`)."""
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
    out = [lines[0]]
    if not lines[0].startswith("SIP/2.0 "):
        out.append(f"Via: SIP/2.0/TCP {relay};branch={_COOKIE}.{flow}.{_browser_branch(lines)}")
    for line in lines[1:]:
        if _CONTENT_LENGTH.match(line.encode("utf-8")):
            continue
        match = _CONTACT_LINE.match(line)
        if match:
            line = match.group(1) + _relay_contacts(match.group(2), f"{relay};flow={flow}")
        out.append(line)
    if codecs and b"m=audio" in body:
        body = prefer_codecs(body.decode("utf-8"), codecs).encode("utf-8")
    out.append(f"Content-Length: {len(body)}")
    return "\r\n".join(out).encode("utf-8") + _HEADER_END + body


def prefer_codecs(sdp: str, codecs: Sequence[str]) -> str:
    """``sdp`` with each audio m-line's formats reordered: those of ``codecs`` first,
    in that order, then the rest as they were (telephone-event, red, CN...).

    The engine answers with the first format of the offer it supports (RFC 3264
    section 6.1 lets the answerer choose), so this is the switch's codec preference
    for browsers, applied where the browser's offer enters.
    """
    rank = {name.lower(): i for i, name in enumerate(codecs)}
    names = dict(_STATIC_PAYLOADS)
    for match in _RTPMAP.finditer(sdp):
        names[match.group(1)] = match.group(2).lower()

    def reorder(match: re.Match[str]) -> str:
        formats = match.group(2).split()
        ordered = sorted(formats, key=lambda pt: rank.get(names.get(pt, ""), len(rank)))
        return match.group(1) + " ".join(ordered)

    return _AUDIO_LINE.sub(reorder, sdp)


def _browser_branch(lines: list[str]) -> str:
    """The branch of a request's top Via, without the magic cookie: the edge's own
    branch is made from it, so a CANCEL (and the ACK of a failed INVITE) matches
    its INVITE's transaction in the engine, and the flow in front keeps two
    browsers' branches apart."""
    for line in lines[1:]:
        via = _VIA_LINE.match(line)
        if via:
            branch = _BRANCH.search(via.group(1).split(",", 1)[0])
            if branch and branch.group(1).startswith(_COOKIE) and len(branch.group(1)) > 7:
                return branch.group(1)[len(_COOKIE) :]
            break
    raise FrameRefused("request without an RFC 3261 Via branch")


def flow_of_via(via: str) -> str | None:
    """The flow a message came in on, from the top Via value the edge put there."""
    branch = _BRANCH.search(via.split(",", 1)[0])
    match = _OUR_BRANCH.match(branch.group(1)) if branch else None
    return match.group(1) if match else None


def flow_of_uri(uri: str) -> str | None:
    """The flow a Request-URI made from a browser's rewritten Contact leads to."""
    param = _FLOW_PARAM.search(uri.split("?", 1)[0])
    return param.group(1) if param else None


def engine_to_browser(message: bytes) -> tuple[str | None, bytes]:
    """The flow a message from the engine goes to, and the message to send on it.

    A request goes where its Request-URI's ``flow`` parameter says (the rewritten
    Contact it was made from); a response where the top Via, the edge's own,
    says, and that Via is removed. ``None``: the message names no flow.
    """
    head, sep, body = message.partition(_HEADER_END)
    lines = head.decode("utf-8", "replace").split("\r\n")
    if not lines[0].startswith("SIP/2.0 "):
        uri = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
        return flow_of_uri(uri), message
    for index, line in enumerate(lines[1:], 1):
        via = _VIA_LINE.match(line)
        if via is None:
            continue
        first, comma, rest = via.group(1).partition(",")
        flow = flow_of_via(first)
        if flow is None:
            return None, message
        if comma:
            lines[index] = line[: via.start(1)] + rest.lstrip()
        else:
            del lines[index]
        return flow, "\r\n".join(lines).encode("utf-8") + sep + body
    return None, message


def flow_failed(request: bytes) -> bytes | None:
    """430 Flow Failed (RFC 5626 section 5.3) to a request from the engine for a
    browser whose WebSocket is gone; None for an ACK, which gets no response."""
    return _response(request, "430 Flow Failed")


def trying(request: bytes) -> bytes | None:
    """100 Trying to an INVITE the edge hands to a browser (RFC 3261 section 16.7
    step 5 of a proxy), None for any other message.

    Browser stacks send no 100 over their reliable WebSocket, and until a
    provisional response comes the engine may not CANCEL (section 9.1): it would
    wait and then send a CANCEL of its own, without the Reason that tells the
    browser another phone answered (RFC 3326).
    """
    if not request.startswith(b"INVITE "):
        return None
    return _response(request, "100 Trying")


def _response(request: bytes, status: str) -> bytes | None:
    """A response with ``status`` (code and reason) to ``request``, echoing the
    headers that identify its transaction; None for an ACK or a response."""
    lines = request.partition(_HEADER_END)[0].decode("utf-8", "replace").split("\r\n")
    if lines[0].startswith(("SIP/2.0 ", "ACK ")):
        return None
    final = not status.startswith("1")
    echoed = []
    for line in lines[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if final and name in ("to", "t") and ";tag=" not in line.lower():
            line += ";tag=flow-failed"  # RFC 3261 section 8.2.6.2
        if name in _ECHOED:
            echoed.append(line)
    response = [f"SIP/2.0 {status}", *echoed, "Content-Length: 0"]
    return "\r\n".join(response).encode("utf-8") + _HEADER_END


def _relay_contacts(value: str, relay: str) -> str:
    """A Contact header value with each URI's host, port and transport replaced.

    The user part and the other URI parameters (``ob``, a GRUU's ``gr``) stay, so
    the Request-URI of a request to the browser still names its contact user,
    which browser SIP stacks check.
    """
    if value.strip() == "*":
        return value
    if _BARE_URI.match(value):
        # Without angle brackets what follows the URI are header parameters
        # (RFC 3261 section 20.10): the brackets keep the flow in the URI.
        return _BARE_URI.sub(
            lambda m: f"{m.group(1)}<{_relay_uri(m.group(2), relay)}>", value, count=1
        )
    return _ANGLE_URI.sub(lambda m: f"<{_relay_uri(m.group(1), relay)}>", value)


def _relay_uri(rest: str, relay: str) -> str:
    """``sip:`` + user@ + the relay's hostport and flow + the URI's params but
    transport (and any ``flow`` a browser put there itself)."""
    address, _, params = rest.partition(";")
    user = address.rpartition("@")[0]
    kept = [p for p in params.split(";") if p and not p.lower().startswith(("transport=", "flow="))]
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
