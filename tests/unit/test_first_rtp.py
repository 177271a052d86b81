from switch.call.first_rtp import FirstRtpLooks


def test_a_new_leg_is_looked_at_once_then_ever_less_often_up_to_the_longest_wait() -> None:
    looks = FirstRtpLooks(first=0.25, longest=1.0)
    assert looks.due({"leg"}, 0.0) == ["leg"]
    looks.nothing_yet("leg", 0.0)
    seen = []
    for tick in range(1, 48):
        now = tick * 0.125
        if looks.due({"leg"}, now):
            seen.append(now)
            looks.nothing_yet("leg", now)
    assert seen == [0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.75], seen  # waits 0.25, 0.5, then 1


def test_a_leg_not_yet_due_is_not_looked_at() -> None:
    looks = FirstRtpLooks(first=0.2)
    assert looks.due({"a"}, 0.0) == ["a"]
    looks.nothing_yet("a", 0.0)
    assert looks.due({"a", "b"}, 0.1) == ["b"]  # b is new, a waits until 0.2
    assert sorted(looks.due({"a", "b"}, 0.2)) == ["a", "b"]


def test_a_leg_that_stops_waiting_is_forgotten_and_starts_afresh() -> None:
    looks = FirstRtpLooks(first=0.2)
    looks.due({"a"}, 0.0)
    for now in (0.0, 0.2, 0.6, 1.4):
        looks.nothing_yet("a", now)
    assert looks.due(set(), 2.0) == []
    assert looks.due({"a"}, 2.0) == ["a"]  # waiting again (a re-INVITE): looked at at once
    looks.nothing_yet("a", 2.0)
    assert looks.due({"a"}, 2.2) == ["a"]
