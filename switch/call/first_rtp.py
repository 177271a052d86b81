"""When to look again for a leg's first RTP packet.

A bridged pair is relayed once both legs have sent RTP
(switch/call/media_paths.py). The engine learns that a leg has by reading its
received-packet count, a call into pjsua2 that costs tens of microseconds. Most
legs send within a fraction of a second; some never do (a phone that sends
nothing while muted, a far end that holds the call, a test without media). With
thousands of calls up, looking at each of those every fraction of a second took
the event loop whole milliseconds at a time, so each leg is looked at first at the
next look after it starts waiting, then after ``first`` seconds, and the wait
doubles with each look that finds nothing, up to ``longest``. A leg that starts
sending late is relayed at most ``longest`` seconds after; the bridge carries its
audio meanwhile.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from dataclasses import dataclass

FIRST_WAIT = 0.2
"""Seconds between the first looks at a waiting leg."""
LONGEST_WAIT = 5.0
"""The most seconds between two looks at a leg that has sent nothing yet."""


@dataclass
class _Look:
    at: float  # when the leg is looked at next
    wait: float  # seconds to the look after that one


class FirstRtpLooks:
    def __init__(self, first: float = FIRST_WAIT, longest: float = LONGEST_WAIT) -> None:
        self.first = first
        self.longest = longest
        self._looks: dict[Hashable, _Look] = {}

    def due(self, waiting: Collection[Hashable], now: float) -> list[Hashable]:
        """The legs of ``waiting`` to look at now: a leg new to it at once, the others
        when their wait is over. Legs no longer waiting are forgotten."""
        looks: dict[Hashable, _Look] = {}
        due = []
        for leg in waiting:
            look = looks[leg] = self._looks.get(leg) or _Look(now, self.first)
            if now >= look.at:
                due.append(leg)
        self._looks = looks
        return due

    def nothing_yet(self, leg: Hashable, now: float) -> None:
        """A look at ``leg`` found no packet: the next one waits longer."""
        look = self._looks.get(leg)
        if look is not None:
            look.at = now + look.wait
            look.wait = min(look.wait * 2, self.longest)
