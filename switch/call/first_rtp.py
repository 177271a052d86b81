"""When to look again for a leg's first RTP packet.

A bridged pair is relayed once both legs have sent RTP
(switch/call/media_paths.py). The engine learns that a leg has by reading its
received-packet count, a call into pjsua2 that costs tens of microseconds. Most
legs send within a fraction of a second, and the sooner their pair leaves the
bridge the better, so a waiting leg is looked at on the first look after it starts
waiting and then every ``first`` seconds for ``patience`` seconds. Some never send
(a phone that sends nothing while muted, a far end that holds the call, a test
without media): with thousands of calls up, reading each of those every fraction of
a second took the event loop whole milliseconds at a time, so past ``patience`` the
wait doubles with each look that finds nothing, up to ``longest``. A leg that
starts sending late is relayed at most ``longest`` seconds after; the bridge
carries its audio meanwhile.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from dataclasses import dataclass

FIRST_WAIT = 0.2
"""Seconds between the looks at a leg that started waiting less than PATIENCE ago."""
PATIENCE = 2.0
"""Seconds a leg is looked at every FIRST_WAIT before the waits grow."""
LONGEST_WAIT = 5.0
"""The most seconds between two looks at a leg that has sent nothing yet."""


@dataclass
class _Look:
    since: float  # when the leg started waiting
    at: float  # when it is looked at next
    wait: float  # seconds between looks once past patience


class FirstRtpLooks:
    def __init__(
        self, first: float = FIRST_WAIT, patience: float = PATIENCE, longest: float = LONGEST_WAIT
    ) -> None:
        self.first = first
        self.patience = patience
        self.longest = longest
        self._looks: dict[Hashable, _Look] = {}

    def due(self, waiting: Collection[Hashable], now: float) -> list[Hashable]:
        """The legs of ``waiting`` to look at now: a leg new to it at once, the others
        when their wait is over. Legs no longer waiting are forgotten."""
        looks: dict[Hashable, _Look] = {}
        due = []
        for leg in waiting:
            look = looks[leg] = self._looks.get(leg) or _Look(now, now, self.first)
            if now >= look.at:
                due.append(leg)
        self._looks = looks
        return due

    def clear(self) -> None:
        """No leg waits any more: keep none (a leg kept here would outlive its call)."""
        self._looks = {}

    def nothing_yet(self, leg: Hashable, now: float) -> None:
        """A look at ``leg`` found no packet: when to look next."""
        look = self._looks.get(leg)
        if look is None:
            return
        if now - look.since < self.patience:
            look.at = now + self.first
            return
        look.at = now + look.wait
        look.wait = min(look.wait * 2, self.longest)
