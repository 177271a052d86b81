"""The fork group's deadlines (get_timer/handle_timer) and its REST-driven inputs."""

from __future__ import annotations

from switch.call.fork import (
    Bridge,
    Cancel,
    Finished,
    ForkGroup,
    HangUp,
    RelayEarlyMedia,
)
from switch.call.status import CallStatus


def group(*keys: str, ring: float | None = 30, limit: float | None = 60, relay: bool = True):
    fork = ForkGroup.of(keys, ring_timeout=ring, time_limit=limit, relay_early_media=relay)
    assert fork.start(now=100.0) == []
    return fork


def test_ring_timeout_is_the_first_deadline_and_cancels_as_no_answer() -> None:
    fork = group("a", "b")
    assert fork.get_timer() == 130.0
    assert fork.handle_timer(129.9) == []
    assert fork.handle_timer(130.0) == [
        Cancel("a", CallStatus.NO_ANSWER),
        Cancel("b", CallStatus.NO_ANSWER),
        Finished("no-answer", None),
    ]
    assert fork.get_timer() is None
    assert fork.handle_timer(999) == []


def test_without_a_ring_timeout_there_is_no_deadline() -> None:
    assert group("a", ring=None).get_timer() is None


def test_time_limit_counts_from_the_bridge_and_hangs_the_winner_up() -> None:
    fork = group("a", "b", limit=60)
    assert fork.answered("a") == [Cancel("b", elsewhere=True), Bridge("a")]
    assert fork.get_timer() is None  # the ring deadline is gone; not bridged yet
    fork.bridged(105.0)
    assert fork.get_timer() == 165.0
    assert fork.handle_timer(164) == []
    assert fork.handle_timer(165) == [HangUp("a")]
    assert fork.get_timer() is None
    assert fork.bridge_ended() == [Finished("completed", "a")]


def test_hangup_on_star_only_after_a_winner() -> None:
    fork = group("a")
    assert fork.hangup_on_star() == []
    fork.answered("a")
    assert fork.hangup_on_star() == [HangUp("a")]


def test_withdrawn_while_ringing_cancels_everything_without_an_action() -> None:
    fork = group("a", "b")
    assert fork.withdrawn() == [
        Cancel("a"),
        Cancel("b"),
        Finished("canceled", None, withdrawn=True),
    ]
    assert fork.withdrawn() == []
    assert fork.answered("a") == [Cancel("a")]


def test_withdrawn_after_the_bridge_hangs_up_the_winner() -> None:
    fork = group("a", "b")
    fork.answered("b")
    assert fork.withdrawn() == [HangUp("b"), Finished("completed", "b", withdrawn=True)]


def test_one_branch_canceled_through_the_api() -> None:
    fork = group("a", "b")
    assert fork.branch_canceled("a") == [Cancel("a")]
    assert fork.failed("b", 486) == [Finished("canceled", None)]


def test_the_last_branch_canceled_finishes_canceled() -> None:
    fork = group("a")
    assert fork.branch_canceled("a") == [Cancel("a"), Finished("canceled", None)]
    assert fork.branch_canceled("a") == []


def test_canceling_an_answered_branch_does_nothing() -> None:
    fork = group("a")
    fork.answered("a")
    assert fork.branch_canceled("a") == []


def test_early_media_of_the_only_branch_is_relayed_unless_a_ring_tone_was_asked() -> None:
    fork = group("a")
    assert fork.early_media("a") == [RelayEarlyMedia("a")]
    assert fork.media_ready("a") == [RelayEarlyMedia("a")]  # its audio came up later
    toned = group("a", relay=False)
    assert toned.early_media("a") == []
    assert toned.media_ready("a") == []


def test_media_of_another_branch_or_after_the_answer_is_not_relayed() -> None:
    fork = group("a", "b")
    assert fork.early_media("a") == []
    assert fork.media_ready("a") == []
    single = group("a")
    single.early_media("a")
    single.answered("a")
    assert single.media_ready("a") == []
