"""The URI of a ``<Dial><Sip>`` target: where to send the INVITE and which headers.

Twilio's ``<Sip>`` takes headers from the URI's query part
(``sip:bob@example.com?X-Foo=1&X-Bar=2``, RFC 3261 section 19.1.1). Only ``X-``
names and four standard ones may be set; the pairs must stay under 1024
characters. A header that breaks a rule is dropped with a warning, the call
still goes out: 13252 (name not allowed), 21229 (illegal characters in the
value), 13253 (headers too long). A URI that cannot be dialled at all is 13243.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from switch.rcml.model import Notice

ALLOWED_STANDARD_HEADERS = frozenset(
    {"user-to-user", "remote-party-id", "p-preferred-identity", "p-called-party-id"}
)
MAX_HEADER_CHARS = 1024
TRANSPORTS = frozenset({"udp", "tcp", "tls"})

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HOSTPORT = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)(?::(\d{1,5}))?$"
)
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")


class InvalidSipUri(ValueError):
    """Twilio 13243: the URI of a ``<Sip>`` noun cannot be dialled."""

    code = 13243


@dataclass(frozen=True)
class DialUri:
    """The Request-URI to INVITE (no headers part) and the headers to add."""

    uri: str
    headers: tuple[tuple[str, str], ...] = ()
    transport: str | None = None
    notices: tuple[Notice, ...] = field(default=())


def parse_dial_uri(text: str) -> DialUri:
    """Split a ``<Sip>`` URI into Request-URI and headers; raise InvalidSipUri."""
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise InvalidSipUri(f"{text!r}: a <Sip> URI starts with sip: or sips:")
    target, _, query = rest.partition("?")
    userinfo, at, hostpart = target.rpartition("@")
    if at and not _USER.match(userinfo):
        raise InvalidSipUri(f"{text!r}: invalid user part")
    host, *params = hostpart.split(";")
    if not _HOSTPORT.match(host):
        raise InvalidSipUri(f"{text!r}: invalid host")
    transport = None
    for param in params:
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            if value.lower() not in TRANSPORTS:
                raise InvalidSipUri(f"{text!r}: transport must be udp, tcp or tls")
            transport = value.lower()
    headers, notices = _headers(query)
    return DialUri(
        uri=f"{scheme.lower()}:{target}",
        headers=headers,
        transport=transport,
        notices=notices,
    )


def _headers(query: str) -> tuple[tuple[tuple[str, str], ...], tuple[Notice, ...]]:
    kept: list[tuple[str, str]] = []
    notices: list[Notice] = []
    total = 0
    for pair in filter(None, query.split("&")):
        raw_name, _, raw_value = pair.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if not _TOKEN.match(name) or not (
            name.lower().startswith("x-") or name.lower() in ALLOWED_STANDARD_HEADERS
        ):
            notices.append(Notice(13252, f"header {name!r} is not allowed on <Sip>"))
            continue
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            notices.append(Notice(21229, f"header {name!r} has illegal characters"))
            continue
        total += len(name) + len(value) + 1
        if total >= MAX_HEADER_CHARS:
            notices.append(Notice(13253, f"headers over {MAX_HEADER_CHARS} characters dropped"))
            break
        kept.append((name, value))
    return tuple(kept), tuple(notices)
