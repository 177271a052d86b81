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
    """The leg is gone. ``sip_code`` is the final status (200 after a BYE)."""

    sip_code: int
    reason: str


@dataclass(frozen=True)
class DtmfReceived:
    """A digit arrived from this leg's peer (RFC 4733 or SIP INFO)."""

    digit: str


LegEvent = LegProgressed | LegAnswered | LegMediaReady | LegEnded | DtmfReceived
