"""Status callbacks survive an app that is down, a restart and a ``kill -9``.

The real switch places calls through the REST API (the ``twilio`` library) to a SIPp
callee behind the trunk; the status callback URL points at a port where nothing listens
yet. The switch journals every callback in its SQLite database (the ``callbacks``
table, read here read-only), retries with the short backoff these tests configure, and
delivers what it kept once the app listens: each (CallSid, SequenceNumber) exactly once
and each call's callbacks in order. With a short give-up age the callbacks are dropped
with an 11200 notification instead; a recording's ``callback_pending`` stays set until
its callback is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from twilio.rest import Client

from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    SwitchProcess,
    bounded,
    free_tcp_port,
    new_switch,
    running,
)
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
EVENTS = ["initiated", "ringing", "answered", "completed"]
STATUSES = ["initiated", "ringing", "in-progress", "completed"]
T = TypeVar("T")


class CallbackApp:
    """The customer's callback endpoint on a fixed port: down until `start`."""

    def __init__(self) -> None:
        self.port = free_tcp_port()
        self.received: list[tuple[str, dict[str, str]]] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.received.append((request.path, {k: str(v) for k, v in form.items()}))
        self._changed.set()
        return web.Response(text="<Response/>", content_type="text/xml")

    async def start(self) -> None:
        application = web.Application()
        application.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(application)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def at(self, path: str) -> list[dict[str, str]]:
        return [params for where, params in self.received if where == path]

    async def wait_for(self, path: str, count: int, timeout: float = 30) -> list[dict[str, str]]:
        async with asyncio.timeout(timeout):
            while len(self.at(path)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.at(path)


@contextlib.asynccontextmanager
async def callback_app() -> AsyncIterator[CallbackApp]:
    server = CallbackApp()
    try:
        yield server
    finally:
        await server.stop()


def fast_switch(
    app_server: AppServer, workdir: Path, give_up_after: float = 120.0
) -> SwitchProcess:
    """A switch (not started) whose callbacks are retried after 0.2 s, doubling up to
    0.5 s, and given up ``give_up_after`` s after queueing."""
    handle = new_switch(workdir, app_server.base)
    assert handle.config is not None
    text = handle.config.read_text()
    assert text.count("[webhooks]\n") == 1
    handle.config.write_text(
        text.replace(
            "[webhooks]\n",
            "[webhooks]\ncallback_retry_interval = 0.2\ncallback_retry_max_interval = 0.5\n"
            f"callback_give_up_after = {give_up_after}\n",
        )
    )
    return handle


async def delivered_once_in_order(
    app: CallbackApp, handle: SwitchProcess, count: int, sids: list[str]
) -> list[dict[str, str]]:
    """Wait for ``count`` callbacks and an empty journal; check each call's events."""
    received = await app.wait_for("/status", count)
    await until(lambda: journal(handle) == [])
    check_each_event_once_in_order(app.at("/status"), sids)
    return received


def client_for(handle: SwitchProcess) -> Client:
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = handle.http
    return client


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The twilio library blocks: run it off the loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``predicate`` (it reads the switch's database) until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
    return value


async def queued_gauge(handle: SwitchProcess) -> float:
    """``dialswitch_callbacks_queued`` of /metrics: callbacks not delivered yet."""
    auth = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{handle.http}/metrics", headers=auth) as response,
    ):
        text = await response.text()
    (line,) = [x for x in text.splitlines() if x.startswith("dialswitch_callbacks_queued ")]
    return float(line.split()[1])


def journal(handle: SwitchProcess) -> list[dict[str, Any]]:
    return handle.query("SELECT id, key, attempts, recording_sid FROM callbacks ORDER BY id")


async def place_calls(handle: SwitchProcess, workdir: Path, count: int, **create: Any) -> list[str]:
    """``count`` API calls, each answered by the SIPp callee and hung up at once by its
    document; their CallSids once every call ended."""
    audio = RtpPeer(None)
    await audio.start()
    callee = sipp.Sipp(
        workdir,
        "callee",
        sipp.callee("answer", rtp_port=audio.port, ring_ms=100),
        port=handle.trunk_port,
    )
    callee.calls = count
    await callee.start()
    client = client_for(handle)
    try:
        sids = []
        for _ in range(count):
            created = await call(
                client.calls.create,
                to=CALLEE,
                from_=NUMBER,
                twiml='<Response><Pause length="1"/><Hangup/></Response>',
                **create,
            )
            sids.append(created.sid)
        await callee.finish(30)
    finally:
        await callee.stop()
        audio.close()
    await handle.wait_idle()
    return sids


async def calls_with_status_callbacks(
    handle: SwitchProcess, workdir: Path, url: str, count: int
) -> list[str]:
    """Place the calls; return once their four callbacks each are journalled and each
    call's first has been tried (the later ones wait their turn behind it)."""
    sids = await place_calls(
        handle, workdir, count, status_callback=url, status_callback_event=EVENTS
    )
    await until(
        lambda: (
            len(rows := journal(handle)) == 4 * count
            and sum(1 for r in rows if r["attempts"]) == count
        )
    )
    return sids


def check_each_event_once_in_order(received: list[dict[str, str]], sids: list[str]) -> None:
    by_event = Counter((p["CallSid"], p["SequenceNumber"]) for p in received)
    assert set(by_event.values()) == {1}, f"duplicates: {by_event}"
    for sid in sids:
        mine = [p for p in received if p["CallSid"] == sid]
        assert [p["SequenceNumber"] for p in mine] == ["0", "1", "2", "3"], sid
        assert [p["CallStatus"] for p in mine] == STATUSES, sid


@bounded(150)
async def test_callbacks_kept_across_a_restart_arrive_once_each_in_order(
    app_server: AppServer, workdir: Path
) -> None:
    handle = fast_switch(app_server, workdir)
    async with callback_app() as app:
        async with running(handle):
            sids = await calls_with_status_callbacks(handle, workdir, app.url("/status#rc=0"), 3)
        kept = journal(handle)
        assert len(kept) == 12, "a graceful stop keeps what was not delivered"
        assert "status callbacks kept for the next start" in handle.log()

        async with running(handle, workdir / "switch-2.log"):
            # Still down after the restart: retried, kept, nothing lost or doubled.
            await until(lambda: any(r["attempts"] > kept[0]["attempts"] for r in journal(handle)))
            assert [r["id"] for r in journal(handle)] == [r["id"] for r in kept]
            assert await queued_gauge(handle) == 12
            await app.start()
            received = await delivered_once_in_order(app, handle, 12, sids)
            assert received[0]["CallStatus"] == "initiated"
            assert await queued_gauge(handle) == 0
            await handle.wait_idle()


@bounded(150)
async def test_callbacks_queued_at_a_kill_9_arrive_after_the_restart(
    app_server: AppServer, workdir: Path
) -> None:
    handle = fast_switch(app_server, workdir)
    async with callback_app() as app:
        await handle.start()
        try:
            sids = await calls_with_status_callbacks(handle, workdir, app.url("/status#rc=0"), 2)
        finally:
            assert handle.process is not None
            os.kill(handle.process.pid, signal.SIGKILL)
            assert await asyncio.wait_for(handle.process.wait(), 10) == -signal.SIGKILL
        assert len(journal(handle)) == 8
        await app.start()
        async with running(handle, workdir / "switch-2.log"):
            await delivered_once_in_order(app, handle, 8, sids)
            assert "8 status callbacks from an earlier run to deliver" in handle.log()
            await handle.wait_idle()


@bounded(90)
async def test_a_callback_down_past_the_give_up_age_becomes_an_11200_notification(
    app_server: AppServer, workdir: Path
) -> None:
    handle = fast_switch(app_server, workdir, give_up_after=1.5)
    async with callback_app() as app, running(handle):
        (sid,) = await place_calls(
            handle,
            workdir,
            1,
            status_callback=app.url("/status#rc=0"),
            status_callback_event=EVENTS,
        )
        await until(lambda: journal(handle) == [])
        notes = await call(client_for(handle).calls(sid).notifications.list)
        assert [n.error_code for n in notes] == ["11200"] * 4
        assert all(n.request_url == app.url("/status") for n in notes)
        assert "given up after" in notes[0].message_text
        assert "given up after" in handle.log()
        assert app.received == []


@bounded(150)
async def test_a_recordings_callback_pending_is_cleared_on_delivery_not_on_queueing(
    app_server: AppServer, workdir: Path
) -> None:
    handle = fast_switch(app_server, workdir)
    async with callback_app() as app:
        async with running(handle):
            (sid,) = await place_calls(
                handle, workdir, 1, record=True, recording_status_callback=app.url("/rec#rc=0")
            )
            rows = await until(
                lambda: [r["recording_sid"] for r in journal(handle) if r["recording_sid"]]
            )
            (recording,) = handle.query(
                "SELECT sid, status, callback_pending FROM recordings WHERE call_sid = ?", sid
            )
            assert rows == [recording["sid"]]
            assert recording["status"] == "completed"
            assert recording["callback_pending"] == 1, "queued, not delivered: still pending"

        async with running(handle, workdir / "switch-2.log"):
            # The start-up repair left it to the journal: one row, not a second copy.
            assert [r["recording_sid"] for r in journal(handle)] == [recording["sid"]]
            await app.start()
            (delivered,) = await app.wait_for("/rec", 1)
            await until(lambda: journal(handle) == [])
            assert app.at("/rec") == [delivered]
            assert delivered["RecordingSid"] == recording["sid"]
            assert delivered["RecordingStatus"] == "completed"
            (after,) = handle.query(
                "SELECT callback_pending FROM recordings WHERE sid = ?", recording["sid"]
            )
            assert after["callback_pending"] == 0
            await handle.wait_idle()
