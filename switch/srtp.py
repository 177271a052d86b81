"""Whether an SDP offer can be answered under a leg's SRTP setting.

pjsua answers every offer under the accounts' ``optional`` policy: SRTP for an
offer with keys, plain RTP for one without. The setting of the client or the
``[sip] srtp`` default narrows that before the call is answered
(switch.config_tls has the three modes): ``mandatory`` refuses an offer with no
SDES keys (a best-effort offer, RTP/AVP with keys, is answered with SRTP), ``off``
refuses an offer that allows nothing but SRTP (RTP/SAVP). Both get 488 with the
reason.

A browser's leg (mode ``dtls``) is keyed by DTLS-SRTP (RFC 5764, RFC 8827): its
offer must carry a certificate fingerprint (``a=fingerprint``, at session or
media level) and a codec the switch speaks; else 488 too.
"""

from __future__ import annotations

from dataclasses import dataclass

SECURE_PROFILES = frozenset({"RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"})
BROWSER_CODECS = frozenset({"opus", "pcmu", "pcma", "g722"})
"""What a browser's audio may be in: the engine's codecs a WebRTC peer has."""
STATIC_PAYLOADS = {"0": "pcmu", "8": "pcma", "9": "g722"}


@dataclass(frozen=True)
class AudioOffer:
    """The first audio stream of an SDP offer: its profile, whether it has SDES keys
    or a DTLS fingerprint, and its codecs (lowercase encoding names)."""

    profile: str
    keyed: bool
    fingerprint: bool = False
    codecs: frozenset[str] = frozenset()

    @property
    def requires_srtp(self) -> bool:
        return self.profile.upper() in SECURE_PROFILES


def audio_offer(sdp: str) -> AudioOffer | None:
    """The first ``m=audio`` line of ``sdp`` with its ``a=crypto`` lines; None if absent."""
    profile: str | None = None
    keyed = fingerprint = False
    payloads: set[str] = set()
    codecs: set[str] = set()
    for raw in sdp.splitlines():
        line = raw.strip()
        lower = line.lower()
        if line.startswith("m="):
            if profile is not None:
                break  # the audio stream's attributes end at the next m= line
            fields = line[2:].split()
            if len(fields) >= 3 and fields[0].lower() == "audio":
                profile = fields[2]
                payloads = set(fields[3:])
                codecs = {STATIC_PAYLOADS[p] for p in payloads if p in STATIC_PAYLOADS}
        elif lower.startswith("a=fingerprint:"):
            fingerprint = True  # session level counts for every stream (RFC 8122)
        elif profile is not None and lower.startswith("a=crypto:"):
            keyed = True
        elif profile is not None and lower.startswith("a=rtpmap:"):
            payload, _, encoding = lower[9:].partition(" ")
            if payload in payloads:
                codecs.add(encoding.split("/", 1)[0])
    if profile is None:
        return None
    return AudioOffer(profile, keyed, fingerprint, frozenset(codecs))


def refusal(mode: str, sdp: str) -> str | None:
    """The 488 reason for an offer ``mode`` cannot accept, or None to answer it.

    An INVITE without an offer (the answer comes in the ACK) is accepted: our
    own offer follows the account's policy.
    """
    offer = audio_offer(sdp)
    if offer is None:
        return None
    if mode == "dtls":
        if not offer.fingerprint:
            return "DTLS Fingerprint Required"
        if not offer.codecs & BROWSER_CODECS:
            return "No Common Codec (opus, PCMU, PCMA or G722)"
        return None
    if mode == "mandatory" and not offer.keyed:
        return "SRTP Required"
    if mode == "off" and offer.requires_srtp:
        return "SRTP Not Accepted"
    return None
