"""Read-only views of SIP message text: start line, headers, URI parts.

The call engine hands us the raw text of an INVITE or a response; the call
logic needs the Request-URI user, the From display name, source address and the
``X-`` headers (for ``SipHeader_X-...``). RFC 3261 section 7.3: header names are
case-insensitive, compact forms exist, and a header may be folded over lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
}

_URI = re.compile(r"(?P<scheme>sips?|tel):(?:(?P<user>[^@;>?]+)@)?(?P<host>[^;>?\s]*)", re.I)


@dataclass(frozen=True)
class SipMessage:
    start_line: str
    headers: tuple[tuple[str, str], ...]  # (name as sent, value), in order
    body: str = ""

    @classmethod
    def parse(cls, text: str) -> SipMessage:
        head, _, body = text.partition("\r\n\r\n")
        if "\n\n" in head:
            head, _, rest = head.partition("\n\n")
            body = f"{rest}\r\n\r\n{body}" if body else rest
        lines = head.replace("\r\n", "\n").split("\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {line.strip()}")
            elif ":" in line:
                name, value = line.split(":", 1)
                headers.append((name.strip(), value.strip()))
        return cls(start_line=lines[0].strip() if lines else "", headers=tuple(headers), body=body)

    def header(self, name: str) -> str | None:
        wanted = canonical_name(name)
        for key, value in self.headers:
            if canonical_name(key) == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header that may repeat (Contact, Authorization...)."""
        wanted = canonical_name(name)
        return [value for key, value in self.headers if canonical_name(key) == wanted]

    def x_headers(self) -> dict[str, str]:
        """Every ``X-`` header by the name the sender used (the first one wins)."""
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key.lower().startswith("x-"):
                found.setdefault(key, value)
        return found

    @property
    def request_uri(self) -> str:
        parts = self.start_line.split()
        return parts[1] if len(parts) == 3 and not parts[0].startswith("SIP/") else ""

    @property
    def status_code(self) -> int:
        parts = self.start_line.split(maxsplit=2)
        if len(parts) >= 2 and parts[0].startswith("SIP/") and parts[1].isdigit():
            return int(parts[1])
        return 0


def canonical_name(name: str) -> str:
    """A header name as compared: lower case, compact forms expanded (``l`` ->
    ``content-length``; RFC 3261 section 7.3.3)."""
    lowered = name.strip().lower()
    return _COMPACT.get(lowered, lowered)


def uri_user(uri: str) -> str:
    """The user part of a SIP/tel URI (percent-decoded), or "" when it has none."""
    match = _URI.search(uri)
    if match is None:
        return ""
    if match.group("scheme").lower() == "tel":
        return unquote(match.group("host"))
    return unquote(match.group("user") or "")


_NAME_ADDR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<')


def display_name(name_addr: str) -> str:
    """The display name of a ``name-addr`` header value, quotes and escapes removed."""
    match = _NAME_ADDR.match(name_addr)
    if match is None:
        return ""
    if match.group(1) is not None:
        return re.sub(r"\\(.)", r"\1", match.group(1))
    return match.group(2).strip()
