import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from switch.store import DB_NAME, MIGRATIONS, LegRecord, Notification, Store, StoreError

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def leg(call_sid: str, start: datetime = T0, **changes: object) -> LegRecord:
    record = LegRecord(
        call_sid=call_sid,
        parent_call_sid=None,
        account_sid=ACCOUNT,
        from_="+15005550001",
        to="+15005550100",
        direction="inbound",
        start_time=start,
        answer_time=start + timedelta(seconds=2),
        end_time=start + timedelta(seconds=62, microseconds=500),
        status="completed",
        sip_code=200,
        sip_call_id="a84b4c76e66710@pc33.example.com",
        trunk="carrier",
        call_reason=None,
        duration=60,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as opened:
        yield opened


def test_open_creates_the_database_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deeper"
    with Store.open(path) as store:
        assert store.schema_version == len(MIGRATIONS)
    assert (path / DB_NAME).is_file()
    db = sqlite3.connect(path / DB_NAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_leg_round_trip(store: Store) -> None:
    record = leg("CA01", call_reason="Support callback")
    store.record_leg(record)
    assert store.leg("CA01") == record
    assert store.leg("CA02") is None


def test_leg_with_nulls_round_trips(store: Store) -> None:
    record = leg(
        "CA01",
        direction="outbound-api",
        answer_time=None,
        status="no-answer",
        sip_code=None,
        sip_call_id=None,
        trunk=None,
        duration=0,
    )
    store.record_leg(record)
    assert store.leg("CA01") == record


def test_times_come_back_in_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    store.record_leg(leg("CA01", start=T0.astimezone(paris)))
    got = store.leg("CA01")
    assert got is not None
    assert got.start_time == T0
    assert got.start_time.utcoffset() == timedelta(0)
    assert got.end_time == T0 + timedelta(seconds=62, microseconds=500)


def test_a_call_sid_is_recorded_once(store: Store) -> None:
    store.record_leg(leg("CA01"))
    with pytest.raises(StoreError, match="CA01 is already recorded"):
        store.record_leg(leg("CA01"))


def test_children_of_a_parent_oldest_first(store: Store) -> None:
    store.record_leg(leg("CA00"))
    later = T0 + timedelta(seconds=1)
    for sid, start in (("CA02", later), ("CA01", T0), ("CA03", later)):
        store.record_leg(leg(sid, start, parent_call_sid="CA00", direction="outbound-dial"))
    store.record_leg(leg("CA09", parent_call_sid="CAxx", direction="outbound-dial"))
    assert [r.call_sid for r in store.legs_for_parent("CA00")] == ["CA01", "CA02", "CA03"]
    assert store.legs_for_parent("CA01") == []


def test_recent_legs_newest_first(store: Store) -> None:
    for i in range(5):
        store.record_leg(leg(f"CA{i}", T0 + timedelta(minutes=i)))
    assert [r.call_sid for r in store.recent_legs(3)] == ["CA4", "CA3", "CA2"]
    assert len(store.recent_legs(100)) == 5


def test_records_persist_across_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.record_leg(leg("CA01"))
        store.record_notification("CA01", 11200, "error", "HTTP retrieval failure", None, T0)
    with Store.open(tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.leg("CA01") == leg("CA01")
        assert len(store.notifications("CA01")) == 1


def test_notifications_of_a_call_oldest_first(store: Store) -> None:
    later = T0 + timedelta(seconds=3)
    store.record_notification("CA01", 13212, "warning", "bad timeout", None, later)
    store.record_notification("CA01", 11200, "error", "fetch failed", "https://x.example/", T0)
    store.record_notification("CA02", 12100, "error", "not XML", None, T0)
    assert store.notifications("CA01") == [
        Notification("CA01", 11200, "error", "fetch failed", "https://x.example/", T0, id=2),
        Notification("CA01", 13212, "warning", "bad timeout", None, later, id=1),
    ]
    assert store.notifications("CA03") == []


def test_bad_notification_level_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="level"):
        store.record_notification("CA01", 1, "info", "x", None, T0)  # type: ignore[arg-type]


def test_naive_notification_time_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_notification("CA01", 1, "error", "x", None, datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"direction": "outbound"}, "unknown direction"),
        ({"status": "in-progress"}, "not a final call status"),
        ({"duration": -1}, "negative"),
        ({"start_time": datetime(2025, 1, 1)}, "start_time must be timezone-aware"),
        ({"answer_time": datetime(2025, 1, 1)}, "answer_time must be timezone-aware"),
    ],
)
def test_invalid_leg_records_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        leg("CA01", **changes)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this dialswitch"):
        Store.open(tmp_path)


def test_a_failed_migration_leaves_the_version_alone(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE notifications (x)")  # the first migration fails part-way
    db.close()
    with pytest.raises(StoreError, match="cannot use"):
        Store.open(tmp_path)
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        tables = db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
        assert tables == [("notifications",)]
    finally:
        db.close()


def test_an_unusable_path_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(tmp_path / "file")


def _committed_legs(tmp_path: Path) -> list[str]:
    """What another process sees: the legs committed so far."""
    other = sqlite3.connect(tmp_path / DB_NAME)
    try:
        return [sid for (sid,) in other.execute("SELECT call_sid FROM legs ORDER BY call_sid")]
    finally:
        other.close()


async def test_writes_of_one_loop_pass_share_one_commit(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.group_commits(asyncio.get_running_loop())
        store.record_leg(leg("CA" + "1" * 32))
        store.record_leg(leg("CA" + "2" * 32))
        assert store.leg("CA" + "2" * 32) is not None  # this connection sees them at once
        assert _committed_legs(tmp_path) == []  # others only at the commit
        await asyncio.sleep(0)  # the loop finishes its pass
        assert _committed_legs(tmp_path) == ["CA" + "1" * 32, "CA" + "2" * 32]
        store.record_leg(leg("CA" + "3" * 32))  # the next pass opens a new group
        await asyncio.sleep(0)
        assert len(_committed_legs(tmp_path)) == 3
    finally:
        store.close()


async def test_a_failed_write_leaves_the_rest_of_its_group(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        store.group_commits(asyncio.get_running_loop())
        store.record_leg(leg("CA" + "1" * 32))
        with pytest.raises(StoreError):
            store.record_leg(leg("CA" + "1" * 32))
        store.record_leg(leg("CA" + "2" * 32))
        await asyncio.sleep(0)
        assert _committed_legs(tmp_path) == ["CA" + "1" * 32, "CA" + "2" * 32]
    finally:
        store.close()


async def test_close_commits_the_open_group(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.group_commits(asyncio.get_running_loop())
    store.record_leg(leg("CA" + "1" * 32))
    store.close()
    assert _committed_legs(tmp_path) == ["CA" + "1" * 32]


class _RefusingOneCommit(sqlite3.Connection):
    """A connection whose first commit fails, as on a disk I/O error."""

    refused = False

    def commit(self) -> None:
        if not self.refused:
            self.refused = True
            raise sqlite3.OperationalError("disk I/O error")
        super().commit()


async def test_a_commit_the_database_refuses_is_retried(tmp_path: Path) -> None:
    Store.open(tmp_path).close()  # the schema
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None, factory=_RefusingOneCommit)
    store = Store(db)
    try:
        store.group_commits(asyncio.get_running_loop(), retry_seconds=0.01)
        store.record_leg(leg("CA" + "1" * 32))
        await asyncio.sleep(0)  # the commit is refused; the group stays open
        assert db.refused and db.in_transaction
        store.record_leg(leg("CA" + "2" * 32))  # joins the open group
        for _ in range(200):  # the retry comes 10 ms later
            if not db.in_transaction:
                break
            await asyncio.sleep(0.01)
        assert _committed_legs(tmp_path) == ["CA" + "1" * 32, "CA" + "2" * 32]
    finally:
        store.close()


async def test_the_wal_is_checkpointed_off_the_loop_thread(tmp_path: Path) -> None:
    """The loop's connection never checkpoints (its fsync would stall the loop): a
    thread of the store's own copies the WAL into the database file."""
    store = Store.open(tmp_path)
    try:
        store.group_commits(asyncio.get_running_loop(), checkpoint_seconds=0.05)
        main = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert main == 0
        before = (tmp_path / DB_NAME).stat().st_size
        for n in range(2000):
            store.record_leg(leg(f"CA{n:032d}"))
        await asyncio.sleep(0)  # the group commits: the rows are in the WAL
        for _ in range(100):  # a checkpoint every 50 ms moves them to the database
            if (tmp_path / DB_NAME).stat().st_size > before:
                break
            await asyncio.sleep(0.05)
        assert (tmp_path / DB_NAME).stat().st_size > before
        assert threading.active_count() >= 2
    finally:
        store.close()
    assert not [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]
