"""SIP over WebSocket (RFC 7118): the listeners browsers register and call through.

Each ``ws:``/``wss:`` listener of ``[sip] listen`` takes WebSocket connections on
any path with the ``sip`` subprotocol (switch/sipws/server.py). The edge is a
stateless proxy in front of the engine: every browser's SIP goes over one shared
loopback TCP connection to the engine's internal listener
(`Engine.websocket_relay`), opened once the engine has started. Each WebSocket is
a *flow* (``ws-7``) named in the edge's Via on the browser's requests and in the
browser's rewritten Contact (switch/sipws/framing.py), so the engine's responses
and requests find their way back to the right socket, and the engine keeps no
connection per browser.

The edge owns the mapping from a flow to the browser behind it (`Peer`), so the
per-source limits of the registrar and of flood control count the browser's own
address rather than loopback. When a browser's socket closes, ``on_closed`` is
told, which removes its registrations and ends its calls as if it had hung up;
a request the engine sends it afterwards gets 430 Flow Failed. Should the shared
connection itself close, every browser is disconnected (they reconnect and
register again) and it is opened anew.

Abuse: a connection without the ``sip`` subprotocol gets 400; a source opening
connections faster than ``rate`` per second, or holding ``max_per_source`` at
once, gets 503 with Retry-After; an oversized or non-UTF-8 message closes that
connection (1009 or 1007) with a log line.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from switch.registrar.throttle import RateLimiter, source_key
from switch.sipws.framing import (
    FrameRefused,
    StreamSplitter,
    browser_to_engine,
    engine_to_browser,
    flow_failed,
    flow_of_via,
    is_keepalive,
    trying,
)
from switch.sipws.server import WebSocketConnection, WebSocketListener, WebSocketServer

__all__ = ["Peer", "WebSocketEdge", "WebSocketListener"]

log = logging.getLogger("dialswitch.sipws")

HEARTBEAT_SECONDS = 30.0
"""WebSocket pings: a browser that vanished without a close is noticed within two."""
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True)
class Peer:
    """A browser's connection: its flow id and where it connects from."""

    connection_id: str  # "ws-<n>": its flow, and the registrar's flow of its bindings
    host: str
    port: int
    scheme: str


class WebSocketEdge:
    def __init__(
        self,
        listeners: Sequence[WebSocketListener],
        on_closed: Callable[[Peer], None],
        tls: ssl.SSLContext | None,
        rate: float,
        max_per_source: int,
        codecs: Sequence[str] = (),
    ):
        self.on_closed = on_closed
        self.codecs = tuple(codecs)  # the order browsers' offers are answered in
        self.limiter = RateLimiter(rate=rate, burst=rate * 2)
        self.max_per_source = max_per_source
        self.open_per_source: Counter[str] = Counter()
        self._flows: dict[str, tuple[Peer, WebSocketConnection]] = {}  # by flow id
        self._peers: dict[WebSocketConnection, Peer] = {}  # by socket
        self._ids = itertools.count(1)
        self._relay: _Relay | None = None
        self._engine: tuple[str, int] | None = None
        self._stopping = False
        self.server = WebSocketServer(
            listeners,
            tls,
            self._admit,
            self._opened,
            self._received,
            self._gone,
            heartbeat=HEARTBEAT_SECONDS,
        )

    async def start(self) -> None:
        """Listen (an OSError if a port is taken); browsers are told to come back
        until `attach` connects the engine."""
        await self.server.start()

    async def attach(self, engine: tuple[str, int]) -> None:
        """Open the shared connection to the engine's relay listener at ``engine``."""
        self._engine = engine
        await self._connect()

    async def close(self) -> None:
        self._stopping = True
        await self.server.close()
        if self._relay is not None:
            self._relay.transport.close()

    @property
    def relay_address(self) -> tuple[str, int] | None:
        """The shared connection's own address, which is where the engine sees every
        browser's messages come from; None while it is not connected."""
        return self._relay.address if self._relay is not None else None

    def peer(self, host: str, port: int, via: str) -> Peer | None:
        """The browser behind a message the engine received from ``host:port`` with
        ``via`` as its top Via, or None if it is not a browser's."""
        if (host, port) != self.relay_address:
            return None
        flow = flow_of_via(via)
        found = self._flows.get(flow) if flow is not None else None
        return found[0] if found is not None else None

    # ---- browsers ---------------------------------------------------------------

    def _admit(self, source: str) -> str | None:
        key = source_key(source)
        if not self.limiter.allow(key, time.monotonic()):
            return "connection rate"
        if self.open_per_source[key] >= self.max_per_source:
            return "too many connections"
        return None

    def _opened(self, socket: WebSocketConnection) -> None:
        peer = Peer(f"ws-{next(self._ids)}", socket.host, socket.port, socket.scheme)
        self.open_per_source[source_key(socket.host)] += 1
        self._flows[peer.connection_id] = (peer, socket)
        self._peers[socket] = peer
        log.debug("%s from %s:%d", peer.connection_id, peer.host, peer.port)

    def _received(self, socket: WebSocketConnection, data: str | bytes) -> None:
        peer = self._peers.get(socket)
        if peer is None:
            return
        if is_keepalive(data):
            socket.send("\r\n")
            return
        relay = self._relay
        if relay is None:  # the engine is not up (yet, or again)
            socket.close(1013, "starting, try again")
            return
        try:
            message = browser_to_engine(data, peer.connection_id, relay.hostport, self.codecs)
        except FrameRefused as error:
            log.info("%s from %s closed: %s", peer.connection_id, peer.host, error)
            socket.close(error.close_code, str(error)[:120])
            return
        relay.transport.write(message)

    def _gone(self, socket: WebSocketConnection) -> None:
        peer = self._peers.pop(socket, None)
        if peer is None:
            return
        del self._flows[peer.connection_id]
        key = source_key(peer.host)
        self.open_per_source[key] -= 1
        if not self.open_per_source[key]:
            del self.open_per_source[key]
        self.on_closed(peer)

    # ---- the engine -------------------------------------------------------------

    def _from_engine(self, message: bytes) -> None:
        flow, data = engine_to_browser(message)
        found = self._flows.get(flow) if flow is not None else None
        if found is not None and not found[1].closed:
            found[1].send(data.decode("utf-8", "replace"))
            self._to_engine(trying(data))
            return
        if flow is None:
            log.warning("engine message for no browser dropped: %r", message[:80])
        self._to_engine(flow_failed(message))

    def _to_engine(self, message: bytes | None) -> None:
        if message is not None and self._relay is not None:
            self._relay.transport.write(message)

    async def _connect(self) -> None:
        assert self._engine is not None
        host, port = self._engine
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Relay(self), host, port)
        except OSError as error:
            log.warning("relay to the engine at %s:%d failed: %s", host, port, error)
            loop.call_later(RECONNECT_SECONDS, self._reconnect)

    def _relay_lost(self) -> None:
        self._relay = None
        if self._stopping:
            return
        log.warning("relay to the engine closed: %d browsers disconnected", len(self._peers))
        for socket in list(self._peers):
            socket.close(1011, "engine connection lost")
        asyncio.get_running_loop().call_later(RECONNECT_SECONDS, self._reconnect)

    def _reconnect(self) -> None:
        if not self._stopping and self._relay is None:
            asyncio.get_running_loop().create_task(self._connect())


class _Relay(asyncio.Protocol):
    """The shared TCP connection to the engine: a SIP stream cut into messages."""

    def __init__(self, edge: WebSocketEdge):
        self.edge = edge
        self.splitter = StreamSplitter()
        self.address: tuple[str, int] = ("", 0)
        self.hostport = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        host, port = transport.get_extra_info("sockname")[:2]
        self.address = (host, port)
        self.hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.edge._relay = self
        log.info("browsers relayed to the engine as %s", self.hostport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.splitter.feed(data)
        except FrameRefused as error:
            log.warning("engine stream refused: %s", error)
            self.transport.close()
            return
        for message in messages:
            self.edge._from_engine(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.edge._relay is self:
            self.edge._relay_lost()
