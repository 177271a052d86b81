"""SIP headers that a dial target's URI query asks to add to the outgoing INVITE.

Twilio's <Sip> takes them from the URI (``sip:bob@example.com?X-Foo=1``, RFC 3261
section 19.1.1) and RestComm's <Client> from the identity
(``alice?X-Foo=1&X-Bar=2``, its "proprietary SIP headers"). One rule serves both:
only ``X-`` names and four standard ones, no control characters in a value, and
the pairs under 1024 characters. A header that breaks it is dropped with a
warning and the call still goes out: 13252 (name not allowed), 21229 (illegal
characters in the value), 13253 (too long; that header and every later one).

:mod:`switch.sipuri` applies it to ``<Sip>`` URIs.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from switch.rcml.model import Notice

ALLOWED_STANDARD_HEADERS = frozenset(
    {"user-to-user", "remote-party-id", "p-preferred-identity", "p-called-party-id"}
)
MAX_HEADER_CHARS = 1024

HEADER_NOT_ALLOWED = 13252
HEADER_ILLEGAL_CHARACTERS = 21229
HEADERS_TOO_LONG = 13253

Headers = tuple[tuple[str, str], ...]

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def uri_headers(query: str, noun: str) -> tuple[Headers, tuple[Notice, ...]]:
    """The headers of ``query`` (``name=value`` pairs joined by ``&``, %-escaped).

    ``noun`` (``Sip``, ``Client``) only names the target in notice messages.
    """
    kept: list[tuple[str, str]] = []
    notices: list[Notice] = []
    total = 0
    for pair in filter(None, query.split("&")):
        raw_name, _, raw_value = pair.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        if not _TOKEN.fullmatch(name) or not (
            name.lower().startswith("x-") or name.lower() in ALLOWED_STANDARD_HEADERS
        ):
            notices.append(Notice(HEADER_NOT_ALLOWED, f"<{noun}> header {name!r} is not allowed"))
            continue
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            message = f"<{noun}> header {name!r} has illegal characters"
            notices.append(Notice(HEADER_ILLEGAL_CHARACTERS, message))
            continue
        total += len(name) + len(value) + 1
        if total >= MAX_HEADER_CHARS:
            message = f"<{noun}> headers over {MAX_HEADER_CHARS} characters dropped"
            notices.append(Notice(HEADERS_TOO_LONG, message))
            break
        kept.append((name, value))
    return tuple(kept), tuple(notices)
