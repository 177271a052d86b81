"""The RTP test peers: wire formats round-trip, and a tone crosses loopback intact."""

from __future__ import annotations

import socket

import pytest

from media.analysis import dominant_frequencies, g711_encode, tone_power
from tests.support.rtp import (
    PCMA,
    PCMU,
    RtpError,
    RtpPacket,
    RtpSink,
    RtpToneSource,
    TelephoneEvent,
)


def test_minimal_packet_round_trips() -> None:
    packet = RtpPacket(payload_type=0, sequence_number=7, timestamp=160, ssrc=0x1234)
    data = packet.serialize()
    assert data == bytes.fromhex("80000007000000a000001234")
    assert RtpPacket.parse(data) == packet


def test_full_packet_round_trips() -> None:
    packet = RtpPacket(
        payload_type=101,
        sequence_number=0xFFFF,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        payload=b"\x01\x02\x03",
        marker=True,
        csrc=(1, 2, 3),
        extension_profile=0xBEDE,
        extension=b"\x10\xff\x00\x00",
        padding=4,
    )
    data = packet.serialize()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[1] == 0x80 | 101
    assert data[-1] == 4
    assert len(data) == 12 + 12 + 4 + 4 + 3 + 4
    assert RtpPacket.parse(data) == packet


def test_empty_extension_round_trips() -> None:
    packet = RtpPacket(0, 1, 2, 3, payload=b"x", extension_profile=0x1000)
    assert RtpPacket.parse(packet.serialize()) == packet


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "too short"),
        (bytes.fromhex("40000007000000a000001234"), "version 1"),
        (bytes.fromhex("82000007000000a000001234") + bytes(4), "CSRC"),
        (bytes.fromhex("90000007000000a000001234") + b"\x00", "extension header"),
        (bytes.fromhex("90000007000000a000001234") + bytes.fromhex("00000002"), "extension"),
        (bytes.fromhex("a0000007000000a000001234") + b"\x00", "padding of 0"),
        (bytes.fromhex("a0000007000000a000001234") + b"\x09", "padding of 9"),
    ],
)
def test_malformed_packets_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_serialize_refuses_impossible_packets() -> None:
    with pytest.raises(RtpError, match="15 CSRCs"):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).serialize()
    with pytest.raises(RtpError, match="32-bit words"):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc").serialize()


def test_telephone_event_round_trips() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert event.serialize() == bytes.fromhex("0b8a0320")
    assert TelephoneEvent.parse(event.serialize()) == event
    with pytest.raises(RtpError, match="too short"):
        TelephoneEvent.parse(b"\x01\x02")


async def test_tone_crosses_loopback_and_decodes_to_its_frequency() -> None:
    async with RtpSink() as sink:
        source = RtpToneSource(sink.address, 1000.0)
        async with source:
            sent_from = source.local_address
            await sink.wait_for_audio(0.5)
        assert source.packets_sent >= 25
    assert sink.audio_seconds >= 0.5
    packets = [received.packet for received in sink.packets]
    assert all(p.payload_type == PCMU and len(p.payload) == 160 for p in packets)
    assert packets[0].marker
    assert not any(p.marker for p in packets[1:])
    assert all(p.ssrc == source.ssrc for p in packets)
    for previous, current in zip(packets, packets[1:], strict=False):
        assert current.sequence_number == (previous.sequence_number + 1) & 0xFFFF
        assert current.timestamp == (previous.timestamp + 160) & 0xFFFFFFFF
    audio = sink.audio()
    assert dominant_frequencies(audio, 8000, count=1) == pytest.approx([1000.0], abs=1.0)
    assert tone_power(audio, 8000, 1000.0) > 0.95
    assert {received.source for received in sink.packets} == {sent_from}


async def test_pcma_source_and_pacing() -> None:
    async with RtpSink() as sink, RtpToneSource(sink.address, 425.0, payload_type=PCMA):
        await sink.wait_for_audio(0.3)
    arrivals = sink.arrival_times(PCMA)
    assert len(arrivals) >= 15
    # Paced by the loop clock: 20 ms apart on average, not a burst.
    assert (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) == pytest.approx(0.02, abs=0.005)
    assert dominant_frequencies(sink.audio(), 8000, count=1) == pytest.approx([425.0], abs=1.0)
    assert sink.payloads(PCMU) == []


async def test_sink_records_telephone_events_and_ignores_junk() -> None:
    async with RtpSink(telephone_event_pt=101) as sink:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Junk first: once the digits have arrived, so has the junk before them.
            sender.sendto(b"not rtp", sink.address)
            short_event = RtpPacket(101, 0, 500, 42, payload=b"\x01")
            sender.sendto(short_event.serialize(), sink.address)
            sequence = 1
            for timestamp, digit in ((1000, 1), (2000, 10), (3000, 11)):
                for duration, end in ((160, False), (320, False), (480, True), (480, True)):
                    event = TelephoneEvent(digit, end, 10, duration).serialize()
                    packet = RtpPacket(101, sequence, timestamp, 42, payload=event)
                    sender.sendto(packet.serialize(), sink.address)
                    sequence += 1
            await sink.wait_for_events(3)
        finally:
            sender.close()
    assert sink.digits() == "1*#"
    assert sink.events[:4] == [(1, False, 160), (1, False, 320), (1, True, 480), (1, True, 480)]
    # wait_for_events returns at the first end packet of "#", maybe before its repeat.
    assert sink.events[-1] == (11, True, 480)
    assert [event for event, end, _ in sink.events if not end] == [1, 1, 10, 10, 11, 11]
    assert sink.malformed == 2
    assert len(sink.payloads(101)) == len(sink.events) + 1
    assert sink.audio_seconds == 0
    assert sink.audio().size == 0


async def test_wait_for_audio_times_out() -> None:
    async with RtpSink() as sink:
        with pytest.raises(TimeoutError):
            await sink.wait_for_audio(0.1, timeout=0.05)


async def test_sink_on_a_given_port_and_restart_rules() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sink = RtpSink()
    assert await sink.start(port=port) == ("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="already started"):
        await sink.start()
    sink.close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = sink.address


async def test_source_rules() -> None:
    with pytest.raises(ValueError, match="only PCMU"):
        RtpToneSource(("127.0.0.1", 9), 440.0, payload_type=18)
    source = RtpToneSource(("127.0.0.1", 9), 440.0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = source.local_address
    await source.start()
    with pytest.raises(RuntimeError, match="already started"):
        await source.start()
    assert source.local_address[0] == "127.0.0.1"
    await source.stop()
    await source.stop()


def test_source_packets_continue_the_sine() -> None:
    source = RtpToneSource(("127.0.0.1", 9), 1000.0, ssrc=5)
    first, second = source.next_packet(), source.next_packet()
    assert first.ssrc == second.ssrc == 5
    assert first.marker and not second.marker
    # 1000 Hz at 8 kHz repeats every 8 samples, so packets of 160 samples are identical.
    assert first.payload == second.payload
    assert first.payload[:8] == g711_encode([0, 5792, 8191, 5792, 0, -5793, -8191, -5793], "pcmu")
