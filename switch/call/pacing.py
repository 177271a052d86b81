"""When each API-created call may start: at most ``rate`` per second.

Twilio's account CPS: calls created faster than the rate are not refused, they
wait as ``queued`` and start one interval apart, in order of creation. Pure:
the caller passes ``now`` (loop time) and sleeps until the slot it is given.
"""

from __future__ import annotations


class Pacer:
    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = float("-inf")

    def slot(self, now: float) -> float:
        """The time the next call may start (``now`` when the rate allows it)."""
        start = max(now, self._next)
        self._next = start + self.interval
        return start
