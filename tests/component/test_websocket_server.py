"""The SIP WebSocket server over real loopback sockets.

Clients are aiohttp's (as a browser would behave: it answers pings and closes
properly) and `RawClient`, which does the upgrade with wsproto and then writes
hand-made frames, so it can fragment, send invalid UTF-8, stay silent or vanish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Pong, Request, TextMessage

import switch.sipws.server as server_module
from switch.sipws.server import WebSocketConnection, WebSocketListener, WebSocketServer
from tests.support.certs import TestCa

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample


class Harness:
    """One server on 127.0.0.1 and what its callbacks saw, as queues to await."""

    def __init__(self) -> None:
        self.server: WebSocketServer | None = None
        self.refusal: str | None = None
        self.admitted: list[str] = []
        self.opened: asyncio.Queue[WebSocketConnection] = asyncio.Queue()
        self.messages: asyncio.Queue[tuple[WebSocketConnection, str | bytes]] = asyncio.Queue()
        self.closed: asyncio.Queue[WebSocketConnection] = asyncio.Queue()
        self.closed_all: list[WebSocketConnection] = []
        self.clients: list[RawClient] = []

    def admit(self, host: str) -> str | None:
        self.admitted.append(host)
        return self.refusal

    def on_open(self, conn: WebSocketConnection) -> None:
        self.opened.put_nowait(conn)

    def on_message(self, conn: WebSocketConnection, data: str | bytes) -> None:
        self.messages.put_nowait((conn, data))

    def on_closed(self, conn: WebSocketConnection) -> None:
        self.closed_all.append(conn)
        self.closed.put_nowait(conn)

    async def start(
        self, scheme: str = "ws", tls: ssl.SSLContext | None = None, **options: Any
    ) -> str:
        self.server = WebSocketServer(
            [WebSocketListener(scheme, "127.0.0.1", 0)],
            tls,
            self.admit,
            self.on_open,
            self.on_message,
            self.on_closed,
            **options,
        )
        await self.server.start()
        return f"{scheme}://127.0.0.1:{self.port}/any/path"

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.addresses[0][2]

    async def raw(self) -> RawClient:
        """A `RawClient` past the upgrade; the fixture drops it before closing the server."""
        client = await RawClient.connect(self.port)
        self.clients.append(client)
        return client

    async def opened_one(self) -> WebSocketConnection:
        return await asyncio.wait_for(self.opened.get(), 2)

    async def message(self) -> str | bytes:
        return (await asyncio.wait_for(self.messages.get(), 2))[1]

    async def closed_one(self, timeout: float = 2) -> WebSocketConnection:
        return await asyncio.wait_for(self.closed.get(), timeout)


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dialswitch.sipws")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    for client in harness.clients:
        client.writer.transport.abort()
    if harness.server is not None:
        await harness.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 section 5.2), payload under 126 bytes."""
    mask = b"\x37\xfa\x21\x3d"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + masked


class RawClient:
    """A WebSocket client on plain streams: wsproto reads, `frame` writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        request = Request(host="127.0.0.1", target="/", subprotocols=["sip"])
        client.writer.write(client.ws.send(request))
        assert isinstance(await client.event(), AcceptConnection)
        return client

    async def event(self, timeout: float = 2.0) -> Event:
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                self.ws.receive_data(data or None)
                self.pending.extend(self.ws.events())
        return self.pending.popleft()

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def close_code(self) -> int:
        event = await self.event()
        assert isinstance(event, CloseConnection), event
        return event.code


def upgrade(protocol: str | None = "sip") -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def http(port: int, request: bytes) -> str:
    """Everything the server answers to ``request`` until it closes the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return (await asyncio.wait_for(reader.read(), 2)).decode()
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> None:
    with contextlib.suppress(ConnectionResetError):  # aborted: a reset rather than a FIN
        assert await asyncio.wait_for(reader.read(), timeout) == b""


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Queue[WebSocketConnection]]:
    """Each heartbeat ping the server sends, by connection."""
    sent: asyncio.Queue[WebSocketConnection] = asyncio.Queue()
    ping = WebSocketConnection._ping

    def counting(conn: WebSocketConnection) -> None:
        sent.put_nowait(conn)
        ping(conn)

    monkeypatch.setattr(WebSocketConnection, "_ping", counting)
    yield sent


# --- accepted connections and their messages -------------------------------------------


async def test_text_round_trip(harness: Harness, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(await harness.start(), protocols=("sip",)) as ws:
        assert ws.protocol == "sip"
        conn = await harness.opened_one()
        assert (conn.scheme, conn.host, conn.closed) == ("ws", "127.0.0.1", False)
        assert harness.server is not None and harness.server.connections == {conn}
        assert harness.admitted == ["127.0.0.1"]
        await ws.send_str("OPTIONS sip:switch SIP/2.0\r\n\r\n")
        assert await harness.message() == "OPTIONS sip:switch SIP/2.0\r\n\r\n"
        conn.send("SIP/2.0 200 OK\r\n\r\n")
        assert await ws.receive_str(timeout=2) == "SIP/2.0 200 OK\r\n\r\n"


async def test_binary_message_is_bytes(harness: Harness, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(await harness.start(), protocols=("sip",)) as ws:
        await ws.send_bytes(b"\x00REGISTER")
        assert await harness.message() == b"\x00REGISTER"


async def test_fragmented_message_is_reassembled(harness: Harness) -> None:
    await harness.start()
    client = await harness.raw()
    text = "MESSAGE sip:é SIP/2.0".encode()
    split = text.index(b"\xa9")  # inside the two bytes of "é"
    client.send(frame(0x1, text[:5], fin=False), frame(0x0, text[5:split], fin=False))
    client.send(frame(0x9, b"mid"), frame(0x0, text[split:]))  # a ping between fragments
    assert await harness.message() == "MESSAGE sip:é SIP/2.0"
    assert await client.event() == Pong(payload=b"mid")
    client.send(frame(0x2, b"ab", fin=False), frame(0x0, b"cd"))
    assert await harness.message() == b"abcd"


async def test_ping_gets_pong(harness: Harness) -> None:
    await harness.start()
    client = await harness.raw()
    client.send(frame(0x9, b"hello"))
    assert await client.event() == Pong(payload=b"hello")


async def test_message_of_max_size_passes_and_larger_closes_1009(
    harness: Harness, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with session.ws_connect(await harness.start(max_message=100), protocols=("sip",)) as ws:
        await ws.send_str("é" * 50)  # 100 bytes
        assert await harness.message() == "é" * 50
        await ws.send_str("x" * 99 + "é")  # 101 bytes, 100 characters
        assert (await ws.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1009
    await harness.closed_one()
    assert "(1009): message over 100 bytes" in caplog.text


async def test_fragments_over_the_limit_close_1009(harness: Harness) -> None:
    await harness.start(max_message=100)
    client = await harness.raw()
    client.send(frame(0x2, b"x" * 60, fin=False), frame(0x0, b"x" * 60, fin=False))
    assert await client.close_code() == 1009
    assert harness.messages.empty()


async def test_invalid_utf8_closes_1007(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await harness.start()
    client = await harness.raw()
    client.send(frame(0x1, b"INVITE \xff\xfe"))
    assert await client.close_code() == 1007
    client.writer.close()  # a browser answers the close, then closes the socket
    await harness.closed_one()
    assert "(1007)" in caplog.text
    assert harness.messages.empty()


async def test_protocol_error_closes_1002(harness: Harness) -> None:
    await harness.start()
    client = await harness.raw()
    client.send(frame(0x3, b"reserved opcode"))
    assert await client.close_code() == 1002
    client.writer.close()
    await harness.closed_one()


async def test_callback_errors_are_logged_not_fatal(
    harness: Harness, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(conn: WebSocketConnection, data: str | bytes) -> None:
        harness.messages.put_nowait((conn, data))
        raise RuntimeError("handler bug")

    harness.on_message = broken  # type: ignore[method-assign]
    async with session.ws_connect(await harness.start(), protocols=("sip",)) as ws:
        conn = await harness.opened_one()
        await ws.send_str("one")
        await ws.send_str("two")
        assert [await harness.message(), await harness.message()] == ["one", "two"]
        conn.send("still here")
        assert await ws.receive_str(timeout=2) == "still here"
    assert "handler bug" in caplog.text


# --- refused handshakes ----------------------------------------------------------------


async def test_no_sip_subprotocol_is_400(harness: Harness) -> None:
    await harness.start()
    for protocol in (None, "chat"):
        response = await http(harness.port, upgrade(protocol))
        assert response.startswith("HTTP/1.1 400 Bad Request\r\n")
        assert response.endswith("\r\n\r\nWebSocket subprotocol 'sip' required\n")
    assert harness.opened.empty() and harness.admitted == []


async def test_aiohttp_without_subprotocol_is_refused(
    harness: Harness, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(await harness.start())
    assert info.value.status == 400


async def test_admit_refusal_is_503(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await harness.start()
    harness.refusal = "12 connections from 127.0.0.1"
    response = await http(harness.port, upgrade())
    assert response.startswith("HTTP/1.1 503 Service Unavailable\r\n")
    assert "\r\nRetry-After: 5\r\n" in response
    assert response.endswith("\r\n\r\nToo many connections\n")
    assert "12 connections from 127.0.0.1" in caplog.text
    assert harness.opened.empty()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on the plain port
        b"GET /\xff HTTP/1.1\r\nHost: \xff\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    ],
)
async def test_not_a_websocket_upgrade_is_400(
    harness: Harness, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    response = await http(harness.port, request_bytes)
    assert response.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert "Connection: close\r\n" in response
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert harness.opened.empty()


async def test_unsupported_version_is_426(harness: Harness) -> None:
    await harness.start()
    response = await http(harness.port, upgrade().replace(b"Version: 13", b"Version: 8"))
    assert response.startswith("HTTP/1.1 426 Upgrade Required\r\n")
    assert "Sec-WebSocket-Version: 13\r\n" in response


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_unfinished_handshake_is_closed(harness: Harness, sent: bytes) -> None:
    await harness.start(handshake_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(sent)
    started = time.monotonic()
    await closed_by_server(reader, 2)
    assert 0.15 < time.monotonic() - started < 1.5
    writer.close()


# --- endings ----------------------------------------------------------------------------


async def test_client_close_calls_on_closed_once(
    harness: Harness, session: aiohttp.ClientSession
) -> None:
    ws = await session.ws_connect(await harness.start(), protocols=("sip",))
    conn = await harness.opened_one()
    await ws.close()
    assert ws.close_code == 1000
    assert await harness.closed_one() is conn and conn.closed
    conn.send("after the close: nothing")
    assert harness.server is not None
    await harness.server.close()
    assert harness.closed_all == [conn]


async def test_abrupt_disconnect_calls_on_closed_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    client = await harness.raw()
    conn = await harness.opened_one()
    client.writer.transport.abort()
    assert await harness.closed_one() is conn
    assert harness.server is not None
    await harness.server.close()
    assert harness.closed_all == [conn]
    assert "lost without a close" in caplog.text


async def test_our_close_waits_for_the_peer(
    harness: Harness, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(await harness.start(), protocols=("sip",)) as ws:
        conn = await harness.opened_one()
        conn.close(4000, "bye")
        assert conn.closed
        message = await ws.receive(timeout=2)
        assert (message.type, message.data, message.extra) == (
            aiohttp.WSMsgType.CLOSE,
            4000,
            "bye",
        )
        assert await harness.closed_one() is conn


async def test_silent_client_is_dropped_by_the_heartbeat(
    harness: Harness, pings: asyncio.Queue[WebSocketConnection], caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start(heartbeat=0.2)
    await harness.raw()  # then reads and answers nothing
    conn = await harness.opened_one()
    assert await asyncio.wait_for(pings.get(), 1) is conn
    started = time.monotonic()
    assert await harness.closed_one() is conn
    assert time.monotonic() - started < 0.8  # at the next round, 0.2 s on
    assert "no answer to ping" in caplog.text


async def test_answering_client_survives_heartbeats(
    harness: Harness, session: aiohttp.ClientSession, pings: asyncio.Queue[WebSocketConnection]
) -> None:
    async with session.ws_connect(await harness.start(heartbeat=0.1), protocols=("sip",)) as ws:
        conn = await harness.opened_one()
        receiving = asyncio.create_task(ws.receive())  # aiohttp answers pings while reading
        for _ in range(5):
            assert await asyncio.wait_for(pings.get(), 1) is conn
        assert not conn.closed and harness.closed.empty()
        conn.send("alive")
        assert (await asyncio.wait_for(receiving, 2)).data == "alive"


async def test_unread_output_over_the_limit_aborts(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_module, "MAX_BUFFERED", 64 * 1024)
    await harness.start()
    client = await harness.raw()  # and then never reads
    conn = await harness.opened_one()
    chunk = "x" * 60_000
    for _ in range(2000):  # far more than loopback's socket buffers hold
        conn.send(chunk)
        if conn.closed:
            break
    assert conn.closed
    assert await harness.closed_one() is conn
    assert "bytes unread" in caplog.text
    client.writer.close()


async def test_server_close_sends_1001_to_every_client(
    harness: Harness, session: aiohttp.ClientSession
) -> None:
    url = await harness.start()
    clients = [await session.ws_connect(url, protocols=("sip",)) for _ in range(3)]
    conns = {await harness.opened_one() for _ in clients}
    receiving = [asyncio.create_task(ws.receive()) for ws in clients]
    assert harness.server is not None
    started = time.monotonic()
    await harness.server.close()
    assert time.monotonic() - started < 1.5  # every client answered; no 2 s wait
    assert set(harness.closed_all) == conns and len(harness.closed_all) == 3
    assert harness.server.connections == set()
    for message in await asyncio.gather(*receiving):
        assert (message.type, message.data, message.extra) == (
            aiohttp.WSMsgType.CLOSE,
            1001,
            "server stopping",
        )
    for ws in clients:
        await ws.close()


async def test_server_close_aborts_a_peer_that_does_not_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "STOP_TIMEOUT", 0.2)
    await harness.start()
    await harness.raw()  # never reads our close
    conn = await harness.opened_one()
    assert harness.server is not None
    await asyncio.wait_for(harness.server.close(), 2)
    assert harness.closed_all == [conn]


# --- listeners --------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate from a test CA, and a client trusting that CA."""
    ca = TestCa(tmp_path / "ca")
    issued = ca.issue("switch")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(issued.certificate, issued.private_key)
    return server, ssl.create_default_context(cafile=str(ca.path))


async def test_wss_with_a_test_ca(
    harness: Harness, session: aiohttp.ClientSession, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, trusting = tls
    url = await harness.start("wss", server_tls)
    assert url.startswith("wss://")
    async with session.ws_connect(url, protocols=("sip",), ssl=trusting) as ws:
        conn = await harness.opened_one()
        assert conn.scheme == "wss"
        await ws.send_str("REGISTER")
        assert await harness.message() == "REGISTER"
        conn.send("SIP/2.0 200 OK")
        assert await ws.receive_str(timeout=2) == "SIP/2.0 200 OK"


async def test_unfinished_tls_handshake_is_closed(
    harness: Harness, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    await harness.start("wss", tls[0], handshake_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    await closed_by_server(reader, 2)  # no ClientHello: asyncio's ssl_handshake_timeout
    writer.close()


async def test_addresses_report_bound_ports(harness: Harness) -> None:
    server = WebSocketServer(
        [WebSocketListener("ws", "127.0.0.1", 0), WebSocketListener("ws", "127.0.0.1", 0)],
        None,
        harness.admit,
        harness.on_open,
        harness.on_message,
        harness.on_closed,
    )
    harness.server = server
    await server.start()
    (_, host1, port1), (_, host2, port2) = server.addresses
    assert host1 == host2 == "127.0.0.1"
    assert 0 not in (port1, port2) and port1 != port2
    with socket.create_connection(("127.0.0.1", port2)):
        pass


async def test_port_in_use_raises(harness: Harness) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    server = WebSocketServer(
        [WebSocketListener("ws", "127.0.0.1", 0), WebSocketListener("ws", "127.0.0.1", port)],
        None,
        harness.admit,
        harness.on_open,
        harness.on_message,
        harness.on_closed,
    )
    with pytest.raises(OSError):
        await server.start()
    assert server.addresses == []
    taken.close()


def test_wss_without_tls_is_refused() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        WebSocketServer(
            [WebSocketListener("wss", "127.0.0.1", 0)],
            None,
            lambda host: None,
            lambda conn: None,
            lambda conn, data: None,
            lambda conn: None,
        )


def test_connection_has_no_dict() -> None:
    assert not hasattr(WebSocketConnection.__new__(WebSocketConnection), "__dict__")


async def test_send_frames_one_text_message(harness: Harness) -> None:
    await harness.start()
    client = await harness.raw()
    conn = await harness.opened_one()
    conn.send("ä" * 200)  # over 125 bytes: a 16-bit length
    text, finished = "", False
    while not finished:
        event = await client.event()
        assert isinstance(event, TextMessage)
        text, finished = text + event.data, event.message_finished
    assert text == "ä" * 200
