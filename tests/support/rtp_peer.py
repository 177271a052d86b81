"""A symmetric RTP party: what a phone's media looks like to the switch.

One UDP socket receives what the switch sends (decoded G.711, with arrival
times) and, once the switch's address is known from its first packet, sends a
sine tone back to it from the same socket, every 20 ms, as PCMU. Tests put the
socket's port in the SDP of a SIPp peer, so SIPp does the signalling and this
object is the audio of that party.
"""

from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import numpy.typing as npt

from media.analysis import g711_decode, g711_encode
from tests.support.rtp import PCMA, PCMU, RtpError, RtpPacket

RATE = 8000
FRAME = 160


class RtpPeer(asyncio.DatagramProtocol):
    def __init__(self, tone_hz: float | None, level: float = 0.3):
        self.tone_hz = tone_hz
        self.level = level
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.chunks: list[tuple[float, npt.NDArray[np.int16]]] = []  # (arrival, samples)
        self._sender: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
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
        if packet.payload_type == PCMU:
            self.chunks.append((now, g711_decode(packet.payload, "pcmu")))
        elif packet.payload_type == PCMA:
            self.chunks.append((now, g711_decode(packet.payload, "pcma")))
        if self.remote is None:
            self.remote = addr
            if self.tone_hz is not None:
                self._sender = asyncio.get_running_loop().create_task(self._send())
        self._changed.set()

    def error_received(self, exc: Exception) -> None:
        pass

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        n = 0
        start = loop.time()
        assert self.tone_hz is not None
        step = 2 * math.pi * self.tone_hz / RATE
        while self.transport is not None and self.remote is not None:
            index = np.arange(n * FRAME, (n + 1) * FRAME)
            samples = (np.sin(index * step) * self.level * 32767).astype(np.int16)
            packet = RtpPacket(
                PCMU,
                (seq + n) & 0xFFFF,
                (ts + n * FRAME) & 0xFFFFFFFF,
                ssrc,
                g711_encode(samples, "pcmu"),
            )
            self.transport.sendto(packet.serialize(), self.remote)
            n += 1
            delay = start + n * 0.02 - loop.time()
            await asyncio.sleep(max(0.0, delay))

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
