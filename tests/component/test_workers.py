"""The worker processes that finish recordings and encode MP3, off the event loop."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time

import pytest

from switch.workers import PIPE_ROOM, READ_BYTES, WorkerPool


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
        assert len(pool.pids()) == 2
        assert os.getpid() not in pool.pids()
    finally:
        await pool.close()


async def test_no_thread_of_the_switch_feeds_or_drains_the_workers() -> None:
    """Every job and answer goes through the event loop: no thread competes for the GIL."""
    threads = threading.active_count()
    pool = WorkerPool(workers=2)
    await pool.start()
    try:
        answers = await asyncio.gather(*(pool.run(_slow_pid) for _ in range(6)))
        assert set(answers) == set(pool.pids())  # both workers took jobs
        assert threading.active_count() == threads
    finally:
        await pool.close()


class _Unpicklable(Exception):
    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def _fail(kind: str) -> None:
    if kind == "plain":
        raise ValueError("bad input")
    raise _Unpicklable(7, "cannot cross a pipe")


async def test_a_job_that_fails_raises_its_error_in_the_switch() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        with pytest.raises(ValueError, match="bad input"):
            await pool.run(_fail, "plain")
        with pytest.raises(RuntimeError, match="_Unpicklable: cannot cross a pipe"):
            await pool.run(_fail, "odd")
        assert await pool.run(os.getpid) in pool.pids()  # the worker is still there
    finally:
        await pool.close()


async def test_a_job_that_cannot_be_sent_fails_alone() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
            await pool.run(len, threading.Lock())
        assert await pool.run(os.getpid) in pool.pids()
    finally:
        await pool.close()


async def test_close_stops_each_worker_without_mistaking_it_for_a_death(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = WorkerPool(workers=2)
    await pool.start()
    pids = pool.pids()
    with caplog.at_level(logging.ERROR, logger="switch.workers"):
        await pool.close()
        await asyncio.sleep(0.1)  # any callback a worker's exit would trigger has run
    assert caplog.records == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_jobs_and_answers_larger_than_the_pipe_still_go_through() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        big = b"x" * (PIPE_ROOM * 3)
        sizes = await asyncio.gather(*(pool.run(len, big) for _ in range(4)))
        assert sizes == [len(big)] * 4
        answers = await asyncio.gather(*(pool.run(bytes, READ_BYTES + 1) for _ in range(3)))
        assert [len(a) for a in answers] == [READ_BYTES + 1] * 3  # each over several reads
    finally:
        await pool.close()


class _Unloadable:
    """Pickles fine in the worker, fails to load in the switch."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


def _refuse() -> None:
    if multiprocessing.parent_process() is None:  # loading in the switch
        raise ValueError("cannot be rebuilt here")


def _unloadable() -> object:
    if multiprocessing.parent_process() is not None:
        return _Unloadable()
    return "done in a thread"


async def test_an_answer_that_does_not_load_sends_its_job_to_a_thread() -> None:
    pool = WorkerPool(workers=1)
    await pool.start()
    try:
        first = pool.pids()
        assert await asyncio.wait_for(pool.run(_unloadable), 10) == "done in a thread"
        assert await pool.run(os.getpid) not in (*first, os.getpid())  # a new worker
    finally:
        await pool.close()
