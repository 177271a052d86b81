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

from switch.rcml.headers import uri_headers
from switch.rcml.model import Notice

TRANSPORTS = frozenset({"udp", "tcp", "tls"})

# \Z, not $: a $ also matches before a final line break.
_HOSTPORT = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?)(?::(\d{1,5}))?\Z"
)
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+\Z")


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
    secure: bool = False
    """Twilio's ``;secure=true``: TLS signalling and mandatory SRTP."""


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
    secure = False
    kept = []
    for param in params:
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            if value.lower() not in TRANSPORTS:
                raise InvalidSipUri(f"{text!r}: transport must be udp, tcp or tls")
            transport = value.lower()
        elif name.lower() == "secure":
            secure = value.lower() == "true"
            continue  # Twilio's own parameter: not sent to the far end
        kept.append(param)
    if secure:
        if transport not in (None, "tls"):
            raise InvalidSipUri(f"{text!r}: secure=true needs transport=tls")
        if transport is None and scheme.lower() == "sip":
            kept.append("transport=tls")
        transport = "tls"
    if scheme.lower() == "sips":
        transport = "tls"
    userpart = f"{userinfo}@" if at else ""
    headers, notices = _headers(query)
    return DialUri(
        uri=f"{scheme.lower()}:{userpart}{';'.join([host, *kept])}",
        headers=headers,
        transport=transport,
        notices=notices,
        secure=secure,
    )


def _headers(query: str) -> tuple[tuple[tuple[str, str], ...], tuple[Notice, ...]]:
    return uri_headers(query, "Sip")
