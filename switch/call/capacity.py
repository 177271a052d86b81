"""Admission against ``[dial] max_calls``, counted in call legs.

Every leg takes one of the engine's call slots and one RTP/RTCP port pair,
whatever made it: an inbound INVITE, a ``<Dial>`` branch, an API call. So
``max_calls`` counts legs of every kind, and new work is refused while the
legs held are at it: the live ones, the API calls accepted but not placed
yet, and one kept for each call that has placed no ``<Dial>`` branch yet
(switch/call/registry.py), so that a call let in always has a leg for its
first callee:

- an inbound INVITE gets 503 with Retry-After before the engine gives it a
  slot (switch/app.py, from the SIP stack's request screen);
- a ``<Dial>`` branch beyond the one kept for its call fails at once with
  503, the others still ring;
- a REST creation gets 503 with Twilio's 20503.

The calls already up are never touched. `Capacity` decides; it says when a
refusal starts an episode (the first after ``QUIET`` seconds without one), so
the switch logs reaching capacity once per episode instead of once per
refused call, or once per call let in between two refusals.

Legs are not the only limit: past the rate the machine carries, the event loop
falls behind, webhooks and answers come late and calls admitted earlier fail.
`LoopLoad` follows how late the loop runs; while it is behind, new calls
(inbound and API) are refused the same way, and a ``<Dial>`` branch of a call
already admitted still goes ahead.
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
RETRY_AFTER = "5"
"""Seconds an INVITE refused for want of capacity (``max_calls``, RTP ports) is told
to wait."""
ERROR_CAPACITY = 20503
"""Twilio's "Service unavailable": the REST error, and the notification of a
``<Dial>`` branch refused at capacity."""


class Admission(enum.Enum):
    ADMITTED = "admitted"
    FULL = "full"
    NEWLY_FULL = "newly full"  # refused, and the first refusal for QUIET seconds
    BEHIND = "behind"  # refused: the event loop runs late (LoopLoad)
    NEWLY_BEHIND = "newly behind"
    STOPPING = "stopping"

    @property
    def admitted(self) -> bool:
        return self is Admission.ADMITTED


QUIET = 30.0
"""Seconds without a refusal that end an episode of them."""

LAG_BEHIND = 0.25
"""Seconds the event loop may run late (smoothed) before new calls are refused."""
LAG_CAUGHT_UP = 0.05
"""... and how little before they are admitted again."""
LAG_SMOOTHING = 0.2  # weight of each new observation


class LoopLoad:
    """How far behind the event loop runs, from how late its periodic tasks wake
    (seconds, smoothed), with hysteresis between behind and caught up."""

    def __init__(self) -> None:
        self.lag = 0.0
        self.behind = False

    def observe(self, late: float) -> None:
        """A task that asked to wake at some time woke ``late`` seconds after it."""
        self.lag += LAG_SMOOTHING * (max(late, 0.0) - self.lag)
        if self.lag > LAG_BEHIND:
            self.behind = True
        elif self.lag < LAG_CAUGHT_UP:
            self.behind = False


class Capacity:
    """Whether one more leg fits under ``max_legs``, and the loop keeps up."""

    def __init__(self, max_legs: int) -> None:
        self.max_legs = max_legs
        self.stopping = False
        self.load = LoopLoad()
        self._refused_at = -QUIET  # the last refusal (monotonic seconds)

    def admit(self, legs: int, now: float, new_call: bool = True) -> Admission:
        """For a new leg while ``legs`` are live or held, at ``now``; ``new_call``: the
        leg starts a call (inbound, API) rather than a branch of one already up."""
        if self.stopping:
            return Admission.STOPPING
        behind = new_call and self.load.behind
        if legs < self.max_legs and not behind:
            return Admission.ADMITTED
        first = now - self._refused_at >= QUIET
        self._refused_at = now
        if legs >= self.max_legs:
            return Admission.NEWLY_FULL if first else Admission.FULL
        return Admission.NEWLY_BEHIND if first else Admission.BEHIND
