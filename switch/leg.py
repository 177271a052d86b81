"""The state machine of one call leg.

Every leg, inbound or outbound, moves through the same states; the whole table
lives here, and ``LegMachine.move`` is the only place a state changes, logging
``old -> new``. No I/O: the engine feeds it SIP events, the dial logic reads it.

Twilio's ``CallStatus`` is derived from the state (and, at the end, from the
final SIP status), never stored beside it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass


class LegState(enum.Enum):
    NEW = "new"  # created, no SIP sent or answered yet
    CALLING = "calling"  # outbound INVITE sent / inbound INVITE received
    RINGING = "ringing"  # 180 seen (outbound) or sent (inbound)
    EARLY_MEDIA = "early-media"  # 183 with SDP: audio flows before answer
    ANSWERED = "answered"  # 200 OK: the dialog is confirmed
    ENDED = "ended"  # DISCONNECTED; terminal


_ALLOWED: dict[LegState, frozenset[LegState]] = {
    LegState.NEW: frozenset({LegState.CALLING, LegState.ENDED}),
    LegState.CALLING: frozenset(
        {LegState.RINGING, LegState.EARLY_MEDIA, LegState.ANSWERED, LegState.ENDED}
    ),
    LegState.RINGING: frozenset({LegState.EARLY_MEDIA, LegState.ANSWERED, LegState.ENDED}),
    LegState.EARLY_MEDIA: frozenset({LegState.RINGING, LegState.ANSWERED, LegState.ENDED}),
    LegState.ANSWERED: frozenset({LegState.ENDED}),
    LegState.ENDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A leg was asked to move along an edge the table does not have."""


def final_call_status(answered: bool, sip_code: int | None, cancelled: bool) -> str:
    """Twilio's final ``CallStatus`` of a leg from how it ended.

    Answered legs are ``completed``. Unanswered: 486/600/603 -> ``busy``;
    408/480 and our own CANCEL on timeout -> ``no-answer``; a CANCEL for any
    other reason (caller left, another branch won) -> ``canceled``; everything
    else (404, 5xx, no route) -> ``failed``.
    """
    if answered:
        return "completed"
    if sip_code in (486, 600, 603):
        return "busy"
    if sip_code in (408, 480):
        return "no-answer"
    if cancelled or sip_code == 487:
        return "canceled"
    return "failed"


@dataclass
class LegMachine:
    """Current state of one leg plus the few facts the transitions record."""

    call_sid: str
    state: LegState = LegState.NEW
    log: logging.LoggerAdapter[logging.Logger] | None = None

    def move(self, new: LegState) -> bool:
        """Take the edge to ``new``; returns False when already there.

        A repeated state (a second 180) is not an error and changes nothing.
        """
        old = self.state
        if new is old:
            return False
        if new not in _ALLOWED[old]:
            raise IllegalTransition(f"{self.call_sid}: {old.value} -> {new.value}")
        self.state = new
        if self.log is not None:
            self.log.debug("leg %s -> %s", old.value, new.value)
        return True

    @property
    def live(self) -> bool:
        return self.state is not LegState.ENDED

    @property
    def call_status(self) -> str:
        """Twilio's ``CallStatus`` while the leg is live."""
        return {
            LegState.NEW: "queued",
            LegState.CALLING: "initiated",
            LegState.RINGING: "ringing",
            LegState.EARLY_MEDIA: "ringing",
            LegState.ANSWERED: "in-progress",
            LegState.ENDED: "completed",
        }[self.state]
