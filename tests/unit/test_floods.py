"""Per-source limits on out-of-dialog INVITEs and OPTIONS."""

from __future__ import annotations

from switch.floods import FloodGuard


def guard(**trusted: object) -> FloodGuard:
    return FloodGuard(10, 20, 2, 4, trusted=trusted.get("trusted", ()))  # type: ignore[arg-type]


def test_a_source_gets_its_burst_then_its_rate_then_503() -> None:
    flood = guard()
    answers = [flood.admit("INVITE", "192.0.2.1", 0.0) for _ in range(25)]
    assert answers[:20] == [None] * 20
    assert answers[20] == (503, "Service Unavailable (too many requests from this source)", "5")
    assert flood.refused["INVITE"] == 5
    assert flood.admit("INVITE", "192.0.2.1", 0.1) is None  # one token back after 0.1 s
    assert flood.admit("INVITE", "192.0.2.1", 0.1) is not None


def test_sources_and_methods_are_counted_apart() -> None:
    flood = guard()
    for _ in range(20):
        flood.admit("INVITE", "192.0.2.1", 0.0)
    assert flood.admit("INVITE", "192.0.2.2", 0.0) is None  # another source
    assert [flood.admit("OPTIONS", "192.0.2.1", 0.0) for _ in range(5)][-1] is not None
    assert flood.admit("REGISTER", "192.0.2.1", 0.0) is None  # the registrar limits those
    assert flood.admit("BYE", "192.0.2.1", 0.0) is None


def test_an_ipv6_source_counts_by_its_64() -> None:
    flood = guard()
    for n in range(20):
        assert flood.admit("INVITE", f"2001:db8::{n + 1:x}", 0.0) is None
    assert flood.admit("INVITE", "2001:db8::ffff", 0.0) is not None


def test_trusted_sources_are_never_limited() -> None:
    flood = guard(trusted=("203.0.113.0/24", "2001:db8:1::1"))
    for _ in range(100):
        assert flood.admit("INVITE", "203.0.113.9", 0.0) is None
        assert flood.admit("OPTIONS", "[2001:db8:1::1]", 0.0) is None
    assert flood.refused == {}
