"""Call legs and a media engine in memory, for the component tests of the call path.

``FakeLeg`` is a ``switch.call.protocol.Leg`` whose far end the test plays
(``far_ring``, ``far_answer``, ``far_reject``, ``far_hangup``, ``far_dtmf``).
It behaves as the pjsua2-backed leg does (switch/engine/legs.py): every state
change goes through ``LegMachine.process`` at the same point, events reach
subscribers through ``loop.call_soon``, ``ended`` is resolved and
``media_ready`` set when the real leg would. Hanging up an unanswered inbound
leg rejects it (603 unless a code is given, as pjsua does), an unanswered
outbound one is CANCELled and the far end answers 487, an answered one gets a
BYE. Whatever the switch did to the leg is kept in ``sent`` ("INVITE", "ACK",
"CANCEL", "BYE" on outbound legs; "180", "183", "200", "486"... on inbound
ones), with the digits in ``dtmf_sent``.

``FakeEngine`` is a ``switch.call.protocol.MediaEngine``: ``place_call``
returns an outbound ``FakeLeg`` and starts the far end the test scripted for
the number (``far_end(user, behaviour)``: ``rings()``, ``answers()``,
``rejects()``...); ``connect``, ``player`` and ``recorder`` record what the
switch did with the audio.
"""

from __future__ import annotations

import asyncio
import itertools
import wave
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from switch.call.events import (
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegEvent,
    LegMediaReady,
    LegProgressed,
)
from switch.call.leg import LegInput, LegMachine, LegState
from switch.call.protocol import Leg, Player, unsubscribed
from switch.sipmsg import SipMessage, uri_user

FarEnd = Callable[["FakeLeg"], Coroutine[Any, Any, None]]

_call_ids = itertools.count(1)


class FakeLeg:
    """One call leg in memory; the test is its far end."""

    def __init__(
        self,
        call_sid: str,
        *,
        outbound: bool,
        request: SipMessage | None = None,
        uri: str = "",
        from_uri: str = "",
        headers: Sequence[tuple[str, str]] = (),
        trunk: str | None = None,
        credentials: tuple[str, str] | None = None,
        target_uri: str | None = None,
        srtp: str = "optional",
    ):
        loop = asyncio.get_running_loop()
        self.call_sid = call_sid
        self.outbound = outbound
        self.machine = LegMachine(call_sid, outbound)
        self.request = request
        self.final_response: SipMessage | None = None
        self.keep_final_response = False
        self.sip_call_id = f"fake-{next(_call_ids)}@127.0.0.1"
        self.source = ""
        self.srtp = "optional"
        self.final_code: int | None = None
        self.final_reason = ""
        self.was_answered = False
        self.transfers_allowed = False
        # Inbound: None, our 183/200 brings the media up before ring()/answer() return
        # (pjsua negotiates the SDP inside them); seconds, it comes up that much later.
        self.media_delay: float | None = None
        self.ended: asyncio.Future[LegEnded] = loop.create_future()
        self.media_ready = asyncio.Event()
        # What the switch asked for (outbound legs).
        self.uri = uri
        self.from_uri = from_uri
        self.headers = tuple(headers)
        self.trunk = trunk
        self.credentials = credentials
        self.target_uri = target_uri
        self.srtp = srtp
        # What the switch did to this leg.
        self.sent: list[str] = []
        self.dtmf_sent = ""
        self.notified: list[tuple[int, str, bool]] = []  # NOTIFYs of a REFER's progress
        self._loop = loop
        self._subscribers: list[Callable[[LegEvent], None]] = []
        self._closing = False  # a CANCEL, BYE or rejection is out: the end is due

    @classmethod
    def inbound(cls, call_sid: str, invite: str, source: str = "127.0.0.1:5070") -> FakeLeg:
        """An INVITE received (its text in ``invite``), as the engine hands it over."""
        request = SipMessage.parse(invite)
        leg = cls(call_sid, outbound=False, request=request)
        leg.source = source
        leg.sip_call_id = request.header("call-id") or ""
        leg.machine.process(LegInput.INVITED)
        return leg

    def __repr__(self) -> str:
        direction = "outbound" if self.outbound else "inbound"
        return f"<FakeLeg {direction} {self.call_sid} {self.state.value} sent={self.sent}>"

    # ---- state as seen from outside -------------------------------------------------

    @property
    def state(self) -> LegState:
        return self.machine.state

    @property
    def live(self) -> bool:
        return self.machine.live

    @property
    def answered(self) -> bool:
        return self.machine.answered

    @property
    def user(self) -> str:
        """The user part of the Request-URI (outbound): the number or identity called."""
        return uri_user(self.target_uri or self.uri)

    def subscribe(self, fn: Callable[[LegEvent], None]) -> Callable[[], None]:
        if self.ended.done():  # as the engine's leg: LegEnded was the last event
            return unsubscribed
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    # ---- the switch's side (the Leg protocol) ----------------------------------------

    def ring(self, early_media: bool) -> None:
        if self.outbound or not self._open or self.state is LegState.ANSWERED:
            return
        if early_media and self.state is LegState.EARLY_MEDIA:
            return
        if not early_media and self.state in (LegState.RINGING, LegState.EARLY_MEDIA):
            return
        self.sent.append("183" if early_media else "180")
        self.machine.process(LegInput.EARLY_MEDIA if early_media else LegInput.RANG)
        if early_media:
            self._local_media()

    def answer(self) -> None:
        """200 OK; the caller's ACK (and its media) follow at once."""
        if self.outbound or not self._open or "200" in self.sent:
            return
        self.sent.append("200")
        self._local_media()
        self._loop.call_soon(self._confirmed)

    def hangup(
        self, sip_code: int | None = None, reason: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        if not self._open:
            return
        self._closing = True
        if self.answered or "200" in self.sent:
            self.sent.append("BYE")
            self._loop.call_soon(self._end, 200, "Normal call clearing")
        elif self.outbound:
            self.sent.append("CANCEL")  # the far end answers the INVITE with 487
            self._loop.call_soon(self._end, 487, "Request Terminated")
        else:
            code = sip_code or 603  # pjsua's default for an unanswered incoming call
            self.sent.append(str(code))
            self._loop.call_soon(self._end, code, reason or "Decline")

    def send_dtmf(self, digits: str) -> None:
        if self._open:
            self.dtmf_sent += digits

    def notify_transfer(self, sip_code: int, reason: str, final: bool = True) -> None:
        if self._open:
            self.notified.append((sip_code, reason, final))

    # ---- the far end (driven by the test) --------------------------------------------

    def far_ring(self, early_media: bool = False) -> None:
        """Outbound: the callee sends 180, or 183 with SDP (its media comes up)."""
        assert self.outbound, "an inbound leg's ringing is sent by the switch"
        if not self._open:
            return
        code = 183 if early_media else 180
        if self.machine.process(LegInput.EARLY_MEDIA if early_media else LegInput.RANG):
            self._emit(LegProgressed(code, early_media=early_media))
        if early_media:
            self._loop.call_soon(self._media_up)

    def far_answer(self) -> None:
        """Outbound: the callee sends 200 OK; we ACK and its media comes up."""
        assert self.outbound, "an inbound leg is answered by the switch"
        if not self._open or self.answered:
            return
        self.sent.append("ACK")
        self._media_up()
        self._confirmed()

    def far_reject(self, code: int, reason: str = "") -> None:
        """Outbound: the callee refuses the INVITE (486 Busy Here, 603 Decline...)."""
        assert self.outbound and not self.answered, "only an unanswered INVITE is refused"
        if self._open:
            self._closing = True
            self._end(code, reason)

    def far_hangup(self) -> None:
        """The peer leaves: a BYE once answered, a CANCEL of an inbound INVITE before."""
        if not self._open:
            return
        self._closing = True
        if self.answered:
            self._end(200, "Normal call clearing")
        else:
            assert not self.outbound, "an unanswered callee refuses: use far_reject"
            self._end(487, "Request Terminated")

    def far_dtmf(self, digit: str) -> None:
        """The peer presses a key (RFC 4733)."""
        if self._open:
            self._emit(DtmfReceived(digit))

    # ---- internals, as the engine's leg does them ------------------------------------

    @property
    def _open(self) -> bool:
        return self.live and not self._closing

    def _emit(self, event: LegEvent) -> None:
        for fn in list(self._subscribers):
            self._loop.call_soon(fn, event)

    def _local_media(self) -> None:
        if self.media_delay is None:
            self._media_up()
        else:
            self._loop.call_later(self.media_delay, self._media_up)

    def _media_up(self) -> None:
        if self.live and not self.media_ready.is_set():
            self.media_ready.set()
            self._emit(LegMediaReady())

    def _confirmed(self) -> None:
        if not self.live:
            return
        self.was_answered = True
        if self.machine.process(LegInput.ANSWERED):
            self._emit(LegAnswered())

    def _end(self, code: int, reason: str) -> None:
        if not self.live:
            return
        self.final_code = code
        self.final_reason = reason
        self.machine.process(LegInput.ENDED)
        event = LegEnded(code, reason)
        if not self.ended.done():
            self.ended.set_result(event)
        self._emit(event)
        self._subscribers.clear()  # LegEnded is the last event


# ---- far ends: what a callee does once INVITEd ----------------------------------------


def rings(after: float = 0.0, early_media: bool = False) -> FarEnd:
    """Ring after ``after`` seconds and keep ringing."""

    async def far_end(leg: FakeLeg) -> None:
        await asyncio.sleep(after)
        leg.far_ring(early_media)

    return far_end


def answers(after: float = 0.0, early_media: bool = False) -> FarEnd:
    """Ring at once, answer ``after`` seconds later."""

    async def far_end(leg: FakeLeg) -> None:
        leg.far_ring(early_media)
        await asyncio.sleep(after)
        leg.far_answer()

    return far_end


def rejects(code: int, reason: str, after: float = 0.0) -> FarEnd:
    """Ring at once, refuse the INVITE with ``code`` ``after`` seconds later."""

    async def far_end(leg: FakeLeg) -> None:
        leg.far_ring()
        await asyncio.sleep(after)
        if leg.live:
            leg.far_reject(code, reason)

    return far_end


# ---- media ----------------------------------------------------------------------------


class FakePlayer:
    def __init__(self, path: Path, loop: bool):
        self.path = path
        self.loop = loop
        self.legs: list[str] = []  # CallSids it played to
        self.closed = False

    def start(self, leg: Leg) -> bool:
        """True when the leg has audio to play into, as the engine's player."""
        if self.closed or not leg.live or not leg.media_ready.is_set():
            return False
        self.legs.append(leg.call_sid)
        return True

    def close(self) -> None:
        self.closed = True


class FakeRecorder:
    def __init__(self, path: Path):
        self.path = path
        self.legs: list[str] = []  # CallSids whose peer it hears
        self.players: list[Player] = []
        self.closed = False

    def hear(self, leg: Leg) -> bool:
        if self.closed or not leg.media_ready.is_set() or leg.call_sid in self.legs:
            return False
        self.legs.append(leg.call_sid)
        return True

    def hear_player(self, player: Player) -> None:
        if not self.closed:
            self.players.append(player)

    def close(self) -> asyncio.Future[None]:
        """The file is complete at once: a valid WAV of no samples."""
        if not self.closed:
            self.closed = True
            with wave.open(str(self.path), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(8000)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeEngine:
    """Places ``FakeLeg``s, runs the far ends the test scripted, records the media."""

    def __init__(self) -> None:
        self.legs: list[FakeLeg] = []  # every leg, inbound and outbound, oldest first
        self.connections: list[tuple[str, str]] = []  # (source, sink) CallSids
        self.players: list[FakePlayer] = []
        self.recorders: list[FakeRecorder] = []
        self.unreachable: set[str] = set()  # users whose INVITE cannot even be sent
        self._far_ends: dict[str, FarEnd] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def leg_count(self) -> int:
        return len(self.live_legs())

    def arriving(self) -> int:
        return 0  # incoming() hands a leg over at once

    def far_end(self, user: str, behaviour: FarEnd) -> None:
        """What the callee reached at ``user`` (a number, an identity) does when INVITEd."""
        self._far_ends[user] = behaviour

    def incoming(
        self,
        call_sid: str,
        to: str,
        from_: str,
        headers: Mapping[str, str] | None = None,
        display_name: str = "",
    ) -> FakeLeg:
        """An INVITE from ``from_`` to ``to`` arrives."""
        call_id = f"in-{next(_call_ids)}@127.0.0.1"
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        name = f'"{display_name}" ' if display_name else ""
        invite = (
            f"INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}\r\n"
            f"From: {name}<sip:{from_}@127.0.0.1:5070>;tag=caller\r\n"
            f"To: <sip:{to}@127.0.0.1:5060>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n"
        )
        leg = FakeLeg.inbound(call_sid, invite)
        self.legs.append(leg)
        return leg

    def outbound(self) -> list[FakeLeg]:
        return [leg for leg in self.legs if leg.outbound]

    def placed_to(self, user: str) -> list[FakeLeg]:
        return [leg for leg in self.outbound() if leg.user == user]

    # ---- MediaEngine -----------------------------------------------------------------

    def place_call(
        self,
        call_sid: str,
        to_uri: str,
        from_uri: str,
        headers: Sequence[tuple[str, str]] = (),
        trunk: str | None = None,
        credentials: tuple[str, str] | None = None,
        target_uri: str | None = None,
        srtp: str = "optional",
    ) -> FakeLeg:
        leg = FakeLeg(
            call_sid,
            outbound=True,
            uri=to_uri,
            from_uri=from_uri,
            headers=headers,
            trunk=trunk,
            credentials=credentials,
            target_uri=target_uri,
            srtp=srtp,
        )
        self.legs.append(leg)
        if leg.user in self.unreachable:
            leg._end(500, "Not Sent")  # as the engine: ended before it returns
            return leg
        leg.sent.append("INVITE")
        leg.machine.process(LegInput.INVITED)
        behaviour = self._far_ends.get(leg.user)
        if behaviour is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(behaviour(leg)))
        return leg

    def connect(self, source: Leg, sink: Leg) -> bool:
        if not (source.media_ready.is_set() and sink.media_ready.is_set()):
            return False
        if not (source.live and sink.live):
            return False
        if (source.call_sid, sink.call_sid) not in self.connections:  # the bridge's way
            self.connections.append((source.call_sid, sink.call_sid))
        return True

    def player(self, path: Path, loop: bool) -> FakePlayer:
        player = FakePlayer(path, loop)
        self.players.append(player)
        return player

    def recorder(self, path: Path) -> FakeRecorder:
        recorder = FakeRecorder(path)
        self.recorders.append(recorder)
        return recorder

    # ---- the end of a test -----------------------------------------------------------

    def live_legs(self) -> list[FakeLeg]:
        return [leg for leg in self.legs if leg.live]

    def open_media(self) -> list[FakePlayer | FakeRecorder]:
        media: list[FakePlayer | FakeRecorder] = [*self.players, *self.recorders]
        return [m for m in media if not m.closed]

    async def close(self) -> None:
        """Stop the far ends; re-raise the first error one of them hit."""
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result
