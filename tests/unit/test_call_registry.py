"""The registry of live calls, its admission, pacing of API calls, and CallView."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from switch.call.commands import Command
from switch.call.pacing import Pacer
from switch.call.registry import CallRegistry, CallView
from switch.call.status import CallStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Live:
    call_sid: str
    got: list[Command] = field(default_factory=list)

    def view(self) -> CallView:
        return CallView(
            self.call_sid, None, "+1", "+2", CallStatus.RINGING, "inbound", T0, None, None
        )

    def deliver(self, command: Command) -> None:
        self.got.append(command)


def test_admission_counts_top_level_calls_only() -> None:
    registry = CallRegistry(max_calls=2)
    registry.add(Live("CA1"))
    registry.add(Live("CA1-child"), top_level=False)
    assert registry.admit()
    registry.add(Live("CA2"))
    assert not registry.admit()
    registry.remove("CA1")
    assert registry.admit()
    assert {c.call_sid for c in registry} == {"CA1-child", "CA2"}


def test_stopping_admits_nothing() -> None:
    registry = CallRegistry(max_calls=10)
    registry.stopping = True
    assert not registry.admit()


def test_replace_keeps_the_admission_slot() -> None:
    registry = CallRegistry(max_calls=1)
    registry.add(Live("CA1"))
    answered = Live("CA1")
    registry.replace(answered)
    assert registry.get("CA1") is answered
    assert not registry.admit()
    registry.remove("CA1")
    assert registry.get("CA1") is None and registry.admit()


def test_pacer_spaces_calls_by_the_rate() -> None:
    pacer = Pacer(rate=10)
    assert [pacer.slot(100.0) for _ in range(3)] == pytest.approx([100.0, 100.1, 100.2])
    assert pacer.slot(105.0) == 105.0  # idle since: no backlog


def test_duration_is_null_while_live_and_zero_unanswered() -> None:
    live = CallView("CA1", None, "a", "b", CallStatus.IN_PROGRESS, "inbound", T0, None, T0)
    assert live.duration() is None
    ended = CallView("CA1", None, "a", "b", CallStatus.BUSY, "inbound", T0, T0, None)
    assert ended.duration() == 0
    answered = CallView(
        "CA1", None, "a", "b", CallStatus.COMPLETED, "inbound", T0, T0 + timedelta(seconds=7.9), T0
    )
    assert answered.duration() == 7
