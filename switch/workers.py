"""Blocking file and number work, in worker processes rather than on the event loop.

Finishing a recording (read both sides, merge or trim, write the WAV, fsync) and
encoding MP3 are numpy and file work. In threads of this process they would take the
GIL from the event-loop thread, which carries every SIP message and every pjsua2
callback; under load the loop then answers late and peers retransmit. Worker processes
run that work on another core with a GIL of their own.

Each worker is joined to the switch by one pipe, which the event loop itself writes
jobs to and reads results from (``loop.add_reader``): no thread of the switch feeds or
drains the workers, so none competes with the loop for the GIL. Each worker is sent
several jobs ahead, so it never idles while a busy loop gets round to its answer, but
never more than `PIPE_ROOM` bytes of them: a write to its pipe then never fills the
pipe and never blocks the loop. The rest wait in the pool's queue for the least busy
worker that has room.

The processes are spawned, never forked (forking a process that runs pjsua2's timer
and media threads is unsafe), ignore SIGINT and SIGTERM (a Ctrl-C in a terminal, and
systemd's stop, signal the whole process group; the switch decides when they stop,
after handing them the last recordings to finish), exit when the switch dies, even by
SIGKILL, and run at a lower CPU priority, so calls come first when the cores are busy.
Work submitted before `WorkerPool.start` or after `WorkerPool.close` runs in a thread;
so does the job a worker was running when it died (a new worker replaces it): slower
for the loop, but nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_WORKERS = 2
NICENESS = 5
"""How much lower than the switch the workers' CPU priority is (see ``nice(2)``)."""
IN_FLIGHT = 16
"""Jobs sent to one worker ahead of its answers."""
PIPE_ROOM = 32 * 1024
"""Bytes of jobs sent to one worker ahead of its answers: half a Linux pipe's buffer."""
STOP_SECONDS = 10.0
READ_BYTES = 256 * 1024
_LENGTH = struct.Struct("!i")
"""The length prefix ``Connection.send_bytes`` puts before each message."""


class WorkerDied(Exception):
    """The worker running a job exited before answering."""


def _serve(conn: Connection) -> None:
    """A worker's life: run each job the switch sends, answer, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    import media.recfiles  # noqa: F401 - loaded once, before the first recording needs it

    conn.send(os.getpid())
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        key, fn, args = job
        try:
            answer = (key, True, fn(*args))
        except Exception as e:
            answer = (key, False, _portable(e))
        conn.send(answer)


def _portable(error: Exception) -> Exception:
    """`error` if it survives pickling both ways, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _exit_with(parent: BaseProcess) -> None:
    """Exit when the switch does, even when it was killed and could not say so."""
    parent.join()
    os._exit(0)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: asyncio.Future[int]
    running: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    inbox: bytearray = field(default_factory=bytearray)
    """Bytes read from the worker that do not make a whole answer yet."""
    sizes: dict[int, int] = field(default_factory=dict)
    """The pickled size of each running job, for `PIPE_ROOM`."""

    def room_for(self, size: int) -> bool:
        """Whether a job of ``size`` bytes may be sent now (an idle worker takes any)."""
        if not self.running:
            return True
        return len(self.running) < IN_FLIGHT and sum(self.sizes.values()) + size <= PIPE_ROOM

    @property
    def pid(self) -> int | None:
        return self.process.pid


class WorkerPool:
    """A few spawned worker processes for `run`; threads until `start` is called."""

    def __init__(self, workers: int = DEFAULT_WORKERS):
        self.workers = workers
        self._live: list[_Worker] = []
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._keys = itertools.count()
        self._started = False

    async def start(self) -> None:
        """Spawn the workers and wait until each has loaded what it needs."""
        self._started = True
        await asyncio.gather(*(self._spawn().ready for _ in range(self.workers)))

    def pids(self) -> list[int]:
        """The worker processes that are up and taking jobs."""
        return [w.process.pid for w in self._live if w.ready.done() and w.process.pid]

    def _spawn(self) -> _Worker:
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(target=_serve, args=(theirs,), name="dialswitch-worker")
        process.daemon = True
        process.start()
        theirs.close()
        worker = _Worker(process, ours, loop.create_future())
        self._live.append(worker)
        loop.add_reader(ours.fileno(), self._readable, worker)
        return worker

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker process (`fn`, its arguments and result must pickle)."""
        if not self._started or not self._live:
            return await asyncio.to_thread(fn, *args)
        key = next(self._keys)
        job = bytes(ForkingPickler.dumps((key, fn, args)))  # raises here if it cannot pickle
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[key] = answer
        self._queue.append((key, job))
        self._dispatch()
        try:
            return await answer
        except WorkerDied:
            return await asyncio.to_thread(fn, *args)

    def _dispatch(self) -> None:
        while self._queue:
            key, job = self._queue[0]
            ready = [w for w in self._live if w.ready.done() and w.room_for(len(job))]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(w.running))
            self._queue.popleft()
            answer = self._waiting.pop(key)
            if answer.cancelled():
                continue
            worker.running[key] = answer
            worker.sizes[key] = len(job)
            try:
                worker.conn.send_bytes(job)
            except OSError:
                self._died(worker)

    def _readable(self, worker: _Worker) -> None:
        """Take every answer the worker has written: the loop may come back only much later.

        One read takes whatever the pipe holds (it is readable, so the read does not
        block); the answers are cut out of it by their length prefix (the framing of
        ``Connection.send``: 4 bytes, big-endian). That is one system call for any
        number of answers, where ``Connection.recv`` and ``poll`` take several each.
        """
        try:
            data = os.read(worker.conn.fileno(), READ_BYTES)
        except OSError:
            data = b""
        if not data:
            self._died(worker)
            return
        inbox = worker.inbox
        inbox += data
        start = 0
        while len(inbox) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(inbox, start)
            if size < 0:  # the framing of an answer over 2 GiB: not one of ours
                log.error("worker process %s sent an answer too large to take", worker.pid)
                worker.process.kill()
                self._died(worker)
                return
            end = start + _LENGTH.size + size
            if len(inbox) < end:
                break
            try:
                message = pickle.loads(inbox[start + _LENGTH.size : end])
            except Exception as e:  # an answer that does not load: its job would hang
                log.error("worker process %s sent an answer that does not load: %s", worker.pid, e)
                worker.process.kill()
                self._died(worker)
                return
            self._take(worker, message)
            start = end
        del inbox[:start]
        self._dispatch()

    @staticmethod
    def _take(worker: _Worker, message: Any) -> None:
        if not worker.ready.done():
            worker.ready.set_result(cast(int, message))
            return
        key, ok, value = message
        answer = worker.running.pop(key)
        del worker.sizes[key]
        if answer.cancelled():
            return
        if ok:
            answer.set_result(value)
        else:
            answer.set_exception(value)

    def _died(self, worker: _Worker) -> None:
        """A worker exited unasked: its jobs go to threads, a new worker takes its place.

        One that dies before it is ready (it cannot even load its modules) is not
        replaced: its successor would die the same way. With no worker left, every
        job runs in a thread.
        """
        self._live.remove(worker)
        self._detach(worker)
        log.error("worker process %s died (exit code %s)", worker.pid, worker.process.exitcode)
        for answer in worker.running.values():
            if not answer.done():
                answer.set_exception(WorkerDied())
        worker.running.clear()
        worker.sizes.clear()
        if not worker.ready.done():
            worker.ready.set_exception(WorkerDied())
            worker.ready.exception()  # start() may not be waiting for it: mark it seen
        elif self._started:
            try:
                self._spawn()
            except OSError as e:
                log.error("cannot start a new worker process: %s", e)
        if not self._live:
            self._give_up_queue()

    def _give_up_queue(self) -> None:
        """No worker is left to take the queued jobs: each goes to a thread instead."""
        self._queue.clear()
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(WorkerDied())

    @staticmethod
    def _detach(worker: _Worker) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        worker.conn.close()

    async def close(self) -> None:
        """Finish the work already submitted, then stop the workers."""
        self._started = False
        while True:
            self._dispatch()
            pending = [a for a in self._waiting.values() if not a.done()]
            pending += [a for w in self._live for a in w.running.values() if not a.done()]
            if not pending:
                break
            if not self._live:
                self._give_up_queue()
                continue
            await asyncio.wait(pending)
        self._queue.clear()
        self._waiting.clear()
        workers, self._live = self._live, []
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
            self._detach(worker)  # its exit is expected now, not a death to answer
        await asyncio.to_thread(_join, [w.process for w in workers])


def _join(processes: list[BaseProcess]) -> None:
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            log.error("worker process %s did not stop; killing it", process.pid)
            process.kill()
            process.join()
