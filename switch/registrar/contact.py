"""Contact header values of a REGISTER (RFC 3261 sections 20.10 and 25.1).

A Contact header holds either ``*`` or a comma-separated list of contacts, each a
name-addr (``"Alice" <sip:alice@192.0.2.4:5060;transport=tcp>``) or a bare addr-spec
(``sip:alice@192.0.2.4``), followed by contact params: ``expires`` and ``q`` from
RFC 3261, ``+sip.instance`` and ``reg-id`` from RFC 5626 (SIP outbound), and any
extension params, which are kept as sent. With a bare addr-spec every ``;param``
belongs to the header, not the URI (section 20).

Errors raise `BadContact`, which carries the status to answer with: 400, or 416
(Unsupported URI Scheme) for a scheme other than sip or sips.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "WILDCARD",
    "BadContact",
    "ContactSpec",
    "Params",
    "UnsupportedUriScheme",
    "format_params",
    "parse_contacts",
    "parse_params",
    "uri_key",
]

Params = tuple[tuple[str, str | None], ...]
"""Header params in order: lower-cased name, value as sent (quotes kept) or None."""

MAX_DELTA_SECONDS = 2**32 - 1
"""RFC 3261 section 10.2.1.1: larger expiry values are taken as this."""

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")
_DIGITS = re.compile(r"\d+")
_MAX_REG_ID = 2**31 - 1
# Params that take part in URI comparison whenever either side has them (19.1.4).
_SIGNIFICANT_URI_PARAMS = ("maddr", "method", "transport", "ttl", "user")


class BadContact(ValueError):
    """A Contact header the registrar cannot accept; answer with `status_code`."""

    status_code = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedUriScheme(BadContact):
    """A Contact URI whose scheme is neither sip nor sips (RFC 3261 section 21.4.16)."""

    status_code = 416


@dataclass(frozen=True)
class ContactSpec:
    """One contact of a REGISTER request, as the UA asked for it.

    ``uri`` is the addr-spec (``*`` for the wildcard). ``expires`` is None when the
    contact has no expires param, so the Expires header or the registrar's default
    applies. ``instance_id`` is the ``+sip.instance`` URN without quotes and angle
    brackets; ``params`` holds every other contact param, as sent.
    """

    uri: str
    display_name: str | None = None
    expires: int | None = None
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    params: Params = ()

    @property
    def wildcard(self) -> bool:
        return self.uri == "*"

    @classmethod
    def parse(cls, value: str) -> ContactSpec:
        """Parse exactly one contact (or ``*``)."""
        contacts = parse_contacts(value)
        if len(contacts) != 1:
            raise BadContact("expected exactly one contact")
        return contacts[0]

    def header_value(self) -> str:
        """Serialise as a Contact header value; `parse` reads it back unchanged."""
        if self.wildcard:
            return "*"
        text = f"<{self.uri}>"
        if self.display_name is not None:
            text = f"{_quote(self.display_name)} {text}"
        return text + format_params(self.contact_params())

    def contact_params(self, expires: int | None = None) -> Params:
        """All contact params in a fixed order; ``expires`` replaces the stored one."""
        chosen = self.expires if expires is None else expires
        return contact_params(chosen, self.q, self.instance_id, self.reg_id, self.params)


WILDCARD = ContactSpec(uri="*")


def contact_params(
    expires: int | None,
    q: float | None,
    instance_id: str | None,
    reg_id: int | None,
    extra: Params,
) -> Params:
    """The params of a Contact: expires, q, +sip.instance, reg-id, then the rest."""
    params: list[tuple[str, str | None]] = []
    if expires is not None:
        params.append(("expires", str(expires)))
    if q is not None:
        params.append(("q", format_q(q)))
    if instance_id is not None:
        params.append(("+sip.instance", _quote(f"<{instance_id}>")))
    if reg_id is not None:
        params.append(("reg-id", str(reg_id)))
    params.extend(extra)
    return tuple(params)


def format_q(q: float) -> str:
    """A qvalue with at most three decimals and no trailing zeros: 1, 0.5, 0.125."""
    return f"{q:.3f}".rstrip("0").rstrip(".")


def format_params(params: Params) -> str:
    """``;name=value;flag`` for each param in order."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` params (or nothing); values are kept as sent."""
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise BadContact(f"params must start with ';': {text!r}")
    params: list[tuple[str, str | None]] = []
    for raw in _split_outside(text[1:], ";"):
        item = raw.strip()
        if not item:
            raise BadContact("empty contact param")
        name, sep, value = item.partition("=")
        name = name.strip()
        if not _TOKEN.fullmatch(name):
            raise BadContact(f"bad contact param name {name!r}")
        if not sep:
            params.append((name.lower(), None))
            continue
        value = value.strip()
        if value.startswith('"'):
            end = _quoted_end(value, 0)
            if end != len(value):
                raise BadContact(f"bad quoted value for param {name!r}")
        elif not value or any(ch.isspace() or ch in '",<>' for ch in value):
            raise BadContact(f"bad value for param {name!r}")
        params.append((name.lower(), value))
    return tuple(params)


def parse_contacts(values: str | Iterable[str]) -> list[ContactSpec]:
    """Every contact of a request's Contact header value(s), in order.

    ``*`` must be the only contact of the request (RFC 3261 section 10.3 step 6);
    whether its Expires is zero is for the binding table to judge.
    """
    if isinstance(values, str):
        values = [values]
    contacts: list[ContactSpec] = []
    for value in values:
        if not value.strip():
            raise BadContact("empty Contact header")
        for element in _split_outside(value, ","):
            if not element.strip():
                raise BadContact("empty contact in list")
            contacts.append(_parse_one(element.strip()))
    if len(contacts) > 1 and any(contact.wildcard for contact in contacts):
        raise BadContact("wildcard Contact must be the only contact")
    return contacts


def uri_key(uri: str) -> tuple[object, ...]:
    """A key under which equal SIP URIs compare equal (RFC 3261 section 19.1.4).

    Scheme and host are case-insensitive, user and password are compared after
    unescaping and case-sensitively, an absent port differs from an explicit 5060,
    and the significant URI params (user, ttl, method, maddr, transport) must match;
    other URI params and headers are ignored, a simplification that suffices for
    telling one registered contact from another.
    """
    scheme, _, rest = uri.partition(":")
    rest = rest.split("?", 1)[0]
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", rest
    user, _, password = userinfo.partition(":")
    hostport, *param_texts = hostpart.split(";")
    host, port = _split_hostport(hostport)
    significant: list[tuple[str, str]] = []
    for text in param_texts:
        name, _, value = text.partition("=")
        if name.lower() in _SIGNIFICANT_URI_PARAMS:
            significant.append((name.lower(), unquote(value).lower()))
    return (
        scheme.lower(),
        unquote(user),
        unquote(password),
        host.lower(),
        port,
        tuple(sorted(significant)),
    )


def _parse_one(element: str) -> ContactSpec:
    if element == "*":
        return WILDCARD
    display_name: str | None = None
    if element.startswith('"'):
        end = _quoted_end(element, 0)
        display_name = _unquote(element[:end])
        rest = element[end:].lstrip()
        if not rest.startswith("<"):
            raise BadContact("quoted display name without <uri>")
        element = rest
    angle = _find_outside_quotes(element, "<")
    if angle >= 0:
        if display_name is None:
            words = element[:angle].split()
            if any(not _TOKEN.fullmatch(word) for word in words):
                raise BadContact("bad display name")
            display_name = " ".join(words) or None
        close = element.find(">", angle)
        if close < 0:
            raise BadContact("missing '>' after Contact URI")
        uri = element[angle + 1 : close].strip()
        tail = element[close + 1 :].strip()
        if tail and not tail.startswith(";"):
            raise BadContact("unexpected text after Contact URI")
    else:
        uri, semi, params_text = element.partition(";")
        uri = uri.strip()
        tail = semi + params_text
    _check_uri(uri)
    return _with_params(uri, display_name, parse_params(tail))


def _with_params(uri: str, display_name: str | None, params: Params) -> ContactSpec:
    expires: int | None = None
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    extra: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for name, value in params:
        if name in ("expires", "q", "+sip.instance", "reg-id"):
            if name in seen:
                raise BadContact(f"duplicate {name} param")
            seen.add(name)
            if value is None:
                raise BadContact(f"{name} param without a value")
        if name == "expires":
            expires = _delta_seconds(value or "")
        elif name == "q":
            if not _QVALUE.fullmatch(value or ""):
                raise BadContact(f"bad q value {value!r}")
            q = float(value or "")
        elif name == "+sip.instance":
            instance_id = _instance_id(value or "")
        elif name == "reg-id":
            if not _DIGITS.fullmatch(value or "") or not 1 <= int(value or "") <= _MAX_REG_ID:
                raise BadContact(f"bad reg-id {value!r}")
            reg_id = int(value or "")
        else:
            extra.append((name, value))
    return ContactSpec(
        uri=uri,
        display_name=display_name,
        expires=expires,
        q=q,
        instance_id=instance_id,
        reg_id=reg_id,
        params=tuple(extra),
    )


def _delta_seconds(value: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise BadContact(f"bad expires value {value!r}")
    return min(int(value), MAX_DELTA_SECONDS)


def _instance_id(value: str) -> str:
    text = _unquote(value) if value.startswith('"') else value
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text or any(ch.isspace() or ch in "<>" for ch in text):
        raise BadContact(f"bad +sip.instance {value!r}")
    return text


def _check_uri(uri: str) -> None:
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise BadContact(f"bad Contact URI {uri!r}")
    if scheme.lower() not in ("sip", "sips"):
        raise UnsupportedUriScheme(f"unsupported URI scheme {scheme!r}")
    if any(ch.isspace() or ch in '<>"' for ch in uri):
        raise BadContact(f"bad character in Contact URI {uri!r}")
    hostpart = rest.split("?", 1)[0].rpartition("@")[2].split(";", 1)[0]
    host, _ = _split_hostport(hostpart)
    if not host:
        raise BadContact(f"Contact URI without a host {uri!r}")


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return "", None
        host, after = hostport[: close + 1], hostport[close + 1 :]
        port_text = after[1:] if after.startswith(":") else ""
        if after and not after.startswith(":"):
            return "", None
    else:
        host, _, port_text = hostport.partition(":")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return "", None
    return host, int(port_text)


def _split_outside(text: str, separator: str) -> list[str]:
    """Split at ``separator`` where it is outside quoted strings and ``<...>``."""
    parts: list[str] = []
    start = 0
    depth = 0
    index = 0
    while index < len(text):
        ch = text[index]
        if ch == '"':
            index = _quoted_end(text, index)
            continue
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == separator and not depth:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _find_outside_quotes(text: str, wanted: str) -> int:
    index = 0
    while index < len(text):
        if text[index] == '"':
            index = _quoted_end(text, index)
            continue
        if text[index] == wanted:
            return index
        index += 1
    return -1


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted string that opens at ``start``."""
    index = start + 1
    while index < len(text):
        ch = text[index]
        if ch == "\\":
            index += 2
            continue
        if ch == '"':
            return index + 1
        index += 1
    raise BadContact("unterminated quoted string")


def _unquote(quoted: str) -> str:
    body = quoted[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        if body[index] == "\\" and index + 1 < len(body):
            index += 1
        out.append(body[index])
        index += 1
    return "".join(out)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
