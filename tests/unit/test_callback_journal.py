"""The callback journal: its retry schedule and per-key queue (pure), and its table on a
real SQLite store in tmp_path, reopened as a restart does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from switch.callback_journal import CallbackJournal, CallbackQueue, RetrySchedule
from switch.store import Store

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
RECORDING = "RE" + "0" * 31 + "1"


# ---- RetrySchedule ----------------------------------------------------------------------


def test_backoff_doubles_from_the_interval_up_to_the_maximum() -> None:
    schedule = RetrySchedule(interval=5, max_interval=60, give_up_after=3600)
    delays = [schedule.next_attempt(n, 0, 100) for n in range(1, 7)]
    assert [d - 100 for d in delays if d is not None] == [5, 10, 20, 40, 60, 60]


def test_the_last_retry_falls_on_the_give_up_moment_then_it_gives_up() -> None:
    schedule = RetrySchedule(interval=5, max_interval=300, give_up_after=3600)
    assert schedule.next_attempt(12, queued_at=1000, now=4500) == 4600
    assert schedule.next_attempt(13, queued_at=1000, now=4600) is None
    assert schedule.next_attempt(1, queued_at=1000, now=4601) is None


def test_an_hour_down_is_a_bounded_number_of_attempts() -> None:
    schedule = RetrySchedule()
    now, attempts = 0.0, 1
    while (at := schedule.next_attempt(attempts, 0, now)) is not None:
        assert at > now
        now, attempts = at, attempts + 1
    assert now == 3600
    assert 10 < attempts < 25


def test_huge_failure_counts_do_not_overflow() -> None:
    schedule = RetrySchedule(interval=1, max_interval=10, give_up_after=1e12)
    assert schedule.next_attempt(10_000, 0, 5) == 15


@pytest.mark.parametrize(
    "values", [(0, 10, 100), (20, 10, 100), (1, 10, 0), (-1, 10, 100)], ids=str
)
def test_nonsense_schedules_are_refused(values: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(*values)


# ---- CallbackQueue ----------------------------------------------------------------------


def test_one_key_goes_one_at_a_time_in_order() -> None:
    queue = CallbackQueue()
    for row_id in (1, 2, 3):
        queue.add(row_id, "CA1", due=0)
    assert queue.take(0) == (1, "CA1")
    assert queue.take(0) is None, "the key is busy until its first row is done"
    queue.done(1, "CA1", 0)
    assert queue.take(0) == (2, "CA1")
    queue.done(2, "CA1", 0)
    assert queue.take(0) == (3, "CA1")
    queue.done(3, "CA1", 0)
    assert len(queue) == 0 and queue.next_due() is None


def test_a_failing_key_holds_back_only_its_own_rows() -> None:
    queue = CallbackQueue()
    queue.add(1, "CA1", due=0)
    queue.add(2, "CA1", due=0)
    queue.add(3, "CA2", due=0)
    assert queue.take(0) == (1, "CA1")
    queue.retry(1, "CA1", at=50)
    assert queue.take(0) == (3, "CA2")
    queue.done(3, "CA2", 0)
    assert queue.take(49) is None
    assert queue.next_due() == 50
    assert queue.take(50) == (1, "CA1"), "the retried row is still first of its key"
    assert len(queue) == 2


def test_rows_are_taken_by_due_time_across_keys() -> None:
    queue = CallbackQueue()
    queue.add(1, "CA1", due=30)
    queue.add(2, "CA2", due=10)
    queue.add(3, "CA3", due=20)
    assert [queue.take(100) for _ in range(3)] == [(2, "CA2"), (3, "CA3"), (1, "CA1")]


def test_due_counts_rows_in_flight_and_rows_due_now() -> None:
    queue = CallbackQueue()
    assert not queue.due(0)
    queue.add(1, "CA1", due=10)
    assert not queue.due(5) and queue.due(10)
    assert queue.take(10) == (1, "CA1")
    assert queue.due(0) and queue.in_flight == 1
    queue.retry(1, "CA1", at=20)
    assert not queue.due(15)


def test_a_row_added_while_its_key_is_busy_waits_for_it() -> None:
    queue = CallbackQueue()
    queue.add(1, "CA1", due=0)
    assert queue.take(0) == (1, "CA1")
    queue.add(2, "CA1", due=0)
    assert queue.take(0) is None
    queue.done(1, "CA1", 7)
    assert queue.take(6) is None
    assert queue.take(7) == (2, "CA1")


# ---- CallbackJournal on SQLite ------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as store:
        yield store


def test_rows_survive_a_reopen_in_submission_order(tmp_path: Path) -> None:
    pairs = [("CallSid", "CA1"), ("CallStatus", "ringing"), ("Note", "Zoë & ü=1")]
    with Store.open(tmp_path) as store:
        journal = CallbackJournal(store)
        first = journal.add("CA1", "http://app/s#rc=1", "POST", pairs, "tok1", now=100)
        second = journal.add("CA2", "http://app/t", "GET", [("CallSid", "CA2")], "tok2", 101)
        journal.reschedule(first.id, attempts=2, next_attempt=130)
    with Store.open(tmp_path) as store:
        rows = CallbackJournal(store).pending()
    assert [row.id for row in rows] == [first.id, second.id]
    kept = rows[0]
    assert (kept.key, kept.url, kept.method, kept.token) == (
        "CA1",
        "http://app/s#rc=1",
        "POST",
        "tok1",
    )
    assert kept.pairs == tuple(pairs)
    assert (kept.attempts, kept.next_attempt, kept.queued_at) == (2, 130, 100)
    assert kept.call_sid == "CA1" and kept.recording_sid is None


def test_ids_are_never_reused_after_the_last_row_is_deleted(store: Store) -> None:
    journal = CallbackJournal(store)
    row = journal.add("CA1", "http://app/s", "POST", [], "t", 0)
    journal.remove(row)
    assert journal.get(row.id) is None
    assert journal.add("CA1", "http://app/s", "POST", [], "t", 0).id > row.id


def test_call_sid_falls_back_to_the_key(store: Store) -> None:
    row = CallbackJournal(store).add("RE1", "http://app/r", "POST", [("X", "1")], "t", 0)
    assert row.call_sid == "RE1"


def test_removing_a_recordings_row_clears_its_callback_pending(store: Store) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.create_recording(
        sid=RECORDING,
        account_sid=ACCOUNT,
        call_sid="CA1",
        channels=1,
        track="both",
        trim=False,
        start_time=now,
        callback_url="http://app/rec",
    )
    store.update_recording(RECORDING, status="completed", callback_pending=True)
    journal = CallbackJournal(store)
    row = journal.add("CA1", "http://app/rec", "POST", [], "t", 0, recording_sid=RECORDING)
    other = journal.add("CA1", "http://app/s", "POST", [], "t", 0)
    assert journal.holds_recording(RECORDING)
    journal.remove(other)
    recording = store.recording(RECORDING)
    assert recording is not None and recording.callback_pending
    journal.remove(row)
    recording = store.recording(RECORDING)
    assert recording is not None and not recording.callback_pending
    assert not journal.holds_recording(RECORDING)


def test_removing_the_row_of_a_deleted_recording_is_fine(store: Store) -> None:
    journal = CallbackJournal(store)
    row = journal.add("CA1", "http://app/rec", "POST", [], "t", 0, recording_sid=RECORDING)
    journal.remove(row)
    assert journal.pending() == []


def test_a_memory_store_has_the_journal_table() -> None:
    store = Store.memory()
    try:
        journal = CallbackJournal(store)
        journal.add("CA1", "http://app/s", "POST", [], "t", 0)
        assert len(journal.pending()) == 1
    finally:
        store.close()
