"""The state machine of one call leg: the whole transition table is in this file.

Every leg, inbound or outbound, SIP or any other kind, moves through the same
states. What happened to it is one ``LegInput``; ``LegMachine.process`` looks
up (state, input) in ``TRANSITIONS`` and is the only place a state changes,
logging ``old -> new`` with the CallSid. A pair that is not in the table is
one error, ``IllegalTransition``, raised in one place (h11's ``_state.py``
reads the same way). No I/O: the engine feeds it what the signalling did.

Twilio's ``CallStatus`` is derived from the state (switch/call/status.py owns
the words), never stored beside it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from switch.call.status import CallStatus

log = logging.getLogger("dialswitch.leg")


class LegState(enum.Enum):
    NEW = "new"  # created, no signalling yet
    CALLING = "calling"  # outbound INVITE sent / inbound INVITE received
    RINGING = "ringing"  # 180 seen (outbound) or sent (inbound)
    EARLY_MEDIA = "early-media"  # 183 with SDP: audio flows before answer
    ANSWERED = "answered"  # 2xx: the dialog is confirmed
    ENDED = "ended"  # terminal


class LegInput(enum.Enum):
    """What the signalling did to a leg."""

    INVITED = "invited"  # INVITE sent or received
    RANG = "rang"  # 180/181/182 sent or received
    EARLY_MEDIA = "early-media"  # 183 with SDP sent or received
    ANSWERED = "answered"  # the dialog is confirmed
    ENDED = "ended"  # final failure, CANCEL or BYE done


S, In = LegState, LegInput

TRANSITIONS: dict[tuple[LegState, LegInput], LegState] = {
    (S.NEW, In.INVITED): S.CALLING,
    (S.NEW, In.ENDED): S.ENDED,  # refused before anything was sent
    (S.CALLING, In.RANG): S.RINGING,
    (S.CALLING, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.CALLING, In.ANSWERED): S.ANSWERED,
    (S.CALLING, In.ENDED): S.ENDED,
    (S.RINGING, In.RANG): S.RINGING,
    (S.RINGING, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.RINGING, In.ANSWERED): S.ANSWERED,
    (S.RINGING, In.ENDED): S.ENDED,
    (S.EARLY_MEDIA, In.RANG): S.EARLY_MEDIA,  # a 180 after a 183 keeps the media
    (S.EARLY_MEDIA, In.EARLY_MEDIA): S.EARLY_MEDIA,
    (S.EARLY_MEDIA, In.ANSWERED): S.ANSWERED,
    (S.EARLY_MEDIA, In.ENDED): S.ENDED,
    (S.ANSWERED, In.ANSWERED): S.ANSWERED,
    (S.ANSWERED, In.ENDED): S.ENDED,
    (S.ENDED, In.ENDED): S.ENDED,
}


class IllegalTransition(RuntimeError):
    """A leg got an input its state has no edge for."""


@dataclass
class LegMachine:
    """Current state of one leg; ``outbound`` decides what an unanswered leg is called."""

    call_sid: str
    outbound: bool = True
    state: LegState = LegState.NEW

    def process(self, event: LegInput) -> bool:
        """Take the edge for ``event``; True when the state changed."""
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            raise IllegalTransition(f"{self.call_sid}: {event.value} in {old.value}")
        if new is old:
            return False
        self.state = new
        log.debug("%s: leg %s -> %s", self.call_sid, old.value, new.value)
        return True

    @property
    def live(self) -> bool:
        return self.state is not LegState.ENDED

    @property
    def answered(self) -> bool:
        return self.state is LegState.ANSWERED

    @property
    def call_status(self) -> CallStatus:
        """Twilio's ``CallStatus`` while the leg is live (``completed`` once ended).

        An inbound INVITE not answered yet is ``ringing`` (Twilio's voice request);
        an outbound one is ``initiated`` until the far end rings.
        """
        state = self.state
        if state is LegState.CALLING and not self.outbound:
            return CallStatus.RINGING
        return _LIVE_STATUS[state]


_LIVE_STATUS = {
    LegState.NEW: CallStatus.QUEUED,
    LegState.CALLING: CallStatus.INITIATED,
    LegState.RINGING: CallStatus.RINGING,
    LegState.EARLY_MEDIA: CallStatus.RINGING,
    LegState.ANSWERED: CallStatus.IN_PROGRESS,
    LegState.ENDED: CallStatus.COMPLETED,
}
