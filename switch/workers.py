"""Blocking file and number work, in worker processes rather than on the event loop.

Finishing a recording (read both sides, merge or trim, write the WAV, fsync) and
encoding MP3 are numpy and file work. In threads of this process they would take the
GIL from the event-loop thread, which carries every SIP message and every pjsua2
callback; under load the loop then answers late and peers retransmit. Worker processes
run that work on another core with a GIL of their own.

The processes are spawned, never forked (forking a process that runs pjsua2's timer
and media threads is unsafe), ignore SIGINT (a Ctrl-C in a terminal reaches the whole
process group; the switch decides when they stop), exit when the switch dies, even by
SIGKILL, and run at a lower CPU priority, so calls come first when the cores are busy.
Work submitted before `WorkerPool.start`, or while replacing a worker that died, runs in
a thread instead: slower for the loop, but nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_WORKERS = 2
NICENESS = 5
"""How much lower than the switch the workers' CPU priority is (see ``nice(2)``)."""


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: BaseProcess) -> None:
    """Exit when the switch does, even when it was killed and could not say so."""
    parent.join()
    os._exit(0)


def _ready() -> int:
    """Run in each worker at start: load the modules recordings need, return the PID."""
    import media.recfiles  # noqa: F401

    return os.getpid()


class WorkerPool:
    """A few spawned worker processes for `run`; threads until `start` is called."""

    def __init__(self, workers: int = DEFAULT_WORKERS):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Spawn the workers and wait until each has loaded what it needs."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.workers))
        )

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker process (`fn` and its arguments must pickle)."""
        pool = self._pool
        if pool is None:
            return await asyncio.to_thread(fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._pool is pool:
                log.error("a worker process died; starting new ones")
                self._pool = self._new_pool()
                pool.shutdown(wait=False)
            return await asyncio.to_thread(fn, *args)

    async def close(self) -> None:
        """Finish the work already submitted, then stop the workers."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True)
