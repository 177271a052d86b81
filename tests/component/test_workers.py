"""The worker processes that finish recordings and encode MP3, off the event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

from switch.workers import WorkerPool


def _parent_pid() -> int | None:
    parent = multiprocessing.parent_process()
    return None if parent is None else parent.pid


def _die_in_a_worker() -> str:
    """Kill the worker process running this; in a thread of the switch, just answer."""
    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return "done in a thread"


def _slow_pid() -> int:
    time.sleep(0.2)
    return os.getpid()


def _niceness() -> int:
    return os.nice(0)


async def test_work_runs_in_a_spawned_process_of_ours() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        assert await pool.run(os.getpid) != os.getpid()
        assert await pool.run(_parent_pid) == os.getpid()
        assert await pool.run(_niceness) > os.nice(0)
    finally:
        await pool.close()


async def test_before_start_and_after_close_work_runs_in_a_thread() -> None:
    pool = WorkerPool(workers=1)
    assert await pool.run(os.getpid) == os.getpid()
    await pool.start()
    await pool.close()
    assert await pool.run(os.getpid) == os.getpid()


async def test_a_worker_that_dies_is_replaced_and_its_work_still_done() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        first = await pool.run(os.getpid)
        assert await pool.run(_die_in_a_worker) == "done in a thread"
        second = await pool.run(os.getpid)
        assert second not in (first, os.getpid())
    finally:
        await pool.close()


async def test_workers_ignore_sigint_from_the_terminal() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        worker = await pool.run(os.getpid)
        os.kill(worker, signal.SIGINT)
        assert await pool.run(os.getpid) == worker
    finally:
        await pool.close()


async def test_close_waits_for_work_already_submitted() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    pending = [asyncio.ensure_future(pool.run(_slow_pid)) for _ in range(3)]
    await asyncio.sleep(0)  # let each run() hand its call to the pool
    await pool.close()
    assert all(p.done() for p in pending)
    assert len({p.result() for p in pending}) == 1


async def test_start_brings_every_worker_up() -> None:
    pool = WorkerPool(workers=2)
    await pool.start()
    try:
        assert pool._pool is not None
        assert len(pool._pool._processes) == 2
    finally:
        await pool.close()
