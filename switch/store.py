"""SQLite storage of call records and per-call notifications.

One connection, opened and used on the asyncio loop thread (sqlite3's same-thread
check stays on). Writes are short enough to run inline on the loop:

- WAL journal with ``synchronous=NORMAL``: a commit appends to the WAL without an
  fsync (durability is given up only for the last commits before a power loss, never
  consistency), so a commit costs tens of microseconds rather than a disk flush.
- Group commit, once the switch is running (`Store.group_commits`): the writes made
  in one pass of the event loop share one transaction, committed as soon as the loop
  is through that pass. A commit is much of a write's cost (the WAL append and its
  locks): at 200 recorded calls/s, writes committed one by one took 12% of the
  loop. A crash loses at most the writes of the pass it interrupts. Reads on this
  connection see every write at once; another process sees them at the commit.
  Before `group_commits` (start-up repair, tools, tests), every write is its own
  transaction.
- Checkpoints (copying the WAL into the database file, then an fsync) run on a
  thread with a connection of its own once the switch is running (`_Checkpointer`),
  never on the loop: behind the writeback of recordings that fsync took seconds.
- Every statement is a module constant, so sqlite3's statement cache prepares each
  once per connection and reuses it.

Times are stored as ISO 8601 UTC text with microseconds and a ``Z``, a fixed width so
that text order is time order. The schema evolves by numbered migrations recorded in
``PRAGMA user_version``; later tables (recordings, registrations) are new migrations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

log = logging.getLogger(__name__)

COMMIT_RETRY_SECONDS = 1.0
CHECKPOINT_SECONDS = 5.0

DB_NAME = "dialswitch.sqlite3"

Direction = Literal["inbound", "outbound-dial", "outbound-api"]
FinalStatus = Literal["completed", "busy", "no-answer", "failed", "canceled"]
"""The CallStatus values a leg can end with (switch/call/status.py owns the words)."""
NotificationLevel = Literal["error", "warning"]
RecordingStatus = Literal["in-progress", "completed", "absent", "failed"]
"""Where a recording is: being written, finished, finished without audio, lost."""
RecordingTrack = Literal["both", "inbound", "outbound"]
"""Twilio's ``recordingTrack``: inbound is what the caller said, outbound what it heard."""

DIRECTIONS: frozenset[str] = frozenset(get_args(Direction))
FINAL_STATUSES: frozenset[str] = frozenset(get_args(FinalStatus))
NOTIFICATION_LEVELS: frozenset[str] = frozenset(get_args(NotificationLevel))
RECORDING_STATUSES: frozenset[str] = frozenset(get_args(RecordingStatus))
RECORDING_TRACKS: frozenset[str] = frozenset(get_args(RecordingTrack))

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE legs (
        call_sid TEXT PRIMARY KEY,
        parent_call_sid TEXT,
        account_sid TEXT NOT NULL,
        from_ TEXT NOT NULL,
        to_ TEXT NOT NULL,
        direction TEXT NOT NULL,
        start_time TEXT NOT NULL,
        answer_time TEXT,
        end_time TEXT NOT NULL,
        status TEXT NOT NULL,
        sip_code INTEGER,
        sip_call_id TEXT,
        trunk TEXT,
        call_reason TEXT,
        duration INTEGER NOT NULL
    );
    CREATE INDEX legs_parent ON legs (parent_call_sid) WHERE parent_call_sid IS NOT NULL;
    CREATE INDEX legs_start ON legs (start_time);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL,
        code INTEGER NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        url TEXT,
        time TEXT NOT NULL
    );
    CREATE INDEX notifications_call ON notifications (call_sid, time);
    """,
    """
    CREATE TABLE bindings (
        identity TEXT NOT NULL,
        row TEXT NOT NULL
    );
    CREATE INDEX bindings_identity ON bindings (identity);
    """,
    """
    CREATE TABLE recordings (
        sid TEXT PRIMARY KEY,
        account_sid TEXT NOT NULL,
        call_sid TEXT NOT NULL,
        status TEXT NOT NULL,
        channels INTEGER NOT NULL,
        source TEXT NOT NULL,
        track TEXT NOT NULL,
        trim INTEGER NOT NULL,
        start_time TEXT NOT NULL,
        duration INTEGER NOT NULL,
        length REAL NOT NULL,
        path TEXT,
        error_code INTEGER,
        callback_url TEXT,
        callback_method TEXT NOT NULL,
        callback_events TEXT NOT NULL,
        callback_pending INTEGER NOT NULL,
        date_created TEXT NOT NULL,
        date_updated TEXT NOT NULL
    );
    CREATE INDEX recordings_call ON recordings (call_sid, date_created);
    CREATE INDEX recordings_created ON recordings (date_created);
    CREATE INDEX recordings_open ON recordings (status, callback_pending)
        WHERE status = 'in-progress' OR callback_pending;
    """,
    """
    ALTER TABLE legs ADD COLUMN caller_name TEXT NOT NULL DEFAULT '';
    -- No index on to_ or from_ for the Calls list's filters: each one written with
    -- every leg cost 60 % more bytes to disk under dial load; the list walks legs_start.
    """,
    """
    -- The status callbacks not delivered yet (switch/callback_journal.py). AUTOINCREMENT:
    -- an id is never reused, so id order is submission order across restarts.
    CREATE TABLE callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        url TEXT NOT NULL,
        method TEXT NOT NULL,
        params TEXT NOT NULL,
        token TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt REAL NOT NULL,
        queued_at REAL NOT NULL,
        recording_sid TEXT
    );
    CREATE INDEX callbacks_recording ON callbacks (recording_sid)
        WHERE recording_sid IS NOT NULL;
    """,
)
"""Schema steps: ``MIGRATIONS[n]`` takes the database from user_version n to n + 1."""

_LEG_COLUMNS = (
    "call_sid, parent_call_sid, account_sid, from_, to_, direction, start_time,"
    " answer_time, end_time, status, sip_code, sip_call_id, trunk, call_reason, duration,"
    " caller_name"
)
_INSERT_LEG = f"INSERT INTO legs ({_LEG_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_DELETE_LEG = "DELETE FROM legs WHERE call_sid = ?"
_SELECT_LEG = f"SELECT {_LEG_COLUMNS} FROM legs WHERE call_sid = ?"
_SELECT_CHILD_LEGS = (
    f"SELECT {_LEG_COLUMNS} FROM legs WHERE parent_call_sid = ? ORDER BY start_time, rowid"
)
_SELECT_RECENT_LEGS = (
    f"SELECT {_LEG_COLUMNS} FROM legs ORDER BY start_time DESC, rowid DESC LIMIT ?"
)
_INSERT_NOTIFICATION = (
    "INSERT INTO notifications (call_sid, code, level, message, url, time)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT_NOTIFICATIONS = (
    "SELECT call_sid, code, level, message, url, time, id FROM notifications"
    " WHERE call_sid = ? ORDER BY time, id"
)
_RECORDING_COLUMNS = (
    "sid, account_sid, call_sid, status, channels, source, track, trim, start_time,"
    " duration, length, path, error_code, callback_url, callback_method, callback_events,"
    " callback_pending, date_created, date_updated"
)
_INSERT_RECORDING = (
    "INSERT INTO recordings (sid, account_sid, call_sid, source, date_created, status,"
    " channels, track, trim, start_time, duration, length, path, error_code, callback_url,"
    " callback_method, callback_events, callback_pending, date_updated)"
    f" VALUES ({', '.join('?' * 19)})"
)
_UPDATE_RECORDING = (
    "UPDATE recordings SET status = ?, channels = ?, track = ?, trim = ?, start_time = ?,"
    " duration = ?, length = ?, path = ?, error_code = ?, callback_url = ?,"
    " callback_method = ?, callback_events = ?, callback_pending = ?, date_updated = ?"
    " WHERE sid = ?"
)
_SELECT_RECORDING = f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE sid = ?"
_SELECT_RECORDINGS = (
    f"SELECT {_RECORDING_COLUMNS} FROM recordings"
    " ORDER BY date_created DESC, rowid DESC LIMIT ? OFFSET ?"
)
_SELECT_CALL_RECORDINGS = (
    f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE call_sid = ?"
    " ORDER BY date_created DESC, rowid DESC LIMIT ? OFFSET ?"
)
_SELECT_RECORDINGS_IN_PROGRESS = (
    f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE status = 'in-progress'"
    " ORDER BY date_created, rowid"
)
_SELECT_RECORDINGS_FAILED = (
    f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE status = 'failed'"
    " ORDER BY date_created, rowid"
)
_SELECT_RECORDINGS_CALLBACK_PENDING = (
    f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE callback_pending"
    " ORDER BY date_created, rowid"
)
_DELETE_RECORDING = "DELETE FROM recordings WHERE sid = ?"
_RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}$")
_RECORDING_UPDATABLE = frozenset(
    {
        "status",
        "channels",
        "track",
        "trim",
        "start_time",
        "duration",
        "length",
        "path",
        "error_code",
        "callback_url",
        "callback_method",
        "callback_events",
        "callback_pending",
        "date_updated",
    }
)


class StoreError(Exception):
    """The database cannot be used, or a record breaks its constraints."""


@dataclass(frozen=True)
class LegRecord:
    """The final record of one call leg (Twilio's Call resource once the call ended)."""

    call_sid: str
    parent_call_sid: str | None
    account_sid: str
    from_: str
    to: str
    direction: Direction
    start_time: datetime
    answer_time: datetime | None
    end_time: datetime
    status: FinalStatus
    sip_code: int | None
    sip_call_id: str | None
    trunk: str | None
    call_reason: str | None
    duration: int
    """Whole seconds from answer to end; 0 for a leg never answered."""
    caller_name: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"{self.status!r} is not a final call status")
        if self.duration < 0:
            raise ValueError("duration must not be negative")
        for name in ("start_time", "answer_time", "end_time"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class Notification:
    """An error or warning a call hit (Twilio's per-call Notification resource)."""

    call_sid: str
    code: int
    level: NotificationLevel
    message: str
    url: str | None
    time: datetime
    id: int = 0
    """Its row, once stored: the Notification's sid is made of it."""


@dataclass(frozen=True)
class RecordingRecord:
    """A ``<Dial record>`` recording (Twilio's Recording resource) and its callback state."""

    sid: str
    account_sid: str
    call_sid: str
    """The parent call, as Twilio reports for ``source`` DialVerb."""
    status: RecordingStatus
    channels: int
    """2 for a dual recording of both tracks, else 1: with `track` and `trim` this is
    what finishing the side files needs, after a crash too."""
    source: str
    track: RecordingTrack
    trim: bool
    start_time: datetime
    duration: int
    """Whole seconds (rounded) of the finished file; 0 until it is finished."""
    length: float
    """Exact seconds of the finished file."""
    path: str | None
    """The finished WAV file, relative to the storage path; None until finished."""
    error_code: int | None
    callback_url: str | None
    callback_method: str
    callback_events: tuple[str, ...]
    """``recordingStatusCallbackEvent``: the statuses that are reported."""
    callback_pending: bool
    """The final-status callback is due but not delivered yet (resent at start-up)."""
    date_created: datetime
    date_updated: datetime

    def __post_init__(self) -> None:
        if not _RECORDING_SID.match(self.sid):
            raise ValueError(f"bad recording sid {self.sid!r}")
        if self.status not in RECORDING_STATUSES:
            raise ValueError(f"unknown recording status {self.status!r}")
        if self.track not in RECORDING_TRACKS:
            raise ValueError(f"unknown recording track {self.track!r}")
        if self.channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if self.channels == 2 and self.track != "both":
            raise ValueError("a single track is recorded on one channel")
        if self.duration < 0 or self.length < 0:
            raise ValueError("duration must not be negative")
        for name in ("start_time", "date_created", "date_updated"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")


def _to_text(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    # isoformat ends in "+00:00" in UTC; it costs a third less than strftime.
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _leg_from_row(row: tuple[Any, ...]) -> LegRecord:
    (sid, parent, account, from_, to, direction, start, answer, end, *rest) = row
    status, sip_code, sip_call_id, trunk, call_reason, duration, caller_name = rest
    return LegRecord(
        call_sid=sid,
        parent_call_sid=parent,
        account_sid=account,
        from_=from_,
        to=to,
        direction=direction,
        start_time=_from_text(start),
        answer_time=None if answer is None else _from_text(answer),
        end_time=_from_text(end),
        status=status,
        sip_code=sip_code,
        sip_call_id=sip_call_id,
        trunk=trunk,
        call_reason=call_reason,
        duration=duration,
        caller_name=caller_name,
    )


def _recording_from_row(row: tuple[Any, ...]) -> RecordingRecord:
    (sid, account, call, status, channels, source, track, trim, start, *rest) = row
    duration, length, path, error_code, url, method, events, pending, created, updated = rest
    return RecordingRecord(
        sid=sid,
        account_sid=account,
        call_sid=call,
        status=status,
        channels=channels,
        source=source,
        track=track,
        trim=bool(trim),
        start_time=_from_text(start),
        duration=duration,
        length=length,
        path=path,
        error_code=error_code,
        callback_url=url,
        callback_method=method,
        callback_events=tuple(events.split()),
        callback_pending=bool(pending),
        date_created=_from_text(created),
        date_updated=_from_text(updated),
    )


def _recording_values(rec: RecordingRecord) -> tuple[Any, ...]:
    """The columns a recording can change, in `_UPDATE_RECORDING` order."""
    return (
        rec.status,
        rec.channels,
        rec.track,
        int(rec.trim),
        _to_text(rec.start_time),
        rec.duration,
        rec.length,
        rec.path,
        rec.error_code,
        rec.callback_url,
        rec.callback_method,
        " ".join(rec.callback_events),
        int(rec.callback_pending),
        _to_text(rec.date_updated),
    )


class _Checkpointer:
    """Copies the WAL into the database file every few seconds, on a thread of its own.

    Every 5 s by default: checkpointing once a second cost about 8% of the recorded
    call rate at saturation (measured; the cause is not established), every 5 s is
    within the noise of checkpointing on the loop, without its stalls.

    A checkpoint ends in an fsync of the database file. On the event loop's connection
    (SQLite's automatic checkpoint, every 1000 pages) that fsync stalled the loop for
    seconds while the disk was busy writing recordings: the kernel throttles it behind
    their writeback. Here it waits on its own connection and thread (sqlite3 lets go
    of the GIL meanwhile); a PASSIVE checkpoint never blocks the loop's writers.
    """

    def __init__(self, path: Path, seconds: float):
        self._path = path
        self._seconds = seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 1000")
            while not self._stopping.wait(self._seconds):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as e:
                    log.warning("database checkpoint failed, retried later: %s", e)
        finally:
            db.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class Store:
    """The switch's database; open with `Store.open`, use on one thread only."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_seconds = COMMIT_RETRY_SECONDS
        self._closed = False
        self._checkpointer: _Checkpointer | None = None

    def group_commits(
        self,
        loop: asyncio.AbstractEventLoop,
        retry_seconds: float = COMMIT_RETRY_SECONDS,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        """From now on, the writes of one pass of ``loop`` share one commit, and a
        thread of its own checkpoints the WAL (`_Checkpointer`)."""
        self._loop = loop
        self._retry_seconds = retry_seconds
        path = Path(self._db.execute("PRAGMA database_list").fetchone()[2])
        self._checkpointer = _Checkpointer(path, checkpoint_seconds)
        self._db.execute("PRAGMA wal_autocheckpoint = 0")

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Run a write: in the open group transaction, or in one of its own."""
        if self._loop is not None and not self._db.in_transaction:
            self._db.execute("BEGIN")
            self._loop.call_soon(self.commit)
        return self._db.execute(sql, tuple(params))

    def commit(self) -> None:
        """Commit the group transaction, if one is open; a failed commit is retried."""
        if self._closed or not self._db.in_transaction:
            return
        try:
            self._db.commit()
        except sqlite3.Error as e:
            log.error("database commit failed (retrying in %g s): %s", self._retry_seconds, e)
            if self._loop is not None and self._db.in_transaction:
                self._loop.call_later(self._retry_seconds, self.commit)

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) ``<path>/dialswitch.sqlite3`` and migrate it."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            # Autocommit: each statement is its own transaction unless BEGIN is issued.
            db = sqlite3.connect(path / DB_NAME, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open {path / DB_NAME}: {e}") from e
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA busy_timeout = 1000")
            _migrate(db)
        except (sqlite3.Error, StoreError) as e:
            db.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot use {path / DB_NAME}: {e}") from e
        return cls(db)

    @classmethod
    def memory(cls) -> Store:
        """A migrated database in memory that keeps nothing: for tests and tools."""
        db = sqlite3.connect(":memory:", isolation_level=None)
        _migrate(db)
        return cls(db)

    def close(self) -> None:
        self.commit()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._closed = True
        self._db.close()  # the last connection to close checkpoints what is left

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Run a write of another module's table (switch/callback_journal.py), in the
        group transaction like the store's own."""
        return self._write(sql, params)

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """The rows of a query of another module's table."""
        return self._db.execute(sql, tuple(params)).fetchall()

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    # --- call legs

    def record_leg(self, rec: LegRecord) -> None:
        """Store the record of a leg that ended; a CallSid is recorded once."""
        try:
            self._write(
                _INSERT_LEG,
                (
                    rec.call_sid,
                    rec.parent_call_sid,
                    rec.account_sid,
                    rec.from_,
                    rec.to,
                    rec.direction,
                    _to_text(rec.start_time),
                    None if rec.answer_time is None else _to_text(rec.answer_time),
                    _to_text(rec.end_time),
                    rec.status,
                    rec.sip_code,
                    rec.sip_call_id,
                    rec.trunk,
                    rec.call_reason,
                    rec.duration,
                    rec.caller_name,
                ),
            )
        except sqlite3.IntegrityError as e:
            raise StoreError(f"leg {rec.call_sid} is already recorded") from e

    def leg(self, call_sid: str) -> LegRecord | None:
        row = self._db.execute(_SELECT_LEG, (call_sid,)).fetchone()
        return None if row is None else _leg_from_row(row)

    def legs_for_parent(self, call_sid: str) -> list[LegRecord]:
        """The child legs a call dialled, oldest first."""
        rows = self._db.execute(_SELECT_CHILD_LEGS, (call_sid,)).fetchall()
        return [_leg_from_row(row) for row in rows]

    def find_legs(
        self,
        limit: int,
        offset: int = 0,
        *,
        to: str | None = None,
        from_: str | None = None,
        status: str | None = None,
        parent_call_sid: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> list[LegRecord]:
        """Ended legs matching every filter given, newest first (the Calls list)."""
        where, params = [], []
        for column, value in (
            ("to_ = ?", to),
            ("from_ = ?", from_),
            ("status = ?", status),
            ("parent_call_sid = ?", parent_call_sid),
        ):
            if value is not None:
                where.append(column)
                params.append(value)
        if started_after is not None:
            where.append("start_time >= ?")
            params.append(_to_text(started_after))
        if started_before is not None:
            where.append("start_time < ?")
            params.append(_to_text(started_before))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT {_LEG_COLUMNS} FROM legs{clause}"
            " ORDER BY start_time DESC, rowid DESC LIMIT ? OFFSET ?"
        )
        rows = self._db.execute(sql, (*params, limit, offset)).fetchall()
        return [_leg_from_row(row) for row in rows]

    def delete_leg(self, call_sid: str) -> bool:
        """Remove an ended call's record (and its notifications); False if there was none."""
        deleted = self._write(_DELETE_LEG, (call_sid,)).rowcount > 0
        if deleted:
            self._write("DELETE FROM notifications WHERE call_sid = ?", (call_sid,))
        return deleted

    def recent_legs(self, limit: int) -> list[LegRecord]:
        """The `limit` legs that started last, newest first."""
        rows = self._db.execute(_SELECT_RECENT_LEGS, (limit,)).fetchall()
        return [_leg_from_row(row) for row in rows]

    # --- notifications

    def record_notification(
        self,
        call_sid: str,
        code: int,
        level: NotificationLevel,
        message: str,
        url: str | None,
        time: datetime,
    ) -> None:
        """Note that a call hit an error code (e.g. 11200 with the failing URL)."""
        if level not in NOTIFICATION_LEVELS:
            raise ValueError(f"unknown notification level {level!r}")
        self._write(_INSERT_NOTIFICATION, (call_sid, code, level, message, url, _to_text(time)))

    def notifications(self, call_sid: str) -> list[Notification]:
        """The notifications of one call, oldest first."""
        rows = self._db.execute(_SELECT_NOTIFICATIONS, (call_sid,)).fetchall()
        return [
            Notification(sid, code, level, message, url, _from_text(time), id)
            for sid, code, level, message, url, time, id in rows
        ]

    def replace_bindings(self, identity: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Store the current registrations of one identity (registrar rows)."""
        with self._db:
            self._db.execute("DELETE FROM bindings WHERE identity = ?", (identity,))
            self._db.executemany(
                "INSERT INTO bindings (identity, row) VALUES (?, ?)",
                [(identity, json.dumps(dict(row), sort_keys=True)) for row in rows],
            )

    def bindings(self) -> list[dict[str, Any]]:
        """Every stored registration row, for the registrar to reload at start."""
        return [json.loads(row) for (row,) in self._db.execute("SELECT row FROM bindings")]

    # --- recordings

    def create_recording(
        self,
        *,
        sid: str,
        account_sid: str,
        call_sid: str,
        channels: int,
        track: RecordingTrack,
        trim: bool,
        start_time: datetime,
        callback_url: str | None = None,
        callback_method: str = "POST",
        callback_events: Iterable[str] = ("completed",),
        source: str = "DialVerb",
        now: datetime | None = None,
    ) -> RecordingRecord:
        """Store a recording that has just started (status ``in-progress``)."""
        created = now or datetime.now(UTC)
        rec = RecordingRecord(
            sid=sid,
            account_sid=account_sid,
            call_sid=call_sid,
            status="in-progress",
            channels=channels,
            source=source,
            track=track,
            trim=trim,
            start_time=start_time,
            duration=0,
            length=0.0,
            path=None,
            error_code=None,
            callback_url=callback_url,
            callback_method=callback_method,
            callback_events=tuple(callback_events),
            callback_pending=False,
            date_created=created,
            date_updated=created,
        )
        try:
            self._write(
                _INSERT_RECORDING,
                (sid, account_sid, call_sid, source, _to_text(created), *_recording_values(rec)),
            )
        except sqlite3.IntegrityError as e:
            raise StoreError(f"recording {sid} already exists") from e
        return rec

    def update_recording(self, sid: str, **fields: Any) -> RecordingRecord:
        """Change some fields of a recording; ``date_updated`` defaults to now."""
        unknown = set(fields) - _RECORDING_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update recording fields {sorted(unknown)}")
        current = self.recording(sid)
        if current is None:
            raise StoreError(f"no recording {sid}")
        if "callback_events" in fields:
            fields["callback_events"] = tuple(fields["callback_events"])
        fields.setdefault("date_updated", datetime.now(UTC))
        rec = replace(current, **fields)
        self._write(_UPDATE_RECORDING, (*_recording_values(rec), sid))
        return rec

    def recording(self, sid: str) -> RecordingRecord | None:
        row = self._db.execute(_SELECT_RECORDING, (sid,)).fetchone()
        return None if row is None else _recording_from_row(row)

    def recordings(
        self, limit: int, call_sid: str | None = None, *, offset: int = 0
    ) -> list[RecordingRecord]:
        """Recordings newest first, optionally of one (parent) call only."""
        if call_sid is None:
            rows = self._db.execute(_SELECT_RECORDINGS, (limit, offset)).fetchall()
        else:
            rows = self._db.execute(_SELECT_CALL_RECORDINGS, (call_sid, limit, offset)).fetchall()
        return [_recording_from_row(row) for row in rows]

    def delete_recording(self, sid: str) -> bool:
        """Forget a recording; False when there was none. Its files are the caller's."""
        return self._write(_DELETE_RECORDING, (sid,)).rowcount > 0

    def recordings_in_progress(self) -> list[RecordingRecord]:
        """Recordings still being written, oldest first: at start-up, those a crash cut."""
        rows = self._db.execute(_SELECT_RECORDINGS_IN_PROGRESS).fetchall()
        return [_recording_from_row(row) for row in rows]

    def recordings_failed(self) -> list[RecordingRecord]:
        """Recordings that could not be finished (a full disk), oldest first."""
        rows = self._db.execute(_SELECT_RECORDINGS_FAILED).fetchall()
        return [_recording_from_row(row) for row in rows]

    def recordings_callback_pending(self) -> list[RecordingRecord]:
        """Recordings whose final-status callback is still to be delivered, oldest first."""
        rows = self._db.execute(_SELECT_RECORDINGS_CALLBACK_PENDING).fetchall()
        return [_recording_from_row(row) for row in rows]


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to ``len(MIGRATIONS)``, one transaction per step."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {version} is newer than this dialswitch"
            f" understands ({len(MIGRATIONS)})"
        )
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript runs the whole step, the version bump included, as one
        # transaction: a step either applies completely or not at all.
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")
