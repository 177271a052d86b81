"""<Dial> forking end to end: one SIPp caller, several SIPp callees on their own ports
(``<Sip>`` targets) plus the trunk callee (``<Number>``), a real webhook app and RTP
parties that send distinct tones.

Each test asserts on what every callee saw (SIPp message logs and their times),
what the app received (order-independent; status callbacks by SequenceNumber per
CallSid) and, through the ``switch`` fixture, that no leg is left afterwards."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from media.analysis import g711_decode, g711_encode, rms_dbfs, tone_power
from tests.integration.conftest import NUMBER, AppServer, Recorded, SwitchProcess, bounded
from tests.support import sipp, sipp_fork
from tests.support.rtp import DTMF_EVENTS, PCMU, RtpPacket, RtpSink, TelephoneEvent
from tests.support.rtp_peer import FRAME, RATE, RtpPeer
from tests.support.sipp import free_udp_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
HANGUP = "<Response><Hangup/></Response>"
OK = "<Response/>"  # what the app answers to status callbacks
ALL_EVENTS = "initiated ringing answered completed"
SID = re.compile(r"^CA[0-9a-f]{32}$")
RFC2822 = re.compile(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$")
LOUD = -40.0  # dBFS: a 20 ms frame above this is sound, not G.711 silence
TELEPHONE_EVENT_PT = 101  # what every SIPp SDP here offers


# ---- helpers ---------------------------------------------------------------------------


def dial(body: str, **attrs: str) -> str:
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return f"<Response><Dial {attributes}>{body}</Dial></Response>"


def number(**attrs: str) -> str:
    """The trunk callee as a ``<Number>`` noun."""
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<Number{attributes}>{CALLEE}</Number>"


def sip(peer: sipp.Sipp, query: str = "", user: str = "callee", **attrs: str) -> str:
    """A ``<Sip>`` noun reaching ``peer``; ``query`` is the URI's header part."""
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    uri = f"sip:{user}@127.0.0.1:{peer.port}"
    if query:
        uri += "?" + query.replace("&", "&amp;")
    return f"<Sip{attributes}>{uri}</Sip>"


class Peers:
    """The SIPp processes and RTP parties of one test: started, awaited, always stopped."""

    def __init__(self, workdir: Path, switch: SwitchProcess):
        self.workdir = workdir
        self.switch = switch
        self.sipps: list[sipp.Sipp] = []
        self.rtp: list[RtpPeer | RtpSink] = []

    async def audio(self, tone_hz: float | None = None) -> RtpPeer:
        peer = RtpPeer(tone_hz)
        await peer.start()
        self.rtp.append(peer)
        return peer

    async def keypad(self, tone_hz: float) -> DtmfPeer:
        peer = DtmfPeer(tone_hz)
        await peer.start()
        self.rtp.append(peer)
        return peer

    async def sink(self) -> RtpSink:
        sink = RtpSink(telephone_event_pt=TELEPHONE_EVENT_PT)
        await sink.start()
        self.rtp.append(sink)
        return sink

    async def callee(self, name: str, scenario: str, *, trunk: bool = False) -> sipp.Sipp:
        """A UAS on its own port (``trunk``: the port the switch's trunk points at)."""
        port = self.switch.trunk_port if trunk else free_udp_port()
        peer = sipp.Sipp(self.workdir, name, scenario, port=port)
        await peer.start(timeout_s=40)
        self.sipps.append(peer)
        return peer

    async def call(self, scenario: str, *, timeout: float = 40) -> sipp.Sipp:
        """Run the caller to the end of its scenario; it must have followed it."""
        caller = sipp.Sipp(self.workdir, "caller", scenario)
        self.sipps.append(caller)
        await caller.start(self.switch.target(), timeout_s=int(timeout))
        await self.done(caller, timeout=timeout + 5)
        return caller

    @staticmethod
    async def done(*peers: sipp.Sipp, timeout: float = 20) -> None:
        """Each SIPp ended having followed its scenario."""
        for peer in peers:
            await peer.finish(timeout)

    async def close(self) -> None:
        for peer in self.sipps:
            await peer.stop()
        for party in self.rtp:
            party.close()


@pytest_asyncio.fixture(loop_scope="module")
async def peers(switch: SwitchProcess, workdir: Path) -> AsyncIterator[Peers]:
    group = Peers(workdir, switch)
    try:
        yield group
    finally:
        await group.close()


def seconds(earlier: datetime, later: datetime) -> float:
    return (later - earlier).total_seconds()


def loop_time(stamp: datetime) -> float:
    """A SIPp log time (local wall clock) on the event loop's clock."""
    return stamp.timestamp() - time.time() + asyncio.get_running_loop().time()


def invite_of(peer: sipp.Sipp) -> str:
    """The last INVITE ``peer`` received (after a challenge: the authorized one)."""
    invites = [m for m in peer.messages().received() if m.startswith("INVITE ")]
    assert invites, f"{peer.name} got no INVITE: {peer.messages().received_starts()}"
    return invites[-1]


def call_id(peer: sipp.Sipp) -> str:
    value = sipp_fork.header(invite_of(peer), "Call-ID")
    assert value
    return value


def got(peer: sipp.Sipp, method: str) -> bool:
    return any(s.startswith(f"{method} ") for s in sipp_fork.starts(peer, "received"))


def sent_codes(peer: sipp.Sipp) -> list[int]:
    return [int(s.split()[1]) for s in sipp_fork.starts(peer, "sent") if s.startswith("SIP/2.0")]


def parent_sid(app_server: AppServer) -> str:
    """The CallSid of the inbound (parent) call, from its voice request."""
    (voice,) = app_server.hits("/voice")
    return voice.params["CallSid"]


def by_call(requests: list[Recorded]) -> dict[str, list[dict[str, str]]]:
    """Status callbacks grouped by CallSid, each group ordered by SequenceNumber."""
    groups: dict[str, list[dict[str, str]]] = {}
    for request in requests:
        groups.setdefault(request.params["CallSid"], []).append(request.params)
    for group in groups.values():
        group.sort(key=lambda p: int(p["SequenceNumber"]))
    return groups


async def one_action(switch: SwitchProcess, app_server: AppServer) -> dict[str, str]:
    """The params of the one and only action request, once every leg has ended."""
    await switch.wait_idle()
    actions = app_server.hits("/action")
    assert len(actions) == 1, [a.params for a in actions]
    return actions[0].params


def frames(peer: RtpPeer, since: float = 0.0, until: float = math.inf) -> list[tuple[float, Any]]:
    """(arrival, 20 ms of samples) of what ``peer`` heard between two loop times."""
    return [(t, s) for t, s in peer.chunks if since <= t < until]


def tone_frames(peer: RtpPeer, freq: float, since: float = 0.0) -> list[float]:
    """Arrival times of the loud 20 ms frames where ``freq`` dominates."""
    return [
        t for t, s in frames(peer, since) if rms_dbfs(s) > LOUD and tone_power(s, RATE, freq) > 0.5
    ]


def joined(parts: list[tuple[float, Any]]) -> npt.NDArray[np.int16]:
    return np.concatenate([s for _, s in parts]) if parts else np.zeros(0, dtype=np.int16)


class DtmfPeer(RtpPeer):
    """An RtpPeer that can press keys: RFC 4733 events inside its own RTP stream
    (same SSRC, running sequence numbers), as a phone sends them."""

    def __init__(self, tone_hz: float, event_pt: int = TELEPHONE_EVENT_PT):
        super().__init__(tone_hz)
        self.event_pt = event_pt
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self.pressed: list[tuple[str, float]] = []  # (key, loop time of its first packet)

    def press(self, key: str) -> None:
        self.keys.put_nowait(key)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        ssrc, seq, ts = (random.getrandbits(n) for n in (32, 16, 32))
        step = 2 * math.pi * (self.tone_hz or 0) / RATE
        start, n, sample = loop.time(), 0, 0

        def emit(packet: RtpPacket) -> None:
            assert self.transport is not None and self.remote is not None
            self.transport.sendto(packet.serialize(), self.remote)

        async def tick() -> None:
            nonlocal n
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))

        while self.transport is not None and self.remote is not None:
            if not self.keys.empty():
                key = self.keys.get_nowait()
                code = DTMF_EVENTS.index(key)
                self.pressed.append((key, loop.time()))
                # 100 ms of event (5 packets), then the end packet three times (RFC 4733 2.5.1.4).
                for k in range(8):
                    event = TelephoneEvent(code, k >= 5, 10, min(k + 1, 5) * FRAME)
                    emit(RtpPacket(self.event_pt, seq, ts, ssrc, event.serialize(), marker=k == 0))
                    seq = (seq + 1) & 0xFFFF
                    await tick()
                ts = (ts + 8 * FRAME) & 0xFFFFFFFF
                continue
            index = np.arange(sample, sample + FRAME)
            samples = (np.sin(index * step) * self.level * 32767).astype(np.int16)
            emit(RtpPacket(PCMU, seq, ts, ssrc, g711_encode(samples, "pcmu")))
            seq, ts, sample = (seq + 1) & 0xFFFF, (ts + FRAME) & 0xFFFFFFFF, sample + FRAME
            await tick()


async def hears(peer: RtpPeer, freq: float, timeout: float = 15.0) -> float:
    """Wait until ``peer`` hears ``freq`` for 200 ms; returns the loop time it began."""

    async def heard() -> float:
        while True:
            times = tone_frames(peer, freq)
            if len(times) >= 10:
                return times[0]
            peer._changed.clear()
            await peer._changed.wait()

    return await asyncio.wait_for(heard(), timeout)


# ---- 1. the first answer wins ------------------------------------------------------------


@bounded(45)
async def test_first_answer_wins_and_the_ringing_branch_is_cancelled(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far, mine = await peers.audio(1000), await peers.audio(600)
    winner = await peers.callee(
        "winner",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=1000, hangup_after_ms=1000),
        trunk=True,
    )
    busy = await peers.callee("busy", sipp_fork.callee(486))
    ringing = await peers.callee("ringing", sipp_fork.callee("ring"))
    app_server.routes["/voice"] = dial(
        number(statusCallback=app_server.url("/status"), statusCallbackEvent=ALL_EVENTS)
        + sip(busy)
        + sip(ringing),
        action="/action",
        timeout="20",
    )
    app_server.routes["/action"] = HANGUP
    app_server.routes["/status"] = OK
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(winner, busy, ringing)

    # The busy branch ended alone (486, ACKed) and did not end the fork.
    assert sent_codes(busy)[-1] == 486 and got(busy, "ACK")
    # The ringing branch was CANCELled right after the winner's 200.
    answered, _ = sipp_fork.first(winner, "sent", "SIP/2.0 200")
    cancelled, cancel = sipp_fork.first(ringing, "received", "CANCEL ")
    assert 0 <= seconds(answered, cancelled) < 0.3
    # It says why (RFC 3326), so the phone shows "answered elsewhere", not a missed call.
    assert sipp_fork.header(cancel, "Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert sent_codes(ringing) == [100, 180, 200, 487]  # 200 to the CANCEL, 487 to the INVITE
    # The winner was bridged: each side heard the other's tone.
    assert tone_frames(far, 600) and tone_frames(mine, 1000)

    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert action["DialBridged"] == "true"
    calls = by_call(await app_server.wait_for("/status", 4))
    (winner_sid,) = calls
    assert action["DialCallSid"] == winner_sid
    assert calls[winner_sid][0]["SipCallId"] == call_id(winner)
    (voice,) = app_server.hits("/voice")
    assert action["CallSid"] == voice.params["CallSid"]


# ---- 2. aggregated failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    "codes,status", [((486, 486, 600), "busy"), ((404, 486), "failed")], ids=["busy", "failed"]
)
@bounded(40)
async def test_all_branches_refuse(
    switch: SwitchProcess, app_server: AppServer, peers: Peers, codes, status
):
    callees = [
        await peers.callee(f"refuse{i}", sipp_fork.callee(code, after_ms=300 * i))
        for i, code in enumerate(codes)
    ]
    app_server.routes["/voice"] = dial(
        "".join(sip(c, statusCallback=app_server.url("/status")) for c in callees),
        action="/action",
        timeout="20",
    )
    app_server.routes["/action"] = HANGUP
    app_server.routes["/status"] = OK
    mine = await peers.audio()
    started = asyncio.get_running_loop().time()
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(*callees)
    # Decided by the last refusal, not by the 20 s timeout.
    assert asyncio.get_running_loop().time() - started < 8
    for callee, code in zip(callees, codes, strict=True):
        assert sent_codes(callee)[-1] == code and got(callee, "ACK")
        assert not got(callee, "CANCEL")
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == status
    assert action["DialBridged"] == "false"
    assert action["DialCallDuration"] == "0"
    # The last target is a <Sip>: its final response is reported.
    assert action["DialSipResponseCode"] == str(codes[-1])
    assert action["DialSipCallId"] == call_id(callees[-1])
    # Each leg's own completed callback carries its own outcome.
    calls = by_call(await app_server.wait_for("/status", len(codes)))
    outcome = {
        call_id(c): "busy" if code in (486, 600) else "failed"
        for c, code in zip(callees, codes, strict=True)
    }
    assert {c[0]["SipCallId"]: c[0]["CallStatus"] for c in calls.values()} == outcome


@bounded(45)
async def test_nobody_answers_before_the_timeout(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    callees = [
        await peers.callee("trunk", sipp_fork.callee("ring"), trunk=True),
        await peers.callee("ring1", sipp_fork.callee("ring")),
        await peers.callee("ring2", sipp_fork.callee("ring", provisional=None)),
    ]
    app_server.routes["/voice"] = dial(
        number() + sip(callees[1]) + sip(callees[2]), action="/action", timeout="5"
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio()
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(*callees)
    cancels = []
    for callee in callees:
        invited, _ = sipp_fork.first(callee, "received", "INVITE ")
        cancelled, cancel = sipp_fork.first(callee, "received", "CANCEL ")
        assert sipp_fork.header(cancel, "Reason") is None  # nobody answered: no Reason
        # timeout 5 s + the test config's 1 s of grace
        assert 5.5 < seconds(invited, cancelled) < 8, callee.name
        cancels.append(cancelled)
    assert seconds(min(cancels), max(cancels)) < 0.3
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "no-answer"
    assert action["DialBridged"] == "false"


# ---- 3. the answer race ---------------------------------------------------------------------


@bounded(45)
async def test_simultaneous_answers_bridge_one_and_bye_the_other(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    tones = {"left": 700.0, "right": 1300.0}
    audio = {name: await peers.audio(freq) for name, freq in tones.items()}
    # Both answer at once: 200 is each one's first reply to the INVITE, so both 200s
    # are out before the switch can have read either (it sends every INVITE first).
    callees = {
        name: await peers.callee(
            name,
            sipp_fork.callee("answer", rtp_port=audio[name].port, trying=False, provisional=None),
        )
        for name in tones
    }
    app_server.routes["/voice"] = dial(
        "".join(sip(c) for c in callees.values()), action="/action", timeout="20"
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(500)
    caller = await peers.call(sipp.caller(NUMBER, mine.port, hangup_after_ms=3000))
    await peers.done(*callees.values())

    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    (winner,) = [n for n, c in callees.items() if call_id(c) == action["DialSipCallId"]]
    (loser,) = set(callees) - {winner}
    caller_bye, _ = sipp_fork.first(caller, "sent", "BYE ")
    for name, callee in callees.items():
        assert sent_codes(callee)[0] == 200
        assert got(callee, "ACK") and got(callee, "BYE"), name
    answers = [sipp_fork.first(c, "sent", "SIP/2.0 200")[0] for c in callees.values()]
    assert abs(seconds(*answers)) < 0.05  # the two 200s really raced
    # The loser was ACKed then BYEd at once; the winner only when the caller hung up.
    loser_ok, _ = sipp_fork.first(callees[loser], "sent", "SIP/2.0 200")
    loser_ack, _ = sipp_fork.first(callees[loser], "received", "ACK ")
    loser_bye, _ = sipp_fork.first(callees[loser], "received", "BYE ")
    assert loser_ok <= loser_ack <= loser_bye
    assert seconds(loser_ok, loser_bye) < 1.0
    winner_bye, _ = sipp_fork.first(callees[winner], "received", "BYE ")
    assert seconds(caller_bye, winner_bye) >= 0
    # Exactly one was bridged: only the winner heard the caller, and the caller heard
    # only the winner.
    assert len(tone_frames(audio[winner], 500)) > 50
    assert not tone_frames(audio[loser], 500)
    assert len(tone_frames(mine, tones[winner])) > 50
    assert not tone_frames(mine, tones[loser])


@bounded(40)
async def test_a_200_crossing_the_cancel_is_acked_then_byed(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far, late_audio = await peers.audio(1000), await peers.audio(1300)
    winner = await peers.callee(
        "winner",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=800, hangup_after_ms=1500),
        trunk=True,
    )
    # Answers the INVITE with 200 only when the CANCEL has arrived (the wire race).
    late = await peers.callee(
        "late", sipp_fork.callee("ring", rtp_port=late_audio.port, late_answer=True)
    )
    app_server.routes["/voice"] = dial(number() + sip(late), action="/action")
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(500)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(winner, late)
    received = [s.split()[0] for s in sipp_fork.starts(late, "received")]
    # UDP retransmissions of a request (a loaded machine) repeat it, nothing more.
    distinct = [m for i, m in enumerate(received) if i == 0 or m != received[i - 1]]
    assert distinct == ["INVITE", "CANCEL", "ACK", "BYE"], received
    (late_ok,) = [
        when
        for when, way, message in sipp_fork.timeline(late)
        if way == "sent"
        and message.startswith("SIP/2.0 200")
        and "INVITE" in (sipp_fork.header(message, "CSeq") or "")
    ]
    late_bye, _ = sipp_fork.first(late, "received", "BYE ")
    assert seconds(late_ok, late_bye) < 1.0
    assert not tone_frames(late_audio, 500) and not tone_frames(mine, 1300)
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert len(tone_frames(mine, 1000)) > 25


# ---- 4. the caller leaves during the fork ---------------------------------------------------


async def caller_cancels_a_ringing_fork(
    app_server: AppServer, peers: Peers
) -> tuple[sipp.Sipp, list[sipp.Sipp]]:
    """Three ringing targets with every status event; the caller CANCELs after 1.5 s."""
    early = await peers.audio(1000)
    callees = [
        await peers.callee("trunk", sipp_fork.callee("ring"), trunk=True),
        await peers.callee("ring1", sipp_fork.callee("ring")),
        await peers.callee("ring2", sipp_fork.callee("ring", provisional=183, rtp_port=early.port)),
    ]
    app_server.routes["/status"] = OK
    status = {"statusCallback": app_server.url("/status"), "statusCallbackEvent": ALL_EVENTS}
    app_server.routes["/voice"] = dial(
        number(**status) + sip(callees[1], **status) + sip(callees[2], **status),
        action="/action",
        answerOnBridge="true",
    )
    app_server.routes["/action"] = "<Response><Say>Nobody hears this.</Say></Response>"
    mine = await peers.audio()
    caller = await peers.call(sipp_fork.caller_cancel(NUMBER, mine.port, 1500))
    await peers.done(*callees)
    return caller, callees


@bounded(40)
async def test_caller_cancel_cancels_every_branch_and_still_reports(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    caller, callees = await caller_cancels_a_ringing_fork(app_server, peers)
    cancel_sent, _ = sipp_fork.first(caller, "sent", "CANCEL ")
    for callee in callees:
        cancelled, _ = sipp_fork.first(callee, "received", "CANCEL ")
        assert 0 <= seconds(cancel_sent, cancelled) < 0.3, callee.name
        assert sent_codes(callee)[-2:] == [200, 487]  # 200 to the CANCEL, 487 to the INVITE
    # The caller's INVITE was ended 487, after 200 to its CANCEL.
    assert "SIP/2.0 487 Request Terminated" in sipp_fork.starts(caller, "received")

    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "no-answer"
    assert action["DialBridged"] == "false"
    assert action["DialCallDuration"] == "0"
    # initiated and ringing of every branch went out, numbered per leg.
    calls = by_call(await app_server.wait_for("/status", 3 * 2))
    assert len(calls) == 3
    for sid, callbacks in calls.items():
        assert SID.match(sid)
        assert [c["SequenceNumber"] for c in callbacks[:2]] == ["0", "1"]
        assert [c["CallStatus"] for c in callbacks[:2]] == ["initiated", "ringing"]
        assert {c["ParentCallSid"] for c in callbacks} == {action["CallSid"]}
    assert {c[0]["SipCallId"] for c in calls.values()} == {call_id(c) for c in callees}


@pytest.mark.parametrize(
    "ending",
    [
        "caller-cancel",
        "timeout",
        "caller-hangup",
    ],
)
@bounded(40)
async def test_every_branch_gets_its_completed_callback(
    switch: SwitchProcess, app_server: AppServer, peers: Peers, ending: str
):
    if ending == "caller-cancel":
        await caller_cancels_a_ringing_fork(app_server, peers)
        expected = {"canceled"}
        count = 3
    else:
        app_server.routes["/status"] = OK
        status = {"statusCallback": app_server.url("/status"), "statusCallbackEvent": ALL_EVENTS}
        far = await peers.audio(1000)
        if ending == "timeout":
            callees = [await peers.callee(f"ring{i}", sipp_fork.callee("ring")) for i in range(2)]
            expected, count, hangup = {"no-answer"}, 2, None
        else:
            callees = [
                await peers.callee(
                    "callee", sipp_fork.callee("answer", rtp_port=far.port, after_ms=300)
                )
            ]
            expected, count, hangup = {"completed"}, 1, 1500
        app_server.routes["/voice"] = dial(
            "".join(sip(c, **status) for c in callees), action="/action", timeout="5"
        )
        app_server.routes["/action"] = HANGUP
        mine = await peers.audio(600)
        await peers.call(sipp.caller(NUMBER, mine.port, hangup_after_ms=hangup))
        await peers.done(*callees)
    action = await one_action(switch, app_server)
    # initiated, ringing (and in-progress for the answered one), then completed
    per_leg = 4 if ending == "caller-hangup" else 3
    calls = by_call(await app_server.wait_for("/status", count * per_leg, timeout=5))
    assert len(calls) == count
    for callbacks in calls.values():
        assert callbacks[0]["ParentCallSid"] == action["CallSid"]
        last = callbacks[-1]
        assert last["CallStatus"] in expected, [c["CallStatus"] for c in callbacks]
        assert last["SequenceNumber"] == str(len(callbacks) - 1)
        assert "CallDuration" in last


# ---- 5. <Sip> ---------------------------------------------------------------------------------


@bounded(40)
async def test_sip_uri_headers_are_sent_and_disallowed_ones_dropped(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    callee = await peers.callee(
        "callee",
        sipp_fork.callee(
            "answer",
            rtp_port=far.port,
            after_ms=300,
            hangup_after_ms=800,
            headers_200={"X-Result": "accepted", "X-Queue": "7"},
        ),
    )
    app_server.routes["/voice"] = dial(
        sip(callee, "X-Foo=1&X-Bar=two%20words&Subject=x"), action="/action"
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)

    invite = invite_of(callee)
    assert invite.startswith(f"INVITE sip:callee@127.0.0.1:{callee.port}")
    assert sipp_fork.header(invite, "X-Foo") == "1"
    assert sipp_fork.header(invite, "X-Bar") == "two words"
    assert sipp_fork.header(invite, "Subject") is None
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert action["DialSipResponseCode"] == "200"
    assert action["DialSipCallId"] == call_id(callee)
    assert action["DialSipHeader_X-Result"] == "accepted"
    assert action["DialSipHeader_X-Queue"] == "7"
    codes = [n["code"] for n in switch.notifications(parent_sid(app_server))]
    assert codes == [13252]


@bounded(40)
async def test_malformed_sip_uri_fails_its_branch_while_another_answers(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    good = await peers.callee(
        "good",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=1000, hangup_after_ms=500),
    )
    app_server.routes["/voice"] = dial(
        "<Sip>sip:callee@127.0.0.1;transport=pigeon</Sip>" + sip(good), action="/action"
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(good)
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert action["DialSipCallId"] == call_id(good)
    assert action["DialSipResponseCode"] == "200"
    codes = [n["code"] for n in switch.notifications(parent_sid(app_server))]
    assert codes == [13243]


@bounded(40)
async def test_refusing_sip_target_reports_its_response_code(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    callee = await peers.callee("callee", sipp_fork.callee(486, after_ms=200))
    app_server.routes["/voice"] = dial(sip(callee), action="/action")
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio()
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "busy"
    assert action["DialSipResponseCode"] == "486"
    assert action["DialSipCallId"] == call_id(callee)


@bounded(40)
async def test_sip_credentials_answer_the_callee_digest_challenge(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    callee = await peers.callee(
        "callee",
        sipp_fork.callee(
            "answer",
            rtp_port=far.port,
            hangup_after_ms=800,
            challenge=("alice", "s3cret-pw"),
        ),
    )
    app_server.routes["/voice"] = dial(
        sip(callee, username="alice", password="s3cret-pw"), action="/action"
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)
    # SIPp's verifyauth accepted the digest (else it answers 403 and fails).
    assert sent_codes(callee)[:2] == [401, 100] and 403 not in sent_codes(callee)
    invites = [m for m in callee.messages().received() if m.startswith("INVITE ")]
    assert len(invites) == 2
    assert sipp_fork.header(invites[0], "Authorization") is None
    authorization = sipp_fork.header(invites[1], "Authorization") or ""
    assert authorization.startswith("Digest ")
    assert 'username="alice"' in authorization
    assert f'realm="{sipp_fork.REALM}"' in authorization
    assert f'nonce="{sipp_fork.NONCE}"' in authorization
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"


# ---- 6. per-target status callbacks ----------------------------------------------------------


@bounded(40)
async def test_per_target_status_callbacks(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    winner = await peers.callee(
        "winner",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=700, hangup_after_ms=1500),
        trunk=True,
    )
    loser = await peers.callee("loser", sipp_fork.callee("ring"))
    app_server.routes["/voice"] = dial(
        number(statusCallback=app_server.url("/status-win"), statusCallbackEvent=ALL_EVENTS)
        + sip(loser, statusCallback=app_server.url("/status-lose")),
        action="/action",
        callerId="+15005550199",
    )
    app_server.routes["/action"] = HANGUP
    app_server.routes["/status-win"] = app_server.routes["/status-lose"] = OK
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(winner, loser)
    action = await one_action(switch, app_server)
    parent = action["CallSid"]

    (won,) = by_call(await app_server.wait_for("/status-win", 4)).values()
    assert [c["SequenceNumber"] for c in won] == ["0", "1", "2", "3"]
    assert [c["CallStatus"] for c in won] == ["initiated", "ringing", "in-progress", "completed"]
    assert action["DialCallSid"] == won[0]["CallSid"]
    for callback in won:
        assert callback["ParentCallSid"] == parent
        assert callback["CallbackSource"] == "call-progress-events"
        assert RFC2822.match(callback["Timestamp"]), callback["Timestamp"]
        parsedate_to_datetime(callback["Timestamp"])
        assert callback["To"] == CALLEE
        assert callback["From"] == "+15005550199"
        assert callback["Direction"] == "outbound-dial"
        assert callback["SipCallId"] == call_id(winner)
    assert "CallDuration" not in won[0]
    assert 1 <= int(won[-1]["CallDuration"]) <= 3
    stamps = [parsedate_to_datetime(c["Timestamp"]) for c in won]
    assert stamps == sorted(stamps)

    # statusCallback without statusCallbackEvent: completed only.
    (lost,) = by_call(await app_server.wait_for("/status-lose", 1)).values()
    assert len(lost) == 1
    assert lost[0]["SequenceNumber"] == "0"
    assert lost[0]["CallStatus"] in ("canceled", "no-answer")
    assert lost[0]["ParentCallSid"] == parent
    assert lost[0]["CallDuration"] == "0"
    assert len(app_server.hits("/status-lose")) == 1


@bounded(30)
async def test_relative_status_callback_url_is_resolved(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    callee = await peers.callee(
        "callee",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=200, hangup_after_ms=500),
        trunk=True,
    )
    app_server.routes["/voice"] = dial(number(statusCallback="/status"), action="/action")
    app_server.routes["/action"] = HANGUP
    app_server.routes["/status"] = OK
    mine = await peers.audio()
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)
    await one_action(switch, app_server)
    (completed,) = await app_server.wait_for("/status", 1, timeout=5)
    assert completed.params["CallStatus"] == "completed"


# ---- 7. sendDigits --------------------------------------------------------------------------


@bounded(40)
async def test_send_digits_reach_the_callee_before_the_bridge(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    ear = await peers.sink()
    callee = await peers.callee(
        "callee",
        sipp_fork.callee("answer", rtp_port=ear.address[1], after_ms=300, hangup_after_ms=3000),
        trunk=True,
    )
    app_server.routes["/voice"] = dial(number(sendDigits="1w2"), action="/action")
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)
    assert ear.digits() == "12"
    events = [
        (r.arrival, TelephoneEvent.parse(r.packet.payload).event, r.packet.timestamp)
        for r in ear.packets
        if r.packet.payload_type == TELEPHONE_EVENT_PT
    ]
    one = min(t for t, e, _ in events if e == 1)
    two = min(t for t, e, _ in events if e == 2)
    assert 0.45 <= two - one <= 1.0, two - one
    # The caller's tone reached the callee only after the digits: the bridge came later.
    tone = [
        r.arrival
        for r in ear.packets
        if r.packet.payload_type == PCMU and _loud_tone(r.packet.payload, 600)
    ]
    assert len(tone) > 25
    assert min(tone) > two
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"


def _loud_tone(payload: bytes, freq: float) -> bool:
    samples = g711_decode(payload, "pcmu")
    return rms_dbfs(samples) > LOUD and tone_power(samples, RATE, freq) > 0.5


# ---- 8. whisper documents ---------------------------------------------------------------------


@bounded(45)
async def test_whisper_is_heard_by_the_callee_then_the_bridge(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    callee = await peers.callee(
        "callee", sipp_fork.callee("answer", rtp_port=far.port, after_ms=300), trunk=True
    )
    app_server.routes["/voice"] = dial(number(url="/whisper"), action="/action")
    app_server.routes["/whisper"] = "<Response><Say>You have a call</Say></Response>"
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port, hangup_after_ms=6000))
    await peers.done(callee)

    bridged = tone_frames(far, 600)
    assert len(bridged) > 50, "the callee never heard the caller"
    before = frames(far, until=bridged[0])
    speech = [s for _, s in before if rms_dbfs(s) > LOUD and tone_power(s, RATE, 600) < 0.3]
    assert len(speech) * FRAME / RATE > 0.5, "no whisper speech before the bridge"
    # The caller did not hear the whisper: only ringback, then the callee's tone.
    heard = tone_frames(mine, 1000)
    assert heard and heard[0] >= bridged[0] - 0.5
    (whisper,) = app_server.hits("/whisper")
    action = await one_action(switch, app_server)
    assert whisper.params["ParentCallSid"] == action["CallSid"]
    assert whisper.params["CallSid"] == action["DialCallSid"]
    assert whisper.params["Direction"] == "outbound-dial"
    assert action["DialCallStatus"] == "completed"


@pytest.mark.parametrize(
    "whisper,code",
    [
        ("<Response><Hangup/></Response>", None),
        (f"<Response><Dial>{CALLEE}</Dial></Response>", 13201),
    ],
    ids=["hangup", "dial"],
)
@bounded(45)
async def test_whisper_that_ends_its_branch_lets_another_answer(
    switch: SwitchProcess, app_server: AppServer, peers: Peers, whisper: str, code: int | None
):
    screened_audio, other_audio = await peers.audio(1000), await peers.audio(1300)
    screened = await peers.callee(
        "screened",
        sipp_fork.callee("answer", rtp_port=screened_audio.port, after_ms=200),
        trunk=True,
    )
    other = await peers.callee(
        "other",
        sipp_fork.callee("answer", rtp_port=other_audio.port, after_ms=2500, hangup_after_ms=1000),
    )
    app_server.routes["/voice"] = dial(number(url="/screen") + sip(other), action="/action")
    app_server.routes["/screen"] = whisper
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio(600)
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(screened, other)

    assert got(screened, "BYE") and not tone_frames(screened_audio, 600)
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert action["DialSipCallId"] == call_id(other)
    assert tone_frames(mine, 1300) and not tone_frames(mine, 1000)
    if code is None:
        # The whisper's hang-up came before the other callee answered.
        screened_bye, _ = sipp_fork.first(screened, "received", "BYE ")
        other_ok, _ = sipp_fork.first(other, "sent", "SIP/2.0 200")
        assert screened_bye < other_ok
    codes = [n["code"] for n in switch.notifications(parent_sid(app_server))]
    assert codes == ([code] if code else [])


# ---- 9. hangupOnStar ---------------------------------------------------------------------


@bounded(45)
async def test_hangup_on_star_ends_the_child_and_runs_the_action(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.keypad(1000)
    callee = await peers.callee(
        "callee", sipp_fork.callee("answer", rtp_port=far.port, after_ms=300), trunk=True
    )
    app_server.routes["/voice"] = dial(number(), action="/action", hangupOnStar="true")
    app_server.routes["/action"] = "<Response><Say>Back with the caller.</Say></Response>"
    mine = await peers.keypad(600)
    caller = sipp.Sipp(peers.workdir, "caller", sipp.caller(NUMBER, mine.port))
    peers.sipps.append(caller)
    await caller.start(switch.target(), timeout_s=30)
    await hears(mine, 1000)
    # The callee's star does not count...
    far.press("*")
    await asyncio.sleep(1.0)  # nothing to await: the star must be ignored
    assert not got(callee, "BYE")
    # ...the caller's does.
    mine.press("*")
    await peers.done(caller, timeout=30)
    await peers.done(callee)
    (_, pressed) = mine.pressed[0]
    callee_bye, _ = sipp_fork.first(callee, "received", "BYE ")
    caller_bye, _ = sipp_fork.first(caller, "received", "BYE ")
    assert 0 < loop_time(callee_bye) - pressed < 1.0
    # The parent went on with the action's document (a spoken sentence), then BYE.
    assert seconds(callee_bye, caller_bye) > 0.8
    after = joined(frames(mine, loop_time(callee_bye) + 0.3, loop_time(caller_bye)))
    assert (np.abs(after) > 0).any() and rms_dbfs(after) > LOUD
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"
    assert action["DialBridged"] == "true"


# ---- 10. what the caller hears while the fork rings --------------------------------------------


@bounded(45)
async def test_answer_on_bridge_with_ring_tone_plays_it_as_early_media(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    far = await peers.audio(1000)
    winner = await peers.callee(
        "winner",
        sipp_fork.callee("answer", rtp_port=far.port, after_ms=2500, hangup_after_ms=500),
        trunk=True,
    )
    ringing = [await peers.callee(f"ring{i}", sipp_fork.callee("ring")) for i in range(2)]
    app_server.routes["/voice"] = dial(
        number() + "".join(sip(r) for r in ringing),
        action="/action",
        answerOnBridge="true",
        ringTone="uk",
    )
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio()
    caller = await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(winner, *ringing)

    received = sipp_fork.starts(caller, "received")
    assert "SIP/2.0 183 Session Progress" in received
    winner_ok, _ = sipp_fork.first(winner, "sent", "SIP/2.0 200")
    caller_ok, _ = sipp_fork.first(caller, "received", "SIP/2.0 200")
    assert seconds(winner_ok, caller_ok) >= 0
    early = joined(frames(mine, until=loop_time(winner_ok)))
    assert len(early) >= RATE
    uk = tone_power(early, RATE, 400) + tone_power(early, RATE, 450)
    us = tone_power(early, RATE, 440) + tone_power(early, RATE, 480)
    assert uk > 10 * us
    for callee in ringing:
        assert got(callee, "CANCEL")
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"


@pytest.mark.parametrize("answer_on_bridge", ["false", "true"])
@bounded(45)
async def test_single_target_early_media_is_relayed_to_the_caller(
    switch: SwitchProcess, app_server: AppServer, peers: Peers, answer_on_bridge: str
):
    far = await peers.audio(1000)
    callee = await peers.callee(
        "callee",
        sipp_fork.callee(
            "answer", rtp_port=far.port, provisional=183, after_ms=3000, hangup_after_ms=500
        ),
        trunk=True,
    )
    app_server.routes["/voice"] = dial(number(), action="/action", answerOnBridge=answer_on_bridge)
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio()
    caller = await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(callee)
    if answer_on_bridge == "true":
        assert "SIP/2.0 183 Session Progress" in sipp_fork.starts(caller, "received")
    callee_ok, _ = sipp_fork.first(callee, "sent", "SIP/2.0 200")
    early = tone_frames(mine, 1000)
    assert early and early[0] < loop_time(callee_ok) - 1.0, "no early media before the answer"
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "completed"


@bounded(40)
async def test_silent_target_does_not_hold_up_the_action(
    switch: SwitchProcess, app_server: AppServer, peers: Peers
):
    # One target never answers at all (not even 100): it cannot be CANCELled (RFC 3261
    # 9.1), but it must not delay the timeout, the action or the end of the leg.
    silent = await peers.callee("silent", sipp_fork.callee("silent", silent_ms=9000))
    ringing = await peers.callee("ringing", sipp_fork.callee("ring"))
    app_server.routes["/voice"] = dial(sip(silent) + sip(ringing), action="/action", timeout="5")
    app_server.routes["/action"] = HANGUP
    mine = await peers.audio()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await peers.call(sipp.caller(NUMBER, mine.port))
    await peers.done(ringing)
    await switch.wait_idle(2)
    assert loop.time() - started < 8.5  # timeout 5 s + 1 s grace, then the action
    await peers.done(silent)
    assert set(sipp_fork.starts(silent, "received")) == {
        f"INVITE sip:callee@127.0.0.1:{silent.port} SIP/2.0"
    }
    assert got(ringing, "CANCEL")
    action = await one_action(switch, app_server)
    assert action["DialCallStatus"] == "no-answer"
