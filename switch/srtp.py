"""Whether an SDP offer can be answered under a leg's SRTP setting.

pjsua answers every offer under the accounts' ``optional`` policy: SRTP for an
offer with keys, plain RTP for one without. The setting of the client or the
``[sip] srtp`` default narrows that before the call is answered
(switch.config_tls has the three modes): ``mandatory`` refuses an offer with no
SDES keys (a best-effort offer, RTP/AVP with keys, is answered with SRTP), ``off``
refuses an offer that allows nothing but SRTP (RTP/SAVP). Both get 488 with the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass

SECURE_PROFILES = frozenset({"RTP/SAVP", "RTP/SAVPF"})


@dataclass(frozen=True)
class AudioOffer:
    """The first audio stream of an SDP offer: its profile and whether it has keys."""

    profile: str
    keyed: bool

    @property
    def requires_srtp(self) -> bool:
        return self.profile.upper() in SECURE_PROFILES


def audio_offer(sdp: str) -> AudioOffer | None:
    """The first ``m=audio`` line of ``sdp`` with its ``a=crypto`` lines; None if absent."""
    profile: str | None = None
    keyed = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if profile is not None:
                break  # the audio stream's attributes end at the next m= line
            fields = line[2:].split()
            if len(fields) >= 3 and fields[0].lower() == "audio":
                profile = fields[2]
        elif profile is not None and line.lower().startswith("a=crypto:"):
            keyed = True
    return None if profile is None else AudioOffer(profile, keyed)


def refusal(mode: str, sdp: str) -> str | None:
    """The 488 reason for an offer ``mode`` cannot accept, or None to answer it.

    An INVITE without an offer (the answer comes in the ACK) is accepted: our
    own offer follows the account's policy.
    """
    offer = audio_offer(sdp)
    if offer is None:
        return None
    if mode == "mandatory" and not offer.keyed:
        return "SRTP Required"
    if mode == "off" and offer.requires_srtp:
        return "SRTP Not Accepted"
    return None
