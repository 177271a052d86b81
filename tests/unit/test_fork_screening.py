"""Whisper screening in the fork group: an answered branch runs its document first."""

from switch.call.fork import Bridge, Cancel, Finished, ForkGroup, Screen
from switch.call.status import CallStatus


def test_screened_answer_does_not_cancel_the_others() -> None:
    group = ForkGroup.of(["a", "b"])
    assert group.answered("a", screened=True) == [Screen("a")]
    assert group.winner is None
    assert group.screen_passed("a") == [Cancel("b", elsewhere=True), Bridge("a")]
    assert group.winner == "a"


def test_hangup_during_whisper_is_a_decline_and_the_fork_goes_on() -> None:
    group = ForkGroup.of(["a", "b"])
    group.answered("a", screened=True)
    assert group.failed("a", 200) == []
    assert group.answered("b") == [Bridge("b")]


def test_only_branch_declining_in_whisper_is_busy() -> None:
    group = ForkGroup.of(["a"])
    group.answered("a", screened=True)
    assert group.failed("a", 200) == [Finished("busy", None)]


def test_plain_answer_while_another_is_screened_wins_and_cancels_it() -> None:
    group = ForkGroup.of(["a", "b"])
    group.answered("a", screened=True)
    assert group.answered("b") == [Cancel("a", elsewhere=True), Bridge("b")]
    assert group.screen_passed("a") == []


def test_second_screened_pass_after_a_winner_is_hung_up() -> None:
    group = ForkGroup.of(["a", "b", "c"])
    group.answered("a", screened=True)
    group.answered("b", screened=True)
    assert group.screen_passed("b") == [
        Cancel("a", elsewhere=True),
        Cancel("c", elsewhere=True),
        Bridge("b"),
    ]
    assert group.screen_passed("a") == []


def test_timeout_keeps_a_branch_in_its_whisper() -> None:
    group = ForkGroup.of(["a", "b"])
    group.answered("a", screened=True)
    assert group.timed_out() == [Cancel("b", CallStatus.NO_ANSWER)]
    assert not group.finished
    assert group.screen_passed("a") == [Bridge("a")]


def test_timeout_then_whisper_hangup_is_no_answer() -> None:
    group = ForkGroup.of(["a", "b"])
    group.answered("a", screened=True)
    group.timed_out()
    group.failed("b", 487)
    assert group.failed("a", 200) == [Finished("no-answer", None)]


def test_caller_leaving_cancels_screened_branches_too() -> None:
    group = ForkGroup.of(["a", "b"])
    group.answered("a", screened=True)
    assert group.caller_left() == [Cancel("a"), Cancel("b"), Finished("no-answer", None)]
