"""What a call leg tells its owner. Frozen, past tense, free of pjsua2 types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LegProgressed:
    """A provisional response was seen (outbound) - 180, or 183 with ``early_media``."""

    sip_code: int
    early_media: bool


@dataclass(frozen=True)
class LegAnswered:
    """The dialog is confirmed (2xx sent or received)."""


@dataclass(frozen=True)
class LegMediaReady:
    """Audio is flowing on this leg (after answer, or early media)."""


@dataclass(frozen=True)
class LegEnded:
    """The leg is gone. ``sip_code`` is the final status (200 after a BYE).

    ``failure`` says, in words, why the far end was never reached when the
    transport failed before it could answer (a TLS certificate refused); else "".
    """

    sip_code: int
    reason: str
    failure: str = ""


@dataclass(frozen=True)
class DtmfReceived:
    """A digit arrived from this leg's peer (RFC 4733 or SIP INFO)."""

    digit: str


@dataclass(frozen=True)
class TransferRequested:
    """The peer sent a REFER (RFC 3515): ``accepted`` with 202, else declined with 603.

    ``refer_to`` is the Refer-To URI (angle brackets and header parameters
    removed), ``headers`` the REFER's ``X-`` headers. ``subscription`` is False
    when the REFER said ``Refer-Sub: false`` (RFC 4488): no NOTIFY is wanted.
    """

    refer_to: str
    headers: tuple[tuple[str, str], ...]
    subscription: bool
    accepted: bool


@dataclass(frozen=True)
class TimeLimitReached:
    """The call's own time limit ran out (an API call's ``TimeLimit``)."""


LegEvent = LegProgressed | LegAnswered | LegMediaReady | LegEnded | DtmfReceived | TransferRequested
