"""Per-source limits on INVITEs and OPTIONS, so one noisy source cannot take the
capacity of others.

REGISTERs already have the registrar's limiter; this one counts out-of-dialog
INVITEs and OPTIONS per source address (an IPv6 source by its /64), each in a
token bucket of ``rate`` per second and ``burst`` at once (``[limits]``). A
request beyond it is answered 503 with ``Retry-After`` before pjsip makes a
transaction or a call of it (RFC 3261 section 21.5.4), and counted. Sources
listed as trusted (a carrier's signalling addresses, which send every call of
a trunk) are never limited. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

from switch.registrar.throttle import RateLimiter

RETRY_AFTER = "5"


class FloodGuard:
    def __init__(
        self,
        invite_rate: float,
        invite_burst: float,
        options_rate: float,
        options_burst: float,
        trusted: Iterable[str] = (),
    ):
        self._limiters = {
            "INVITE": RateLimiter(rate=invite_rate, burst=invite_burst),
            "OPTIONS": RateLimiter(rate=options_rate, burst=options_burst),
        }
        self._trusted = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self.refused: Counter[str] = Counter()

    def admit(self, method: str, source_ip: str, now: float) -> tuple[int, str, str] | None:
        """None to let the request through, else (status, reason, Retry-After)."""
        limiter = self._limiters.get(method)
        if limiter is None or self._is_trusted(source_ip):
            return None
        if limiter.allow(source_ip, now):
            return None
        self.refused[method] += 1
        return 503, "Service Unavailable (too many requests from this source)", RETRY_AFTER

    def _is_trusted(self, source_ip: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(source_ip.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self._trusted)
