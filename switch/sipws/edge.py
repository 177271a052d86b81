"""SIP over WebSocket (RFC 7118): the listeners browsers register and call through.

Each ``ws:``/``wss:`` listener of ``[sip] listen`` is an aiohttp server that takes
WebSocket connections on any path with the ``sip`` subprotocol. Every connection
is relayed over a loopback TCP connection of its own to the engine's internal
listener (`Engine.websocket_relay`), opened with the browser's first message: the
engine sees an ordinary TCP peer at ``127.0.0.1:<relay port>``, its registrations
are reached at that address (over that very connection), and the engine's answers
and requests come back on it to be framed onto the WebSocket
(switch/sipws/framing.py).

The edge owns the mapping from a relay port to the browser behind it (`Peer`), so
the per-source limits of the registrar and of flood control count the browser's
own address rather than loopback. When either side closes, the other is closed
and ``on_closed`` is told, which removes the browser's registrations and ends its
calls as if it had hung up.

Abuse: a connection without the ``sip`` subprotocol gets 400; a source opening
connections faster than ``rate`` per second, or holding ``max_per_source`` at
once, gets 503 with Retry-After; an oversized or non-UTF-8 frame closes that
connection (1009 or 1007) with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from switch.registrar.throttle import RateLimiter, source_key
from switch.sipws.framing import (
    MAX_MESSAGE,
    FrameRefused,
    StreamSplitter,
    browser_to_engine,
    is_keepalive,
)

__all__ = ["Peer", "WebSocketEdge", "WebSocketListener"]

log = logging.getLogger("dialswitch.sipws")

HEARTBEAT_SECONDS = 30.0
"""WebSocket pings: a browser that vanished without a close is noticed within two."""
RETRY_AFTER = "5"


@dataclass(frozen=True)
class WebSocketListener:
    scheme: str  # ws | wss
    host: str
    port: int


@dataclass(frozen=True)
class Peer:
    """A browser's connection: who it is, and the relay port the engine sees it at."""

    connection_id: str  # "ws-<n>": the registrar's flow of its bindings
    host: str
    port: int
    scheme: str
    relay_host: str  # the relay connection's own address, as the engine sees it
    relay_port: int


class WebSocketEdge:
    def __init__(
        self,
        listeners: Sequence[WebSocketListener],
        relay: Callable[[], tuple[str, int] | None],
        on_closed: Callable[[Peer], None],
        tls: ssl.SSLContext | None,
        rate: float,
        max_per_source: int,
    ):
        self.listeners = tuple(listeners)
        self.relay = relay
        self.on_closed = on_closed
        self.tls = tls
        self.limiter = RateLimiter(rate=rate, burst=rate * 2)
        self.max_per_source = max_per_source
        self.open_per_source: Counter[str] = Counter()
        self.peers: dict[tuple[str, int], Peer] = {}  # by relay address
        self.connections: set[web.WebSocketResponse] = set()
        self._ids = itertools.count(1)
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for listener in self.listeners:
            app = web.Application()
            app.router.add_get("/{path:.*}", self._serve)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            context = self.tls if listener.scheme == "wss" else None
            await web.TCPSite(runner, listener.host, listener.port, ssl_context=context).start()
            self._runners.append(runner)

    async def close(self) -> None:
        for ws in list(self.connections):
            await ws.close(code=1001, message=b"server stopping")
        for runner in self._runners:
            await runner.cleanup()

    def peer(self, host: str, port: int) -> Peer | None:
        """The browser behind a relay connection the engine reports as ``host:port``."""
        return self.peers.get((host, port))

    def client_ip(self, host: str, port: int) -> str:
        """The address limits count a SIP peer under: a browser's own, else ``host``."""
        peer = self.peer(host, port)
        return peer.host if peer is not None else host

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=("sip",), max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT_SECONDS
        )
        remote = request.remote or "?"
        if ws.can_prepare(request).protocol != "sip":
            log.info("WebSocket from %s refused: no 'sip' subprotocol", remote)
            return web.Response(status=400, text="WebSocket subprotocol 'sip' required\n")
        key = source_key(remote)
        if (
            not self.limiter.allow(key, time.monotonic())
            or self.open_per_source[key] >= self.max_per_source
        ):
            log.info("WebSocket from %s refused: too many connections", remote)
            return web.Response(
                status=503, text="Too many connections\n", headers={"Retry-After": RETRY_AFTER}
            )
        self.open_per_source[key] += 1
        try:
            await ws.prepare(request)
            self.connections.add(ws)
            await _Relay(self, ws, request).run()
        finally:
            self.connections.discard(ws)
            self.open_per_source[key] -= 1
            if not self.open_per_source[key]:
                del self.open_per_source[key]
        return ws


class _Relay:
    """One browser's WebSocket and its loopback TCP connection to the engine."""

    def __init__(self, edge: WebSocketEdge, ws: web.WebSocketResponse, request: web.Request):
        self.edge = edge
        self.ws = ws
        peername = request.transport.get_extra_info("peername") if request.transport else None
        self.host: str = peername[0] if peername else "?"
        self.port: int = peername[1] if peername else 0
        self.scheme = "wss" if request.secure else "ws"
        self.connection_id = f"ws-{next(edge._ids)}"
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.peer: Peer | None = None

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if not await self._to_engine(message.data):
                        break
                elif message.type == WSMsgType.ERROR:
                    log.info("%s from %s closed: %s", self.connection_id, self.host, message.data)
                    break
        finally:
            await self._close()

    async def _to_engine(self, data: str | bytes) -> bool:
        if is_keepalive(data):
            await self.ws.send_str("\r\n")
            return True
        writer = self.writer or await self._connect()
        if writer is None:
            return False
        assert self.peer is not None
        try:
            writer.write(browser_to_engine(data, self.peer.relay_host, self.peer.relay_port))
        except FrameRefused as error:
            log.info("%s from %s closed: %s", self.connection_id, self.host, error)
            await self.ws.close(code=error.close_code, message=str(error).encode()[:120])
            return False
        return True

    async def _connect(self) -> asyncio.StreamWriter | None:
        relay = self.edge.relay()
        if relay is None:  # the engine is not up yet
            await self.ws.close(code=1013, message=b"starting, try again")
            return None
        host, port = relay
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            log.warning(
                "%s: relay to the engine at %s:%d failed: %s", self.connection_id, host, port, error
            )
            await self.ws.close(code=1011, message=b"engine unavailable")
            return None
        relay_host, relay_port = writer.get_extra_info("sockname")[:2]
        self.peer = Peer(
            self.connection_id, self.host, self.port, self.scheme, relay_host, relay_port
        )
        self.edge.peers[(relay_host, relay_port)] = self.peer
        self.writer = writer
        self.reader_task = asyncio.get_running_loop().create_task(self._to_browser(reader))
        log.debug(
            "%s from %s:%d relayed as %s:%d",
            self.connection_id,
            self.host,
            self.port,
            relay_host,
            relay_port,
        )
        return writer

    async def _to_browser(self, reader: asyncio.StreamReader) -> None:
        splitter = StreamSplitter()
        try:
            while data := await reader.read(65536):
                for message in splitter.feed(data):
                    await self.ws.send_str(message.decode("utf-8", "replace"))
        except FrameRefused as error:
            log.warning("%s: engine stream refused: %s", self.connection_id, error)
        except (ConnectionError, RuntimeError):
            pass  # the browser's side went first
        # The engine closed the relay (or the browser went): the browser reconnects.
        if not self.ws.closed:
            await self.ws.close(code=1001, message=b"relay closed")

    async def _close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader_task
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        if self.peer is not None:
            self.edge.peers.pop((self.peer.relay_host, self.peer.relay_port), None)
            self.edge.on_closed(self.peer)
