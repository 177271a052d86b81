"""The ``[registrar]`` table and the ``[[clients]]`` array of the config file.

Clients are the SIP phones and softphones that register with dialswitch; each
has an identity (what ``<Dial><Client>`` names and what its own calls come
from, ``client:alice``), the password its digest answers are checked against,
and the app its own calls run. Read through ``switch.config``'s table reader,
so problems are reported with their keys like every other section.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switch.config_tls import SRTP_MODES

IDENTITY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class RegistrarConfig:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5
    nonce_ttl: int = 300
    max_failures: int = 10
    failure_window: int = 60
    block_seconds: int = 300
    register_rate: float = 20.0  # REGISTERs per second one source may send
    # Offered in this order. MD5 alone by default: SIPp and browser SIP stacks read
    # only the first challenge, and Debian's baresip gives up on any 401 that lists
    # SHA-256 at all; a fleet of RFC 8760 phones can be offered ["SHA-256", "MD5"].
    digest_algorithms: tuple[str, ...] = ("MD5",)


@dataclass(frozen=True)
class ClientConfig:
    identity: str
    password: str = field(repr=False)
    voice_url: str | None
    voice_method: str
    voice_fallback_url: str | None
    voice_fallback_method: str
    digest_algorithms: tuple[str, ...] | None = None
    """The algorithms this client may authenticate with (None: any the registrar offers)."""
    srtp: str = "optional"
    """off, optional or mandatory (switch.config_tls)."""


def build_registrar(t: Any) -> RegistrarConfig:
    """``[registrar]``; ``t`` is switch.config's table reader."""
    min_expires = t.integer("min_expires", 60, 1, 3600)
    max_expires = t.integer("max_expires", 3600, 1, 86400)
    if max_expires < min_expires:
        t.problem("max_expires", "must not be below min_expires")
    default_expires = t.integer("default_expires", 3600, 1, 86400)
    config = RegistrarConfig(
        min_expires=min_expires,
        max_expires=max_expires,
        default_expires=default_expires,
        max_contacts=t.integer("max_contacts", 5, 1, 100),
        nonce_ttl=t.integer("nonce_ttl", 300, 10, 3600),
        max_failures=t.integer("max_failures", 10, 1, 1000),
        failure_window=t.integer("failure_window", 60, 1, 86400),
        block_seconds=t.integer("block_seconds", 300, 1, 604800),
        register_rate=t.number("register_rate", 20.0, 0, 10000),
        digest_algorithms=_algorithms(t),
    )
    t.finish()
    return config


def _algorithms(t: Any, default: tuple[str, ...] | None = ("MD5",)) -> Any:
    items = t.strings("digest_algorithms", required=False)
    if items is None:
        return default
    names = tuple(name.upper() for _, name in items)
    unknown = [name for name in names if name not in ("SHA-256", "MD5")]
    if unknown or not names or len(set(names)) != len(names):
        t.problem("digest_algorithms", 'expected "SHA-256" and/or "MD5", each once')
        return default
    return names


def build_clients(
    tables: list[Any],
    methods: tuple[str, ...],
    check_url: Callable[[str], str],
    checked: Callable[..., Any],
    srtp: str = "optional",
) -> tuple[ClientConfig, ...]:
    """``[[clients]]``: unique identities, a password each, an optional app."""
    clients: list[ClientConfig] = []
    seen: dict[str, str] = {}
    for t in tables:
        identity = t.required_string("identity")
        if identity is not None:
            if not IDENTITY.match(identity):
                t.problem("identity", "use 1-64 letters, digits and '_' only")
            elif identity in seen:
                t.problem("identity", f"duplicate identity (also {seen[identity]})")
            else:
                seen[identity] = t.key("identity")
        password = t.required_string("password")
        if password is not None and len(password) < 8:
            t.problem("password", "must be at least 8 characters")
        voice_url = checked(t, "voice_url", t.string("voice_url"), check_url)
        voice_method = t.choice("voice_method", "POST", methods, "upper")
        fallback = checked(t, "voice_fallback_url", t.string("voice_fallback_url"), check_url)
        fallback_method = t.choice("voice_fallback_method", "POST", methods, "upper")
        algorithms = _algorithms(t, None)
        srtp_mode = t.choice("srtp", srtp, SRTP_MODES, "lower")
        t.finish()
        clients.append(
            ClientConfig(
                identity=identity or "",
                password=password or "",
                voice_url=voice_url,
                voice_method=voice_method,
                voice_fallback_url=fallback,
                voice_fallback_method=fallback_method,
                digest_algorithms=algorithms,
                srtp=srtp_mode,
            )
        )
    return tuple(clients)
