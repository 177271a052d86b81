"""Screening of incoming SIP requests: what to refuse before the SIP stack acts on them.

pjsip parses leniently and answers little on its own: a request it cannot parse is
dropped in silence, an unknown method gets no answer, a CSeq naming another method
reached a transaction it did not belong to. The call engine hands every out-of-dialog
request other than ACK, and every message pjsip could not parse, to ``screen``
(deploy/pjsua2 patch 0012), which answers as RFC 3261 section 8.2 and RFC 4475 (the
torture tests) describe for a user agent server:

- a malformed Request-Line, header or value: 400 with the reason (RFC 3261 8.2,
  21.4.1), including a Content-Length larger than a datagram's body (18.3), repeated
  single-value headers, scalars out of range (CSeq below 2**31, Max-Forwards up to
  255, Expires below 2**32) and an unbracketed URI with a comma or query (20);
- a SIP version other than 2.0: 505; a Request-URI scheme other than sip, sips or
  tel: 416 (8.2.2.1);
- an unknown method: 501, a known one we never serve (SUBSCRIBE, MESSAGE, PUBLISH):
  405, both with Allow (8.2.1), in a dialog or not; a BYE, INFO, UPDATE or PRACK
  outside any dialog: 481; any NOTIFY: 481 (the switch subscribes to nothing); a
  REFER outside a dialog: 403 (transfers happen only in calls the app controls);
- a Require option we do not support: 420 with Unsupported (8.2.2.3); an INVITE
  with Replaces (RFC 3891): 403, as calls change hands only through the app;
- an INVITE whose body is not SDP: 415 with Accept; one that accepts no SDP: 406.

Everything else goes on to the stack. Responses are never answered. Where RFC 4475
lets a receiver be liberal (an odd Date, a bare ``z9hG4bK`` branch, an RFC 2543
request without branch or Max-Forwards, three colons in an IPv6 reference), it is.
The module does no I/O: ``screen`` takes the bytes and returns a decision, and
``stateless_response`` writes the answer to a request pjsip could not parse.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from switch.sipmsg import SipMessage, canonical_name

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER"
"""The methods the switch serves (the Allow header of its 405 and 501 answers)."""

CAPABILITIES = (("Allow", ALLOW), ("Accept", "application/sdp"))
"""What an OPTIONS in a dialog is told (RFC 3261 11.2)."""
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE",
        "PRACK", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH",
    }
)  # fmt: skip
OUT_OF_DIALOG = frozenset({"INVITE", "ACK", "CANCEL", "OPTIONS", "REGISTER"})
IN_DIALOG_ONLY = frozenset({"BYE", "INFO", "UPDATE", "PRACK"})
IN_DIALOG = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "INFO", "UPDATE", "PRACK", "REFER"})
SUPPORTED_EXTENSIONS = frozenset({"100rel", "timer", "norefersub"})
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SINGLE_VALUED = ("to", "from", "call-id", "cseq", "max-forwards", "content-length")
REQUIRED = ("via", "from", "to", "call-id", "cseq")

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^ \t<>\x00-\x1f\x7f]+) (SIP/[0-9]+\.[0-9]+)")
_LOOSE_REQUEST_LINE = re.compile(rb"\s*([!-~]+)\s+(.*?)\s+(SIP/\S*)\s*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_HEADER_NAME = re.compile(rf"{_TOKEN}")
_CSEQ = re.compile(rf"([0-9]+)\s+({_TOKEN})")
_DIGITS = re.compile(r"[0-9]+")
_DISPLAY_TOKENS = re.compile(rf"(?:{_TOKEN})(?:\s+{_TOKEN})*")
_PARAM = re.compile(
    rf"\s*{_TOKEN}\s*(?:=\s*(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\"))?\s*"
)
_VIA = re.compile(
    rf"SIP\s*/\s*2\.0\s*/\s*({_TOKEN})\s+(\[[0-9A-Fa-f:.]+\]|[^\s;:\[\]]+)(?::([0-9]+))?\s*(.*)"
)
_SIP_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s\[\]:;?]+)(?::([0-9]+))?")


@dataclass(frozen=True)
class Answer:
    """The answer to a request that goes no further: status, reason, extra headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class _Answered(Exception):
    def __init__(self, answer: Answer):
        super().__init__(answer.reason)
        self.answer = answer


def _bad(why: str) -> _Answered:
    return _Answered(Answer(400, f"Bad Request ({why})"))


@dataclass(frozen=True)
class Request:  # not slotted: the header index is cached on it
    """A request as read here: the Request-Line's parts and the unfolded headers."""

    method: str
    uri: str
    version: str
    headers: tuple[tuple[str, str], ...]  # (canonical lower-case name, value)
    body: bytes

    def values(self, name: str) -> list[str]:
        return self._by_name.get(name, [])

    @functools.cached_property
    def _by_name(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for key, value in self.headers:
            found.setdefault(key, []).append(value)
        return found

    def first(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None


def screen(raw: bytes, *, datagram: bool, dialog_exists: bool = False) -> Answer | None:
    """The answer ``raw`` (one request as received) gets, or None to let it through.

    A response (or something that is not a request at all) gets None: it is never
    answered. ``datagram``: it came in one UDP datagram, so its Content-Length must fit.
    ``dialog_exists``: a request with a To tag names a dialog the switch has.
    """
    if raw.lstrip().startswith(b"SIP/"):
        return None
    try:
        request = _read(raw)
        _check(request, datagram)
        _check_method(request, dialog_exists)
    except _Answered as answered:
        return answered.answer
    return None


def _read(raw: bytes) -> Request:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = re.split(rb"\r?\n", head)
    start = lines[0].decode("utf-8", "replace")
    match = _REQUEST_LINE.fullmatch(start)
    if match is None:
        loose = _LOOSE_REQUEST_LINE.fullmatch(lines[0])
        if loose is not None and loose.group(3) != b"SIP/2.0" and b" " not in loose.group(2):
            raise _Answered(Answer(505, "Version Not Supported"))
        raise _bad("malformed Request-Line")
    method, uri, version = match.groups()
    headers: list[tuple[str, str]] = []
    if lines[-1] == b"":
        lines.pop()  # the CRLF ending the last header of a message with no blank line
    for line in lines[1:]:
        text = line.decode("utf-8", "surrogateescape")
        if text[:1] in (" ", "\t"):
            if not headers:
                raise _bad("continuation line without a header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        name = name.strip()
        if not colon or _HEADER_NAME.fullmatch(name) is None:
            raise _bad("malformed header line")
        headers.append((canonical_name(name), value.strip()))
    return Request(method, uri, version, tuple(headers), body if sep else b"")


def _check(request: Request, datagram: bool) -> None:
    """Raise the answer for the first problem found, in RFC 3261 8.2's order."""
    if request.version != "SIP/2.0":
        raise _Answered(Answer(505, "Version Not Supported"))
    _check_headers(request, datagram)
    _check_request_uri(request)


def _check_method(request: Request, dialog_exists: bool) -> None:
    """Method (RFC 3261 8.2.1), extensions (8.2.2.3) and content (8.2.3), in that order."""
    _check_method_allowed(request, dialog_exists)
    _check_extensions(request)
    _check_content(request)


def _check_headers(request: Request, datagram: bool) -> None:
    for name in REQUIRED:
        if not request.values(name):
            raise _bad(f"no {name.title()} header")
    for name in SINGLE_VALUED:
        if len(request.values(name)) > 1:
            raise _bad(f"more than one {name.title()} header")
    if request.method == "INVITE" and not _has_tag(request.first("from") or ""):
        # RFC 3261 8.1.1.3: a dialog needs the From tag; RFC 2543's tagless INVITEs
        # (RFC 4475 3.4.1) are not taken.
        raise _bad("no From tag")
    cseq = _CSEQ.fullmatch(request.first("cseq") or "")
    if cseq is None or int(cseq.group(1)) >= 2**31:
        raise _bad("malformed CSeq")
    if cseq.group(2) != request.method:
        raise _bad("CSeq method does not match the request")
    max_forwards = request.first("max-forwards")
    if max_forwards is not None and not _in_range(max_forwards, 255):
        raise _bad("malformed Max-Forwards")
    expires = request.first("expires")
    if expires is not None and not _in_range(expires, 2**32 - 1):
        raise _bad("malformed Expires")
    length = request.first("content-length")
    if length is not None:
        if _DIGITS.fullmatch(length) is None:
            raise _bad("malformed Content-Length")
        if datagram and int(length) > len(request.body):
            raise _bad("Content-Length larger than the message body")
    for via in request.values("via"):
        _check_via(via)
    for name in ("from", "to"):
        _check_address(request.first(name) or "", name.title())
    for contact in request.values("contact"):
        if contact.strip() != "*":
            for value in _split_commas(contact):
                _check_address(value, "Contact")
    for route in request.values("record-route"):
        for value in _split_commas(route):
            _check_address(value, "Record-Route")
            # RFC 3261 16.6 (4): a Record-Route is a proxy's own SIP or SIPS URI.
            scheme = _SCHEME.search(value)
            if scheme is None or scheme.group(1).lower() not in ("sip", "sips"):
                raise _bad("Record-Route must be a SIP URI")


def _in_range(value: str, highest: int) -> bool:
    return _DIGITS.fullmatch(value) is not None and int(value) <= highest


def _check_via(value: str) -> None:
    for via in _split_commas(value):
        match = _VIA.fullmatch(via.strip())
        if match is None:
            raise _bad("malformed Via")
        _check_params(match.group(4), "Via")


def _check_params(text: str, header: str) -> None:
    """``text`` is ``*( ";" generic-param )`` (RFC 3261 25.1): no empty parameter."""
    text = text.strip()
    if not text:
        return
    if not text.startswith(";"):
        raise _bad(f"malformed {header} parameters")
    for param in _split_outside_quotes(text[1:], ";"):
        if _PARAM.fullmatch(param) is None:
            raise _bad(f"malformed {header} parameter")


def _check_address(value: str, header: str) -> None:
    """name-addr (``"Name" <uri>;params``, ``Name <uri>``) or addr-spec (``uri;params``)."""
    value = value.strip()
    if _open_quote(value):
        raise _bad(f"unterminated quoted string in {header}")
    angle = _find_outside_quotes(value, "<")
    if angle < 0:
        uri, _, params = value.partition(";")
        if "?" in uri or "," in uri or " " in uri.strip():
            raise _bad(f"{header} URI with a query or spaces must be in <>")
        _check_params(";" + params if params else "", header)
        return
    display, rest = value[:angle].strip(), value[angle + 1 :]
    close = rest.find(">")
    if close < 0:
        raise _bad(f"unclosed < in {header}")
    uri = rest[:close]
    if uri != uri.strip() or not uri:
        raise _bad(f"spaces inside <> in {header}")
    if display and not display.startswith('"') and _DISPLAY_TOKENS.fullmatch(display) is None:
        raise _bad(f"display name of {header} must be quoted")
    _check_params(rest[close + 1 :], header)


def _outside_quotes(value: str) -> Iterator[tuple[int, str]]:
    """The characters of ``value`` outside quoted strings (RFC 3261 25.1), with their
    index; a quoted string left open yields ``(len(value), '"')`` at the end."""
    inside = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif inside:
            escaped = char == "\\"
            inside = char != '"'
        elif char == '"':
            inside = True
        else:
            yield index, char
    if inside:
        yield len(value), '"'


def _open_quote(value: str) -> bool:
    return '"' in value and any(i == len(value) for i, _ in _outside_quotes(value))


def _find_outside_quotes(value: str, wanted: str) -> int:
    if '"' not in value:
        return value.find(wanted)
    return next((i for i, char in _outside_quotes(value) if char == wanted), -1)


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    """``value`` split at ``separator`` where it is outside quotes and outside ``<>``."""
    if separator not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return value.split(separator)
    parts, start, depth = [], 0, 0
    for index, char in _outside_quotes(value):
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == separator and depth <= 0:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return parts


def _split_commas(value: str) -> list[str]:
    return _split_outside_quotes(value, ",")


def _check_request_uri(request: Request) -> None:
    scheme = _SCHEME.match(request.uri)
    if scheme is None:
        raise _bad("malformed Request-URI")
    name = scheme.group(1).lower()
    if name not in URI_SCHEMES:
        raise _Answered(Answer(416, "Unsupported URI Scheme"))
    if name == "tel":
        return
    hostpart = request.uri[scheme.end() :].rsplit("@", 1)[-1]
    if "?" in hostpart:
        raise _bad("headers in the Request-URI")
    hostport = hostpart.split(";", 1)[0]
    if _SIP_HOSTPORT.fullmatch(hostport) is None:
        raise _bad("malformed host in the Request-URI")
    if request.method == "REGISTER":
        to = request.first("to") or ""
        found = _SCHEME.search(to)
        if found is None or found.group(1).lower() not in ("sip", "sips"):
            raise _bad("the To of a REGISTER must be a SIP URI")


def _check_method_allowed(request: Request, dialog_exists: bool) -> None:
    method = request.method
    if method not in KNOWN_METHODS:
        raise _Answered(Answer(501, "Not Implemented", (("Allow", ALLOW),)))
    if method == "NOTIFY":
        # RFC 6665 4.1.3: the switch never subscribes (nor sends REFER), so no
        # NOTIFY matches a subscription, in a dialog or not.
        raise _Answered(Answer(481, "Subscription Does Not Exist"))
    if _has_tag(request.first("to") or ""):
        if method == "OPTIONS":
            # RFC 3261 11: in a dialog too (a session audit); pjsua's calls have no
            # usage for it, so it is answered here.
            if not dialog_exists:
                raise _Answered(Answer(481, "Call/Transaction Does Not Exist"))
            raise _Answered(Answer(200, "OK", CAPABILITIES))
        if method in IN_DIALOG:
            return  # the dialog layer answers (481 when there is no such dialog)
        raise _Answered(Answer(405, "Method Not Allowed", (("Allow", ALLOW),)))
    if method in OUT_OF_DIALOG:
        return
    if method in IN_DIALOG_ONLY:
        raise _Answered(Answer(481, "Call/Transaction Does Not Exist"))
    if method == "REFER":
        raise _Answered(Answer(403, "Forbidden (REFER outside a dialog)"))
    raise _Answered(Answer(405, "Method Not Allowed", (("Allow", ALLOW),)))


def _has_tag(address: str) -> bool:
    params = address[address.rfind(">") + 1 :] if ">" in address else address
    return re.search(r";\s*tag\s*=", params, re.I) is not None


def _check_extensions(request: Request) -> None:
    wanted = [tag.strip() for value in request.values("require") for tag in value.split(",")]
    unsupported = [tag for tag in wanted if tag and tag.lower() not in SUPPORTED_EXTENSIONS]
    if unsupported:
        raise _Answered(Answer(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),)))


def _check_content(request: Request) -> None:
    if request.method != "INVITE":
        return
    if request.values("replaces"):
        # RFC 3891: pjsua would hand this caller a live call of someone else's and
        # hang that one up. Calls change hands only through the app (referUrl).
        raise _Answered(Answer(403, "Forbidden (Replaces is not accepted)"))
    content_type = (request.first("content-type") or "").split(";", 1)[0].strip().lower()
    if request.body.strip() and content_type not in ("application/sdp", "multipart/mixed"):
        raise _Answered(Answer(415, "Unsupported Media Type", (("Accept", "application/sdp"),)))
    accept = request.values("accept")
    if accept:
        types = {t.split(";", 1)[0].strip().lower() for v in accept for t in v.split(",")}
        if not types & {"application/sdp", "application/*", "*/*"}:
            raise _Answered(Answer(406, "Not Acceptable", (("Accept", "application/sdp"),)))


# ---- answering what pjsip could not parse -------------------------------------------

_COPIED = ("via", "from", "to", "call-id", "cseq")
_NAMES = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def stateless_response(raw: bytes, answer: Answer, *, to_tag: str) -> bytes | None:
    """The whole response to ``raw`` (a request pjsip could not parse), or None.

    RFC 3261 8.2.6.2: Via, From, Call-ID and CSeq are copied, To gets ``to_tag`` unless
    it has one. Headers that are missing are left out; a message without a
    Request-Line, or one without Via and CSeq, gets nothing (there is nothing to
    answer to). Bytes that are not UTF-8 are escaped, so the answer is plain text.
    """
    first_line = re.split(rb"\r?\n", raw, maxsplit=1)[0]
    if first_line.startswith(b"SIP/") or _LOOSE_REQUEST_LINE.fullmatch(first_line) is None:
        return None
    message = SipMessage.parse(raw.decode("utf-8", "replace").replace("\ufffd", "?"))
    copied = [
        (canonical_name(name), value)
        for name, value in message.headers
        if canonical_name(name) in _COPIED
    ]
    names = {name for name, _ in copied}
    if "via" not in names or "cseq" not in names:
        return None
    out = [f"SIP/2.0 {answer.status} {answer.reason}"]
    tagged = False
    for name, value in copied:
        if name == "to" and not tagged:
            tagged = True
            if not _has_tag(value):
                value = f"{value};tag={to_tag}"
        out.append(f"{_NAMES[name]}: {value}")
    out.extend(f"{name}: {value}" for name, value in answer.headers)
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "replace")
