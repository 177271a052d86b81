"""Which answered legs have stopped sending RTP (``[media] rtp_timeout``).

A far end that vanished without a BYE (a crashed phone, a NAT mapping gone, a
carrier that lost the call) leaves a leg that holds a call slot and a port pair
for ever. The engine reads each answered leg's received-packet count every few
seconds and asks `RtpWatch`; a leg whose count has not moved for the timeout is
hung up. A leg put on hold by its far end (it sends nothing by design) is not
timed: its clock restarts when it is taken off hold.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass


@dataclass
class _Seen:
    packets: int
    since: float  # when the count last moved, or timing (re)started


class RtpWatch:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[Hashable, _Seen] = {}

    def silent(
        self, leg: Hashable, packets: int, receiving: Callable[[], bool], now: float
    ) -> bool:
        """Whether ``leg`` received no RTP for the timeout: ``packets`` is its count of
        received packets now; ``receiving()`` is False while its far end holds it, and
        is asked only when the count has not moved (it costs a look at the call)."""
        seen = self._seen.get(leg)
        if seen is None or packets != seen.packets or not receiving():
            self._seen[leg] = _Seen(packets, now)
            return False
        return now - seen.since >= self.timeout

    def keep_only(self, legs: Iterable[Hashable]) -> None:
        """Forget the legs that are gone."""
        live = set(legs)
        for leg in [leg for leg in self._seen if leg not in live]:
            del self._seen[leg]
