"""RTP test peers over loopback: a recording sink and a sine-tone source.

Component and integration tests point the switch's media at an `RtpSink` to check
what a party hears (ringback, the other party's voice, RFC 4733 digits), and feed a
leg with an `RtpToneSource` so the far end has something recognisable to hear. Both
are small asyncio datagram endpoints on 127.0.0.1; the wire formats are frozen
dataclasses with `parse()` and `serialize()` so tests can also build packets by hand.

Waiting is event driven: `wait_for_audio` and `wait_for_events` wake on each packet,
so tests take as long as the media does and no longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from media.analysis import Law, g711_decode, g711_encode

__all__ = [
    "PCMA",
    "PCMU",
    "ReceivedPacket",
    "RtpError",
    "RtpPacket",
    "RtpSink",
    "RtpToneSource",
    "TelephoneEvent",
]

PCMU = 0
PCMA = 8
G722 = 9  # RTP clock 8000 (RFC 3551), 160 bytes per 20 ms at 64 kbit/s
G711_LAWS: dict[int, Law] = {PCMU: "pcmu", PCMA: "pcma"}
# RFC 4733 section 3.2: event codes 0-9, *, #, A-D for DTMF.
DTMF_EVENTS = "0123456789*#ABCD"

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_TELEPHONE_EVENT = struct.Struct("!BBH")


class RtpError(ValueError):
    """A datagram is not a well-formed RTP packet or telephone event."""


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1): fixed header, CSRCs, extension, payload.

    `extension_profile` is None when the X bit is clear; `extension` is the
    extension body, a multiple of 4 bytes. `padding` counts the padding bytes
    (including the final count byte) that followed the payload, 0 for none.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a datagram; raises `RtpError` on a wrong version or bad lengths."""
        if len(data) < _FIXED_HEADER.size:
            raise RtpError(f"RTP packet too short: {len(data)} bytes")
        first, second, sequence, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        offset = _FIXED_HEADER.size
        csrc_count = first & 0x0F
        if len(data) < offset + 4 * csrc_count:
            raise RtpError("RTP packet truncated in the CSRC list")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, offset)
        offset += 4 * csrc_count
        profile: int | None = None
        extension = b""
        if first & 0x10:
            if len(data) < offset + _EXTENSION_HEADER.size:
                raise RtpError("RTP packet truncated in the extension header")
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += _EXTENSION_HEADER.size
            if len(data) < offset + 4 * words:
                raise RtpError("RTP packet truncated in the extension")
            extension = data[offset : offset + 4 * words]
            offset += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"RTP padding of {padding} bytes does not fit")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """The packet on the wire; padding bytes are zeros ending with their count."""
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRCs fit in an RTP header")
        if len(self.extension) % 4:
            raise RtpError("an RTP header extension is a whole number of 32-bit words")
        has_extension = self.extension_profile is not None
        first = (
            (2 << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if has_extension else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [
            _FIXED_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrc)}I", *self.csrc),
        ]
        if self.extension_profile is not None:
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


@dataclass(frozen=True)
class TelephoneEvent:
    """An RFC 4733 section 2.3 telephone-event payload (DTMF digit, end flag, duration).

    `duration` is in RTP timestamp units (1/8000 s for 8 kHz audio).
    """

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first event of a payload; raises `RtpError` if shorter than 4 bytes."""
        if len(payload) < _TELEPHONE_EVENT.size:
            raise RtpError(f"telephone-event payload too short: {len(payload)} bytes")
        event, flags, duration = _TELEPHONE_EVENT.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        """The 4-byte payload; the reserved bit is sent as zero."""
        flags = (0x80 if self.end else 0) | (self.volume & 0x3F)
        return _TELEPHONE_EVENT.pack(self.event, flags, self.duration)


@dataclass(frozen=True)
class ReceivedPacket:
    """A packet as the sink got it: when (event-loop time) and from where."""

    packet: RtpPacket
    arrival: float
    source: tuple[str, int]


class _Endpoint(asyncio.DatagramProtocol):
    """Hands datagrams to a callback; errors from ICMP (peer not listening) are ignored."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None] | None = None) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._on_datagram is not None:
            self._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass


class RtpSink:
    """Receives RTP on a loopback UDP port and keeps everything for assertions.

    G.711 packets (PCMU 0, PCMA 8) are decoded to PCM as they arrive; packets of
    `telephone_event_pt` are parsed as RFC 4733 events and listed in `events` as
    (event, end flag, duration). Datagrams that are not RTP are counted in
    `malformed` and otherwise ignored.
    """

    def __init__(self, *, telephone_event_pt: int | None = 101, clock_rate: int = 8000) -> None:
        self.telephone_event_pt = telephone_event_pt
        self.clock_rate = clock_rate
        self.packets: list[ReceivedPacket] = []
        self.events: list[tuple[int, bool, int]] = []
        self.malformed = 0
        self._event_timestamps: list[int] = []
        self._pcm: list[npt.NDArray[np.int16]] = []
        self._audio_samples = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._arrived = asyncio.Event()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Bind the socket (port 0 picks a free one) and return the bound address."""
        if self._transport is not None:
            raise RuntimeError("the RTP sink is already started")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._received), local_addr=(host, port)
        )
        self._transport = transport
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        """Where to send RTP to reach this sink."""
        if self._transport is None:
            raise RuntimeError("the RTP sink is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Release the socket; what was received stays available."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> RtpSink:
        if self._transport is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _received(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.malformed += 1
            return
        now = asyncio.get_running_loop().time()
        self.packets.append(ReceivedPacket(packet, now, source))
        law = G711_LAWS.get(packet.payload_type)
        if law is not None:
            pcm = g711_decode(packet.payload, law)
            self._pcm.append(pcm)
            self._audio_samples += pcm.size
        elif packet.payload_type == self.telephone_event_pt:
            try:
                event = TelephoneEvent.parse(packet.payload)
            except RtpError:
                self.malformed += 1
            else:
                self.events.append((event.event, event.end, event.duration))
                self._event_timestamps.append(packet.timestamp)
        self._arrived.set()

    def payloads(self, payload_type: int) -> list[bytes]:
        """Payloads of one payload type, in arrival order."""
        return [r.packet.payload for r in self.packets if r.packet.payload_type == payload_type]

    def arrival_times(self, payload_type: int) -> list[float]:
        """Event-loop arrival times of one payload type's packets."""
        return [r.arrival for r in self.packets if r.packet.payload_type == payload_type]

    def audio(self) -> npt.NDArray[np.int16]:
        """All G.711 audio received so far, decoded, in arrival order."""
        if not self._pcm:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._pcm)

    @property
    def audio_seconds(self) -> float:
        """Duration of the decoded audio received so far."""
        return self._audio_samples / self.clock_rate

    def digits(self) -> str:
        """DTMF digits of the ended events, once per event despite retransmitted ends.

        RFC 4733 section 2.5.1.4 sends the final packet of an event three times; all
        packets of one event share its RTP timestamp, which tells events apart.
        """
        seen: set[int] = set()
        result = []
        for (event, end, _), timestamp in zip(self.events, self._event_timestamps, strict=True):
            if end and timestamp not in seen:
                seen.add(timestamp)
                result.append(DTMF_EVENTS[event] if event < len(DTMF_EVENTS) else "?")
        return "".join(result)

    async def wait_for_audio(self, seconds: float, timeout: float | None = 10.0) -> None:
        """Return once at least `seconds` of audio has arrived.

        Raises `TimeoutError` after `timeout` seconds (None waits for ever).
        """
        async with asyncio.timeout(timeout):
            while self.audio_seconds < seconds:
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_for_events(self, count: int, timeout: float | None = 10.0) -> None:
        """Return once `count` telephone events have ended (see `digits`)."""
        async with asyncio.timeout(timeout):
            while len(self.digits()) < count:
                self._arrived.clear()
                await self._arrived.wait()


class RtpToneSource:
    """Sends a sine tone as G.711 RTP to `remote`, one packet every `ptime_ms`.

    Packets are paced against the event-loop clock (not by sleeping a fixed
    interval), so the stream does not drift; the first packet carries the marker bit
    (RFC 3551 section 4.1, start of a talkspurt). The sine is phase-continuous
    across packets so the receiver hears a clean tone.
    """

    def __init__(
        self,
        remote: tuple[str, int],
        frequency: float,
        *,
        amplitude: float = 0.25,
        payload_type: int = PCMU,
        ptime_ms: int = 20,
        clock_rate: int = 8000,
        ssrc: int | None = None,
    ) -> None:
        if payload_type not in G711_LAWS:
            raise ValueError(f"only PCMU (0) and PCMA (8) are supported, not {payload_type}")
        self.remote = remote
        self.frequency = frequency
        self.amplitude = amplitude
        self.payload_type = payload_type
        self.ptime_ms = ptime_ms
        self.clock_rate = clock_rate
        self.ssrc = random.getrandbits(32) if ssrc is None else ssrc
        self.packets_sent = 0
        self._samples_per_packet = clock_rate * ptime_ms // 1000
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._sample_index = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Bind the sending socket and start the stream; returns the local address."""
        if self._task is not None:
            raise RuntimeError("the RTP tone source is already started")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Endpoint, local_addr=(host, port))
        self._transport = transport
        self._task = asyncio.create_task(self._run())
        return self.local_address

    @property
    def local_address(self) -> tuple[str, int]:
        """The address packets come from (for symmetric RTP and SDP)."""
        if self._transport is None:
            raise RuntimeError("the RTP tone source is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        """Stop sending and release the socket."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> RtpToneSource:
        if self._task is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def next_packet(self) -> RtpPacket:
        """Build the next packet of the stream and advance sequence, timestamp and phase."""
        count = self._samples_per_packet
        n = np.arange(self._sample_index, self._sample_index + count)
        tone = self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency * n / self.clock_rate)
        packet = RtpPacket(
            payload_type=self.payload_type,
            sequence_number=self._sequence,
            timestamp=self._timestamp,
            ssrc=self.ssrc,
            payload=g711_encode(np.round(tone), G711_LAWS[self.payload_type]),
            marker=self.packets_sent == 0,
        )
        self._sample_index += count
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + count) & 0xFFFFFFFF
        self.packets_sent += 1
        return packet

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ptime_ms / 1000
        due = loop.time()
        while self._transport is not None:
            self._transport.sendto(self.next_packet().serialize(), self.remote)
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
