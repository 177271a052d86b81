"""What the REST API asks of a live call: frozen commands, delivered to the call's actor.

Twilio's call update (POST to ``/Calls/{CallSid}.json``): ``Url`` (+``Method``)
or ``Twiml`` replace whatever the call is doing with a new document, at once,
also in the middle of a ``<Dial>``; ``Status=completed`` hangs a live call up;
``Status=canceled`` withdraws a call that is queued or ringing and leaves an
answered one alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switch.rcml.model import Document


@dataclass(frozen=True)
class Redirect:
    """Fetch the document at ``url`` with ``method`` and run it instead."""

    url: str
    method: str


@dataclass(frozen=True)
class RunTwiml:
    """Run ``document`` (parsed from the request's ``Twiml``) instead."""

    document: Document


@dataclass(frozen=True)
class HangUpCall:
    """``Status=completed``: end the call in whatever state it is."""


@dataclass(frozen=True)
class CancelCall:
    """``Status=canceled``: end the call only if it has not been answered."""


Command = Redirect | RunTwiml | HangUpCall | CancelCall
NewDocument = Redirect | RunTwiml
