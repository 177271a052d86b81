"""The browser phone: ``GET /phone`` and what the page needs, on the switch's HTTP server.

The page (``switch/web/phone/``: index.html, phone.js, phone.css) is plain browser
JavaScript around JsSIP, which ``make install`` installs with ``npm ci`` and bundles
into ``node_modules/jssip/dist/jssip.min.js`` (JsSIP's npm package ships no browser
bundle). Nothing is fetched from elsewhere at run time. Only the files the page needs
are served, each by name; without the bundle, ``/phone`` is a 503 page naming
``make install``.

The page registers over SIP-over-WebSocket (RFC 7118) as ``sip:IDENTITY@DOMAIN``
(digest username IDENTITY, realm DOMAIN) and calls ``sip:+15005550100@DOMAIN`` for a
number and ``sip:bob@DOMAIN`` for ``client:bob``: the switch reads an E.164-ish user
part as a number and any other as a client identity. ``GET /phone/config.json`` tells
the page the SIP domain and the WebSocket URLs to try, chosen per request by
`websocket_urls`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiohttp import web

from switch.config_webrtc import IceServer

__all__ = [
    "PHONE_ASSETS",
    "IceServer",
    "PhoneConfig",
    "WsListener",
    "add_phone_routes",
    "websocket_urls",
]

PHONE_ASSETS = Path(__file__).resolve().parent / "web" / "phone"
"""The page's files, and ``node_modules/`` once ``make install`` has run ``npm ci``."""

JSSIP_BUNDLE = "node_modules/jssip/dist/jssip.min.js"

# URL under /phone/ -> (file under the assets directory, Content-Type). Nothing else
# in the directory (package.json, the rest of node_modules) is served.
_ASSETS = {
    "phone.js": ("phone.js", "text/javascript"),
    "phone.css": ("phone.css", "text/css"),
    JSSIP_BUNDLE: (JSSIP_BUNDLE, "text/javascript"),
}

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

# The page's own files only; WebSockets to any host (the server override); remote
# audio comes from a MediaStream, not a URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=()",
    "Cache-Control": "no-cache",
}

NOT_INSTALLED = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>dialswitch phone: not installed</title></head>
<body>
<h1>The browser phone is not installed</h1>
<p>Its SIP library (JsSIP) is missing from <code>switch/web/phone/node_modules</code>.
Run <code>make install</code> in the dialswitch checkout (it runs <code>npm ci</code>
there), then reload this page.</p>
</body>
</html>
"""


@dataclass(frozen=True)
class WsListener:
    """A SIP-over-WebSocket listener of the switch: ``ws:HOST:PORT`` or ``wss:HOST:PORT``
    (an IPv6 host without brackets)."""

    scheme: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.scheme not in ("ws", "wss"):
            raise ValueError(f"WebSocket scheme must be ws or wss, not {self.scheme!r}")


class _Listening(Protocol):
    """What `PhoneConfig.from_sip` reads of a configured listener (config.Listen)."""

    @property
    def transport(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class PhoneConfig:
    """What the phone routes need: the WebSocket listeners and the SIP domain.

    ``ice_servers`` is empty by default: the page then offers host candidates only,
    which is what a switch on the same network needs. ``assets`` is where the page's
    files are (tests point it elsewhere).
    """

    listeners: tuple[WsListener, ...]
    domain: str
    ice_servers: tuple[IceServer, ...] = ()
    assets: Path = field(default=PHONE_ASSETS, compare=False)

    @classmethod
    def from_sip(
        cls, listen: Iterable[_Listening], domain: str, ice_servers: Sequence[IceServer] = ()
    ) -> PhoneConfig:
        """The ws: and wss: listeners among ``[sip] listen`` (others are skipped)."""
        listeners = tuple(
            WsListener(x.transport.lower(), x.host, x.port)
            for x in listen
            if x.transport.lower() in ("ws", "wss")
        )
        return cls(listeners, domain, tuple(ice_servers))

    @property
    def installed(self) -> bool:
        return (self.assets / JSSIP_BUNDLE).is_file()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) names
    this machine: ``localhost`` (RFC 6761 section 6.3), 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def websocket_urls(listeners: Sequence[WsListener], page_scheme: str, page_host: str) -> list[str]:
    """The WebSocket URLs a page loaded as ``page_scheme://page_host`` should try, best
    first.

    - An https page gets wss only: a browser blocks ws from it as mixed content.
    - A listener bound to a wildcard address is reached by the host the page itself
      was requested by (its Host header): that is the name the browser resolves and,
      for wss, the one the certificate is likely issued for.
    - A listener bound to a loopback address is offered only to a page on loopback:
      elsewhere, 127.0.0.1 would be the browser's own machine.
    - An http page on loopback prefers ws (no certificate to trust), then wss; any
      other http page prefers wss. Within a scheme, the configured order is kept.
    """
    scheme = page_scheme.lower()
    page_on_loopback = is_loopback(page_host)
    order: tuple[str, ...]
    if scheme == "https":
        order = ("wss",)
    elif page_on_loopback:
        order = ("ws", "wss")
    else:
        order = ("wss", "ws")
    urls: list[str] = []
    for wanted in order:
        for listener in listeners:
            if listener.scheme != wanted:
                continue
            if listener.host in WILDCARD_HOSTS:
                host = page_host
            elif is_loopback(listener.host) and not page_on_loopback:
                continue
            else:
                host = listener.host
            url = f"{wanted}://{_url_host(host)}:{listener.port}"
            if url not in urls:
                urls.append(url)
    return urls


def _url_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def add_phone_routes(app: web.Application, config: PhoneConfig) -> None:
    """GET /phone (and /phone/), /phone/config.json and the page's assets."""

    async def page(request: web.Request) -> web.StreamResponse:
        if not config.installed:
            return web.Response(
                status=503,
                text=NOT_INSTALLED,
                content_type="text/html",
                headers={"Retry-After": "3600", "Cache-Control": "no-store"},
            )
        response = web.FileResponse(config.assets / "index.html", headers=_PAGE_HEADERS)
        response.content_type = "text/html"
        return response

    async def phone_config(request: web.Request) -> web.Response:
        host = request.url.host or "localhost"
        body = {
            "domain": config.domain or _url_host(host),
            "websocket_urls": websocket_urls(config.listeners, request.scheme, host),
            "ice_servers": [server.as_json() for server in config.ice_servers],
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def asset(request: web.Request) -> web.StreamResponse:
        entry = _ASSETS.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        name, content_type = entry
        path = config.assets / name
        if not path.is_file():
            return web.Response(
                status=503,
                text=f"{name} is missing: run `make install` (npm ci in switch/web/phone)\n",
                headers={"Cache-Control": "no-store"},
            )
        response = web.FileResponse(
            path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        )
        response.content_type = content_type
        return response

    app.router.add_get("/phone", page)
    app.router.add_get("/phone/", page)
    app.router.add_get("/phone/config.json", phone_config)
    app.router.add_get("/phone/{name:.+}", asset)
