"""Journalled status callbacks against a real aiohttp app on loopback: retries later
with backoff, per-call order while an app fails, give-up, the cap, and a restart
(a second client on the same SQLite database) delivering what the first kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from switch.callback_journal import CallbackJournal
from switch.store import Store
from switch.webhook import WebhookClient, WebhookSettings
from tests.component.test_webhook import ACCOUNT, TOKEN, App, closed_port, serving, status

FAST = WebhookSettings(
    callback_backoff=0.01,
    callback_retry_interval=0.05,
    callback_retry_max_interval=0.1,
    callback_give_up_after=30,
)
RECORDING = "RE" + "0" * 31 + "7"


class Sink:
    """The process-wide notifier: (call_sid, code, message, url) of each final failure."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, str, str]] = []
        self.changed = asyncio.Event()

    def __call__(self, call_sid: str, code: int, message: str, url: str) -> None:
        self.items.append((call_sid, code, message, url))
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()


class Observed:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, int | None]] = []

    def __call__(self, kind: str, seconds: float, code: int | None) -> None:
        self.outcomes.append((kind, code))


@pytest.fixture
async def app() -> AsyncIterator[App]:
    """The app of tests/component/test_webhook.py: records requests, answers by path."""
    async with serving() as recorder:
        yield recorder


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store.open(tmp_path) as store:
        yield store


def client_on(
    store: Store,
    settings: WebhookSettings = FAST,
    *,
    notify: Sink | None = None,
    observer: Observed | None = None,
) -> WebhookClient:
    journal = CallbackJournal(store)
    return WebhookClient(
        settings, ACCOUNT, TOKEN, journal=journal, notify=notify, observer=observer
    )


async def arrivals(app: App, path: str, count: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while len(app.at(path)) < count:
            await asyncio.sleep(0.005)


async def test_a_5xx_app_is_retried_later_keeping_each_calls_order(app: App, store: Store) -> None:
    """rc=0: no retry inside the attempt; the journal retries with backoff, with the
    same idempotency token, and CA1's second callback waits for its first."""
    failures = iter([503, 503, 503])

    async def flaky(request: web.Request) -> web.Response:
        form = await request.post()
        if form["CallSid"] == "CA1":
            return web.Response(status=next(failures, 204))
        return web.Response(status=204)

    app.routes["/status"] = flaky
    client = client_on(store)
    try:
        for seq in range(2):
            for call in ("CA1", "CA2"):
                params = {"CallSid": call, "SequenceNumber": str(seq)}
                client.post_callback(f"{app.base}/status#rc=0", "POST", params)
        await arrivals(app, "/status", 7)
        assert await client.drain(2)
    finally:
        await client.close()
    ca1 = [s for s in app.seen if s.form["CallSid"] == "CA1"]
    ca2 = [s for s in app.seen if s.form["CallSid"] == "CA2"]
    assert [s.form["SequenceNumber"] for s in ca1] == ["0", "0", "0", "0", "1"]
    assert [s.form["SequenceNumber"] for s in ca2] == ["0", "1"]
    assert ca2[-1].at < ca1[-2].at, "CA2 did not wait for CA1's retries"
    tokens = {s.headers["I-Twilio-Idempotency-Token"] for s in ca1[:4]}
    assert len(tokens) == 1, "one callback keeps its token across retries"
    gaps = [later.at - earlier.at for earlier, later in zip(ca1, ca1[1:3], strict=False)]
    assert all(gap >= 0.04 for gap in gaps), gaps
    assert CallbackJournal(store).pending() == []


async def test_a_4xx_answer_is_delivered_not_retried(app: App, store: Store) -> None:
    app.routes["/status"] = status(404)
    sink = Sink()
    client = client_on(store, notify=sink)
    try:
        client.post_callback(f"{app.base}/status", "POST", {"CallSid": "CA1"})
        await sink.wait_for(1)
    finally:
        await client.close()
    assert len(app.at("/status")) == 1
    assert [(sid, code) for sid, code, _, _ in sink.items] == [("CA1", 15003)]
    assert CallbackJournal(store).pending() == []


async def test_a_restart_delivers_what_the_journal_kept_in_order(app: App, store: Store) -> None:
    port = closed_port()
    first = client_on(store)
    for seq in range(3):
        params = {"CallSid": "CA1", "SequenceNumber": str(seq)}
        first.post_callback(f"http://127.0.0.1:{port}/status#rc=0", "POST", params)
    await first.drain(2)
    await first.close()
    kept = CallbackJournal(store).pending()
    assert len(kept) == 3 and kept[0].attempts >= 1
    # The app is back (at another address: the journal sends where it was told to).
    for row in kept:
        url = f"{app.base}/status#rc=0"
        store.write("UPDATE callbacks SET url = ?, next_attempt = 0 WHERE id = ?", (url, row.id))
    second = client_on(store)
    try:
        assert second.queued == 3
        second.start()
        await arrivals(app, "/status", 3)
        assert await second.drain(2)
    finally:
        await second.close()
    assert [s.form["SequenceNumber"] for s in app.seen] == ["0", "1", "2"]
    assert app.seen[0].headers["I-Twilio-Idempotency-Token"] == kept[0].token
    assert second.queued == 0


async def test_given_up_after_the_configured_age_with_11200(store: Store) -> None:
    settings = WebhookSettings(
        callback_retry_interval=0.05, callback_retry_max_interval=0.05, callback_give_up_after=0.3
    )
    sink = Sink()
    observed = Observed()
    client = client_on(store, settings, notify=sink, observer=observed)
    url = f"http://127.0.0.1:{closed_port()}/status"
    try:
        client.post_callback(f"{url}#rc=0", "POST", {"CallSid": "CA9", "SequenceNumber": "0"})
        await sink.wait_for(1)
    finally:
        await client.close()
    ((call_sid, code, message, where),) = sink.items
    assert (call_sid, code, where) == ("CA9", 11200, url)
    assert "given up after" in message and "11205" in message
    attempts = [outcome for outcome in observed.outcomes if outcome == ("callback", 11205)]
    assert 3 <= len(attempts) <= 10
    assert CallbackJournal(store).pending() == []


async def test_at_the_cap_a_new_callback_is_refused_and_counted(store: Store) -> None:
    settings = WebhookSettings(callback_max_pending=2, callback_retry_interval=60)
    sink = Sink()
    observed = Observed()
    client = client_on(store, settings, notify=sink, observer=observed)
    url = f"http://127.0.0.1:{closed_port()}/status#rc=0"
    try:
        for n in range(3):
            client.post_callback(url, "POST", {"CallSid": f"CA{n}"})
        assert client.queued == 2
        assert [(sid, code) for sid, code, _, _ in sink.items] == [("CA2", 11200)]
        assert "queue full" in sink.items[0][2]
        assert ("callback", 11200) in observed.outcomes
    finally:
        await client.close()
    assert [row.call_sid for row in CallbackJournal(store).pending()] == ["CA0", "CA1"]


async def test_a_recordings_callback_pending_is_cleared_on_delivery_only(
    app: App, store: Store
) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(status=204)

    app.routes["/rec"] = held
    store.create_recording(
        sid=RECORDING,
        account_sid=ACCOUNT,
        call_sid="CA1",
        channels=1,
        track="both",
        trim=False,
        start_time=datetime.now(UTC),
        callback_url=f"{app.base}/rec",
    )
    store.update_recording(RECORDING, status="completed", callback_pending=True)
    client = client_on(store)
    try:
        client.post_callback(
            f"{app.base}/rec", "POST", {"CallSid": "CA1"}, key=RECORDING, recording_sid=RECORDING
        )
        await arrivals(app, "/rec", 1)
        recording = store.recording(RECORDING)
        assert recording is not None and recording.callback_pending, "sent, not answered yet"
        gate.set()
        assert await client.drain(2)
    finally:
        await client.close()
    recording = store.recording(RECORDING)
    assert recording is not None and not recording.callback_pending


async def test_a_callback_the_journal_cannot_take_is_reported_not_raised(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "gone")
    sink = Sink()
    client = client_on(store, notify=sink)
    client.start()
    store.close()  # as a database that became unusable
    try:
        client.post_callback("http://127.0.0.1:1/status", "POST", {"CallSid": "CA1"})
    finally:
        await client.close()
    ((call_sid, code, message, _),) = sink.items
    assert (call_sid, code) == ("CA1", 11200)
    assert "cannot journal" in message
