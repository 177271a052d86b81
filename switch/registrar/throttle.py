"""Per-source limits in front of the registrar.

`FailureThrottle` blocks a source after too many failed authentications in a
window (password guessing, as sipvicious does); `RateLimiter` gives each source
its own token bucket, so one source flooding REGISTERs is refused on its own and
never slows the others down.

Both key a source by its address, with IPv6 addresses folded into their /64
(``ipv6_prefix``): one host usually owns the whole /64, and counting its addresses
one by one would let it dodge both limits. Memory is bounded by ``max_sources``;
when full, the least recently seen source is forgotten first. Pure code: every
call takes ``now``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["FailureThrottle", "RateLimiter", "source_key"]


def source_key(source_ip: str, ipv6_prefix: int = 64) -> str:
    """The key a source is counted under: an IPv4 address or an IPv6 network.

    An IPv4-mapped IPv6 address counts as its IPv4 address; a string that is not
    an address (a hostname, say) is used as it is.
    """
    text = source_ip.strip().removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return source_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


@dataclass
class _Failures:
    times: deque[float]
    blocked_until: float = float("-inf")


@dataclass
class FailureThrottle:
    """Block a source for ``block_for`` seconds once it has failed ``max_failures``
    times within ``window`` seconds; a success clears its failure count."""

    max_failures: int = 10
    window: float = 60.0
    block_for: float = 300.0
    max_sources: int = 100_000
    ipv6_prefix: int = 64
    _sources: OrderedDict[str, _Failures] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_sources < 1:
            raise ValueError("max_failures and max_sources must be at least 1")
        if self.window <= 0 or self.block_for <= 0:
            raise ValueError("window and block_for must be positive")

    def __len__(self) -> int:
        return len(self._sources)

    def record_failure(self, source_ip: str, now: float) -> bool:
        """Count one failure; returns True when the source is now blocked."""
        key = source_key(source_ip, self.ipv6_prefix)
        entry = self._sources.get(key)
        if entry is None:
            entry = _Failures(deque(maxlen=self.max_failures))
            self._sources[key] = entry
        else:
            self._sources.move_to_end(key)
        self._drop_old(entry, now)
        entry.times.append(now)
        if len(entry.times) >= self.max_failures:
            entry.blocked_until = now + self.block_for
            entry.times.clear()
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return entry.blocked_until > now

    def record_success(self, source_ip: str, now: float) -> None:
        """Forget the source's failures; a block in force stays until it ends."""
        key = source_key(source_ip, self.ipv6_prefix)
        entry = self._sources.get(key)
        if entry is None:
            return
        entry.times.clear()
        if entry.blocked_until <= now:
            del self._sources[key]

    def blocked(self, source_ip: str, now: float) -> bool:
        key = source_key(source_ip, self.ipv6_prefix)
        entry = self._sources.get(key)
        if entry is None:
            return False
        if entry.blocked_until > now:
            return True
        self._drop_old(entry, now)
        if not entry.times:
            del self._sources[key]
        return False

    def purge(self, now: float) -> int:
        """Forget sources with no block in force and no failure in the window."""
        idle = []
        for key, entry in self._sources.items():
            self._drop_old(entry, now)
            if entry.blocked_until <= now and not entry.times:
                idle.append(key)
        for key in idle:
            del self._sources[key]
        return len(idle)

    def _drop_old(self, entry: _Failures, now: float) -> None:
        while entry.times and entry.times[0] <= now - self.window:
            entry.times.popleft()


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


@dataclass
class RateLimiter:
    """A token bucket per source: ``rate`` requests a second, bursts up to ``burst``.

    A source forgotten to make room starts again with a full bucket, which loses
    nothing when it was idle for ``burst / rate`` seconds, as the least recently
    seen source usually was.
    """

    rate: float = 10.0
    burst: float = 20.0
    max_sources: int = 100_000
    ipv6_prefix: int = 64
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        if self.max_sources < 1:
            raise ValueError("max_sources must be at least 1")

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source_ip: str, now: float) -> bool:
        """Take one token from the source's bucket; False when it is empty."""
        key = source_key(source_ip, self.ipv6_prefix)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated_at)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated_at = max(bucket.updated_at, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def purge(self, now: float) -> int:
        """Forget sources whose bucket has refilled: they would start full anyway."""
        full_after = self.burst / self.rate
        idle = [key for key, b in self._buckets.items() if now - b.updated_at >= full_after]
        for key in idle:
            del self._buckets[key]
        return len(idle)
