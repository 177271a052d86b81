"""The fork group of one <Dial>: who wins, who is cancelled, one Finished per group."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from switch.call.fork import (
    Action,
    BranchState,
    Bridge,
    Cancel,
    Finished,
    ForkGroup,
    RelayEarlyMedia,
)
from switch.call.status import CallStatus


def started(*keys: Hashable) -> ForkGroup:
    group = ForkGroup.of(keys)
    assert group.start() == []
    return group


def cancelled(actions: list[Action]) -> set[Hashable]:
    return {action.branch for action in actions if isinstance(action, Cancel)}


def finishes(actions: list[Action]) -> list[Finished]:
    return [action for action in actions if isinstance(action, Finished)]


# --- construction -------------------------------------------------------------------


def test_of_puts_every_branch_ringing() -> None:
    group = ForkGroup.of(["a", "b", "c"])
    assert group.branches == dict.fromkeys("abc", BranchState.RINGING)
    assert group.winner is None
    assert not group.finished


def test_empty_group_finishes_failed_on_start() -> None:
    group = ForkGroup.of([])
    assert group.start() == [Finished("failed", None)]
    assert group.finished
    # Nothing further can happen to a finished empty group.
    assert group.timed_out() == []
    assert group.caller_left() == []
    assert group.bridge_ended() == []


# --- answers ------------------------------------------------------------------------


def test_single_branch_answered_is_bridged() -> None:
    group = started("a")
    assert group.answered("a") == [Bridge("a")]
    assert group.winner == "a"
    assert group.branches["a"] is BranchState.WON
    assert not group.finished  # the Dial lasts until the bridge ends


def test_answer_cancels_every_other_ringing_branch_then_bridges() -> None:
    group = started("a", "b", "c")
    actions = group.answered("b")
    # The losers' CANCELs say why (RFC 3326): another branch answered.
    assert actions == [Cancel("a", elsewhere=True), Cancel("c", elsewhere=True), Bridge("b")]
    assert group.branches == {
        "a": BranchState.CANCELLED,
        "b": BranchState.WON,
        "c": BranchState.CANCELLED,
    }


def test_answer_does_not_cancel_branches_that_already_failed() -> None:
    group = started("a", "b", "c")
    assert group.failed("a", 486) == []
    assert group.answered("c") == [Cancel("b", elsewhere=True), Bridge("c")]
    assert group.branches["a"] is BranchState.FAILED


def test_two_answers_in_the_same_tick_second_is_hung_up() -> None:
    group = started("a", "b")
    first = group.answered("a")
    second = group.answered("b")
    assert first == [Cancel("b", elsewhere=True), Bridge("a")]
    # b's 200 crossed our CANCEL: the stack ACKs it, we BYE it.
    assert second == [Cancel("b")]
    bridges = [x for x in first + second if isinstance(x, Bridge)]
    assert bridges == [Bridge("a")]
    assert group.winner == "a"
    assert group.branches["b"] is BranchState.CANCELLED


def test_repeated_answer_of_the_winner_changes_nothing() -> None:
    group = started("a", "b")
    group.answered("a")
    assert group.answered("a") == []
    assert group.branches["a"] is BranchState.WON


def test_answer_after_timeout_is_cancelled() -> None:
    group = started("a", "b")
    assert group.timed_out() == [
        Cancel("a", CallStatus.NO_ANSWER),
        Cancel("b", CallStatus.NO_ANSWER),
        Finished("no-answer", None),
    ]
    assert group.answered("a") == [Cancel("a")]
    assert group.winner is None


def test_answer_after_caller_left_is_cancelled() -> None:
    group = started("a")
    assert group.caller_left() == [Cancel("a"), Finished("no-answer", None)]
    assert group.answered("a") == [Cancel("a")]
    assert group.winner is None
    assert group.branches["a"] is BranchState.CANCELLED


def test_unknown_branch_is_ignored() -> None:
    group = started("a")
    assert group.answered("zz") == []
    assert group.failed("zz", 486) == []
    assert group.early_media("zz") == []
    assert "zz" not in group.branches


# --- failures and DialCallStatus ----------------------------------------------------


@pytest.mark.parametrize("codes", [(486,), (600,), (603,), (486, 600, 603), (486, 486)])
def test_all_busy_is_busy(codes: tuple[int, ...]) -> None:
    group = started(*range(len(codes)))
    actions: list[Action] = []
    for key, code in enumerate(codes):
        actions += group.failed(key, code)
    assert actions == [Finished("busy", None)]


@pytest.mark.parametrize(
    "codes",
    [(486, 404), (404,), (500,), (503, 603), (0,), (486, 0), (404, 502, 600)],
)
def test_busy_mixed_with_other_failures_is_failed(codes: tuple[int, ...]) -> None:
    group = started(*range(len(codes)))
    actions: list[Action] = []
    for key, code in enumerate(codes):
        actions += group.failed(key, code)
    assert actions == [Finished("failed", None)]


@pytest.mark.parametrize("codes", [(480,), (408,), (487,), (486, 480), (404, 408), (603, 487)])
def test_any_unanswered_branch_is_no_answer(codes: tuple[int, ...]) -> None:
    group = started(*range(len(codes)))
    actions: list[Action] = []
    for key, code in enumerate(codes):
        actions += group.failed(key, code)
    assert actions == [Finished("no-answer", None)]


def test_failures_while_others_ring_do_not_finish() -> None:
    group = started("a", "b", "c")
    assert group.failed("a", 486) == []
    assert group.failed("b", 503) == []
    assert not group.finished
    assert group.branches["c"] is BranchState.RINGING
    assert group.answered("c") == [Bridge("c")]
    assert group.bridge_ended() == [Finished("completed", "c")]


def test_last_failure_finishes_with_aggregate() -> None:
    group = started("a", "b")
    assert group.failed("a", 486) == []
    assert group.failed("b", 486) == [Finished("busy", None)]
    assert group.finished


def test_failure_after_finish_is_silent() -> None:
    group = started("a", "b")
    group.timed_out()
    # Both answer our CANCEL with 487: no second Finished.
    assert group.failed("a", 487) == []
    assert group.failed("b", 487) == []
    assert group.branches == dict.fromkeys("ab", BranchState.CANCELLED)


def test_failure_of_a_loser_after_the_bridge_is_silent() -> None:
    group = started("a", "b")
    group.answered("a")
    assert group.failed("b", 487) == []
    assert group.branches["b"] is BranchState.CANCELLED
    assert not group.finished


def test_first_final_code_of_a_branch_is_kept() -> None:
    group = started("a", "b")
    group.failed("a", 486)
    group.failed("a", 404)  # a duplicate report must not change the verdict
    assert group.final_codes["a"] == 486
    assert group.failed("b", 600) == [Finished("busy", None)]


# --- timeout and the caller leaving -------------------------------------------------


def test_timeout_with_one_branch_in_early_media_cancels_it() -> None:
    group = started("a")
    assert group.early_media("a") == [RelayEarlyMedia("a")]
    assert group.timed_out() == [Cancel("a", CallStatus.NO_ANSWER), Finished("no-answer", None)]
    assert group.branches["a"] is BranchState.CANCELLED


def test_timeout_cancels_only_live_branches() -> None:
    group = started("a", "b", "c")
    group.failed("b", 486)
    actions = group.timed_out()
    assert actions == [
        Cancel("a", CallStatus.NO_ANSWER),
        Cancel("c", CallStatus.NO_ANSWER),
        Finished("no-answer", None),
    ]


def test_timeout_after_the_bridge_is_ignored() -> None:
    group = started("a", "b")
    group.answered("b")
    assert group.timed_out() == []
    assert not group.finished


def test_caller_leaves_before_any_branch_event() -> None:
    group = ForkGroup.of(range(10))
    group.start()
    actions = group.caller_left()
    assert cancelled(actions) == set(range(10))
    assert actions[-1] == Finished("no-answer", None)
    assert len(actions) == 11
    assert all(state is BranchState.CANCELLED for state in group.branches.values())


def test_caller_leaves_while_ringing_cancels_everything() -> None:
    group = started("a", "b", "c")
    group.failed("a", 404)
    assert group.caller_left() == [Cancel("b"), Cancel("c"), Finished("no-answer", None)]
    assert group.caller_left() == []
    assert group.timed_out() == []


def test_caller_leaves_after_bridge_waits_for_bridge_end() -> None:
    group = started("a", "b")
    group.answered("a")
    assert group.caller_left() == []
    assert not group.finished
    assert group.bridge_ended() == [Finished("completed", "a")]
    assert group.bridge_ended() == []


def test_bridge_ended_without_a_winner_is_ignored() -> None:
    group = started("a")
    assert group.bridge_ended() == []
    assert not group.finished


# --- early media --------------------------------------------------------------------


def test_early_media_relayed_once_for_a_single_branch() -> None:
    group = started("a")
    assert group.early_media("a") == [RelayEarlyMedia("a")]
    assert group.early_media("a") == []  # a second 183 changes nothing
    assert group.early_media_branch == "a"


def test_early_media_not_relayed_with_several_branches() -> None:
    group = started("a", "b")
    assert group.early_media("a") == []
    group.failed("b", 486)  # even when only one is left ringing
    assert group.early_media("a") == []
    assert group.early_media_branch is None


def test_early_media_ignored_after_finish_or_answer() -> None:
    group = started("a")
    group.answered("a")
    assert group.early_media("a") == []
    other = started("b")
    other.caller_left()
    assert other.early_media("b") == []


# --- exactly one Finished, whatever the interleaving --------------------------------


BRANCHES = 10
FAILURE_CODES = (0, 404, 408, 480, 486, 487, 500, 503, 600, 603)


def _check(group: ForkGroup, history: list[Action]) -> None:
    done = finishes(history)
    bridges = [x for x in history if isinstance(x, Bridge)]
    assert len(done) <= 1, history
    assert len(bridges) <= 1, history
    if bridges:
        winner = bridges[0].branch
        assert group.winner == winner
        assert not [x for x in history if isinstance(x, Cancel) and x.branch == winner]
        # Only the winner is bridged; a Bridge never follows Finished.
        assert not done or history.index(done[0]) > history.index(bridges[0])
    if done:
        assert group.finished
        assert all(s is not BranchState.RINGING for s in group.branches.values())
        assert (done[0].dial_call_status == "completed") == bool(bridges)
        assert done[0].winner == (bridges[0].branch if bridges else None)
    relays = [x for x in history if isinstance(x, RelayEarlyMedia)]
    assert not relays or len(group.branches) == 1


def _chaotic_step(group: ForkGroup, rng: random.Random, keys: list[int]) -> list[Action]:
    kind = rng.randrange(7)
    key = rng.choice(keys)
    if kind == 0:
        return group.answered(key)
    if kind in (1, 2):
        return group.failed(key, rng.choice(FAILURE_CODES))
    if kind == 3:
        return group.early_media(key)
    if kind == 4:
        return group.timed_out() if rng.random() < 0.2 else []
    if kind == 5:
        return group.caller_left() if rng.random() < 0.2 else []
    return group.bridge_ended() if rng.random() < 0.3 else []


@pytest.mark.parametrize("seed", range(40))
def test_random_interleavings_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    width = rng.randint(1, BRANCHES)
    keys = list(range(width))
    group = started(*keys)
    history: list[Action] = []
    for _ in range(rng.randint(1, 60)):
        history += _chaotic_step(group, rng, keys)
        _check(group, history)


@pytest.mark.parametrize("seed", range(40))
def test_realistic_networks_always_finish_once(seed: int) -> None:
    """Each branch gives early media then one final response, possibly after our CANCEL.

    Once every branch has replied and the bridge (if any) has ended, the group
    must have finished exactly once.
    """
    rng = random.Random(1000 + seed)
    width = rng.randint(1, BRANCHES)
    keys = list(range(width))
    group = started(*keys)
    history: list[Action] = []
    pending = list(keys)
    answered: set[int] = set()
    caller_event = rng.choice(["none", "timeout", "caller_left"])
    caller_at = rng.randint(0, width)
    for step in range(width + 1):
        if step == caller_at and caller_event == "timeout":
            history += group.timed_out()
        elif step == caller_at and caller_event == "caller_left":
            history += group.caller_left()
        _check(group, history)
        if not pending:
            continue
        key = pending.pop(rng.randrange(len(pending)))
        if rng.random() < 0.3:
            history += group.early_media(key)
        if rng.random() < 0.25:
            answered.add(key)
            history += group.answered(key)
        else:
            history += group.failed(key, rng.choice(FAILURE_CODES))
        _check(group, history)
    history += group.bridge_ended()
    _check(group, history)
    assert len(finishes(history)) == 1, history
    # Every answered branch but the winner was hung up (CANCEL, or BYE after ACK).
    assert answered - {group.winner} <= cancelled(history)
