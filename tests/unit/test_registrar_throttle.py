"""Failure blocking and per-source token buckets, with an injected clock."""

from __future__ import annotations

import pytest

from switch.registrar.throttle import FailureThrottle, RateLimiter, source_key

T0 = 1_700_000_000.0
ATTACKER = "198.51.100.66"
PHONE = "203.0.113.9"


def test_blocks_after_max_failures_within_the_window() -> None:
    throttle = FailureThrottle(max_failures=3, window=60.0, block_for=300.0)
    assert throttle.record_failure(ATTACKER, T0) is False
    assert throttle.record_failure(ATTACKER, T0 + 10) is False
    assert not throttle.blocked(ATTACKER, T0 + 10)
    assert throttle.record_failure(ATTACKER, T0 + 20) is True
    assert throttle.blocked(ATTACKER, T0 + 20)
    assert throttle.blocked(ATTACKER, T0 + 319.9)
    assert not throttle.blocked(ATTACKER, T0 + 320)


def test_failures_outside_the_window_do_not_add_up() -> None:
    throttle = FailureThrottle(max_failures=3, window=60.0)
    for minute in range(10):
        throttle.record_failure(ATTACKER, T0 + minute * 31)
    assert not throttle.blocked(ATTACKER, T0 + 300)


def test_success_clears_failures_but_not_a_block() -> None:
    throttle = FailureThrottle(max_failures=3)
    throttle.record_failure(PHONE, T0)
    throttle.record_failure(PHONE, T0 + 1)
    throttle.record_success(PHONE, T0 + 2)
    assert throttle.record_failure(PHONE, T0 + 3) is False
    assert len(throttle) == 1
    throttle.record_failure(PHONE, T0 + 4)
    throttle.record_failure(PHONE, T0 + 5)
    throttle.record_success(PHONE, T0 + 6)
    assert throttle.blocked(PHONE, T0 + 6)


def test_one_source_does_not_block_another() -> None:
    throttle = FailureThrottle(max_failures=2)
    throttle.record_failure(ATTACKER, T0)
    throttle.record_failure(ATTACKER, T0)
    assert throttle.blocked(ATTACKER, T0)
    assert not throttle.blocked(PHONE, T0)
    assert not throttle.record_failure(PHONE, T0)


def test_ipv6_sources_count_per_64() -> None:
    throttle = FailureThrottle(max_failures=2)
    throttle.record_failure("2001:db8:1:2::1", T0)
    throttle.record_failure("[2001:db8:1:2:ffff::9]", T0)
    assert throttle.blocked("2001:db8:1:2::42", T0)
    assert not throttle.blocked("2001:db8:1:3::1", T0)


def test_source_keys() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8::1") == "2001:db8::/64"
    assert source_key("2001:db8::1", ipv6_prefix=128) == "2001:db8::1/128"
    assert source_key("not-an-address") == "not-an-address"


def test_memory_is_bounded_and_idle_sources_go() -> None:
    throttle = FailureThrottle(max_failures=5, window=60.0, max_sources=100)
    for index in range(1000):
        throttle.record_failure(f"10.0.{index // 256}.{index % 256}", T0 + index * 0.01)
    assert len(throttle) == 100
    assert throttle.purge(T0 + 200) == 100
    assert len(throttle) == 0


def test_expired_entries_leave_on_check() -> None:
    throttle = FailureThrottle(max_failures=2, window=60.0, block_for=100.0)
    throttle.record_failure(ATTACKER, T0)
    assert not throttle.blocked(ATTACKER, T0 + 61)
    assert len(throttle) == 0
    throttle.record_failure(ATTACKER, T0)
    throttle.record_failure(ATTACKER, T0)
    assert throttle.purge(T0 + 50) == 0
    assert throttle.blocked(ATTACKER, T0 + 50)
    assert not throttle.blocked(ATTACKER, T0 + 101)
    assert len(throttle) == 0


def test_bucket_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=5.0)
    assert [limiter.allow(ATTACKER, T0) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.allow(ATTACKER, T0 + 0.4)
    assert limiter.allow(ATTACKER, T0 + 0.5)
    assert not limiter.allow(ATTACKER, T0 + 0.5)
    # A long pause refills to the burst, no further.
    assert sum(limiter.allow(ATTACKER, T0 + 100) for _ in range(10)) == 5


def test_a_flooding_source_does_not_slow_the_others() -> None:
    limiter = RateLimiter(rate=1.0, burst=3.0)
    flood = [limiter.allow(ATTACKER, T0 + i * 0.001) for i in range(1100)]
    assert sum(flood) == 4  # the burst plus one token refilled over 1.1 s
    assert all(limiter.allow(f"192.0.2.{n}", T0 + 1) for n in range(1, 50))


def test_clock_going_back_adds_no_tokens() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow(PHONE, T0 + 10)
    assert not limiter.allow(PHONE, T0)
    assert not limiter.allow(PHONE, T0 + 10.5)
    assert limiter.allow(PHONE, T0 + 11)


def test_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0, max_sources=10)
    for index in range(500):
        limiter.allow(f"10.1.{index // 256}.{index % 256}", T0)
    assert len(limiter) == 10
    assert limiter.purge(T0 + 1) == 0
    assert limiter.purge(T0 + 2) == 10


@pytest.mark.parametrize(
    "build",
    [
        lambda: FailureThrottle(max_failures=0),
        lambda: FailureThrottle(window=0),
        lambda: RateLimiter(rate=0),
        lambda: RateLimiter(burst=0.5),
        lambda: RateLimiter(max_sources=0),
    ],
)
def test_bad_settings(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_success_from_an_unknown_source_is_a_no_op() -> None:
    throttle = FailureThrottle()
    throttle.record_success(PHONE, T0)
    assert len(throttle) == 0
