"""The status callbacks not delivered yet, kept in SQLite until they are.

Every status callback (call progress, recording, a number's status callback) is a
row of the ``callbacks`` table, written before it is first sent and deleted only
once the app answered it (a 2xx, or an HTTP error the retry policy does not retry:
the app did receive it) or once it was given up. A row therefore outlives a
``kill -9`` and a restart, and delivery is at least once: a callback sent just
before a crash, whose deletion was not committed yet, is sent again at the next
start with the same ``I-Twilio-Idempotency-Token`` (stored with the row), so the
app can tell.

Three parts, the first two without I/O:

- `RetrySchedule`: when to try a failed callback again (exponential backoff from
  ``interval`` doubling up to ``max_interval``) and when to give up (``give_up_after``
  seconds after it was queued; the last try falls on that moment).
- `CallbackQueue`: which rows may be sent now. Rows of one key (the CallSid) go one
  at a time in submission order, so SequenceNumber order holds: a later callback of a
  call waits until the earlier one is delivered or given up; other keys go on.
- `CallbackJournal`: the table, on the store's connection, so that deleting a
  recording's row and clearing the recording's ``callback_pending`` share one commit.

Times are wall-clock seconds (``time.time()``): they must mean the same after a restart.
"""

from __future__ import annotations

import collections
import heapq
import json
import logging
from dataclasses import dataclass, field

from switch.store import Store, StoreError

__all__ = ["CallbackJournal", "CallbackQueue", "JournalRow", "RetrySchedule"]

log = logging.getLogger(__name__)

_COLUMNS = "id, key, url, method, params, token, attempts, next_attempt, queued_at, recording_sid"
_INSERT = (
    "INSERT INTO callbacks (key, url, method, params, token, attempts, next_attempt,"
    " queued_at, recording_sid) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)"
)
_SELECT_ONE = f"SELECT {_COLUMNS} FROM callbacks WHERE id = ?"
_SELECT_ALL = f"SELECT {_COLUMNS} FROM callbacks ORDER BY id"
_RESCHEDULE = "UPDATE callbacks SET attempts = ?, next_attempt = ? WHERE id = ?"
_DELETE = "DELETE FROM callbacks WHERE id = ?"
_SELECT_RECORDING = "SELECT id FROM callbacks WHERE recording_sid = ? LIMIT 1"
_COUNT = "SELECT count(*) FROM callbacks"


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Backoff and give-up of one callback; every decision takes ``now``.

    After the n-th failed attempt the next one is ``interval * 2 ** (n - 1)`` seconds
    later, at most ``max_interval``, and never after the give-up moment
    (``queued_at + give_up_after``); an attempt that fails at or after that moment is
    the last.
    """

    interval: float = 5.0
    max_interval: float = 300.0
    give_up_after: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.interval <= self.max_interval:
            raise ValueError("need 0 < interval <= max_interval")
        if self.give_up_after <= 0:
            raise ValueError("give_up_after must be positive")

    def next_attempt(self, failures: int, queued_at: float, now: float) -> float | None:
        """When to try again after ``failures`` failed attempts; None: give up now."""
        deadline = queued_at + self.give_up_after
        if now >= deadline:
            return None
        delay = min(self.max_interval, self.interval * 2.0 ** min(max(failures - 1, 0), 62))
        return min(now + delay, deadline)


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One callback not delivered yet."""

    id: int
    """Submission order: the row's autoincrement id, never reused."""
    key: str
    """Rows of one key are delivered one at a time, in id order (the CallSid)."""
    url: str
    """As given, fragment (``#rc=...``) included."""
    method: str
    pairs: tuple[tuple[str, str], ...]
    token: str
    """``I-Twilio-Idempotency-Token``: the same on every attempt, restarts included."""
    attempts: int
    """Attempts that failed so far."""
    next_attempt: float
    queued_at: float
    recording_sid: str | None
    """A recording whose ``callback_pending`` is cleared when this row goes."""

    @property
    def call_sid(self) -> str:
        """Whose notification a failure is: the CallSid parameter, else the key."""
        return next((value for name, value in self.pairs if name == "CallSid"), self.key)


def _row(values: tuple[object, ...]) -> JournalRow:
    id_, key, url, method, params, token, attempts, next_attempt, queued_at, recording = values
    pairs = tuple((str(name), str(value)) for name, value in json.loads(str(params)))
    return JournalRow(
        id=int(id_),  # type: ignore[call-overload]
        key=str(key),
        url=str(url),
        method=str(method),
        pairs=pairs,
        token=str(token),
        attempts=int(attempts),  # type: ignore[call-overload]
        next_attempt=float(next_attempt),  # type: ignore[arg-type]
        queued_at=float(queued_at),  # type: ignore[arg-type]
        recording_sid=None if recording is None else str(recording),
    )


class CallbackJournal:
    """The ``callbacks`` table of the store's database (migration 5 of switch/store.py).

    Writes go through the store, in its group transaction once the switch runs: the
    insert is committed before the first attempt (the sender calls `commit` first).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(
        self,
        key: str,
        url: str,
        method: str,
        pairs: list[tuple[str, str]],
        token: str,
        now: float,
        recording_sid: str | None = None,
    ) -> JournalRow:
        """Write a new callback, due at once."""
        params = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
        values = (key, url, method, params, token, now, now, recording_sid)
        cursor = self.store.write(_INSERT, values)
        assert cursor.lastrowid is not None
        return JournalRow(
            cursor.lastrowid, key, url, method, tuple(pairs), token, 0, now, now, recording_sid
        )

    def get(self, row_id: int) -> JournalRow | None:
        rows = self.store.read(_SELECT_ONE, (row_id,))
        return _row(rows[0]) if rows else None

    def pending(self) -> list[JournalRow]:
        """Every row, oldest first: what a start has to deliver."""
        return [_row(values) for values in self.store.read(_SELECT_ALL)]

    def count(self) -> int:
        return int(self.store.read(_COUNT)[0][0])

    def reschedule(self, row_id: int, attempts: int, next_attempt: float) -> None:
        self.store.write(_RESCHEDULE, (attempts, next_attempt, row_id))

    def remove(self, row: JournalRow) -> None:
        """The callback was delivered or given up: forget it, and its recording's
        ``callback_pending`` with it (same transaction)."""
        self.store.write(_DELETE, (row.id,))
        if row.recording_sid is not None:
            try:
                self.store.update_recording(row.recording_sid, callback_pending=False)
            except StoreError:
                log.debug("recording %s is gone; nothing to clear", row.recording_sid)

    def holds_recording(self, recording_sid: str) -> bool:
        """Whether a callback of this recording is still to be delivered."""
        return bool(self.store.read(_SELECT_RECORDING, (recording_sid,)))

    def commit(self) -> None:
        """Commit what is written so far (the store's group transaction)."""
        self.store.commit()


@dataclass(order=True, slots=True)
class _Due:
    at: float
    id: int
    key: str = field(compare=False)


class CallbackQueue:
    """Which callbacks may be attempted now: an in-memory index of the journal.

    Per key a FIFO of row ids; only the first row of a key that is not being
    attempted is eligible, in a heap by due time. No I/O, no clock: the sender
    passes ``now`` and re-arms its timer from `next_due`.
    """

    def __init__(self) -> None:
        self._keys: dict[str, collections.deque[int]] = {}
        self._heap: list[_Due] = []
        self._busy: set[str] = set()
        self._count = 0

    def __len__(self) -> int:
        """Rows not delivered yet, those being attempted included."""
        return self._count

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def add(self, row_id: int, key: str, due: float) -> None:
        """A row, after every row of its key added before."""
        rows = self._keys.setdefault(key, collections.deque())
        rows.append(row_id)
        self._count += 1
        if len(rows) == 1 and key not in self._busy:
            heapq.heappush(self._heap, _Due(due, row_id, key))

    def take(self, now: float) -> tuple[int, str] | None:
        """The first row due by ``now`` whose key is free; its key is busy until `done`
        or `retry`."""
        if not self._heap or self._heap[0].at > now:
            return None
        due = heapq.heappop(self._heap)
        self._busy.add(due.key)
        return due.id, due.key

    def next_due(self) -> float | None:
        """When the next row becomes due (it may be already), None when none waits."""
        return self._heap[0].at if self._heap else None

    def due(self, now: float) -> bool:
        """Whether a row is being attempted or is due by ``now``."""
        return bool(self._busy) or (bool(self._heap) and self._heap[0].at <= now)

    def done(self, row_id: int, key: str, next_due: float) -> None:
        """The key's first row is delivered or given up; its next row is due at
        ``next_due`` (rows added while the key was busy are due at once)."""
        rows = self._keys[key]
        assert rows[0] == row_id, "only the first row of a key is attempted"
        rows.popleft()
        self._count -= 1
        self._busy.discard(key)
        if rows:
            heapq.heappush(self._heap, _Due(next_due, rows[0], key))
        else:
            del self._keys[key]

    def retry(self, row_id: int, key: str, at: float) -> None:
        """The key's first row failed; it stays first and is due again ``at``."""
        assert self._keys[key][0] == row_id, "only the first row of a key is attempted"
        self._busy.discard(key)
        heapq.heappush(self._heap, _Due(at, row_id, key))
