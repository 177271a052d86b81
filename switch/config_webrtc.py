"""``[webrtc]``: the STUN and TURN servers of browser media (RFC 8445, RFC 8656).

A switch browsers can reach needs none: its ICE host candidates are enough, and a
browser behind NAT is learnt from its own checks (peer-reflexive). Operators with
a STUN or TURN server list it here, in RTCConfiguration's ``iceServers`` form:

    ice_servers = [
      { urls = "stun:stun.example.com:3478" },
      { urls = ["turn:turn.example.com:3478", "turns:turn.example.com:5349"],
        username = "dialswitch", credential = "secret" },
    ]

The browser phone (switch/phone.py) hands the list to the browsers; the engine's
browser account gathers server-reflexive candidates from the first STUN server and
relayed ones from the first TURN server (switch/engine/core.py).

``codecs`` orders the codecs of a browser's offer before the engine answers it, so
the switch answers with the first of them the browser offers (switch/sipws). The
default puts PCMU and PCMA before opus: every leg's audio meets in an 8 kHz bridge
and almost every other leg (trunks, phones) is G.711, so opus would be transcoded
at about four times G.711's cost per leg for no audible gain. WebRTC browsers all
offer G.711 (RFC 7874 section 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["IceServer", "WebRtcConfig", "build_webrtc"]

_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?$"
)
DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}


@dataclass(frozen=True)
class IceUrl:
    """One parsed ``stun:``/``turn:`` URL (RFC 7064, RFC 7065)."""

    scheme: str
    host: str
    port: int
    transport: str  # udp, tcp or tls (turns:/stuns:)

    @classmethod
    def parse(cls, text: str) -> IceUrl:
        match = _ICE_URL.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a stun:, stuns:, turn: or turns: URL "
                "(host[:port][?transport=udp|tcp])"
            )
        scheme = match["scheme"]
        port = int(match["port"] or DEFAULT_PORTS[scheme])
        if not 0 < port < 65536:
            raise ValueError(f"{text!r}: port out of range")
        transport = "tls" if scheme.endswith("s") else (match["transport"] or "udp")
        return cls(scheme.rstrip("s"), match["host"], port, transport)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IceServer:
    """One entry of RTCConfiguration.iceServers (a STUN or TURN server)."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""

    def as_json(self) -> dict[str, object]:
        entry: dict[str, object] = {"urls": list(self.urls)}
        if self.username:
            entry["username"] = self.username
        if self.credential:
            entry["credential"] = self.credential
        return entry

    def parsed(self) -> list[IceUrl]:
        return [IceUrl.parse(url) for url in self.urls]


CODECS = ("PCMU", "PCMA", "G722", "opus")
"""What the engine can answer a browser with, by its SDP encoding name."""


@dataclass(frozen=True)
class WebRtcConfig:
    ice_servers: tuple[IceServer, ...] = ()
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "opus")  # answer preference

    @property
    def stun(self) -> IceUrl | None:
        """The first STUN server: the engine's server-reflexive candidates."""
        urls = [u for s in self.ice_servers for u in s.parsed() if u.scheme == "stun"]
        return urls[0] if urls else None

    @property
    def turn(self) -> tuple[IceUrl, IceServer] | None:
        """The first TURN URL and its server (credentials): the engine's relay."""
        for server in self.ice_servers:
            for url in server.parsed():
                if url.scheme == "turn":
                    return url, server
        return None


def build_webrtc(t: Any) -> WebRtcConfig:
    """The ``[webrtc]`` table; ``t`` is switch.config's table reader."""
    servers = []
    for entry in t.tables("ice_servers"):
        urls = entry.string_or_strings("urls")
        if urls is None:
            continue
        username = entry.string("username", "") or ""
        credential = entry.string("credential", "") or ""
        server = IceServer(urls, username, credential)
        try:
            parsed = server.parsed()
        except ValueError as error:
            entry.problem("urls", str(error))
            continue
        if any(u.scheme == "turn" for u in parsed) and not (username and credential):
            entry.problem("username", "a TURN server needs username and credential")
        entry.finish()
        servers.append(server)
    codecs = WebRtcConfig.codecs
    listed = t.strings("codecs", required=False)
    if listed is not None:
        names = {name.lower(): name for name in CODECS}
        codecs = tuple(names.get(value.lower(), value) for _, value in listed)
        unknown = [name for name in codecs if name not in CODECS]
        if unknown or not codecs:
            t.problem("codecs", f"expected some of {', '.join(CODECS)}, got {list(codecs)}")
            codecs = WebRtcConfig.codecs
    t.finish()
    return WebRtcConfig(tuple(servers), codecs)
