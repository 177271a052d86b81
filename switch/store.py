"""SQLite storage of call records and per-call notifications.

One connection, opened and used on the asyncio loop thread (sqlite3's same-thread
check stays on). Writes are short enough to run inline on the loop:

- WAL journal with ``synchronous=NORMAL``: a commit appends to the WAL without an
  fsync (durability is given up only for the last commits before a power loss, never
  consistency), so a commit costs tens of microseconds rather than a disk flush.
- One transaction per write. Records arrive one at a time, when a leg ends or an
  error is hit; batching them would make each wait for its neighbours and lose them
  on a crash, for no gain at the rates a switch produces them.
- Every statement is a module constant, so sqlite3's statement cache prepares each
  once per connection and reuses it.

Times are stored as ISO 8601 UTC text with microseconds and a ``Z``, a fixed width so
that text order is time order. The schema evolves by numbered migrations recorded in
``PRAGMA user_version``; later tables (recordings, registrations) are new migrations.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

DB_NAME = "dialswitch.sqlite3"

Direction = Literal["inbound", "outbound-dial", "outbound-api"]
FinalStatus = Literal["completed", "busy", "no-answer", "failed", "canceled"]
"""The CallStatus values a leg can end with (Twilio)."""
NotificationLevel = Literal["error", "warning"]

DIRECTIONS: frozenset[str] = frozenset(get_args(Direction))
FINAL_STATUSES: frozenset[str] = frozenset(get_args(FinalStatus))
NOTIFICATION_LEVELS: frozenset[str] = frozenset(get_args(NotificationLevel))

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
)
"""Schema steps: ``MIGRATIONS[n]`` takes the database from user_version n to n + 1."""

_LEG_COLUMNS = (
    "call_sid, parent_call_sid, account_sid, from_, to_, direction, start_time,"
    " answer_time, end_time, status, sip_code, sip_call_id, trunk, call_reason, duration"
)
_INSERT_LEG = f"INSERT INTO legs ({_LEG_COLUMNS}) VALUES ({', '.join('?' * 15)})"
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
    "SELECT call_sid, code, level, message, url, time FROM notifications"
    " WHERE call_sid = ? ORDER BY time, id"
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


def _to_text(value: datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _leg_from_row(row: tuple[Any, ...]) -> LegRecord:
    (sid, parent, account, from_, to, direction, start, answer, end, *rest) = row
    status, sip_code, sip_call_id, trunk, call_reason, duration = rest
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
    )


class Store:
    """The switch's database; open with `Store.open`, use on one thread only."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

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

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        return version

    # --- call legs

    def record_leg(self, rec: LegRecord) -> None:
        """Store the record of a leg that ended; a CallSid is recorded once."""
        try:
            self._db.execute(
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
        self._db.execute(
            _INSERT_NOTIFICATION, (call_sid, code, level, message, url, _to_text(time))
        )

    def notifications(self, call_sid: str) -> list[Notification]:
        """The notifications of one call, oldest first."""
        rows = self._db.execute(_SELECT_NOTIFICATIONS, (call_sid,)).fetchall()
        return [
            Notification(sid, code, level, message, url, _from_text(time))
            for sid, code, level, message, url, time in rows
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
