"""Admission against ``[dial] max_calls``, counted in call legs.

Every leg takes one of the engine's call slots and one RTP/RTCP port pair,
whatever made it: an inbound INVITE, a ``<Dial>`` branch, an API call. So
``max_calls`` counts legs of every kind, and new work is refused while the
live legs (plus the API calls accepted but not placed yet) are at it:

- an inbound INVITE gets 503 with Retry-After before the engine gives it a
  slot (switch/app.py, from the SIP stack's request screen);
- a ``<Dial>`` branch fails at once with 503, the others still ring;
- a REST creation gets 503 with Twilio's 20503.

The calls already up are never touched. `Capacity` decides; it says when a
refusal is the first since there was room, so the switch logs reaching
capacity once per episode instead of once per refused call.
"""

from __future__ import annotations

import enum

ENGINE_SLOTS = 4096
"""PJSUA_MAX_CALLS of the project's pjsua2 build (deploy/pjsua2/config_site.h): 2000
bridged calls and the headroom."""
SLOT_HEADROOM = 48
"""Slots kept free of ``max_calls``: legs still being torn down hold theirs a moment."""
MAX_LEGS = ENGINE_SLOTS - SLOT_HEADROOM
"""The largest ``max_calls`` this build carries."""
DEFAULT_MAX_CALLS = 2000
"""``max_calls`` unless configured: 1000 bridged calls, which a 2-core machine carries
with RTP both ways (bench/relay_bench.py)."""
ERROR_CAPACITY = 20503
"""Twilio's "Service unavailable": the REST error, and the notification of a
``<Dial>`` branch refused at capacity."""


class Admission(enum.Enum):
    ADMITTED = "admitted"
    FULL = "full"
    NEWLY_FULL = "newly full"  # refused, and the first refusal since there was room
    STOPPING = "stopping"

    @property
    def admitted(self) -> bool:
        return self is Admission.ADMITTED


class Capacity:
    """Whether one more leg fits under ``max_legs``."""

    def __init__(self, max_legs: int) -> None:
        self.max_legs = max_legs
        self.stopping = False
        self._full = False

    def admit(self, legs: int) -> Admission:
        """For a new leg while ``legs`` are live or promised."""
        if self.stopping:
            return Admission.STOPPING
        if legs < self.max_legs:
            self._full = False
            return Admission.ADMITTED
        if self._full:
            return Admission.FULL
        self._full = True
        return Admission.NEWLY_FULL
