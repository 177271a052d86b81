from switch.call.first_rtp import FirstRtpLooks


def looks_at(looks: FirstRtpLooks, until: float, step: float = 0.125) -> list[float]:
    """When a leg that never sends is looked at, on looks every ``step`` seconds."""
    seen = []
    for tick in range(int(until / step) + 1):
        now = tick * step
        if looks.due({"leg"}, now):
            seen.append(now)
            looks.nothing_yet("leg", now)
    return seen


def test_a_new_leg_is_looked_at_at_once_then_steadily_then_ever_less_often() -> None:
    looks = FirstRtpLooks(first=0.25, patience=1.0, longest=2.0)
    seen = looks_at(looks, 9.0)
    # at once, every 0.25 s for the first second, then waits of 0.25, 0.5, 1 and 2 s
    assert seen[:5] == [0.0, 0.25, 0.5, 0.75, 1.0], seen
    assert seen[5:9] == [1.25, 1.75, 2.75, 4.75], seen
    assert seen[9:] == [6.75, 8.75], seen  # never more than 2 s apart


def test_a_leg_not_yet_due_is_not_looked_at() -> None:
    looks = FirstRtpLooks(first=0.25)
    assert looks.due({"a"}, 0.0) == ["a"]
    looks.nothing_yet("a", 0.0)
    assert looks.due({"a", "b"}, 0.125) == ["b"]  # b is new, a waits until 0.25
    assert sorted(looks.due({"a", "b"}, 0.25)) == ["a", "b"]


def test_a_leg_that_stops_waiting_is_forgotten_and_starts_afresh() -> None:
    looks = FirstRtpLooks(first=0.25, patience=0.5, longest=4.0)
    looks_at(looks, 6.0)
    assert looks.due(set(), 6.0) == []
    assert looks.due({"leg"}, 6.5) == ["leg"]  # waiting again (a re-INVITE): at once
    looks.nothing_yet("leg", 6.5)
    assert looks.due({"leg"}, 6.75) == ["leg"]  # and steadily again


def test_cleared_it_keeps_no_leg() -> None:
    looks = FirstRtpLooks(first=0.25)
    looks.due({"leg"}, 0.0)
    looks.clear()
    looks.nothing_yet("leg", 0.0)  # forgotten: nothing to reschedule
    assert looks.due({"leg"}, 0.125) == ["leg"]  # a new wait, looked at at once
