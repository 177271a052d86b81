"""The asyncio side of status callbacks: sender tasks over the callback journal.

`CallbackDelivery` journals each callback (switch/callback_journal.py) before it is
sent, keeps the in-memory `CallbackQueue` of what is due, and runs a few sender tasks
that each take a due row, make one attempt through the webhook client (``send``),
and then delete the row (delivered, or failed in a way that is not retried), put it
off with the `RetrySchedule`, or give it up (``report`` with 11200, then delete).
The webhook client (switch/webhook.py) owns the HTTP side and the reporting; this
module never touches a socket, and decides nothing the pure parts do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switch.callback_journal import CallbackJournal, CallbackQueue, JournalRow, RetrySchedule

__all__ = ["CallbackDelivery", "Failure"]

log = logging.getLogger("switch.webhook")

GIVE_UP_CODE = 11200


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed; ``retryable`` as the request's ``#rp`` policy says."""

    code: int
    message: str
    url: str
    retryable: bool


Send = Callable[[JournalRow], Awaitable[Failure | None]]
"""One attempt at a row: None when delivered (the app answered it)."""
Report = Callable[[JournalRow, Failure], object]
"""A row's final failure (not retried, or given up): log and notify."""


class CallbackDelivery:
    """Journalled status callbacks and the tasks that deliver them; one per process."""

    def __init__(
        self,
        journal: CallbackJournal,
        schedule: RetrySchedule,
        send: Send,
        report: Report,
        *,
        workers: int = 4,
        max_pending: int = 100_000,
    ) -> None:
        self.journal = journal
        self.schedule = schedule
        self.max_pending = max(1, max_pending)
        self._send = send
        self._report = report
        self._worker_count = max(1, workers)
        self._pending = CallbackQueue()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._loaded = False
        self._closed = False

    def post(
        self,
        key: str,
        url: str,
        method: str,
        pairs: list[tuple[str, str]],
        token: str,
        recording_sid: str | None = None,
    ) -> bool:
        """Journal a callback and wake a sender; False (nothing written) at the cap."""
        self._load()  # before adding: a row must not be indexed twice
        if len(self._pending) >= self.max_pending:
            return False
        row = self.journal.add(key, url, method, pairs, token, time.time(), recording_sid)
        self._pending.add(row.id, row.key, row.next_attempt)
        self.start()
        self._wake.set()
        return True

    def start(self) -> None:
        """Start the senders (inside the running loop); the journal's rows go first."""
        self._load()
        if self._workers or self._closed:
            return
        self._workers = [
            asyncio.create_task(self._sender(), name=f"webhook-callbacks-{n}")
            for n in range(self._worker_count)
        ]

    @property
    def pending(self) -> int:
        """Callbacks not delivered yet: the journal's rows."""
        if not self._loaded:
            return self.journal.count()
        return len(self._pending)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no callback is being attempted or due now (later retries do not
        count); False on timeout."""
        if not self._workers:
            return True

        async def settled() -> None:
            while self._pending.due(time.time()):
                self._idle.clear()
                await self._idle.wait()

        try:
            await asyncio.wait_for(settled(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the senders; undelivered rows stay in the journal for the next start.

        An attempt cut short here leaves its row as it was: it is sent again at the
        next start, with the same idempotency token.
        """
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()
        if self._loaded and len(self._pending):
            log.info("%d status callbacks kept for the next start", len(self._pending))

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        rows = self.journal.pending()
        for row in rows:
            self._pending.add(row.id, row.key, row.next_attempt)
        if rows:
            log.info("%d status callbacks from an earlier run to deliver", len(rows))

    async def _sender(self) -> None:
        """One sender: attempt whatever row is due, or sleep until one is."""
        while True:
            self._wake.clear()
            now = time.time()
            taken = self._pending.take(now)
            if taken is None:
                if not self._pending.due(now):
                    self._idle.set()
                due = self._pending.next_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if due is None else due - now)
                continue
            row_id, key = taken
            try:
                await self._attempt(row_id, key)
            except Exception:
                # The row stays in the journal and is tried again after one interval.
                log.exception("status callback %d crashed", row_id)
                self._pending.retry(row_id, key, time.time() + self.schedule.interval)
            self._wake.set()  # a key is free again: every sender looks once more

    async def _attempt(self, row_id: int, key: str) -> None:
        row = self.journal.get(row_id)
        if row is None:  # deleted behind our back: nothing to send
            self._pending.done(row_id, key, time.time())
            return
        self.journal.commit()  # on disk before it is first sent
        failure = await self._send(row)
        if failure is None:
            self._finish(row)
        elif not failure.retryable:
            self._report(row, failure)
            self._finish(row)
        else:
            self._failed(row, failure)

    def _failed(self, row: JournalRow, failure: Failure) -> None:
        """A retryable failure: try again later, or give up with 11200."""
        now = time.time()
        attempts = row.attempts + 1
        at = self.schedule.next_attempt(attempts, row.queued_at, now)
        if at is None:
            message = (
                f"status callback given up after {attempts} attempts in"
                f" {now - row.queued_at:.0f} s; last: {failure.code} {failure.message}"
            )
            self._report(row, Failure(GIVE_UP_CODE, message, failure.url, retryable=False))
            self._finish(row)
            return
        self.journal.reschedule(row.id, attempts, at)
        self._pending.retry(row.id, row.key, at)
        log.log(
            logging.WARNING if attempts == 1 else logging.DEBUG,
            "status callback %s %s failed (%d %s): retrying in %.1f s, giving up %.0f s"
            " after it was queued",
            row.method,
            failure.url,
            failure.code,
            failure.message,
            at - now,
            self.schedule.give_up_after,
            extra={"call_sid": row.call_sid, "error_code": failure.code},
        )

    def _finish(self, row: JournalRow) -> None:
        self.journal.remove(row)
        self._pending.done(row.id, row.key, time.time())
