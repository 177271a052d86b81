"""The WebSocket server (RFC 6455) that browsers speak SIP over (RFC 7118).

RFC 7118 carries one SIP message per WebSocket message, on connections that agreed
on the ``sip`` subprotocol. The switch holds thousands of them idle between a
browser's REGISTER refreshes, so an idle connection has to be cheap: each accepted
socket is one `asyncio.Protocol` with ``__slots__`` (`WebSocketConnection`) that
feeds wsproto's sans-IO state machine and turns its events into callbacks. There is
no task, HTTP request object or timer handle per connection, and once the upgrade
is done the HTTP parser is dropped and only wsproto's frame parser stays.

Timers are the server's: one heartbeat pings every open connection each round and
aborts those that sent nothing at all since the round before, so a browser that
vanished without a close is dropped within two rounds; the handshake and close
handshake deadlines are one timer each (`_Deadlines`).

Refusals are plain HTTP, then the socket is closed: 400 without the ``sip``
subprotocol or for anything that is not a WebSocket upgrade (a plain GET included);
426 for an unsupported Sec-WebSocket-Version (RFC 6455 section 4.2.2); 503 with
Retry-After when ``admit`` says no. Compression is never negotiated: a zlib context
per connection would outweigh everything else a connection holds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError, RemoteProtocolError

__all__ = ["WebSocketConnection", "WebSocketListener", "WebSocketServer"]

log = logging.getLogger("dialswitch.sipws")

CLOSE_TIMEOUT = 5.0
"""Seconds a peer has to finish a close handshake before its socket is aborted."""
STOP_TIMEOUT = 2.0
"""Seconds `WebSocketServer.close` waits for its connections to finish closing."""
MAX_BUFFERED = 4 * 1024 * 1024
"""Bytes queued for a peer that stopped reading before its connection is aborted."""
NORMAL_CLOSES = frozenset({1000, 1001, 1005})  # going away, done, or no code given


@dataclass(frozen=True)
class WebSocketListener:
    """An address to accept connections on; port 0 takes any free port."""

    scheme: str  # "ws" | "wss"
    host: str
    port: int


class WebSocketServer:
    """Accepts WebSocket connections with the ``sip`` subprotocol on every listener.

    ``admit(source_ip)`` is asked only about a valid upgrade offering ``sip``, and its
    None is always followed by ``on_open`` (no I/O in between). Every connection that
    got ``on_open`` gets exactly one ``on_closed``, once its socket is gone. Callbacks
    run from the event loop only (never inside `WebSocketConnection.send` or ``close``);
    an exception they raise is logged and otherwise ignored.
    """

    def __init__(
        self,
        listeners: Sequence[WebSocketListener],
        tls: ssl.SSLContext | None,
        admit: Callable[[str], str | None],
        on_open: Callable[[WebSocketConnection], None],
        on_message: Callable[[WebSocketConnection, str | bytes], None],
        on_closed: Callable[[WebSocketConnection], None],
        heartbeat: float = 30.0,
        max_message: int = 65_535,
        handshake_timeout: float = 10.0,
    ):
        for listener in listeners:
            if listener.scheme not in ("ws", "wss"):
                raise ValueError(f"WebSocket listener scheme {listener.scheme!r}: ws or wss")
            if listener.scheme == "wss" and tls is None:
                raise ValueError(f"wss listener {listener.host}:{listener.port} needs TLS")
        self.listeners = tuple(listeners)
        self.tls = tls
        self.admit = admit
        self.on_open = on_open
        self.on_message = on_message
        self.on_closed = on_closed
        self.heartbeat = heartbeat
        self.max_message = max_message
        self.handshake_timeout = handshake_timeout
        self.connections: set[WebSocketConnection] = set()
        self._handshaking = _Deadlines(handshake_timeout, "no handshake in time")
        self._closing = _Deadlines(CLOSE_TIMEOUT, "close not finished in time")
        self._servers: list[tuple[WebSocketListener, asyncio.Server]] = []
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._gone: asyncio.Future[None] | None = None  # set when the last socket goes
        self._stopping = False

    async def start(self) -> None:
        """Bind every listener; on an OSError none stays bound."""
        loop = asyncio.get_running_loop()
        try:
            for listener in self.listeners:
                secure = listener.scheme == "wss"
                server = await loop.create_server(
                    functools.partial(WebSocketConnection, self, listener.scheme),
                    listener.host,
                    listener.port,
                    ssl=self.tls if secure else None,
                    ssl_handshake_timeout=self.handshake_timeout if secure else None,
                )
                self._servers.append((listener, server))
        except BaseException:
            for _, server in self._servers:
                server.close()
            self._servers.clear()
            raise
        self._heartbeat_timer = loop.call_later(self.heartbeat, self._heartbeat_round)

    async def close(self) -> None:
        """Stop listening, close every connection with 1001 and wait for them (bounded)."""
        self._stopping = True
        if self._heartbeat_timer is not None:
            self._heartbeat_timer.cancel()
        for _, server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close(1001, "server stopping")
        for conn in self._handshaking:
            conn._abort(None)
        if not await self._all_gone(STOP_TIMEOUT):
            for conn in {*self.connections, *self._handshaking, *self._closing}:
                conn._abort("still open at shutdown")
            await self._all_gone(STOP_TIMEOUT)  # connection_lost follows an abort
        for _, server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._handshaking.cancel()
        self._closing.cancel()

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        """(scheme, host, bound port) of each listener, once started."""
        return [
            (listener.scheme, listener.host, server.sockets[0].getsockname()[1])
            for listener, server in self._servers
        ]

    async def _all_gone(self, timeout: float) -> bool:
        if self._live():
            self._gone = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._gone, timeout)
            except TimeoutError:
                return False
            finally:
                self._gone = None
        return True

    def _live(self) -> bool:
        return bool(self.connections or self._handshaking or self._closing)

    def _forget(self, conn: WebSocketConnection) -> None:
        """``conn``'s socket is gone: ``on_closed`` if it was open."""
        self._handshaking.discard(conn)
        self._closing.discard(conn)
        if conn in self.connections:
            self.connections.discard(conn)
            self._notify(self.on_closed, conn)
        if self._gone is not None and not self._gone.done() and not self._live():
            self._gone.set_result(None)

    def _admit(self, host: str) -> str | None:
        try:
            return self.admit(host)
        except Exception:
            log.exception("WebSocket admission check for %s failed", host)
            return "admission check failed"

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("WebSocket callback %s failed", getattr(callback, "__name__", callback))

    def _heartbeat_round(self) -> None:
        """Abort the connections silent since the last round and ping the others."""
        loop = asyncio.get_running_loop()
        self._heartbeat_timer = loop.call_later(self.heartbeat, self._heartbeat_round)
        for conn in list(self.connections):
            if conn.closed:
                continue  # its close deadline bounds it
            if conn._heard:
                conn._heard = False
                conn._ping()
            else:
                conn._abort(f"no answer to ping within {self.heartbeat:g} s")


class WebSocketConnection(asyncio.Protocol):
    """One accepted socket: its HTTP upgrade, then its WebSocket frames.

    Until the upgrade ``_handshake`` holds wsproto's HTTP side; after it only the
    frame-level `Connection` (``_ws``) stays. ``_ws`` is None again once nothing more
    is read from the peer. ``_parts`` holds a message's fragments until its last one.
    """

    __slots__ = (
        "_handshake",
        "_heard",
        "_parts",
        "_server",
        "_size",
        "_transport",
        "_ws",
        "closed",
        "host",
        "port",
        "scheme",
    )

    host: str
    port: int
    scheme: str
    closed: bool
    _transport: asyncio.Transport

    def __init__(self, server: WebSocketServer, scheme: str) -> None:
        self.host, self.port, self.scheme, self.closed = "?", 0, scheme, False
        self._server = server
        self._handshake: WSConnection | None = WSConnection(ConnectionType.SERVER)
        self._ws: Connection | None = None
        self._parts: list[str | bytes] | None = None
        self._size = 0  # bytes in _parts
        self._heard = True  # anything received since the last heartbeat round

    def send(self, text: str) -> None:
        """Send ``text`` as one text frame, or nothing once the connection is closing."""
        if not self.closed and self._ws is not None:
            self._write(self._ws.send(TextMessage(data=text)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the socket closes when the peer answers (or in 5 s)."""
        if self.closed:
            return
        if self._ws is None:  # still upgrading
            self._shut()
            return
        self._write(self._ws.send(CloseConnection(code, reason)))
        self.closed, self._parts = True, None
        self._server._closing.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.host, self.port = peer[0], peer[1]
        if self._server._stopping:
            self._abort(None)
        else:
            self._server._handshaking.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self._ws is not None:
            log.info("WebSocket %s lost without a close: %s", self._address(), exc or "EOF")
        self.closed, self._ws, self._handshake, self._parts = True, None, None, None
        self._server._forget(self)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        ws = self._ws
        if ws is None:
            if self._handshake is not None:
                self._receive_handshake(self._handshake, data)
            return  # otherwise closing and no longer reading
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    self._receive_message(event.data, event.message_finished)
                elif isinstance(event, BytesMessage):
                    self._receive_message(bytes(event.data), event.message_finished)
                elif isinstance(event, Ping):
                    if ws.state is ConnectionState.OPEN:
                        self._write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self._receive_close(ws, event)
                if self._ws is not ws:
                    break
        except ProtocolError as error:
            self._fail(1002, str(error))

    def _receive_handshake(self, handshake: WSConnection, data: bytes) -> None:
        server = self._server
        try:
            handshake.receive_data(data)
            request = next((e for e in handshake.events() if isinstance(e, Request)), None)
        except (RemoteProtocolError, ValueError) as error:  # ValueError: undecodable bytes
            hint = getattr(error, "event_hint", None)
            if isinstance(hint, RejectConnection):
                self._refuse(hint.status_code, f"{error}\n", str(error), hint.headers)
            else:
                self._refuse(400, "Bad HTTP message\n", str(error))
            return
        if request is None:
            return  # the request is not complete yet
        if "sip" not in request.subprotocols:
            self._refuse(400, "WebSocket subprotocol 'sip' required\n", "no 'sip' subprotocol")
            return
        refusal = server._admit(self.host)
        if refusal is not None:
            self._refuse(503, "Too many connections\n", refusal, [(b"Retry-After", b"5")])
            return
        self._transport.write(handshake.send(AcceptConnection(subprotocol="sip")))
        self._ws, self._handshake = handshake.connection, None
        server._handshaking.discard(self)
        server.connections.add(self)
        server._notify(server.on_open, self)

    def _receive_message(self, data: str | bytes, finished: bool) -> None:
        """One piece of a message: deliver it whole once its last piece is in."""
        if self.closed:
            return
        server = self._server
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        self._size += size
        if self._size > server.max_message:
            self._fail(1009, f"message over {server.max_message} bytes")
            return
        if self._parts is None and finished:  # the usual case: a message in one piece
            self._size = 0
            server._notify(server.on_message, self, data)
            return
        if self._parts is None:
            self._parts = []
        self._parts.append(data)
        if finished:
            parts, self._parts, self._size = self._parts, None, 0
            if isinstance(data, str):
                data = "".join(cast(list[str], parts))
            else:
                data = b"".join(cast(list[bytes], parts))
            server._notify(server.on_message, self, data)

    def _receive_close(self, ws: Connection, event: CloseConnection) -> None:
        if ws.state is ConnectionState.OPEN:  # wsproto failed to parse the peer's frames
            self._fail(event.code, event.reason or "")
        elif ws.state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer it
            level = logging.DEBUG if event.code in NORMAL_CLOSES else logging.INFO
            log.log(level, "WebSocket %s closed by peer (%d)", self._address(), event.code)
            self._write(ws.send(event.response()))
            self._shut()
        elif ws.state is ConnectionState.CLOSED:  # the peer answered our close
            self._shut()
        else:  # a parse failure after our close: read no further
            self._ws = None

    def _fail(self, code: int, why: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): close with ``code``, read no further."""
        log.info("WebSocket %s closed (%d): %s", self._address(), code, why)
        if self._ws is not None and self._ws.state is ConnectionState.OPEN:
            self._write(self._ws.send(CloseConnection(code, why)))
        self.closed, self._ws, self._parts = True, None, None
        self._server._closing.add(self)  # the peer answers and closes, or its deadline does

    def _refuse(
        self, status: int, body: str, why: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        log.info("WebSocket from %s refused (%d): %s", self._address(), status, why)
        payload = body.encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode(),
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(payload),
            b"Connection: close",
            *(name + b": " + value for name, value in headers),
        ]
        self._transport.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        self._shut()

    def _shut(self) -> None:
        """Close the socket once our last bytes are out (bounded by the close deadline)."""
        self.closed, self._ws, self._handshake, self._parts = True, None, None, None
        self._server._handshaking.discard(self)
        self._server._closing.add(self)
        self._transport.close()

    def _abort(self, why: str | None) -> None:
        if why is not None:
            log.info("WebSocket %s aborted: %s", self._address(), why)
        self.closed, self._ws, self._handshake, self._parts = True, None, None, None
        self._transport.abort()

    def _ping(self) -> None:
        if not self.closed and self._ws is not None:
            self._write(self._ws.send(Ping()))

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            self._abort(f"over {MAX_BUFFERED} bytes unread")

    def _address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _Deadlines:
    """Sockets aborted if still listed ``delay`` seconds after `add`, on one timer.

    Every entry waits the same delay, so insertion order is deadline order and the
    one timer only ever waits for the oldest entry.
    """

    __slots__ = ("_due", "_timer", "_why", "delay")

    def __init__(self, delay: float, why: str) -> None:
        self.delay = delay
        self._why = f"{why} ({delay:g} s)"
        self._due: dict[WebSocketConnection, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __bool__(self) -> bool:
        return bool(self._due)

    def __iter__(self) -> Iterator[WebSocketConnection]:
        return iter(list(self._due))

    def add(self, conn: WebSocketConnection) -> None:
        if conn in self._due:
            return
        loop = asyncio.get_running_loop()
        self._due[conn] = due = loop.time() + self.delay
        if self._timer is None:
            self._timer = loop.call_at(due, self._expire)

    def discard(self, conn: WebSocketConnection) -> None:
        self._due.pop(conn, None)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            conn, due = next(iter(self._due.items()))
            if due > now:
                self._timer = loop.call_at(due, self._expire)
                return
            del self._due[conn]
            conn._abort(self._why)
