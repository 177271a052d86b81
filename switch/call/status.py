"""The one vocabulary of call statuses and release codes.

Twilio's ``CallStatus`` of a leg, live and final, and how a SIP outcome maps
onto it, are decided here and nowhere else (SEMANTICS.md, "Dial and its nouns").

- While live: ``queued`` (not sent yet: an API call waiting for its turn),
  ``initiated`` (our INVITE is out, nothing heard), ``ringing`` (18x heard, or an
  inbound INVITE not answered yet), ``in-progress`` (answered).
- Final: ``completed`` (it was answered), ``busy`` (486/600/603), ``no-answer``
  (408/480/487, or we gave up waiting), ``canceled`` (we withdrew it before
  answer: the REST API, the caller leaving, another branch winning) and
  ``failed`` (everything else: no route, 404, 5xx, nothing sent).

A leg we cancelled ends with the status the canceller chose, whatever SIP
status came back (a 487 to our own CANCEL says nothing about the callee).
"""

from __future__ import annotations

import enum


class CallStatus(enum.StrEnum):
    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.CANCELED,
        CallStatus.FAILED,
    }
)

BUSY_CODES = frozenset({486, 600, 603})
NO_ANSWER_CODES = frozenset({408, 480, 487})

_RELEASE = {
    CallStatus.BUSY: (486, "Busy Here"),
    CallStatus.NO_ANSWER: (480, "Temporarily Unavailable"),
}
UNAVAILABLE = (503, "Service Unavailable")
ERROR_SIP_ENDPOINT = 32011
"""Twilio's "error communicating with your SIP infrastructure": a leg whose far end
could not be reached (its transport failed, e.g. a TLS certificate was refused)."""


def status_of_code(sip_code: int | None) -> CallStatus:
    """The final status of an unanswered leg that ended with ``sip_code`` by itself."""
    if sip_code in BUSY_CODES:
        return CallStatus.BUSY
    if sip_code in NO_ANSWER_CODES:
        return CallStatus.NO_ANSWER
    return CallStatus.FAILED


def final_status(
    answered: bool, sip_code: int | None, cancelled_as: CallStatus | None = None
) -> CallStatus:
    """Twilio's final ``CallStatus`` of a leg from how it ended.

    ``cancelled_as`` is the status chosen by whoever withdrew the leg before it
    answered (``no-answer`` on a timeout, ``canceled`` otherwise).
    """
    if answered:
        return CallStatus.COMPLETED
    if cancelled_as is not None:
        return cancelled_as
    return status_of_code(sip_code)


def release_code(status: str, last_code: int | None, last_reason: str) -> tuple[int, str]:
    """The final response for an unanswered caller whose ``<Dial>`` did not connect.

    busy -> 486, no-answer -> 480; otherwise the last target's own failure when
    it is a 4xx-6xx, else 503 (answerOnBridge, SEMANTICS.md).
    """
    mapped = _RELEASE.get(status)  # type: ignore[call-overload]
    if mapped is not None:
        return mapped
    if last_code is not None and 400 <= last_code < 700:
        return last_code, last_reason
    return UNAVAILABLE
