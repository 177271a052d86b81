"""A symmetric RTP party: what a phone's media looks like to the switch.

One UDP socket receives what the switch sends (decoded G.711, with arrival
times, and every packet as received in ``packets``) and, once the switch's address
is known from its first packet, sends a sine tone back to it from the same
socket, one packet of ``frame`` samples (20 ms by default) at a time, as PCMU
(or PCMA), and RFC 4733 digits when asked (``send_digit``). Tests put the
socket's port in the SDP of a SIPp peer, so SIPp does the signalling and this
object is the audio of that party.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random

import numpy as np
import numpy.typing as npt
from aiortc.rtp import AnyRtcpPacket, RtcpPacket

from media.analysis import g711_decode, g711_encode
from tests.support.rtp import (
    PCMA,
    PCMU,
    ReceivedPacket,
    RtpError,
    RtpPacket,
    TelephoneEvent,
)

RATE = 8000
FRAME = 160
EVENT_PT = 101  # telephone-event in tests/support/sipp.py's SDP
LAWS = {PCMU: "pcmu", PCMA: "pcma"}


class RtpPeer(asyncio.DatagramProtocol):
    def __init__(
        self,
        tone_hz: float | None,
        level: float = 0.3,
        *,
        frame: int = FRAME,
        payload_type: int = PCMU,
        clock_rate: int = RATE,
        event_pt: int = EVENT_PT,
    ):
        self.tone_hz = tone_hz
        self.level = level
        self.frame = frame  # RTP clock ticks a packet
        self.clock_rate = clock_rate  # of the RTP clock (48000 for opus)
        self.event_pt = event_pt  # telephone-event's payload type in this party's SDP
        self.payload_type = payload_type
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.chunks: list[tuple[float, npt.NDArray[np.int16]]] = []  # (arrival, samples)
        self.packets: list[ReceivedPacket] = []
        self.events: list[TelephoneEvent] = []
        self.sent = 0
        self.ssrc = random.getrandbits(32)  # of the stream it sends
        self._digits: list[int] = []
        self._restart = False
        self._sender: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", port)
        )
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        now = asyncio.get_running_loop().time()
        self.packets.append(ReceivedPacket(packet, now, addr))
        if packet.payload_type == PCMU:
            self.chunks.append((now, g711_decode(packet.payload, "pcmu")))
        elif packet.payload_type == PCMA:
            self.chunks.append((now, g711_decode(packet.payload, "pcma")))
        elif packet.payload_type == self.event_pt:
            with contextlib.suppress(RtpError):
                self.events.append(TelephoneEvent.parse(packet.payload))
        if self.remote is None:
            self.talk_to(addr)
        self._changed.set()

    def talk_to(self, remote: tuple[str, int]) -> None:
        """Send the tone to ``remote`` from now on, without waiting to hear from it
        (a phone behind NAT talks first, and the switch learns its address from
        what arrives)."""
        self.remote = remote
        if self.tone_hz is not None and self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    def error_received(self, exc: Exception) -> None:
        pass

    def restart_stream(self) -> None:
        """From the next packet on, send with new random sequence numbers and
        timestamps under the same SSRC, as a phone whose media restarted."""
        self._restart = True

    def send_digit(self, event: int) -> None:
        """Send RFC 4733 event ``event`` (10 is ``*``) in place of the next 160 ms of
        audio: 5 packets of growing duration, then the end packet three times."""
        self._digits.append(event)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        ssrc = self.ssrc
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        n = 0  # frames of time sent
        start = loop.time()
        assert self.tone_hz is not None
        step = 2 * math.pi * self.tone_hz / RATE
        event: tuple[int, int, int] | None = None  # (code, timestamp, packets sent)
        while self.transport is not None and self.remote is not None:
            if self._restart:
                self._restart = False
                seq = (seq + random.randrange(4000, 60000)) & 0xFFFF
                ts = (ts + random.getrandbits(31)) & 0xFFFFFFFF
            if event is None and self._digits:
                event = (self._digits.pop(0), (ts + n * self.frame) & 0xFFFFFFFF, 0)
            if event is not None:
                code, start_ts, count = event
                end = count >= 5
                duration = min(count + 1, 5) * self.frame
                payload = TelephoneEvent(code, end, 10, duration).serialize()
                packet = RtpPacket(
                    self.event_pt, seq & 0xFFFF, start_ts, ssrc, payload, marker=count == 0
                )
                event = None if count >= 7 else (code, start_ts, count + 1)
            else:
                packet = RtpPacket(
                    self.payload_type,
                    seq & 0xFFFF,
                    (ts + n * self.frame) & 0xFFFFFFFF,
                    ssrc,
                    self._payload(n, step),
                )
            self.transport.sendto(packet.serialize(), self.remote)
            self.sent += 1
            seq += 1
            n += 1
            delay = start + n * self.frame / self.clock_rate - loop.time()
            await asyncio.sleep(max(0.0, delay))

    def _payload(self, n: int, step: float) -> bytes:
        """Frame ``n`` of the tone in G.711; for another payload type, ``frame`` bytes
        counting up from ``n`` (`counting`), which only a relay passes on intact."""
        if self.payload_type not in LAWS:
            return bytes((n + i) & 0xFF for i in range(self.frame))
        index = np.arange(n * self.frame, (n + 1) * self.frame)
        samples = (np.sin(index * step) * self.level * 32767).astype(np.int16)
        return g711_encode(samples, LAWS[self.payload_type])

    def audio(self, since: float = 0.0, until: float = math.inf) -> npt.NDArray[np.int16]:
        parts = [s for t, s in self.chunks if since <= t < until]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    async def wait_for_audio(
        self, seconds: float, timeout: float = 15.0, since: float = 0.0
    ) -> None:
        """Wait until ``seconds`` of audio arrived after loop time ``since``."""

        async def enough() -> None:
            while len(self.audio(since)) < seconds * RATE:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class RtcpPort(asyncio.DatagramProtocol):
    """The RTCP port of an `RtpPeer` (its RTP port + 1, as SDP without ``a=rtcp``
    says): every RTCP packet received, parsed by aiortc, with its arrival time."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[float, AnyRtcpPacket]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        now = asyncio.get_running_loop().time()
        with contextlib.suppress(ValueError):
            self.received += [(now, packet) for packet in RtcpPacket.parse(data)]

    def send(self, packet: AnyRtcpPacket, remote: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(packet), remote)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def with_rtcp_port(peer: RtpPeer) -> RtcpPort:
    """Start ``peer`` on an even port whose next port is free, and an `RtcpPort` on
    that next one."""
    loop = asyncio.get_running_loop()
    for _ in range(50):
        rtcp = RtcpPort()
        transport, _ = await loop.create_datagram_endpoint(
            lambda rtcp=rtcp: rtcp, local_addr=("127.0.0.1", 0)
        )
        rtcp_port = int(transport.get_extra_info("sockname")[1])
        if rtcp_port % 2 == 1:
            with contextlib.suppress(OSError):
                await peer.start(rtcp_port - 1)
                rtcp.transport = transport
                return rtcp
        transport.close()
    raise RuntimeError("no free RTP/RTCP port pair")


def counting(payload: bytes) -> bool:
    """Whether ``payload`` is one an `RtpPeer` sends for a codec it cannot encode:
    bytes counting up by one."""
    pairs = zip(payload, payload[1:], strict=False)
    return len(payload) > 1 and all((b - a) & 0xFF == 1 for a, b in pairs)
