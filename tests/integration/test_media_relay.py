"""The relay path: bridged legs exchanging RTP packet by packet (patch 0028 of
deploy/pjsua2, switch/call/media_paths.py), against real peers on loopback.

An `RtpPeer` sends only once it has heard from the switch (it learns where to send
from the first packet), and a relayed leg hears only what its peer sends: so every
callee here rings first, and the ringback the switch plays gets both parties
talking before the relay starts, as real phones do from the answer on.

SIPp does the signalling; `RtpPeer`s are the parties' audio. The evidence is what
the parties received: tones decoded, every packet's header (one SSRC, sequence
numbers and timestamps without a break across ringback, relay and bridge), packets
relayed with the size their sender chose (the bridge would cut them into 20 ms
frames), and RFC 4733 events passed through. /healthz says how many pairs are
relayed while a call is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket
from twilio.rest import Client

from media.analysis import tone_power
from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    Recorded,
    SwitchProcess,
    bounded,
)
from tests.integration.test_metrics import samples, scrape, value
from tests.integration.test_recording import check_dual
from tests.support import sipp
from tests.support.recording_checks import RecordingsClient
from tests.support.rtp import G722, PCMA, PCMU, ReceivedPacket, RtpPacket
from tests.support.rtp_peer import EVENT_PT, FRAME, RtpPeer, counting, with_rtcp_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
STAR = 10  # RFC 4733 event code of *


def one_stream(
    received: Sequence[ReceivedPacket], audio_pts: set[int], ts_step: int | None = None
) -> None:
    """The packets are one RTP stream: one SSRC, every sequence number in turn, and
    each audio packet's timestamp where the previous audio packet ended: ``ts_step``
    on, or (G.711) a byte a sample."""
    packets = [r.packet for r in received]
    assert len({p.ssrc for p in packets}) == 1, {p.ssrc for p in packets}
    for before, after in zip(packets, packets[1:], strict=False):
        assert (after.sequence_number - before.sequence_number) % 65536 == 1, (before, after)
    audio = [p for p in packets if p.payload_type in audio_pts]
    for before, after in zip(audio, audio[1:], strict=False):
        step = len(before.payload) if ts_step is None else ts_step
        assert (after.timestamp - before.timestamp) % 2**32 == step, (before, after)


def hears(audio: npt.NDArray[np.int16], tone: float, over: float) -> None:
    """``audio`` (8 kHz) is the ``tone``, not the ``over`` one: ten times the power."""
    assert tone_power(audio, 8000, tone) > 10 * tone_power(audio, 8000, over), (tone, over)


def transit(received: ReceivedPacket) -> float:
    """Arrival time less the packet's G.711 timestamp, in seconds (no wrap in a test)."""
    return received.arrival - received.packet.timestamp / 8000


async def started(*peers: RtpPeer) -> None:
    for peer in peers:
        await peer.start()


@contextlib.asynccontextmanager
async def on_call(
    switch: SwitchProcess,
    peers: Sequence[RtpPeer],
    callees: Sequence[sipp.Sipp],
    callers: Sequence[sipp.Sipp],
) -> AsyncIterator[None]:
    """The callees listening and the callers calling while the block runs; after it,
    every caller and callee must end its scenario (bounded). Whatever happens, each
    is stopped and every RTP peer closed."""
    try:
        for callee in callees:
            await callee.start()
        for caller in callers:
            await caller.start(switch.target(), timeout_s=40)
        yield
        for caller in callers:
            await caller.finish(40)
        for callee in callees:
            await callee.finish(20)
    finally:
        for party in [*callers, *callees]:
            await party.stop()
        for peer in peers:
            peer.close()


async def relayed_parties(
    switch: SwitchProcess,
    workdir: Path,
    hangup_after_ms: int | None = None,
    *,
    ring_ms: int = 500,
    callee_frame: int = FRAME,
    callee_event_pt: int = EVENT_PT,
) -> tuple[RtpPeer, RtpPeer, sipp.Sipp, sipp.Sipp]:
    """A caller's audio at 600 Hz and a callee's at 1000 Hz in packets of
    ``callee_frame`` samples (started), the callee behind the trunk answering after
    ``ring_ms`` of ringing (hanging up after ``hangup_after_ms``, or never) with
    telephone-event as ``callee_event_pt``, and the caller calling the number: the
    parties of one call for `on_call`."""
    caller_audio = RtpPeer(600)
    callee_audio = RtpPeer(1000, frame=callee_frame, event_pt=callee_event_pt)
    await started(caller_audio, callee_audio)
    answer = sipp.callee(
        "answer", rtp_port=callee_audio.port, ring_ms=ring_ms, hangup_after_ms=hangup_after_ms
    )
    if callee_event_pt != EVENT_PT:
        answer = answer.replace("RTP/AVP 0 101", f"RTP/AVP 0 {callee_event_pt}")
        answer = answer.replace(":101 ", f":{callee_event_pt} ")
    callee = sipp.Sipp(workdir, "callee", answer, port=switch.trunk_port)
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    return caller_audio, callee_audio, callee, caller


HANGUP_ON_STAR = (
    f'<Response><Dial action="/action" hangupOnStar="true"><Number>{CALLEE}</Number>'
    "</Dial></Response>"
)


async def star_ends_the_relayed_child(
    switch: SwitchProcess, app_server: AppServer, caller_audio: RtpPeer
) -> Recorded:
    """Once the call is relayed and talking, the caller presses ``*``; returns the
    request for the Dial's action (the ``HANGUP_ON_STAR`` document's)."""
    await switch.wait_relayed(1)
    await caller_audio.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
    caller_audio.send_digit(STAR)
    (action,) = await app_server.wait_for("/action", timeout=20)
    return action


RECORDED_DIAL = (
    f'<Response><Dial action="/action" record="record-from-answer-dual"><Number>{CALLEE}'
    "</Number></Dial></Response>"
)


async def recorded_each_party(switch: SwitchProcess, url: str) -> None:
    """The dual recording at ``url`` holds the caller's 600 Hz on channel 1 and the
    callee's 1000 Hz on channel 2, for the 2.5 s the callee was up."""
    wav = await RecordingsClient(switch.http, ACCOUNT_SID, AUTH_TOKEN).wav(url)
    assert wav.channels == 2
    check_dual(wav)  # the same tones as test_recording's parties
    assert wav.duration > 2.0, wav.duration


@bounded(60)
async def test_a_bridged_call_is_relayed_packet_by_packet_both_ways(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The caller (600 Hz, 20 ms packets) and the callee (1000 Hz, 30 ms packets)
    each decode the other's tone; the callee's 30 ms packets reach the caller as
    they were sent, and the caller hears one continuous stream from its ringback
    through the relay."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(
        switch, workdir, 2500, ring_ms=800, callee_frame=240
    )
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await switch.wait_relayed(1)
    await switch.wait_idle()
    heard_by_callee = callee_audio.audio()
    heard_by_caller = caller_audio.audio()
    hears(heard_by_callee, 600, 1000)
    hears(heard_by_caller, 1000, 600)
    # Relayed as sent: the callee's 240-byte payloads arrive whole, after the
    # ringback's 160-byte ones, in one stream.
    sizes = [len(r.packet.payload) for r in caller_audio.packets if r.packet.payload_type == PCMU]
    assert sizes[0] == 160
    relayed, last = sizes.index(240), len(sizes) - sizes[::-1].index(240)
    assert relayed > 10 and set(sizes[relayed:last]) == {240}, sizes
    assert last - relayed > 40  # 2.5 s of 30 ms packets (and then the bridge until BYE)
    one_stream(caller_audio.packets, {PCMU})
    one_stream(callee_audio.packets, {PCMU})


@bounded(60)
async def test_a_recorded_call_stays_relayed_and_each_party_is_recorded_on_its_channel(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """``record-from-answer-dual`` on a call the switch relays: both legs decode what
    they receive for the recorders (patch 0041 of deploy/pjsua2) while their packets
    are relayed as sent, so the callee's 30 ms packets still reach the caller whole
    while the recording runs, each party's tone is on its own channel, and each
    party hears one stream."""
    app_server.routes["/voice"] = RECORDED_DIAL
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(
        switch, workdir, 2500, ring_ms=800, callee_frame=240
    )
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await switch.wait_relayed(1)
        health = await switch.health()
        assert (health["relayed"], health["recorders"]) == (1, 2), health
    (action,) = await app_server.wait_for("/action", timeout=20)
    await switch.wait_idle()
    sizes = [len(r.packet.payload) for r in caller_audio.packets if r.packet.payload_type == PCMU]
    relayed, last = sizes.index(240), len(sizes) - sizes[::-1].index(240)
    assert set(sizes[relayed:last]) == {240} and last - relayed > 40, sizes
    one_stream(caller_audio.packets, {PCMU})
    one_stream(callee_audio.packets, {PCMU})
    await recorded_each_party(switch, action.params["RecordingUrl"])


@bounded(60)
@pytest.mark.parametrize("callee_event_pt", [EVENT_PT, 100])
async def test_a_star_through_the_relay_reaches_the_far_end_and_ends_the_child(
    switch: SwitchProcess, app_server: AppServer, workdir, callee_event_pt: int
) -> None:
    """hangupOnStar with a relayed call: the caller's RFC 4733 ``*`` is passed on to
    the callee as telephone events, under the payload type the callee's SDP gave
    them (101 as the caller's, or 100), and still seen by the switch, which hangs
    the callee up and runs the action."""
    app_server.routes["/voice"] = HANGUP_ON_STAR
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(
        switch, workdir, callee_event_pt=callee_event_pt
    )
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        action = await star_ends_the_relayed_child(switch, app_server, caller_audio)
    await switch.wait_idle()
    assert any(m.startswith("BYE ") for m in callee.messages().received())
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"
    # The * reached the callee as a telephone event (its leg ended at the first packet).
    assert [e.event for e in callee_audio.events][:1] == [STAR], callee_audio.events
    one_stream(callee_audio.packets, {PCMU})
    assert {r.packet.payload_type for r in callee_audio.packets} == {PCMU, callee_event_pt}


@bounded(60)
async def test_digits_after_a_relayed_dial_reach_the_gather_that_follows(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The caller's RFC 4733 digits are still the switch's once the relayed call is
    over: after ``*`` ends the child, a ``<Gather>`` in the action's document gets
    the digits the caller sends next."""
    app_server.routes["/voice"] = HANGUP_ON_STAR
    app_server.routes["/action"] = (
        '<Response><Gather numDigits="2" timeout="10" action="/gathered"/></Response>'
    )
    app_server.routes["/gathered"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(switch, workdir)
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        action = await star_ends_the_relayed_child(switch, app_server, caller_audio)
        assert (await switch.health())["relayed"] == 0
        caller_audio.send_digit(4)
        caller_audio.send_digit(2)
        (gathered,) = await app_server.wait_for("/gathered", timeout=20)
    await switch.wait_idle()
    assert action.params["DialCallStatus"] == "completed"
    assert gathered.params["Digits"] == "42"
    assert [e.event for e in callee_audio.events][:1] == [STAR]  # the * went through
    assert {e.event for e in callee_audio.events} == {STAR}  # the 4 and 2 did not


@bounded(60)
async def test_a_payload_type_not_negotiated_is_dropped_and_counted_not_relayed(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Packets of a payload type the caller's leg did not negotiate (96), in the
    caller's own stream, are discarded and counted; the callee gets none of them
    and still one unbroken stream of the caller's audio."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(
        switch, workdir, hangup_after_ms=5000
    )
    before = samples((await scrape(switch))[1])
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await switch.wait_relayed(1)
        await callee_audio.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
        assert caller_audio.transport is not None and caller_audio.remote is not None
        for n in range(100):  # 50 a second for 2 s, beside the caller's own packets
            stray = RtpPacket(96, n, 160 * n, caller_audio.ssrc, bytes(160)).serialize()
            caller_audio.transport.sendto(stray, caller_audio.remote)
            await asyncio.sleep(0.02)
        heard_after = len(callee_audio.packets)
        await callee_audio.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
        assert len(callee_audio.packets) > heard_after  # the relay goes on
    await switch.wait_idle()
    after = samples((await scrape(switch))[1])
    assert {r.packet.payload_type for r in callee_audio.packets} == {PCMU}
    one_stream(callee_audio.packets, {PCMU})
    discarded = value(after, "dialswitch_rtp_packets_discarded_total", direction="rx") - value(
        before, "dialswitch_rtp_packets_discarded_total", direction="rx"
    )
    assert discarded >= 100, discarded


async def pcma_parties(
    switch: SwitchProcess, workdir: Path
) -> tuple[RtpPeer, RtpPeer, sipp.Sipp, sipp.Sipp]:
    """A PCMU caller at 600 Hz and a callee behind the trunk that answers with PCMA
    only, at 1000 Hz, and hangs up after 2.5 s: a pair the relay cannot take."""
    caller_audio = RtpPeer(600)
    callee_audio = RtpPeer(1000, payload_type=PCMA)
    await started(caller_audio, callee_audio)
    scenario = sipp.callee("answer", rtp_port=callee_audio.port, hangup_after_ms=2500)
    callee = sipp.Sipp(
        workdir, "callee", sipp.only_codec(scenario, 8, "PCMA/8000"), port=switch.trunk_port
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    return caller_audio, callee_audio, callee, caller


@bounded(60)
async def test_pcmu_against_pcma_stays_on_the_bridge_and_is_transcoded(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio, callee, caller = await pcma_parties(switch, workdir)
    log_before = len(switch.log())
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await callee_audio.wait_for_audio(1.0)
        assert (await switch.health())["relayed"] == 0
    await switch.wait_idle()
    # An everyday pair, not an error: nothing logged about it at WARNING or above,
    # and no error line from pjsua2 for a relay it would have refused.
    logged = switch.log()[log_before:]
    assert " WARNING " not in logged and " ERROR " not in logged and " error: " not in logged
    assert {r.packet.payload_type for r in callee_audio.packets} == {PCMA}
    assert {r.packet.payload_type for r in caller_audio.packets} == {PCMU}
    heard_by_callee = callee_audio.audio()
    heard_by_caller = caller_audio.audio()
    hears(heard_by_callee, 600, 1000)
    hears(heard_by_caller, 1000, 600)


@bounded(60)
async def test_a_recorded_pcmu_against_pcma_call_is_transcoded_and_recorded_on_the_bridge(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The pair cannot be relayed (the codecs differ), so its recorders hear it on the
    bridge: each party's tone on its own channel, and nothing said about a relay."""
    app_server.routes["/voice"] = RECORDED_DIAL
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    caller_audio, callee_audio, callee, caller = await pcma_parties(switch, workdir)
    log_before = len(switch.log())
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await callee_audio.wait_for_audio(1.0)
        assert (await switch.health())["relayed"] == 0
    (action,) = await app_server.wait_for("/action", timeout=20)
    await switch.wait_idle()
    await recorded_each_party(switch, action.params["RecordingUrl"])
    assert " WARNING " not in switch.log()[log_before:]


@bounded(90)
async def test_ringback_relay_redirect_and_a_second_relay_are_one_stream_to_the_caller(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The caller hears its ringback (the bridge), the first callee (relayed), the
    second Dial's ringback after a live redirect (the bridge again), then the second
    callee (relayed again): one RTP stream throughout, without a missing sequence
    number or a timestamp out of step, and no gap or burst where the path changes."""
    first_audio, second_audio = RtpPeer(1000, frame=240), RtpPeer(1400, frame=240)
    caller_audio = RtpPeer(600)
    peers = [first_audio, second_audio, caller_audio]
    await started(*peers)
    first = sipp.Sipp(
        workdir,
        "first",
        sipp.callee("answer", rtp_port=first_audio.port, ring_ms=800),
        port=switch.trunk_port,
    )
    second = sipp.Sipp(
        workdir, "second", sipp.callee("answer", rtp_port=second_audio.port, ring_ms=800)
    )
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    app_server.routes["/second"] = (
        f"<Response><Dial><Sip>sip:callee@127.0.0.1:{second.port}</Sip></Dial></Response>"
    )
    caller = sipp.Sipp(
        workdir, "caller", sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=7000)
    )
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = switch.http
    async with on_call(switch, peers, [first, second], [caller]):
        (voice,) = await app_server.wait_for("/voice")
        await switch.wait_relayed(1)
        await caller_audio.wait_for_audio(1.0, since=asyncio.get_running_loop().time())
        update = client.calls(voice.params["CallSid"]).update
        await asyncio.to_thread(update, url=app_server.url("/second"), method="POST")
        await first.finish(20)  # the redirect ended the first Dial: BYE
        await switch.wait_relayed(1)
    await switch.wait_idle()
    packets = [r for r in caller_audio.packets if r.packet.payload_type == PCMU]
    phases = [(len(packets[0].packet.payload), 0)]
    for index, received in enumerate(packets):
        if len(received.packet.payload) != phases[-1][0]:
            phases.append((len(received.packet.payload), index))
    assert [size for size, _ in phases][:4] == [160, 240, 160, 240], phases
    assert len(phases) <= 5, phases  # the bridge again only if the callee's BYE came first
    one_stream(caller_audio.packets, {PCMU})
    ends = [start for _, start in phases[1:]] + [len(packets)]
    chunks = [packets[start:end] for (_, start), end in zip(phases, ends, strict=True)]
    heard = [caller_audio.audio(chunk[0].arrival, chunk[-1].arrival) for chunk in chunks]
    hears(heard[1], 1000, 1400)
    hears(heard[3], 1400, 1000)
    # Seamless in time too: where the path changes, the first packet arrives about
    # when its timestamp says, after the last one of the other path. A step in
    # transit time is a gap or a burst to the ear; within 40 ms (two frames) a
    # jitter buffer absorbs it. (Measured: +11 ms to the relay, -11 to -20 ms back.)
    for _, start in phases[1:4]:
        step = transit(packets[start]) - transit(packets[start - 1])
        assert abs(step) < 0.04, (start, step)


def answered_hold_and_unhold(party: sipp.Sipp) -> None:
    """The switch answered ``party``'s re-INVITE that held the call (``a=sendonly``)
    with ``a=recvonly``, and the one that took it off hold with ``a=sendrecv``."""
    answers = [m for m in party.messages().received() if m.startswith("SIP/2.0 200")]
    assert [m for m in answers if "CSeq: 2 INVITE" in m and "a=recvonly" in m], answers
    assert [m for m in answers if "CSeq: 3 INVITE" in m and "a=sendrecv" in m], answers


def longest_silence(peer: RtpPeer, since: float) -> tuple[float, float]:
    """The longest time after ``since`` that ``peer`` received nothing, and when its
    packets came again."""
    arrivals = [r.arrival for r in peer.packets if r.arrival > since]
    return max((b - a, b) for a, b in zip(arrivals, arrivals[1:], strict=False))


@bounded(60)
async def test_a_callee_that_holds_a_relayed_call_with_music_is_heard_and_sent_nothing(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """A relayed call; the callee puts it on hold (re-INVITE ``a=sendonly``) and goes
    on sending its 1000 Hz, its music on hold; 2 s later it takes the call off hold
    (``a=sendrecv``). While held the switch sends the callee nothing and the caller
    goes on hearing the music; off hold the pair is relayed again and the callee
    hears the caller. Each side receives one stream throughout."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000, frame=240)
    peers = [caller_audio, callee_audio]
    await started(*peers)
    hold, unhold = (
        sipp.reoffer(callee_audio.port, "sendonly", 2),
        sipp.reoffer(callee_audio.port, "sendrecv", 3),
    )
    held = sipp.callee_reinviting(
        callee_audio.port, hold, unhold, ring_ms=500, before_ms=2000, after_ms=2000
    )
    callee = sipp.Sipp(workdir, "callee", held, port=switch.trunk_port)
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
        relayed_at = asyncio.get_running_loop().time()
    await switch.wait_idle()
    answered_hold_and_unhold(callee)
    # The callee heard the caller until the hold, nothing for the 2 s of it, and
    # the caller again from the unhold to its BYE.
    gap, resumed = longest_silence(callee_audio, relayed_at)
    assert 1.7 < gap < 3.0, gap
    heard = callee_audio.audio(resumed)
    assert len(heard) > 1.5 * 8000, len(heard)
    hears(heard, 600, 1000)
    # Off hold the pair is relayed again: the callee's 240-byte packets reach the
    # caller whole (the bridge would cut them into 20 ms frames).
    relayed = [r for r in caller_audio.packets if r.arrival > resumed + 0.2]
    assert len([r for r in relayed if len(r.packet.payload) == 240]) > 20
    # The caller heard the callee all along: its music while held.
    held_audio = caller_audio.audio(resumed - gap + 0.1, resumed - 0.1)
    assert len(held_audio) > 1.5 * 8000, len(held_audio)
    hears(held_audio, 1000, 600)
    one_stream(caller_audio.packets, {PCMU})
    one_stream(callee_audio.packets, {PCMU})


@bounded(60)
async def test_a_caller_that_holds_a_relayed_call_with_music_is_heard_and_sent_nothing(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The same hold from the other side: the caller (the trunk, our inbound leg)
    holds the relayed call with ``a=sendonly`` and goes on sending its 600 Hz, then
    takes it off hold. While held it is sent nothing and the callee hears the
    music; off hold the pair is relayed again and the caller hears the callee."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000, frame=240)
    peers = [caller_audio, callee_audio]
    await started(*peers)
    answer = sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=500)
    callee = sipp.Sipp(workdir, "callee", answer, port=switch.trunk_port)
    hold, unhold = (
        sipp.reoffer(caller_audio.port, "sendonly", 2),
        sipp.reoffer(caller_audio.port, "sendrecv", 3),
    )
    scenario = sipp.caller_reinviting(
        NUMBER, caller_audio.port, hold, unhold, before_ms=2000, after_ms=2000
    )
    caller = sipp.Sipp(workdir, "caller", scenario)
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
        relayed_at = asyncio.get_running_loop().time()
    await switch.wait_idle()
    answered_hold_and_unhold(caller)
    gap, resumed = longest_silence(caller_audio, relayed_at)
    assert 1.7 < gap < 3.0, gap
    hears(callee_audio.audio(resumed - gap + 0.1, resumed - 0.1), 600, 1000)
    after = [r for r in caller_audio.packets if r.arrival > resumed + 0.2]
    assert len([r for r in after if len(r.packet.payload) == 240]) > 20
    hears(caller_audio.audio(resumed + 0.2), 1000, 600)
    one_stream(caller_audio.packets, {PCMU})
    one_stream(callee_audio.packets, {PCMU})


@bounded(60)
async def test_a_relayed_leg_that_moves_its_media_is_relayed_again(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """A callee re-INVITEs a relayed call with its media at a new address: the
    switch relays the new stream. Each side decodes the other before and after;
    the caller's 240-byte packets show the relay in both phases, in one stream."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio = RtpPeer(600)
    before, after = RtpPeer(1000, frame=240), RtpPeer(1400, frame=240)
    peers = [caller_audio, before, after]
    await started(*peers)
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee_reinviting(before.port, sipp.reoffer(after.port)),
        port=switch.trunk_port,
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
        await caller_audio.wait_for_audio(0.6, since=asyncio.get_running_loop().time())
        # The phone moves its media: the old address falls silent (were it to go on
        # sending, symmetric RTP would rightly latch back to it).
        before.close()
        await after.wait_for_audio(0.5)
        await switch.wait_relayed(1)
        await caller_audio.wait_for_audio(1.0, since=asyncio.get_running_loop().time())
    await switch.wait_idle()
    answers = [m for m in callee.messages().received() if m.startswith("SIP/2.0 200")]
    assert any("CSeq: 2 INVITE" in m for m in answers), answers
    for peer, tone in ((before, 1000), (after, 1400)):
        heard = peer.audio()
        hears(heard, 600, tone)
    relayed = [r for r in caller_audio.packets if len(r.packet.payload) == 240]
    first = [r for r in relayed if r.arrival < after.packets[0].arrival]
    second = [r for r in relayed if r.arrival > after.packets[0].arrival]
    assert len(first) > 10 and len(second) > 10, (len(first), len(second))
    heard_first = caller_audio.audio(first[0].arrival, first[-1].arrival)
    heard_second = caller_audio.audio(second[0].arrival, second[-1].arrival)
    hears(heard_first, 1000, 1400)
    hears(heard_second, 1400, 1000)
    one_stream(caller_audio.packets, {PCMU})


@bounded(60)
async def test_a_callee_behind_nat_is_latched_relayed_and_followed_when_its_port_changes(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """The callee's SDP names one port (its private address, a socket that only
    listens) and it talks from another (its public one, as NAT maps it). Once the
    switch's audio reaches the SDP port, the callee starts talking from the other:
    the switch latches onto it and relays the pair, the callee hears the caller
    there, the caller hears the callee through the relay, and the SDP port hears
    nothing more. Then the callee moves to another network mid-call and restarts
    its media: a third port, a new SSRC, new sequence numbers and timestamps. The
    switch latches onto it, the relay follows, and the caller still receives one
    stream."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio = RtpPeer(600)
    private, public, rebound = RtpPeer(None), RtpPeer(1000, frame=240), RtpPeer(1400, frame=240)
    peers = [caller_audio, private, public, rebound]
    await started(*peers)
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee("answer", rtp_port=private.port, ring_ms=500, hangup_after_ms=7000),
        port=switch.trunk_port,
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    async with on_call(switch, peers, [callee], [caller]):
        await private.wait_for_audio(0.2)  # the bridge's, until the callee talks
        assert private.remote is not None
        public.talk_to(private.remote)
        await switch.wait_relayed(1)
        await public.wait_for_audio(1.0)
        await caller_audio.wait_for_audio(1.0, since=public.packets[0].arrival)
        latched = len(private.packets)
        await public.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
        assert len(private.packets) == latched
        public.close()
        rebound.talk_to(private.remote)
        await rebound.wait_for_audio(1.0)
        await caller_audio.wait_for_audio(1.0, since=rebound.packets[0].arrival)
        assert (await switch.health()).get("relayed") == 1
    await switch.wait_idle()
    assert len(private.packets) == latched
    for peer in (public, rebound):
        heard = peer.audio()
        hears(heard, 600, 1000)
        assert {r.source for r in peer.packets} == {private.remote}
        one_stream(peer.packets, {PCMU})
    # The callee's 240-byte packets reach the caller whole: relayed, not bridged,
    # from the public port and then from the new one.
    moved = rebound.packets[0].arrival
    relayed = [r for r in caller_audio.packets if len(r.packet.payload) == 240]
    for tone, other, part in (
        (1000, 1400, [r for r in relayed if r.arrival < moved]),
        (1400, 1000, [r for r in relayed if r.arrival > moved]),
    ):
        assert len(part) > 20, (tone, len(part))
        heard = caller_audio.audio(part[0].arrival, part[-1].arrival)
        hears(heard, tone, other)
    one_stream(caller_audio.packets, {PCMU})


@bounded(60)
async def test_a_relayed_sender_whose_sequence_restarts_is_still_one_stream_to_the_far_end(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Mid-relay the callee's sequence numbers and timestamps jump (same SSRC), as
    from a phone whose media restarted: the caller goes on receiving one stream,
    and the callee's tone."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio, callee, caller = await relayed_parties(
        switch, workdir, 3000, callee_frame=240
    )
    async with on_call(switch, [caller_audio, callee_audio], [callee], [caller]):
        await switch.wait_relayed(1)
        await caller_audio.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
        callee_audio.restart_stream()
        restarted = asyncio.get_running_loop().time()
        await caller_audio.wait_for_audio(1.0, since=restarted)
        assert (await switch.health()).get("relayed") == 1
    await switch.wait_idle()
    after = [r for r in caller_audio.packets if r.arrival > restarted + 0.1]
    assert len([r for r in after if len(r.packet.payload) == 240]) > 20
    heard = caller_audio.audio(restarted + 0.1, after[-1].arrival)
    hears(heard, 1000, 600)
    one_stream(caller_audio.packets, {PCMU})


@bounded(60)
async def test_each_relayed_leg_reports_in_its_own_rtcp_and_the_far_ends_rtcp_stays_there(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """A relayed call up for 8 s, each party listening on its RTCP port. Each gets
    Sender Reports from the switch's stream of its leg: for the stream it receives
    (that SSRC, a packet count matching what it received) and about the stream it
    sends (a report block for its SSRC, nothing lost). The callee sends Receiver
    Reports of its own: they end at the switch, the caller gets none of them."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    caller_rtcp = await with_rtcp_port(caller_audio)
    callee_rtcp = await with_rtcp_port(callee_audio)
    peers = [caller_audio, callee_audio]
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=500, hangup_after_ms=8000),
        port=switch.trunk_port,
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    try:
        async with on_call(switch, peers, [callee], [caller]):
            await switch.wait_relayed(1)
            await callee_audio.wait_for_audio(0.2)
            assert callee_audio.remote is not None
            switch_rtcp = (callee_audio.remote[0], callee_audio.remote[1] + 1)
            for _ in range(30):
                callee_rtcp.send(RtcpRrPacket(ssrc=callee_audio.ssrc), switch_rtcp)
                await asyncio.sleep(0.2)
    finally:
        caller_rtcp.close()
        callee_rtcp.close()
    await switch.wait_idle()
    for party, rtcp in ((caller_audio, caller_rtcp), (callee_audio, callee_rtcp)):
        (ssrc,) = {r.packet.ssrc for r in party.packets}
        reports = [(t, p) for t, p in rtcp.received if isinstance(p, RtcpSrPacket)]
        assert reports, rtcp.received
        assert {p.ssrc for _, p in reports} == {ssrc}
        for arrival, report in reports:
            # What the party had received when the report came (give or take the
            # few packets its event loop had not read yet): about 250 by then.
            before = len([r for r in party.packets if r.arrival <= arrival])
            assert abs(report.sender_info.packet_count - before) <= 10, (before, report)
            (block,) = report.reports
            assert block.ssrc == party.ssrc
            assert block.packets_lost == 0 and block.fraction_lost == 0, block
    assert callee_audio.ssrc not in {getattr(p, "ssrc", None) for _, p in caller_rtcp.received}


async def receives(peer: RtpPeer, payload_type: int, timeout: float = 10.0) -> float:
    """Wait until ``peer`` receives a packet of ``payload_type``; its arrival time."""
    async with asyncio.timeout(timeout):
        while True:
            found = [r for r in peer.packets if r.packet.payload_type == payload_type]
            if found:
                return found[0].arrival
            await asyncio.sleep(0.02)


@bounded(60)
async def test_a_relayed_callee_that_changes_codec_is_transcoded_then_relayed_again(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """A relayed PCMU call; the callee re-INVITEs with PCMA only, and 2 s later with
    PCMU again, and talks in the codec it is sent. With PCMA the pair leaves the
    relay and the bridge transcodes; back on PCMU it is relayed again. Each party
    hears the other in every phase, and the caller receives one PCMU stream."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    peers = [caller_audio, callee_audio]
    await started(*peers)
    offers = (
        sipp.only_codec(sipp.reoffer(callee_audio.port, version=2), 8, "PCMA/8000"),
        sipp.reoffer(callee_audio.port, version=3),
    )
    scenario = sipp.callee_reinviting(
        callee_audio.port, *offers, ring_ms=500, before_ms=2000, after_ms=2000
    )
    callee = sipp.Sipp(workdir, "callee", scenario, port=switch.trunk_port)
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
        alaw = await receives(callee_audio, PCMA)
        callee_audio.payload_type = PCMA
        await switch.wait_relayed(0)
        await caller_audio.wait_for_audio(1.0, since=alaw + 0.2)
        ulaw = len(callee_audio.packets)
        while callee_audio.packets[-1].packet.payload_type != PCMU:
            await callee_audio.wait_for_audio(0.02, since=callee_audio.packets[-1].arrival)
        back = callee_audio.packets[-1].arrival
        callee_audio.payload_type = PCMU
        await switch.wait_relayed(1)
        await caller_audio.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
    await switch.wait_idle()
    assert ulaw < len(callee_audio.packets)
    phases = ((0.0, alaw), (alaw + 0.2, back), (back + 0.2, math.inf))
    for start, end in phases:
        for party, tone, other in ((caller_audio, 1000, 600), (callee_audio, 600, 1000)):
            heard = party.audio(start, end)
            assert len(heard) > 0.5 * 8000, (start, tone, len(heard))
            hears(heard, tone, other)
    one_stream(caller_audio.packets, {PCMU})


@bounded(60)
async def test_g722_is_relayed_byte_for_byte_in_one_stream_after_the_ringback(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """A G.722 caller and callee (wideband, RTP clock 8000): the switch plays the
    caller its ringback in G.722, then relays. Each party's packets reach the other
    byte for byte (payloads only a relay passes on intact), and the caller receives
    one stream whose timestamps go on from the ringback's through the relay."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600, payload_type=G722), RtpPeer(1000, payload_type=G722)
    peers = [caller_audio, callee_audio]
    await started(*peers)
    answer = sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=800, hangup_after_ms=2500)
    callee = sipp.Sipp(
        workdir, "callee", sipp.only_codec(answer, G722, "G722/8000"), port=switch.trunk_port
    )
    caller = sipp.Sipp(
        workdir,
        "caller",
        sipp.only_codec(sipp.caller(NUMBER, caller_audio.port), G722, "G722/8000"),
    )
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
    await switch.wait_idle()
    for party in (caller_audio, callee_audio):
        assert {r.packet.payload_type for r in party.packets} == {G722}
        relayed = [r for r in party.packets if counting(r.packet.payload)]
        assert len(relayed) > 80, (party.port, len(relayed))
        assert {len(r.packet.payload) for r in relayed} == {FRAME}
    # The ringback (the switch's own G.722) came first, then the relay, in one
    # stream: a timestamp step of 160 per 20 ms packet throughout.
    first = next(i for i, r in enumerate(caller_audio.packets) if counting(r.packet.payload))
    assert first > 10, first
    one_stream(caller_audio.packets, {G722})


@bounded(60)
async def test_opus_is_relayed_byte_for_byte_across_payload_type_numbers(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Opus both ways (RTP clock 48000), under payload type 111 on the caller's leg
    and 96 on the callee's: each party's packets reach the other byte for byte, each
    under the payload type its own SDP gave, and the caller receives one stream,
    960 timestamp units a packet from its ringback through the relay."""
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio = RtpPeer(600, frame=960, payload_type=111, clock_rate=48000)
    callee_audio = RtpPeer(1000, frame=960, payload_type=96, clock_rate=48000)
    peers = [caller_audio, callee_audio]
    await started(*peers)
    answer = sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=800, hangup_after_ms=2500)
    callee = sipp.Sipp(
        workdir, "callee", sipp.only_codec(answer, 96, "opus/48000/2"), port=switch.trunk_port
    )
    caller = sipp.Sipp(
        workdir,
        "caller",
        sipp.only_codec(sipp.caller(NUMBER, caller_audio.port), 111, "opus/48000/2"),
    )
    async with on_call(switch, peers, [callee], [caller]):
        await switch.wait_relayed(1)
    await switch.wait_idle()
    for party, pt in ((caller_audio, 111), (callee_audio, 96)):
        assert {r.packet.payload_type for r in party.packets} == {pt}
        relayed = [r for r in party.packets if counting(r.packet.payload)]
        assert len(relayed) > 80, (pt, len(relayed))
        assert {len(r.packet.payload) for r in relayed} == {960}
    first = next(i for i, r in enumerate(caller_audio.packets) if counting(r.packet.payload))
    assert first > 10, first
    one_stream(caller_audio.packets, {111}, ts_step=960)


def route_by_caller(targets: dict[str, int]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A /voice handler dialling the SIPp callee (by port) named for the caller's
    number."""

    async def voice(request: web.Request) -> web.Response:
        port = targets[str((await request.post())["From"])]
        document = f"<Response><Dial><Sip>sip:callee@127.0.0.1:{port}</Sip></Dial></Response>"
        return web.Response(text=document, content_type="text/xml")

    return voice


@bounded(90)
async def test_a_flooding_peer_is_policed_and_its_neighbours_keep_their_audio(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Two relayed calls; one caller sends 10000 extra packets at 5000 a second.
    The other call loses nothing either way, the flooder's callee gets at most what
    the policing lets through (200 packets/s with a burst of 100), and the excess is
    counted as discarded."""
    quiet_caller, quiet_callee = RtpPeer(600), RtpPeer(1000)
    flood_caller, flood_callee = RtpPeer(700), RtpPeer(1100)
    peers = [quiet_caller, quiet_callee, flood_caller, flood_callee]
    await started(*peers)
    callees = {
        peer: sipp.Sipp(
            workdir, f"callee-{peer.port}", sipp.callee("answer", rtp_port=peer.port, ring_ms=500)
        )
        for peer in (quiet_callee, flood_callee)
    }
    app_server.routes["/voice"] = route_by_caller(
        {"+14155550100": callees[quiet_callee].port, "+14155550101": callees[flood_callee].port}
    )
    callers = [
        sipp.Sipp(
            workdir,
            f"caller-{peer.port}",
            sipp.caller(NUMBER, peer.port, caller_id=number, hangup_after_ms=5000),
        )
        for peer, number in ((quiet_caller, "+14155550100"), (flood_caller, "+14155550101"))
    ]
    before = samples((await scrape(switch))[1])
    async with on_call(switch, peers, list(callees.values()), callers):
        await switch.wait_relayed(2)
        await flood_caller.wait_for_audio(0.5, since=asyncio.get_running_loop().time())
        assert flood_caller.transport is not None and flood_caller.remote is not None
        flood = RtpPacket(PCMU, 0, 0, 0x5EED, bytes(160)).serialize()
        start = asyncio.get_running_loop().time()
        for _ in range(200):  # 5000 packets/s for 2 s, within the kernel's buffers
            for _ in range(50):
                flood_caller.transport.sendto(flood, flood_caller.remote)
            await asyncio.sleep(0.01)
        flooded = asyncio.get_running_loop().time() - start
    await switch.wait_idle()
    after = samples((await scrape(switch))[1])
    # The neighbours lost nothing, either way.
    one_stream(quiet_callee.packets, {PCMU})
    one_stream(quiet_caller.packets, {PCMU})
    assert len(quiet_callee.packets) > 150
    # At most the policed rate of the flood went on.
    flood_through = len(flood_callee.packets) - len(quiet_callee.packets)
    assert flood_through < 100 + 200 * (flooded + 1), (flood_through, flooded)
    discarded = value(after, "dialswitch_rtp_packets_discarded_total", direction="rx") - value(
        before, "dialswitch_rtp_packets_discarded_total", direction="rx"
    )
    assert discarded > 10000 - 100 - 200 * (flooded + 1), (discarded, flooded)
