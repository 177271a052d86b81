"""What the call logic needs from a leg and from the media engine, as protocols.

The SIP engine (switch/engine, pjsua2) implements them; so does ``FakeLeg`` in
the component tests, and so will any other kind of leg (a browser's). The
call path (session, script, dial, recording) is typed against these only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from switch.call.events import LegEnded, LegEvent
from switch.call.leg import LegMachine, LegState
from switch.sipmsg import SipMessage


def unsubscribed() -> None:
    """The unsubscribe of a subscription that holds nothing: one made to a leg that had
    already ended (its LegEnded was its last event), or one already undone."""


class Leg(Protocol):
    """One call leg. Every method is safe in any state: hanging up an ended leg does nothing."""

    call_sid: str
    outbound: bool
    machine: LegMachine
    request: SipMessage | None  # inbound: the INVITE received
    final_response: SipMessage | None  # outbound: the final answer, when kept
    keep_final_response: bool
    sip_call_id: str
    source: str  # inbound: "ip:port" the INVITE came from
    srtp: str  # off | optional | mandatory (switch.config_tls), or dtls: a browser's leg
    final_code: int | None
    final_reason: str
    transfers_allowed: bool
    ended: asyncio.Future[LegEnded]
    media_ready: asyncio.Event

    @property
    def state(self) -> LegState: ...

    @property
    def live(self) -> bool: ...

    @property
    def answered(self) -> bool: ...

    @property
    def was_answered(self) -> bool: ...

    def subscribe(self, fn: Callable[[LegEvent], None]) -> Callable[[], None]: ...

    def ring(self, early_media: bool) -> None: ...

    def answer(self) -> None: ...

    def hangup(
        self, sip_code: int | None = None, reason: str = "", headers: Sequence[tuple[str, str]] = ()
    ) -> None: ...

    def send_dtmf(self, digits: str) -> None: ...

    def notify_transfer(self, sip_code: int, reason: str, final: bool = True) -> None: ...


class Player(Protocol):
    def start(self, leg: Leg) -> bool: ...

    def close(self) -> None: ...


class Recorder(Protocol):
    path: Path

    def hear(self, leg: Leg) -> bool: ...

    def hear_player(self, player: Player) -> None: ...

    def close(self) -> asyncio.Future[None]: ...


class MediaEngine(Protocol):
    """Places outbound legs and moves audio between legs, players and recorders."""

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
    ) -> Leg: ...

    def connect(self, source: Leg, sink: Leg) -> bool: ...

    def leg_count(self) -> int:
        """Legs holding a call slot now, of every kind (what ``max_calls`` counts)."""
        ...

    def arriving(self) -> int:
        """Incoming legs among them not handed to the application yet."""
        ...

    def player(self, path: Path, loop: bool) -> Player: ...

    def recorder(self, path: Path) -> Recorder: ...


class MediaError(Exception):
    """The engine could not do a media operation (a recorder cannot open its file)."""
