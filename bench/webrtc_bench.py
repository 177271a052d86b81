#!/usr/bin/env python3
"""WebRTC bench: browsers over SIP-over-WebSocket against one switch process.

Two modes, each with a fresh switch (``python -m switch --config``) in its own
temporary directory, on free loopback ports; every process the bench starts is
stopped by its PID, every wait is bounded.

``--mode idle --clients N`` (default 5000): N WebSocket connections (subprotocol
``sip``), each REGISTERing one ``[[clients]]`` identity with MD5 digest, spread
over ``--sources`` addresses 127.0.0.x. Measures the switch's RSS and open files
before and with all N registered and idle (and its CPU while they idle), the
connect and registration latencies, the time to register all; then closes every
connection and checks that every binding is dropped (the ``registrations`` gauge
of /metrics and the ``bindings`` table of the store).

``--mode media --legs K`` (default 50; a list such as ``10,50,100,200`` runs one
switch per value): K browsers each call out through the switch::

    browser (aiortc, --browser-procs processes) --WS: INVITE+offer--> switch
        --webhook /client--> <Dial answerOnBridge="true"><Number>+15551230001</Number></Dial>
        --INVITE over the trunk--> callee (this script's --role callee: SIP UAS + RTP)

Each browser is an aiortc peer connection (ICE, DTLS-SRTP, rtcp-mux, BUNDLE; PCMU
or opus) whose signalling is tests/support/ws_peer.py's ``WsPhone``. Once its DTLS
is up, its RTP no longer goes through aiortc's per-packet coroutines: one clock per
process sends every leg's pre-encoded packet each 20 ms, protected with that leg's
SRTP session from aiortc's handshake, on its nominated ICE pair; what arrives on
that pair is counted (and unprotected, and checked for tone) before aioice queues
it. That keeps 200 browsers within a fraction of a core. The callee answers after
``--ring-ms`` and sends a PCMU tone back at 50 packets/s on every call.

Measures legs set up and held, packets received against 50/s per leg each way
(and sequence-number loss, and how many carried the far end's tone), the switch's
CPU (total, per leg, per thread), its RSS, the load generator's CPU, and setup
latency: browser's first INVITE sent -> its 200 received, minus the ring time.

    .venv/bin/python bench/webrtc_bench.py --mode idle --clients 5000
    .venv/bin/python bench/webrtc_bench.py --mode media --legs 10,50,100,200

See bench/README.md, "WebRTC bench".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO, TypeVar

import aiohttp
import numpy as np
from aiohttp import web

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]  # benchlib; tests.support and media

import benchlib  # noqa: E402
from benchlib import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    WebhookServer,
    cpu_seconds,
    fmt,
    free_tcp_port,
    free_udp_port,
    metric_value,
    percentile,
    rss_kb,
    thread_cpu_seconds,
    write_results,
    xml_response,
)

from media.analysis import g711_decode, g711_encode, tone_power  # noqa: E402
from tests.support.ws_peer import Call, Listener, SipMsg, WsPhone, digest  # noqa: E402

DOMAIN = "dialswitch.bench"
CALLEE = "+15551230001"  # the number every browser dials; the trunk's prefix
PASSWORD = "bench-password-0123"  # every client's (>= 8 characters)
FRAME_S = 0.02
PPS = 50  # packets per second per stream
BROWSER_TONE = 1000.0
CALLEE_TONE = 400.0
TONE_LEVEL = 0.3
LOUD_SAMPLE = 1000  # |sample| above this counts as tone, not silence
LOUD_SHARE = 0.2  # a PCMU packet with this share of loud samples carries the tone
OPUS_LOUD_BYTES = 20  # an opus packet this long or longer is not silence/DTX
RTP_HEADER = struct.Struct("!BBHII")
EXPIRES = 600  # what the browsers ask for (JsSIP's default)
T = TypeVar("T")
TIMER_F = 32.0  # a browser SIP stack's transaction timeout (64 x T1)


def identity(i: int) -> str:
    return f"b{i:05d}"


# ---- /proc ------------------------------------------------------------------------------


def listen_overflows() -> int:
    """TcpExtListenOverflows of this network namespace: connections refused because a
    listening socket's accept queue was full (every process's, not only the switch's)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return 0


def host_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy (/proc/stat: not idle, not
    iowait), so that a window's "others" = host - switch - load generator."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / benchlib.CLK_TCK


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def rss_median(pid: int, samples: int = 5, every: float = 0.2) -> int:
    """The median of a few VmRSS readings, ``every`` seconds apart."""
    values = []
    for i in range(samples):
        values.append(rss_kb(pid))
        if i < samples - 1:
            await asyncio.sleep(every)
    return int(statistics.median(values))


def pct(values: list[float], p: float) -> float | None:
    v = percentile(values, p)
    return None if v is None else round(v, 1)


# ---- the switch -------------------------------------------------------------------------


class BenchSwitch(benchlib.Switch):
    """benchlib's switch with a ws: listener, a [registrar] and ``clients`` clients
    b00000.., whose own calls run ``{app}/client``; one trunk to the callee."""

    def __init__(
        self,
        workdir: Path,
        app_base: str,
        log_level: str,
        max_calls: int,
        rtp_ports: str,
        *,
        clients: int,
        registrar: dict[str, float | int],
        ws_per_source: int,
        trunk_port: int,
        trusted: tuple[str, ...],
    ):
        super().__init__(workdir, 1, app_base, log_level, max_calls, rtp_ports, trusted=trusted)
        self.clients = clients
        self.registrar = registrar
        self.ws_per_source = ws_per_source
        self.ws_port = free_tcp_port()
        self.trunk_ports = [trunk_port]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def database(self) -> Path:
        return self.workdir / "var" / "dialswitch.sqlite3"

    def write_config(self) -> Path:
        registrar = "".join(f"{k} = {v}\n" for k, v in self.registrar.items())
        trusted = ", ".join(json.dumps(t) for t in self.trusted)
        clients = "".join(
            f'\n[[clients]]\nidentity = "{identity(i)}"\npassword = "{PASSWORD}"\n'
            f'voice_url = "{self.app_base}/client"\n'
            for i in range(self.clients)
        )
        config = self.workdir / "dialswitch.toml"
        config.write_text(
            f"""# written by bench/webrtc_bench.py
[sip]
listen = ["udp:127.0.0.1:{self.sip_port}", "tcp:127.0.0.1:{self.sip_port}",
          "ws:127.0.0.1:{self.ws_port}"]
rtp_ports = "{self.rtp_ports}"
domain = "{DOMAIN}"
ws_per_source = {self.ws_per_source}

[http]
listen = "127.0.0.1:{self.http_port}"

[account]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"

[storage]
path = "{self.workdir / "var"}"

[dial]
max_calls = {self.max_calls}

[webhooks]
connect_timeout = 5.0
total_timeout = 15.0

[log]
level = "{self.log_level}"

[limits]
# bench load from these sources is never throttled by the INVITE/OPTIONS limits
trusted = [{trusted}]

[registrar]
{registrar}
[[trunks]]
name = "callee"
uri = "sip:127.0.0.1:{self.trunk_ports[0]}"
prefixes = ["{CALLEE}"]
srtp = "off"

[[numbers]]
number = "{benchlib.NUMBER}"
voice_url = "{self.app_base}/voice"
{clients}"""
        )
        return config

    async def registrations(self) -> float | None:
        return await self.metric("dialswitch_registrations")

    def stored_bindings(self) -> int | None:
        try:
            db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
            try:
                return int(db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error:
            return None


class App(WebhookServer):
    """The customer's app: a client's call dials the callee, answer on bridge."""

    def __init__(self) -> None:
        super().__init__()
        self.document = (
            f'<Response><Dial answerOnBridge="true"><Number>{CALLEE}</Number></Dial></Response>'
        )

    async def _client(self, request: web.Request) -> web.Response:
        await self.hit(request)
        return xml_response(self.document)

    async def _voice(self, request: web.Request) -> web.Response:
        await self.hit(request)
        return xml_response("<Response><Hangup/></Response>")

    def routes(self) -> list[tuple[str, Any]]:
        return [("/client", self._client), ("/voice", self._voice)]


# ---- a browser's SIP (tests/support/ws_peer.py) -----------------------------------------


class Phone(WsPhone):
    """`WsPhone` on a shared aiohttp session, with the times of its INVITEs and an
    aiortc peer that sends nothing itself (the bench's clock sends its RTP)."""

    def __init__(self, url: str, ident: str, session: aiohttp.ClientSession, codec: str = "pcmu"):
        super().__init__(url, ident, PASSWORD, DOMAIN)
        self.shared = session
        self.codec = codec
        self.invite_sent: dict[str, float] = {}  # Call-ID -> first INVITE sent
        self.challenged: dict[str, float] = {}  # Call-ID -> the 407 received
        self.final: dict[str, float] = {}  # Call-ID -> the last final response received

    async def connect(self, protocols: tuple[str, ...] = ("sip",)) -> None:
        self.ws = await self.shared.ws_connect(self.url, protocols=protocols, autoping=True)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def transact(self, msg: SipMsg, timeout: float = TIMER_F) -> SipMsg:
        call_id = msg.header("Call-ID") or ""
        invite = msg.method == "INVITE"
        if invite:
            self.invite_sent.setdefault(call_id, time.monotonic())
        response = await super().transact(msg, max(timeout, TIMER_F))
        if invite:
            now = time.monotonic()
            if response.status in (401, 407):
                self.challenged.setdefault(call_id, now)
            else:
                self.final[call_id] = now
            if response.status >= 300:
                await self._ack_failure(msg, response)
        return response

    async def _ack_failure(self, invite: SipMsg, response: SipMsg) -> None:
        """ACK a non-2xx final response (same branch, the response's To), as a browser's
        SIP stack does; WsPhone leaves the switch's INVITE transaction to time out."""
        cseq = (invite.header("CSeq") or "1").split()[0]
        headers = [
            ("Via", invite.header("Via") or ""),
            ("Max-Forwards", "69"),
            ("To", response.header("To") or ""),
            ("From", invite.header("From") or ""),
            ("Call-ID", invite.header("Call-ID") or ""),
            ("CSeq", f"{cseq} ACK"),
        ]
        await self.send(SipMsg(f"ACK {invite.start.split()[1]} SIP/2.0", headers))

    def _peer(self) -> tuple[Any, Listener]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver(_idle_track(), direction="sendrecv")
        wanted = {"opus": "audio/opus", "pcmu": "audio/PCMU"}[self.codec]
        caps = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == wanted])
        return pc, Listener()


def _idle_track() -> Any:
    """An audio track whose recv() never returns: aiortc's sender then waits without
    waking up every 20 ms, and the bench's clock sends the leg's RTP instead."""
    from aiortc import MediaStreamTrack

    class IdleTrack(MediaStreamTrack):  # type: ignore[misc]
        kind = "audio"

        async def recv(self) -> Any:
            await asyncio.get_running_loop().create_future()

    return IdleTrack()


def loopback_ice() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; the bench is loopback only."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# ---- RTP: payloads, senders, receivers ---------------------------------------------------

_LOUD = bytes(
    int(abs(int(v)) > LOUD_SAMPLE) for v in g711_decode(bytes(range(256)), "pcmu").tolist()
)


def pcmu_frames(freq: float) -> list[bytes]:
    """One second of a continuous sine as 50 PCMU payloads."""
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * math.pi * freq * t) * TONE_LEVEL * 32767).astype(np.int16)
    return [g711_encode(pcm[i * 160 : (i + 1) * 160], "pcmu") for i in range(PPS)]


def opus_frames(freq: float) -> list[bytes]:
    """One second of a continuous sine as 50 opus payloads, encoded once (as
    bench/webrtc_spike.py): the cycle is whole periods, so replaying it is seamless."""
    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    params = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    encoder = get_encoder(params)
    t = np.arange(48000) / 48000
    pcm = (np.sin(2 * math.pi * freq * t) * TONE_LEVEL * 32767).astype(np.int16)
    payloads: list[bytes] = []
    for index in range(3 * PPS):  # the last second is in a steady state
        chunk = pcm[(index % PPS) * 960 : (index % PPS + 1) * 960]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.time_base = Fraction(1, 48000)
        out, _ = encoder.encode(frame)
        payloads += out
    return payloads[-PPS:]


def loud(payload: bytes, codec: str) -> bool:
    if codec == "opus":
        return len(payload) >= OPUS_LOUD_BYTES
    return payload.translate(_LOUD).count(1) >= LOUD_SHARE * len(payload)


def rtp_payload(data: bytes) -> bytes:
    start = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= start + 4:
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return data[start:end]


@dataclass
class Stream:
    """One received RTP stream's counters (sequence numbers extended past 65535)."""

    tone: float = 0.0  # the far end's tone: every 50th PCMU packet is checked for it
    received: int = 0
    loud: int = 0
    bad: int = 0  # SRTP authentication failed
    probed: int = 0
    tone_ok: int = 0  # probed packets whose power is >= 80 % at ``tone``
    first: int = -1
    top: int = 0

    def feed(self, data: bytes, codec: str) -> None:
        seq = (data[2] << 8) | data[3]
        if self.first < 0:
            self.first = self.top = seq
        else:
            ahead = (seq - self.top) & 0xFFFF
            if ahead < 0x8000:
                self.top += ahead
        self.received += 1
        payload = rtp_payload(data)
        if loud(payload, codec):
            self.loud += 1
        if self.received % PPS == 1 and codec == "pcmu" and self.tone:
            self.probed += 1
            if tone_power(g711_decode(payload, "pcmu"), 8000, self.tone) >= 0.8:
                self.tone_ok += 1

    @property
    def expected(self) -> int:
        return 0 if self.first < 0 else self.top - self.first + 1


class Sender:
    """One leg's outgoing RTP: pre-encoded payloads replayed, one packet per tick."""

    def __init__(
        self,
        pt: int,
        ssrc: int,
        step: int,
        payloads: list[bytes],
        send: Callable[[bytes], None],
        protect: Callable[[bytes], bytes] | None = None,
    ):
        self.pt, self.ssrc, self.step, self.payloads = pt, ssrc, step, payloads
        self.send, self.protect = send, protect
        self.seq = random.randrange(1 << 16)
        self.ts = random.randrange(1 << 32)
        self.index = 0
        self.sent = 0
        self.errors = 0

    def tick(self) -> None:
        packet = RTP_HEADER.pack(0x80, self.pt, self.seq, self.ts, self.ssrc)
        packet += self.payloads[self.index]
        self.index = (self.index + 1) % len(self.payloads)
        try:
            self.send(self.protect(packet) if self.protect else packet)
            self.sent += 1
        except Exception:  # noqa: BLE001 - a closed socket or SRTP session: counted
            self.errors += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.step) & 0xFFFFFFFF


class Clock:
    """Sends every sender's packet each 20 ms. When the process cannot keep up (the
    load generator is the limit), ticks more than 5 late are skipped and counted."""

    def __init__(self) -> None:
        self.senders: set[Sender] = set()
        self.skipped = 0  # packets not sent because this process was late
        self.late_ticks = 0  # ticks that ran more than one frame late
        self.ticks = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            delay = start + tick * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_S:
                self.late_ticks += 1
                if delay < -5 * FRAME_S:
                    missed = int(-delay / FRAME_S)
                    self.skipped += missed * len(self.senders)
                    tick += missed
            for sender in list(self.senders):
                sender.tick()
            tick += 1
            self.ticks += 1


# ---- child processes: JSON lines over stdin/stdout ------------------------------------


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def emit(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event) + "\n")
    out.flush()


class Child:
    """A child process of this script (``--role``), driven with JSON lines."""

    def __init__(self, role: str, process: asyncio.subprocess.Process):
        self.role = role
        self.process = process

    @classmethod
    async def start(cls, role: str, config: dict[str, Any], log: Path) -> Child:
        with open(log, "wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--role",
                role,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                limit=1 << 24,
            )
        child = cls(role, process)
        await child.send(config)
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(msg) + "\n").encode())
        await self.process.stdin.drain()

    async def event(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.role} (pid {self.pid}) exited: {self.process.returncode}")
        return dict(json.loads(line))

    async def ask(self, msg: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        await self.send(msg)
        return await self.event(timeout)

    async def stop(self, timeout: float = 30) -> int | None:
        """Wait for it to exit (bounded), then SIGKILL it by its PID."""
        if self.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout)
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        return self.process.returncode


# ---- role: callee (SIP UAS over UDP, one RTP socket per call) -----------------------------

COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
}


def parse_sip(data: bytes) -> tuple[str, list[tuple[str, str]], str]:
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    return lines[0], headers, body


def first(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


class CalleeCall(asyncio.DatagramProtocol):
    def __init__(self, uas: Uas, call_id: str):
        self.uas = uas
        self.call_id = call_id
        self.tag = f"{random.getrandbits(32):x}"
        self.stream = Stream(BROWSER_TONE)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.sender: Sender | None = None
        self.invite: tuple[str, list[tuple[str, str]], str] | None = None
        self.addr: tuple[str, int] = ("", 0)
        self.last: bytes = b""  # the last response to the INVITE (for retransmissions)
        self.answered = False
        self.acked = False
        self.ended = ""
        self.answer_timer: asyncio.TimerHandle | None = None
        self.retransmit: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 209:
            self.stream.feed(data, "pcmu")

    def error_received(self, exc: Exception) -> None:
        pass

    def end(self, why: str) -> None:
        if self.ended:
            return
        self.ended = why
        for timer in (self.answer_timer, self.retransmit):
            if timer is not None:
                timer.cancel()
        if self.sender is not None:
            self.uas.clock.senders.discard(self.sender)
        if self.transport is not None:
            self.transport.close()


class Uas(asyncio.DatagramProtocol):
    """The far end of the trunk: 100 and 180 at once, 200 with a PCMU answer after
    ``ring_ms``, RTP both ways until the switch's BYE."""

    def __init__(self, ring_ms: int):
        self.ring_ms = ring_ms
        self.calls: dict[str, CalleeCall] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.clock = Clock()
        self.payloads = pcmu_frames(CALLEE_TONE)
        self.invites = 0
        self.byes = 0
        self.cancels = 0
        self.failures: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._request(data, addr)
        except Exception as exc:  # noqa: BLE001 - counted, the UAS goes on
            if len(self.failures) < 20:
                self.failures.append(repr(exc))

    def _request(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive
        start, headers, body = parse_sip(data)
        if start.startswith("SIP/2.0"):
            return
        method = start.split()[0]
        call_id = first(headers, "call-id")
        call = self.calls.get(call_id)
        if method == "INVITE":
            if call is not None:
                original = call.invite[1] if call.invite else []
                if first(headers, "cseq") == first(original, "cseq"):
                    if call.last:  # a retransmission
                        self._send(call.last, addr)
                else:  # a re-INVITE: the same answer again
                    self._send(self._response(headers, 200, "OK", call, sdp=True), addr)
                return
            self._invite(call_id, (start, headers, body), addr)
        elif method == "ACK":
            if call is not None:
                call.acked = True
                if call.retransmit is not None:
                    call.retransmit.cancel()
        elif method == "BYE":
            self._send(self._response(headers, 200, "OK", call), addr)
            if call is not None:
                self.byes += 1
                call.end("bye")
        elif method == "CANCEL":
            self._send(self._response(headers, 200, "OK", call), addr)
            if call is not None and not call.answered and call.invite is not None:
                self.cancels += 1
                self._send(self._response(call.invite[1], 487, "Request Terminated", call), addr)
                call.end("cancel")
        else:  # OPTIONS, UPDATE, INFO ...
            self._send(self._response(headers, 200, "OK", call), addr)

    def _invite(
        self, call_id: str, invite: tuple[str, list[tuple[str, str]], str], addr: Any
    ) -> None:
        self.invites += 1
        call = CalleeCall(self, call_id)
        call.invite = invite
        call.addr = addr
        self.calls[call_id] = call
        host = re.search(r"^c=IN IP4 (\S+)", invite[2], re.M)
        port = re.search(r"^m=audio (\d+)", invite[2], re.M)
        if not host or not port:
            self._send(self._response(invite[1], 488, "Not Acceptable Here", call), addr)
            call.end("no offer")
            return
        remote = (host.group(1), int(port.group(1)))
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.bind(("127.0.0.1", 0))
        call.port = sock.getsockname()[1]

        async def opened() -> None:
            await loop.create_datagram_endpoint(lambda: call, sock=sock)

        loop.create_task(opened())
        self._send(self._response(invite[1], 100, "Trying", None), addr)
        call.last = self._response(invite[1], 180, "Ringing", call)
        self._send(call.last, addr)

        def answer() -> None:
            if call.ended:
                return
            if call.transport is None:  # the RTP socket is not open yet
                call.answer_timer = loop.call_later(0.01, answer)
                return
            call.answered = True
            call.last = self._response(invite[1], 200, "OK", call, sdp=True)
            self._send(call.last, addr)
            transport = call.transport
            call.sender = Sender(
                0,
                random.getrandbits(32),
                160,
                self.payloads,
                lambda packet: transport.sendto(packet, remote),
            )
            self.clock.senders.add(call.sender)
            self._retransmit(call, 0.5)

        call.answer_timer = loop.call_later(self.ring_ms / 1000, answer)

    def _retransmit(self, call: CalleeCall, interval: float) -> None:
        def again() -> None:
            if call.acked or call.ended or interval > 16:
                return
            self._send(call.last, call.addr)
            self._retransmit(call, min(interval * 2, 4.0) if interval < 4 else interval + 4)

        call.retransmit = asyncio.get_running_loop().call_later(interval, again)

    def _response(
        self,
        headers: list[tuple[str, str]],
        status: int,
        reason: str,
        call: CalleeCall | None,
        sdp: bool = False,
    ) -> bytes:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for k, v in headers if k == "via"]
        lines.append(f"From: {first(headers, 'from')}")
        to = first(headers, "to")
        if call is not None and status > 100 and ";tag=" not in to:
            to += f";tag={call.tag}"
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {first(headers, 'call-id')}")
        lines.append(f"CSeq: {first(headers, 'cseq')}")
        body = ""
        if call is not None and 100 < status < 300:
            assert self.transport is not None
            host, port = self.transport.get_extra_info("sockname")[:2]
            lines.append(f"Contact: <sip:callee@{host}:{port}>")
        if sdp and call is not None:
            sid = random.getrandbits(31)
            body = (
                f"v=0\r\no=callee {sid} {sid} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {call.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
                "a=sendrecv\r\n"
            )
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def counters(self) -> dict[str, Any]:
        calls = list(self.calls.values())
        return {
            "t": time.time(),
            "invites": self.invites,
            "answered": sum(c.answered for c in calls),
            "up": sum(1 for c in calls if c.answered and not c.ended),
            "received": sum(c.stream.received for c in calls),
            "expected": sum(c.stream.expected for c in calls),
            "loud": sum(c.stream.loud for c in calls),
            "probed": sum(c.stream.probed for c in calls),
            "tone_ok": sum(c.stream.tone_ok for c in calls),
            "sent": sum(c.sender.sent for c in calls if c.sender),
            "send_errors": sum(c.sender.errors for c in calls if c.sender),
            "skipped": self.clock.skipped,
            "late_ticks": self.clock.late_ticks,
            "ticks": self.clock.ticks,
            "byes": self.byes,
            "cancels": self.cancels,
            "failures": self.failures[:5],
            "cpu_s": time.process_time(),
        }


async def callee_role() -> None:
    reader = await stdin_reader()
    config = json.loads(await reader.readline())
    uas = Uas(int(config["ring_ms"]))
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: uas, local_addr=("127.0.0.1", config["port"]))
    clock = loop.create_task(uas.clock.run())
    emit(sys.stdout, {"ev": "ready"})
    while line := await asyncio.wait_for(reader.readline(), config["lifetime"]):
        op = json.loads(line)["op"]
        if op == "mark":
            emit(sys.stdout, {"ev": "mark", **uas.counters()})
        elif op == "stop":
            clock.cancel()
            for call in list(uas.calls.values()):
                call.end("stopped")
            emit(sys.stdout, {"ev": "stopped", **uas.counters()})
            break


# ---- role: browsers -------------------------------------------------------------------------


class Leg:
    """One browser: its phone, its call, its media counters and setup times."""

    def __init__(self, index: int, phone: Phone, codec: str):
        self.index = index
        self.phone = phone
        self.codec = codec
        self.call: Call | None = None
        self.status = 0
        self.error = ""
        self.register_ms: float | None = None
        self.setup_ms: float | None = None  # first INVITE -> 200
        self.auth_ms: float | None = None  # first INVITE -> 407
        self.media_ms: float | None = None  # first INVITE -> DTLS up
        self.rx = Stream(CALLEE_TONE)
        self.sender: Sender | None = None

    @property
    def up(self) -> bool:
        return self.call is not None and not self.call.ended.is_set() and self.sender is not None

    def start_media(self, clock: Clock, payloads: list[bytes], answer: str) -> None:
        """Send and receive this leg's RTP outside aiortc (see the module's docstring)."""
        assert self.call is not None
        transceiver = self.call.pc.getTransceivers()[0]
        dtls = transceiver.sender.transport
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or dtls._tx_srtp is None or dtls._rx_srtp is None:
            raise RuntimeError("no nominated ICE pair or SRTP session")
        protocol, remote = pair.protocol, pair.remote_addr
        rx, tx = dtls._rx_srtp, dtls._tx_srtp
        original = protocol.datagram_received
        stream, codec = self.rx, self.codec

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 209:
                try:
                    plain = rx.unprotect(data)
                except Exception:  # noqa: BLE001 - pylibsrtp.Error: not for us, or forged
                    stream.bad += 1
                    return
                stream.feed(plain, codec)
            else:
                original(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign,assignment]
        m = re.search(r"^m=audio \d+ \S+ (\d+)", answer, re.M)
        pt = int(m.group(1)) if m else 0
        step = 960 if self.codec == "opus" else 160
        transport = protocol.transport
        self.sender = Sender(
            pt,
            transceiver.sender._ssrc,
            step,
            payloads,
            lambda packet: transport.sendto(packet, remote),
            tx.protect,
        )
        clock.senders.add(self.sender)


async def place_call(leg: Leg, clock: Clock, payloads: list[bytes], media_timeout: float) -> None:
    phone = leg.phone
    try:
        call, response = await phone.dial(CALLEE)
    except Exception as exc:  # noqa: BLE001 - reported per leg
        leg.error = f"dial: {exc!r}"
        return
    leg.status = response.status
    sent = phone.invite_sent.get(call.call_id)
    if sent is not None:
        if call.call_id in phone.challenged:
            leg.auth_ms = 1000 * (phone.challenged[call.call_id] - sent)
        if call.call_id in phone.final:
            leg.setup_ms = 1000 * (phone.final[call.call_id] - sent)
    if response.status != 200:
        leg.error = response.start
        return
    leg.call = call
    if not await call.connected(media_timeout):
        leg.error = f"media not connected in {media_timeout:g} s ({call.pc.connectionState})"
        return
    if sent is not None:
        leg.media_ms = 1000 * (time.monotonic() - sent)
    try:
        leg.start_media(clock, payloads, response.body)
    except Exception as exc:  # noqa: BLE001 - reported per leg
        leg.error = f"media: {exc!r}"


def browser_counters(legs: list[Leg], clock: Clock) -> dict[str, Any]:
    return {
        "t": time.time(),
        "up": sum(leg.up for leg in legs),
        "ended_by_switch": sum(
            1 for leg in legs if leg.call is not None and leg.call.end_reason == "remote BYE"
        ),
        "received": sum(leg.rx.received for leg in legs),
        "expected": sum(leg.rx.expected for leg in legs),
        "loud": sum(leg.rx.loud for leg in legs),
        "probed": sum(leg.rx.probed for leg in legs),
        "tone_ok": sum(leg.rx.tone_ok for leg in legs),
        "bad": sum(leg.rx.bad for leg in legs),
        "sent": sum(leg.sender.sent for leg in legs if leg.sender),
        "send_errors": sum(leg.sender.errors for leg in legs if leg.sender),
        "skipped": clock.skipped,
        "late_ticks": clock.late_ticks,
        "ticks": clock.ticks,
        "cpu_s": time.process_time(),
    }


async def browsers_role() -> None:
    reader = await stdin_reader()
    config = json.loads(await reader.readline())
    loopback_ice()
    codec = config["codec"]
    payloads = opus_frames(BROWSER_TONE) if codec == "opus" else pcmu_frames(BROWSER_TONE)
    connector = aiohttp.TCPConnector(limit=0, local_addr=(config["source"], 0))
    session = aiohttp.ClientSession(connector=connector)
    loop = asyncio.get_running_loop()
    clock = Clock()
    ticker = loop.create_task(clock.run())
    legs = [
        Leg(i, Phone(config["ws_url"], identity(i), session, codec), codec)
        for i in config["indices"]
    ]

    async def register(leg: Leg) -> None:
        try:
            await leg.phone.connect()
            t0 = time.monotonic()
            response = await leg.phone.register(EXPIRES)
            if response.status == 200:
                leg.register_ms = 1000 * (time.monotonic() - t0)
            else:
                leg.error = f"REGISTER: {response.start}"
        except Exception as exc:  # noqa: BLE001 - reported per leg
            leg.error = f"register: {exc!r}"

    sem = asyncio.Semaphore(20)

    async def bounded(coro: Coroutine[Any, Any, T]) -> T:
        async with sem:
            return await coro

    await asyncio.wait_for(asyncio.gather(*(bounded(register(leg)) for leg in legs)), 120)
    emit(sys.stdout, {"ev": "registered", "ok": sum(leg.register_ms is not None for leg in legs)})
    go = json.loads(await asyncio.wait_for(reader.readline(), 300))
    rate = float(config["rate"])
    start = loop.time() + float(go.get("offset", 0.0))
    tasks = []
    for n, leg in enumerate(legs):
        if leg.error:
            continue
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(place_call(leg, clock, payloads, config["media_timeout"])))
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    emit(
        sys.stdout,
        {
            "ev": "setup",
            "legs": [
                {
                    "i": leg.index,
                    "status": leg.status,
                    "error": leg.error,
                    "register_ms": leg.register_ms,
                    "auth_ms": leg.auth_ms,
                    "setup_ms": leg.setup_ms,
                    "media_ms": leg.media_ms,
                    "up": leg.up,
                }
                for leg in legs
            ],
            **browser_counters(legs, clock),
        },
    )
    while line := await asyncio.wait_for(reader.readline(), config["lifetime"]):
        op = json.loads(line)["op"]
        if op == "mark":
            emit(sys.stdout, {"ev": "mark", **browser_counters(legs, clock)})
        elif op == "hangup":
            counters = browser_counters(legs, clock)
            for leg in legs:
                if leg.sender is not None:
                    clock.senders.discard(leg.sender)

            async def bye(leg: Leg) -> int:
                if leg.call is None or leg.call.ended.is_set():
                    return 0
                try:
                    return (await leg.call.hangup()).status
                except Exception:  # noqa: BLE001 - counted as not 200
                    return -1

            statuses = await asyncio.wait_for(
                asyncio.gather(*(bounded(bye(leg)) for leg in legs)), 60
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(
                        *(bounded(leg.phone.close()) for leg in legs), return_exceptions=True
                    ),
                    60,
                )
            ticker.cancel()
            await session.close()
            emit(
                sys.stdout,
                {
                    "ev": "hungup",
                    **counters,
                    "bye_ok": sum(1 for s in statuses if s == 200),
                    "bye_other": sum(1 for s in statuses if s not in (0, 200)),
                },
            )
            break


# ---- sampling the switch ----------------------------------------------------------------------


class Sampler:
    """The switch's CPU seconds and RSS every ``every`` seconds, in the background."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, cpu s, rss kB)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), cpu_seconds(self.pid), rss_kb(self.pid)))
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def between(self, t0: float, t1: float) -> list[tuple[float, float, int]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


def thread_pct(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    busy = {k: 100 * (v - before.get(k, 0.0)) / wall for k, v in after.items()}
    top = sorted(busy.items(), key=lambda kv: -kv[1])[:5]
    return {k: round(v, 1) for k, v in top if v >= 0.5}


# ---- mode: idle -------------------------------------------------------------------------------


@dataclass
class IdleResult:
    clients: int
    sources: int
    parallel: int
    transport: str
    round: int = 1
    registered: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    connect_ms_p50: float | None = None
    connect_ms_p99: float | None = None
    register_ms_p50: float | None = None
    register_ms_p99: float | None = None
    register_ms_max: float | None = None
    all_registered_s: float = 0.0
    register_rate: float = 0.0  # clients registered per second, overall
    rss_kb_before: int = 0
    rss_kb_registered: int = 0
    rss_kb_idle_end: int = 0
    rss_kb_closed: int = 0
    rss_growth_kb: int = 0
    rss_kb_per_client: float = 0.0
    fds_before: int = 0
    fds_registered: int = 0
    fds_closed: int = 0
    threads_registered: int = 0
    gauge_registered: float | None = None
    gauge_idle_end: float | None = None
    stored_registered: int | None = None
    cpu_pct_registering: float = 0.0
    cpu_pct_idle: float = 0.0
    idle_s: float = 0.0
    bench_cpu_pct_registering: float = 0.0
    listen_overflows: int = 0  # TcpExtListenOverflows while registering (system-wide)
    dropped_on_idle: int = 0  # connections closed by the switch while idle
    close_s: float = 0.0
    gauge_zero_s: float | None = None  # last close -> registrations gauge 0
    gauge_closed: float | None = None
    stored_closed: int | None = None
    healthz_closed: dict[str, Any] = field(default_factory=dict)
    target_met: bool = False

    @property
    def clean(self) -> bool:
        return (
            self.failed == 0
            and self.gauge_registered == self.clients
            and self.gauge_idle_end == self.clients
            # Plain TCP registrations outlive their connection (no RFC 5626 flow).
            and (self.transport != "ws" or (self.gauge_closed == 0 and self.stored_closed == 0))
            and self.dropped_on_idle == 0
        )


class TcpPhone:
    """A SIP phone registering over plain TCP to the switch's tcp: listener: what
    ``--transport tcp`` compares the WebSocket edge's cost with."""

    def __init__(self, host: str, port: int, ident: str, source: str):
        self.host, self.port, self.identity, self.source = host, port, ident, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.drain_task: asyncio.Task[None] | None = None
        self.closed = False
        self.lport = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=(self.source, 0)
        )
        self.lport = self.writer.get_extra_info("sockname")[1]

    async def _read(self) -> SipMsg:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        msg = SipMsg.parse(head.decode("utf-8", "replace"))
        length = int(msg.header("Content-Length") or 0)
        if length:
            msg.body = (await self.reader.readexactly(length)).decode("utf-8", "replace")
        return msg

    async def register(self, expires: int) -> SipMsg:
        assert self.writer is not None
        aor = f"sip:{self.identity}@{DOMAIN}"
        tag, call_id = f"{random.getrandbits(32):x}", f"{random.getrandbits(64):x}"
        auth: tuple[tuple[str, str], ...] = ()
        for cseq in (1, 2):
            headers = [
                ("Via", f"SIP/2.0/TCP {self.source}:{self.lport};branch=z9hG4bK{call_id}{cseq}"),
                ("Max-Forwards", "70"),
                ("To", f"<{aor}>"),
                ("From", f"<{aor}>;tag={tag}"),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:{self.identity}@{self.source}:{self.lport};transport=tcp>"),
                ("Expires", str(expires)),
                *auth,
            ]
            self.writer.write(SipMsg(f"REGISTER sip:{DOMAIN} SIP/2.0", headers).render().encode())
            response = await asyncio.wait_for(self._read(), TIMER_F)
            while response.status < 200:
                response = await asyncio.wait_for(self._read(), TIMER_F)
            if response.status != 401:
                break
            challenge = response.header("WWW-Authenticate") or ""
            uri = f"sip:{DOMAIN}"
            auth = (("Authorization", digest(challenge, "REGISTER", uri, self.identity, PASSWORD)),)
        self.drain_task = asyncio.get_running_loop().create_task(self._drain())
        return response

    async def _drain(self) -> None:
        assert self.reader is not None
        with contextlib.suppress(OSError):
            while await self.reader.read(65536):
                pass
        self.closed = True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        if self.drain_task is not None:
            self.drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.drain_task


async def mode_idle(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One switch; ``--rounds`` times: register N clients, idle, close them all."""
    n = args.clients
    sources = [f"127.0.0.{10 + i}" for i in range(args.sources)]
    app = App()
    await app.start()
    switch = BenchSwitch(
        workdir,
        app.base,
        args.log_level,
        args.max_calls,
        args.rtp_ports,
        clients=n,
        registrar={"register_rate": args.register_rate, "max_contacts": 5},
        ws_per_source=math.ceil(n / len(sources)) + 10,
        trunk_port=free_udp_port(),
        trusted=("127.0.0.0/8",),
    )
    rounds: list[IdleResult] = []
    sessions: list[aiohttp.ClientSession] = []
    try:
        await switch.start()
        await asyncio.sleep(args.settle)
        rss_cold = await rss_median(switch.pid)
        for ip in sources:
            connector = aiohttp.TCPConnector(limit=0, local_addr=(ip, 0))
            sessions.append(aiohttp.ClientSession(connector=connector))
        print(IDLE_HEADER)
        for number in range(1, args.rounds + 1):
            if number > 1:
                await asyncio.sleep(args.settle)
            result = await idle_round(args, switch, sources, sessions)
            result.round = number
            # The target: 5000 on a fresh switch in < 100 MB more RSS (round 1).
            result.target_met = (
                number == 1
                and args.transport == "ws"
                and result.failed == 0
                and n >= 5000
                and result.rss_growth_kb < 102400
            )
            rounds.append(result)
            print_idle(asdict(result))
    finally:
        for s in sessions:
            await s.close()
        exit_code = await switch.stop()
        await app.stop()
    return {
        "mode": "idle",
        "result": asdict(rounds[0]) if rounds else {},
        "rounds": [asdict(r) for r in rounds],
        "rss_kb_cold": rss_cold,
        "clean": bool(rounds) and all(r.clean for r in rounds),
        "switch_exit": exit_code,
        "switch_log": switch.log_problems(),
        "switch_log_samples": log_samples(switch.log_path),
    }


async def idle_round(
    args: argparse.Namespace,
    switch: BenchSwitch,
    sources: list[str],
    sessions: list[aiohttp.ClientSession],
) -> IdleResult:
    n = args.clients
    pid = switch.pid
    result = IdleResult(n, len(sources), args.parallel, args.transport)
    result.rss_kb_before = await rss_median(pid)
    result.fds_before = fd_count(pid)
    phones: list[Phone | TcpPhone]
    if args.transport == "ws":
        phones = [Phone(switch.ws_url, identity(i), sessions[i % len(sessions)]) for i in range(n)]
    else:
        phones = [
            TcpPhone("127.0.0.1", switch.sip_port, identity(i), sources[i % len(sources)])
            for i in range(n)
        ]
    connect_ms: list[float] = []
    register_ms: list[float] = []
    failures: dict[str, int] = {}
    sem = asyncio.Semaphore(args.parallel)

    async def one(phone: Phone | TcpPhone) -> None:
        async with sem:
            try:
                t0 = time.monotonic()
                await phone.connect()
                t1 = time.monotonic()
                response = await phone.register(EXPIRES)
                t2 = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - counted by kind
                key = type(exc).__name__
                failures[key] = failures.get(key, 0) + 1
                return
            if response.status == 200:
                connect_ms.append(1000 * (t1 - t0))
                register_ms.append(1000 * (t2 - t1))
            else:
                failures[response.start] = failures.get(response.start, 0) + 1

    overflows0 = listen_overflows()
    cpu0, bench0, t0 = cpu_seconds(pid), time.process_time(), time.monotonic()
    print(
        f"  registering {n} clients ({args.transport}) from {len(sources)} sources ...", flush=True
    )
    await asyncio.wait_for(asyncio.gather(*(one(p) for p in phones)), args.register_timeout)
    t1 = time.monotonic()
    result.listen_overflows = listen_overflows() - overflows0
    wall = t1 - t0
    result.all_registered_s = round(wall, 2)
    result.cpu_pct_registering = round(100 * (cpu_seconds(pid) - cpu0) / wall, 1)
    result.bench_cpu_pct_registering = round(100 * (time.process_time() - bench0) / wall, 1)
    result.registered = len(register_ms)
    result.failed = n - len(register_ms)
    result.failures = failures
    result.register_rate = round(len(register_ms) / wall, 1)
    result.connect_ms_p50, result.connect_ms_p99 = pct(connect_ms, 50), pct(connect_ms, 99)
    result.register_ms_p50 = pct(register_ms, 50)
    result.register_ms_p99 = pct(register_ms, 99)
    result.register_ms_max = round(max(register_ms), 1) if register_ms else None
    print(
        f"  {result.registered}/{n} registered in {wall:.1f} s; idling {args.idle_seconds:g} s",
        flush=True,
    )
    await asyncio.sleep(args.settle)
    result.rss_kb_registered = await rss_median(pid)
    result.fds_registered = fd_count(pid)
    result.threads_registered = len(os.listdir(f"/proc/{pid}/task"))
    result.gauge_registered = await switch.registrations()
    result.stored_registered = switch.stored_bindings()
    # Idle: nothing is sent but the WebSocket pings (every 30 s from the switch).
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    result.idle_s = round(time.monotonic() - t0, 1)
    result.cpu_pct_idle = round(100 * (cpu_seconds(pid) - cpu0) / result.idle_s, 2)
    result.rss_kb_idle_end = await rss_median(pid)
    result.dropped_on_idle = sum(1 for p in phones if _closed(p))
    result.gauge_idle_end = await switch.registrations()
    result.rss_growth_kb = result.rss_kb_registered - result.rss_kb_before
    result.rss_kb_per_client = round(result.rss_growth_kb / max(result.registered, 1), 2)
    # Close every connection (the tab is closed: no un-REGISTER), then wait for the
    # switch to drop every binding.
    print("  closing all connections ...", flush=True)
    t0 = time.monotonic()
    close_sem = asyncio.Semaphore(500)

    async def close(phone: Phone | TcpPhone) -> None:
        async with close_sem:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 15)

    await asyncio.wait_for(asyncio.gather(*(close(p) for p in phones)), 180)
    t_closed = time.monotonic()
    result.close_s = round(t_closed - t0, 2)
    deadline = t_closed + 60
    gauge = await switch.registrations()
    while gauge != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        gauge = await switch.registrations()
    if gauge == 0:
        result.gauge_zero_s = round(time.monotonic() - t_closed, 2)
    result.gauge_closed = gauge
    await asyncio.sleep(2)
    result.stored_closed = switch.stored_bindings()
    result.fds_closed = fd_count(pid)
    result.rss_kb_closed = await rss_median(pid)
    result.healthz_closed = await switch.health()
    return result


def _closed(phone: Phone | TcpPhone) -> bool:
    if isinstance(phone, TcpPhone):
        return phone.closed
    return phone.ws is not None and phone.ws.closed


IDLE_HEADER = (
    f"{'clients':>7} {'ok':>5} {'fail':>4} {'con50':>6} {'con99':>6} {'reg50':>6} {'reg99':>6} "
    f"{'all_s':>6} {'rss0':>6} {'rss1':>6} {'dMB':>6} {'KB/cl':>6} {'fds0':>5} {'fds1':>6} "
    f"{'gauge':>6} {'cpuReg':>6} {'cpuIdl':>6} {'drop_s':>6} {'after':>5} {'fds2':>5}"
)


def print_idle(r: dict[str, Any]) -> None:
    print(
        f"{r['clients']:>7} {r['registered']:>5} {r['failed']:>4} {fmt(r['connect_ms_p50'])} "
        f"{fmt(r['connect_ms_p99'])} {fmt(r['register_ms_p50'])} {fmt(r['register_ms_p99'])} "
        f"{r['all_registered_s']:>6.1f} {r['rss_kb_before'] / 1024:>6.1f} "
        f"{r['rss_kb_registered'] / 1024:>6.1f} {r['rss_growth_kb'] / 1024:>6.1f} "
        f"{r['rss_kb_per_client']:>6.1f} {r['fds_before']:>5} {r['fds_registered']:>6} "
        f"{fmt(r['gauge_registered'])} {r['cpu_pct_registering']:>6.0f} "
        f"{r['cpu_pct_idle']:>6.1f} {fmt(r['gauge_zero_s'], 6, 1)} "
        f"{fmt(r['gauge_closed'], 5)} {r['fds_closed']:>5}",
        flush=True,
    )
    if r["failures"]:
        print(f"       failures: {r['failures']}")
    print(
        f"       RSS idle end {r['rss_kb_idle_end'] / 1024:.1f} MB, after close "
        f"{r['rss_kb_closed'] / 1024:.1f} MB; stored bindings {r['stored_registered']} -> "
        f"{r['stored_closed']}; closed by the switch while idle: {r['dropped_on_idle']}; "
        f"register rate {r['register_rate']}/s, accept-queue overflows "
        f"{r['listen_overflows']}, max {r['register_ms_max']} ms, "
        f"bench CPU {r['bench_cpu_pct_registering']}%; "
        f"target (5000 in < 100 MB): {'met' if r['target_met'] else 'not met'}",
        flush=True,
    )


# ---- mode: media -------------------------------------------------------------------------------


@dataclass
class MediaResult:
    legs: int
    codec: str
    setup_rate: float
    seconds: float
    ring_ms: int
    browser_procs: int
    registered: int = 0
    answered: int = 0  # browsers that got a 200
    media_up: int = 0  # ... and whose DTLS connected
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    held: int = 0  # legs still up at the end of the window, both sides
    callee_up: int = 0
    ended_by_switch: int = 0
    setup_ms_p50: float | None = None  # first INVITE -> 200, minus ring
    setup_ms_p99: float | None = None
    setup_ms_max: float | None = None
    auth_ms_p50: float | None = None  # first INVITE -> 407
    media_ms_p50: float | None = None  # first INVITE -> DTLS connected
    media_ms_p99: float | None = None
    window_s: float = 0.0
    # browser -> callee (through the switch), and callee -> browser, over the window
    b2c_rate_pct: float = 0.0  # packets the callees received / 50 per s per leg
    b2c_loss_pct: float = 0.0  # sequence gaps at the callees
    b2c_loud_pct: float = 0.0  # received packets carrying the browsers' tone
    c2b_rate_pct: float = 0.0
    c2b_loss_pct: float = 0.0
    c2b_loud_pct: float = 0.0
    c2b_srtp_bad: int = 0
    b2c_tone_pct: float | None = None  # probed packets (1 in 50) with the browser's tone
    c2b_tone_pct: float | None = None  # ... with the callee's (PCMU browsers only)
    browser_sent_pct: float = 0.0  # what the browsers managed to send / nominal
    callee_sent_pct: float = 0.0
    generator_skipped: int = 0  # packets the load generator was too late to send
    generator_late_ticks: int = 0
    cpu_pct: float = 0.0
    cpu_pct_idle: float = 0.0
    cpu_pct_per_leg: float = 0.0  # (window - idle) / legs held
    thread_cpu_pct: dict[str, float] = field(default_factory=dict)
    rss_kb_idle: int = 0
    rss_kb_window: int = 0
    rss_kb_per_leg: float = 0.0
    rss_kb_end: int = 0
    fds_window: int = 0
    generator_cpu_pct: dict[str, float] = field(default_factory=dict)
    host_cpu_pct: float = 0.0  # every core's busy time, % of one core (2 cores: 200)
    others_cpu_pct: float = 0.0  # host - switch - load generator: other tenants
    switch_rtp: dict[str, float] = field(default_factory=dict)  # /metrics deltas
    bye_ok: int = 0
    callee_byes: int = 0
    leak_check: dict[str, Any] = field(default_factory=dict)
    loadavg: list[float] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.failed == 0
            and self.held == self.legs
            and self.b2c_loss_pct < 0.5
            and self.c2b_loss_pct < 0.5
            and self.b2c_rate_pct > 97
            and self.c2b_rate_pct > 97
            and bool(self.leak_check.get("ok"))
        )


def _window(m0: list[dict[str, Any]], m1: list[dict[str, Any]], key: str) -> int:
    return sum(b[key] for b in m1) - sum(a[key] for a in m0)


async def mode_media(args: argparse.Namespace, workdir: Path, legs: int) -> dict[str, Any]:
    app = App()
    await app.start()
    callee_port = free_udp_port()
    procs = max(1, min(args.browser_procs, legs))
    switch = BenchSwitch(
        workdir,
        app.base,
        args.log_level,
        args.max_calls,
        args.rtp_ports,
        clients=legs,
        registrar={"register_rate": args.register_rate, "max_contacts": 5},
        ws_per_source=legs + 10,
        trunk_port=callee_port,
        trusted=("127.0.0.0/8",),
    )
    r = MediaResult(legs, args.codec, args.setup_rate, args.seconds, args.ring_ms, procs)
    lifetime = legs / args.setup_rate + args.seconds + 600
    callee: Child | None = None
    browsers: list[Child] = []
    sampler: Sampler | None = None
    try:
        callee = await Child.start(
            "callee",
            {"port": callee_port, "ring_ms": args.ring_ms, "lifetime": lifetime},
            workdir / "callee.log",
        )
        await callee.event(30)
        await switch.start()
        pid = switch.pid
        sampler = Sampler(pid)
        sampler.start()
        await asyncio.sleep(args.settle)
        baseline = await switch.health()
        r.rss_kb_idle = await rss_median(pid)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(2)
        idle_rate = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        r.cpu_pct_idle = round(100 * idle_rate, 1)
        rtp0 = await switch.metrics()
        for p in range(procs):
            indices = list(range(p, legs, procs))
            browsers.append(
                await Child.start(
                    "browsers",
                    {
                        "indices": indices,
                        "ws_url": switch.ws_url,
                        "codec": args.codec,
                        "source": "127.0.0.1",
                        "rate": args.setup_rate / procs,
                        "media_timeout": 15,
                        "lifetime": lifetime,
                    },
                    workdir / f"browsers{p}.log",
                )
            )
        registered = await asyncio.gather(*(b.event(180) for b in browsers))
        r.registered = sum(e["ok"] for e in registered)
        print(f"  {r.registered}/{legs} browsers registered; calling ...", flush=True)
        for p, b in enumerate(browsers):  # staggered, so the procs interleave their calls
            await b.send({"op": "go", "offset": p / args.setup_rate})
        setups = await asyncio.gather(*(b.event(legs / args.setup_rate + 120) for b in browsers))
        leg_rows = [row for s in setups for row in s["legs"]]
        setup = [row["setup_ms"] - args.ring_ms for row in leg_rows if row["status"] == 200]
        media = [row["media_ms"] for row in leg_rows if row["media_ms"] is not None]
        r.answered = sum(1 for row in leg_rows if row["status"] == 200)
        r.media_up = sum(1 for row in leg_rows if row["up"])
        r.failed = legs - r.media_up
        for row in leg_rows:
            if row["error"]:
                key = re.sub(r"\d{3,}", "N", row["error"])[:80]
                r.errors[key] = r.errors.get(key, 0) + 1
        r.setup_ms_p50, r.setup_ms_p99 = pct(setup, 50), pct(setup, 99)
        r.setup_ms_max = round(max(setup), 1) if setup else None
        r.auth_ms_p50 = pct([row["auth_ms"] for row in leg_rows if row["auth_ms"]], 50)
        r.media_ms_p50, r.media_ms_p99 = pct(media, 50), pct(media, 99)
        print(
            f"  {r.media_up}/{legs} legs up (setup p50 {r.setup_ms_p50} p99 {r.setup_ms_p99} ms);"
            f" measuring {args.seconds:g} s",
            flush=True,
        )
        await asyncio.sleep(args.settle)
        # -- the window
        children = [callee, *browsers]
        gen0 = {c.role + str(i): cpu_seconds(c.pid) for i, c in enumerate(children)}
        threads0 = thread_cpu_seconds(pid)
        main0 = time.process_time()
        w0 = time.monotonic()
        cpu0 = cpu_seconds(pid)
        host0 = host_busy_seconds()
        m0 = await asyncio.gather(*(b.ask({"op": "mark"}) for b in browsers))
        c0m = await callee.ask({"op": "mark"})
        await asyncio.sleep(args.seconds)
        m1 = await asyncio.gather(*(b.ask({"op": "mark"}) for b in browsers))
        c1m = await callee.ask({"op": "mark"})
        cpu1 = cpu_seconds(pid)
        host1 = host_busy_seconds()
        w1 = time.monotonic()
        threads1 = thread_cpu_seconds(pid)
        wall = w1 - w0
        r.window_s = round(wall, 2)
        r.loadavg = [round(x, 2) for x in os.getloadavg()]
        gen1 = {c.role + str(i): cpu_seconds(c.pid) for i, c in enumerate(children)}
        r.generator_cpu_pct = {k: round(100 * (gen1[k] - gen0[k]) / wall, 1) for k in gen0}
        r.generator_cpu_pct["bench"] = round(100 * (time.process_time() - main0) / wall, 1)
        r.generator_cpu_pct["total"] = round(sum(r.generator_cpu_pct.values()), 1)
        r.cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1)
        r.host_cpu_pct = round(100 * (host1 - host0) / wall, 1)
        r.others_cpu_pct = round(r.host_cpu_pct - r.cpu_pct - r.generator_cpu_pct["total"], 1)
        r.thread_cpu_pct = thread_pct(threads0, threads1, wall)
        window = sampler.between(w0, w1)
        r.rss_kb_window = int(statistics.median([s[2] for s in window])) if window else 0
        r.fds_window = fd_count(pid)
        r.held = min(sum(m["up"] for m in m1), c1m["up"])
        r.callee_up = c1m["up"]
        r.ended_by_switch = sum(m["ended_by_switch"] for m in m1)
        held = max(r.held, 1)
        nominal = PPS * wall * held
        r.cpu_pct_per_leg = round(100 * (cpu1 - cpu0 - idle_rate * wall) / wall / held, 3)
        r.rss_kb_per_leg = round((r.rss_kb_window - r.rss_kb_idle) / held, 1)
        b_recv = c1m["received"] - c0m["received"]
        b_exp = c1m["expected"] - c0m["expected"]
        r.b2c_rate_pct = round(100 * b_recv / nominal, 2)
        r.b2c_loss_pct = round(100 * max(0, b_exp - b_recv) / max(b_exp, 1), 3)
        r.b2c_loud_pct = round(100 * (c1m["loud"] - c0m["loud"]) / max(b_recv, 1), 2)
        c_recv = _window(m0, m1, "received")
        c_exp = _window(m0, m1, "expected")
        r.c2b_rate_pct = round(100 * c_recv / nominal, 2)
        r.c2b_loss_pct = round(100 * max(0, c_exp - c_recv) / max(c_exp, 1), 3)
        r.c2b_loud_pct = round(100 * _window(m0, m1, "loud") / max(c_recv, 1), 2)
        r.c2b_srtp_bad = _window(m0, m1, "bad")
        probed = c1m["probed"] - c0m["probed"]
        if probed:
            r.b2c_tone_pct = round(100 * (c1m["tone_ok"] - c0m["tone_ok"]) / probed, 1)
        probed = _window(m0, m1, "probed")
        if probed:
            r.c2b_tone_pct = round(100 * _window(m0, m1, "tone_ok") / probed, 1)
        r.browser_sent_pct = round(100 * _window(m0, m1, "sent") / nominal, 2)
        r.callee_sent_pct = round(100 * (c1m["sent"] - c0m["sent"]) / nominal, 2)
        r.generator_skipped = _window(m0, m1, "skipped") + c1m["skipped"] - c0m["skipped"]
        r.generator_late_ticks = (
            _window(m0, m1, "late_ticks") + c1m["late_ticks"] - c0m["late_ticks"]
        )
        # -- hang up: the browsers BYE, the switch BYEs the callee
        hung = await asyncio.gather(*(b.ask({"op": "hangup"}, 150) for b in browsers))
        r.bye_ok = sum(h["bye_ok"] for h in hung)
        r.leak_check = await switch.wait_idle(baseline, 30)
        stopped = await callee.ask({"op": "stop"})
        r.callee_byes = stopped["byes"]
        await asyncio.sleep(1)
        rtp1 = await switch.metrics()
        for direction in ("rx", "tx"):
            for name in ("dialswitch_rtp_packets_total", "dialswitch_rtp_packets_lost_total"):
                key = f"{name.removeprefix('dialswitch_rtp_').removesuffix('_total')}_{direction}"
                labels = {"direction": direction}
                r.switch_rtp[key] = metric_value(rtp1, name, labels) - metric_value(
                    rtp0, name, labels
                )
        r.rss_kb_end = await rss_median(pid)
    finally:
        if sampler is not None:
            await sampler.stop()
        for b in browsers:
            await b.stop(10)
        if callee is not None:
            await callee.stop(10)
        exit_code = await switch.stop()
        await app.stop()
    return {
        "mode": "media",
        "result": asdict(r),
        "clean": r.clean,
        "switch_exit": exit_code,
        "switch_log": switch.log_problems(),
        "switch_log_samples": log_samples(switch.log_path),
    }


MEDIA_HEADER = (
    f"{'legs':>5} {'up':>4} {'held':>4} {'set50':>6} {'set99':>6} {'dtls50':>6} {'dtls99':>6} "
    f"{'b>c%':>6} {'loss':>5} {'c>b%':>6} {'loss':>5} {'cpu%':>5} {'/leg':>5} {'rss0':>6} "
    f"{'rssW':>6} {'KB/lg':>6} {'gen%':>5} {'skip':>5} leak"
)


def print_media(r: dict[str, Any]) -> None:
    leak = "ok" if r["leak_check"].get("ok") else "LEAK"
    print(
        f"{r['legs']:>5} {r['media_up']:>4} {r['held']:>4} {fmt(r['setup_ms_p50'])} "
        f"{fmt(r['setup_ms_p99'])} {fmt(r['media_ms_p50'])} {fmt(r['media_ms_p99'])} "
        f"{r['b2c_rate_pct']:>6.1f} {r['b2c_loss_pct']:>5.2f} {r['c2b_rate_pct']:>6.1f} "
        f"{r['c2b_loss_pct']:>5.2f} {r['cpu_pct']:>5.0f} {r['cpu_pct_per_leg']:>5.2f} "
        f"{r['rss_kb_idle'] / 1024:>6.1f} {r['rss_kb_window'] / 1024:>6.1f} "
        f"{r['rss_kb_per_leg']:>6.0f} {r['generator_cpu_pct'].get('total', 0):>5.0f} "
        f"{r['generator_skipped']:>5} {leak}",
        flush=True,
    )
    threads = ", ".join(f"{k.split('/')[0]} {v:.0f}%" for k, v in r["thread_cpu_pct"].items())
    gen = ", ".join(f"{k} {v:.0f}%" for k, v in r["generator_cpu_pct"].items())
    print(f"       switch threads: {threads}; idle {r['cpu_pct_idle']}%")
    print(
        f"       load generator: {gen}; late ticks {r['generator_late_ticks']}; host "
        f"{r['host_cpu_pct']}% of {os.cpu_count()} cores, others {r['others_cpu_pct']}%"
    )
    print(
        f"       loud: b>c {r['b2c_loud_pct']}% c>b {r['c2b_loud_pct']}% of packets, "
        f"tone: b>c {r['b2c_tone_pct']}% c>b {r['c2b_tone_pct']}% of probes; sent: "
        f"browsers {r['browser_sent_pct']}% callee {r['callee_sent_pct']}%; srtp bad "
        f"{r['c2b_srtp_bad']}; ended by switch {r['ended_by_switch']}; BYE ok {r['bye_ok']}, "
        f"callee BYEs {r['callee_byes']}; auth p50 {r['auth_ms_p50']} ms; "
        f"setup max {r['setup_ms_max']} ms",
    )
    print(f"       switch RTP (ended streams): {r['switch_rtp']}; loadavg {r['loadavg']}")
    if r["errors"]:
        print(f"       errors: {r['errors']}")
    if not r["leak_check"].get("ok"):
        print(f"       leak check: {r['leak_check']}")


# ---- run loop -------------------------------------------------------------------------------


def log_samples(path: Path, limit: int = 8) -> list[str]:
    """The first WARNING/ERROR/Traceback lines of the switch log."""
    found: list[str] = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if any(k in line for k in ("WARNING", "ERROR", "Traceback")):
                found.append(line[:300])
                if len(found) >= limit:
                    break
    return found


MEDIA_KEYS = (
    "media_up",
    "held",
    "setup_ms_p50",
    "setup_ms_p99",
    "media_ms_p50",
    "media_ms_p99",
    "b2c_rate_pct",
    "b2c_loss_pct",
    "c2b_rate_pct",
    "c2b_loss_pct",
    "cpu_pct",
    "cpu_pct_per_leg",
    "rss_kb_idle",
    "rss_kb_window",
    "rss_kb_per_leg",
    "generator_skipped",
    "host_cpu_pct",
    "others_cpu_pct",
)
IDLE_KEYS = (
    "registered",
    "connect_ms_p50",
    "connect_ms_p99",
    "register_ms_p50",
    "register_ms_p99",
    "all_registered_s",
    "rss_kb_before",
    "rss_kb_registered",
    "rss_growth_kb",
    "rss_kb_per_client",
    "fds_before",
    "fds_registered",
    "fds_closed",
    "cpu_pct_idle",
    "gauge_zero_s",
)


async def run(args: argparse.Namespace) -> int:
    tree = benchlib.git_state()
    runs: list[dict[str, Any]] = []
    kept: list[str] = []
    plan: list[int | None] = (
        [legs for legs in args.legs for _ in range(args.repeat)]
        if args.mode == "media"
        else [None] * args.repeat
    )
    for i, legs in enumerate(plan):
        workdir = Path(tempfile.mkdtemp(prefix=f"webrtc_bench-{args.mode}-"))
        what = f"{legs} legs" if legs is not None else f"{args.clients} clients"
        print(f"== run {i + 1}/{len(plan)} ({args.mode}, {what}), workdir {workdir}", flush=True)
        outcome: dict[str, Any] = {"mode": args.mode, "clean": False}
        try:
            if legs is None:
                outcome = await mode_idle(args, workdir)
            else:
                outcome = await mode_media(args, workdir, legs)
        except Exception as exc:  # noqa: BLE001 - reported, the next run goes on
            outcome["error"] = repr(exc)
            print(f"  run failed: {exc!r}", flush=True)
        finally:
            outcome["workdir"] = str(workdir)
            if args.keep or not outcome.get("clean"):
                kept.append(str(workdir))
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            os.sync()
        if "result" in outcome and legs is not None:
            print(MEDIA_HEADER)
            print_media(outcome["result"])
        print(
            f"  switch log {outcome.get('switch_log')}, exit {outcome.get('switch_exit')}",
            flush=True,
        )
        for line in outcome.get("switch_log_samples", [])[:4]:
            print(f"    {line[:200]}")
        runs.append(outcome)
        if i < len(plan) - 1:
            await asyncio.sleep(args.pause)
    summary = summarize(args, runs)
    result = {
        "bench": "webrtc_bench",
        "mode": args.mode,
        "switch_tree": tree,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "summary": summary,
        "runs": runs,
        "kept_workdirs": kept,
    }
    write_results(args, f"webrtc-{args.mode}", result, summary, kept)
    return 0


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r["result"] for r in runs if "result" in r]
    if args.mode == "idle":
        return benchlib.step_medians(done, IDLE_KEYS)
    return {
        str(legs): benchlib.step_medians([r for r in done if r["legs"] == legs], MEDIA_KEYS)
        for legs in args.legs
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("idle", "media"), default="idle")
    p.add_argument("--clients", type=int, default=5000, help="idle: WebSocket clients (5000)")
    p.add_argument(
        "--sources", type=int, default=10, help="idle: source addresses 127.0.0.10.. (10)"
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=5,
        help="idle: registrations at once (5, as the published figures; before the\n"
        "listen backlog was raised, more at once overflowed it: see bench/README.md)",
    )
    p.add_argument(
        "--idle-seconds", type=float, default=35, help="idle: seconds all N stay idle (35)"
    )
    p.add_argument(
        "--transport",
        choices=("ws", "tcp"),
        default="ws",
        help="idle: WebSocket browsers, or SIP phones over plain TCP to compare (ws)",
    )
    p.add_argument("--rounds", type=int, default=1, help="idle: rounds on the same switch (1)")
    p.add_argument(
        "--register-timeout", type=float, default=300, help="idle: bound on registering all"
    )
    p.add_argument(
        "--legs",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[50],
        help="media: browser legs, or a list (10,50,100,200): one switch per value",
    )
    p.add_argument("--codec", choices=("pcmu", "opus"), default="pcmu", help="media: (pcmu)")
    p.add_argument("--seconds", type=float, default=20, help="media: measuring window (20)")
    p.add_argument(
        "--setup-rate", type=float, default=10, help="media: calls per second set up (10)"
    )
    p.add_argument("--ring-ms", type=int, default=100, help="media: callee ring time (100)")
    p.add_argument("--browser-procs", type=int, default=2, help="media: browser processes (2)")
    p.add_argument(
        "--register-rate",
        type=float,
        default=10000,
        help="switch [registrar] register_rate: REGISTERs and WebSocket connections per "
        "second per source (10000)",
    )
    p.add_argument("--settle", type=float, default=3, help="seconds of quiet between phases")
    p.add_argument("--repeat", type=int, default=1, help="runs, each with a fresh switch")
    p.add_argument("--pause", type=float, default=3, help="seconds between runs")
    p.add_argument("--max-calls", type=int, default=2000, help="switch [dial] max_calls")
    p.add_argument("--log-level", default="info", help="switch [log] level")
    p.add_argument("--rtp-ports", default=benchlib.DEFAULT_RTP_PORTS)
    p.add_argument("--json", type=Path, default=None, help="result file (default bench/results/)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument(
        "--role", choices=("main", "browsers", "callee"), default="main", help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 15000:
        p.error("--clients 1..15000 (each is a socket in the switch and one here: fd limit 20000)")
    if not 1 <= args.sources <= 200:
        p.error("--sources 1..200")
    if any(not 1 <= legs <= 500 for legs in args.legs):
        p.error("--legs 1..500")
    if not 1 <= args.seconds <= 300 or not 0.5 <= args.setup_rate <= 200:
        p.error("--seconds 1..300, --setup-rate 0.5..200")
    return args


def main() -> int:
    args = parse_args()
    roles: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "browsers": browsers_role,
        "callee": callee_role,
        "main": lambda: run(args),
    }
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(roles[args.role]())
    else:
        result = uvloop.run(roles[args.role]())
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
