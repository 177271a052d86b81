"""The call path in memory: real Services, store and webhooks, fake legs, a real app.

``harness`` builds ``switch.services.Services`` as switch/app.py does (config
from TOML text, ``Store.open``, ``WebhookClient``, an aiohttp client session)
around a ``FakeEngine`` (tests/support/fakes.py), and serves the customer's
app on loopback with aiohttp: RCML documents by path, every request recorded.
``harness.call()`` hands an INVITE to ``CallSession.inbound`` and runs it as
the switch's ``_start`` does, reachable in ``services.calls`` by its CallSid.

``<Dial timeout>`` is at least 5 s and ``timeLimit`` at least 1 s (parse-time
rules), so the fork group's deadlines are scaled by ``TIME_SCALE``: a document's
``timeout="5"`` rings for 0.1 s. Nothing else about the group changes.

After every test: no leg is live, no player or recorder is open, no call task
is left running or registered, and every status callback was delivered.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import wave
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import switch.dial
from switch.call.fork import ForkGroup
from switch.config import load_config
from switch.services import Services, webhooks_for
from switch.session import CallSession
from switch.store import Store
from tests.support.fakes import FakeEngine, FakeLeg

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "component-test-auth-token-0123456789"
NUMBER = "+15005550100"  # ours: its voice URL is the app's /voice
FALLBACK_NUMBER = "+15005550101"  # ours: /broken, with /fallback as its fallback URL
CALLER = "+14155550123"
TIME_SCALE = 0.02  # seconds of fork-group deadline per second written in a document


@dataclass(frozen=True)
class Seen:
    """One request the app received."""

    method: str
    path: str
    params: dict[str, str]
    at: float


@dataclass
class WebApp:
    """The customer's app: documents and files by path, every request recorded.

    A path with no document answers an empty ``<Response/>``, one in ``failing``
    a 500; a path in ``held`` is answered only once its event is set.
    """

    documents: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            params = {name: str(value) for name, value in (await request.post()).items()}
        else:
            params = dict(request.query)
        self.seen.append(Seen(request.method, request.path, params, time.monotonic()))
        gate = self.held.get(request.path)
        if gate is not None:
            await gate.wait()
        if request.path in self.failing:
            return web.Response(status=500, text="down")
        if request.path in self.files:
            return web.Response(body=self.files[request.path], content_type="audio/wav")
        body = self.documents.get(request.path, "<Response/>")
        return web.Response(text=body, content_type="text/xml")

    def requests(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    def callbacks(self, path: str, call_sid: str) -> list[dict[str, str]]:
        """The params of every request to ``path`` about ``call_sid``, in order."""
        return [s.params for s in self.requests(path) if s.params.get("CallSid") == call_sid]


@dataclass
class Call:
    """One inbound call running in its session."""

    leg: FakeLeg
    session: CallSession
    task: asyncio.Task[None]

    async def finished(self, timeout: float = 2.0) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


@dataclass
class Harness:
    services: Services
    engine: FakeEngine
    app: WebApp
    base: str
    calls: list[Call] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def call(self, to: str = NUMBER, from_: str = CALLER) -> Call:
        """An INVITE for ``to`` arrives and its session starts."""
        leg = self.engine.incoming(
            self.services.new_call_sid(), to, from_, {"X-Customer": "42"}, "Alice"
        )
        session = CallSession.inbound(self.services, leg, self.services.apps[to], to=to)
        calls = self.services.calls  # as the switch's _start: the call's actor by CallSid
        calls.add(session)
        task = asyncio.get_running_loop().create_task(session.run(), name=leg.call_sid)
        task.add_done_callback(lambda _: calls.remove(session.call_sid))
        call = Call(leg, session, task)
        self.calls.append(call)
        return call

    async def until(self, condition: Callable[[], object], timeout: float = 2.0) -> None:
        """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {condition}")
            await asyncio.sleep(0.002)

    async def callbacks_delivered(self) -> None:
        assert await self.services.webhooks.drain(2), "status callbacks still queued"


class ScaledForkGroup(ForkGroup):
    """A fork group whose ring timeout and time limit pass ``TIME_SCALE`` times faster."""

    @classmethod
    def of(
        cls,
        keys: Iterable[Hashable],
        ring_timeout: float | None = None,
        time_limit: float | None = None,
        relay_early_media: bool = True,
    ) -> ForkGroup:
        return super().of(
            keys,
            ring_timeout * TIME_SCALE if ring_timeout is not None else None,
            time_limit * TIME_SCALE if time_limit is not None else None,
            relay_early_media,
        )


def _config_text(base: str, storage: Path) -> str:
    return f"""
[sip]
listen = ["udp:127.0.0.1:5060"]
[http]
listen = "127.0.0.1:8080"
[account]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"
[[trunks]]
name = "carrier"
uri = "sip:127.0.0.1:5080"
[[numbers]]
number = "{NUMBER}"
voice_url = "{base}/voice"
status_callback = "{base}/call-status"
[[numbers]]
number = "{FALLBACK_NUMBER}"
voice_url = "{base}/broken"
voice_fallback_url = "{base}/fallback"
[storage]
path = "{storage}"
[dial]
timeout_grace = 0
"""


def _beep() -> bytes:
    """50 ms of silence as an 8 kHz WAV: a ``<Play>`` that is over quickly."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 400)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory of ringback files for every test (Services makes them once)."""
    return tmp_path_factory.mktemp("tones")


@pytest.fixture
async def harness(
    tmp_path: Path,
    tone_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Harness]:
    monkeypatch.setattr(switch.dial, "ForkGroup", ScaledForkGroup)
    caplog.set_level(logging.INFO, logger="dialswitch")
    app = WebApp(files={"/beep.wav": _beep()})
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    server = TestServer(web_app, host="127.0.0.1", port=0)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")

    storage = tmp_path / "var"
    (storage / "media").mkdir(parents=True)
    (storage / "media" / "tones").symlink_to(tone_dir)
    config_path = tmp_path / "dialswitch.toml"
    config_path.write_text(_config_text(base, storage))
    config = load_config(config_path)
    store = Store.open(config.storage.path)
    webhooks = webhooks_for(config)
    http = aiohttp.ClientSession()
    engine = FakeEngine()
    services = Services(config, store, webhooks, engine, http)
    harness = Harness(services, engine, app, base)
    try:
        yield harness
        running = [call.leg.call_sid for call in harness.calls if not call.task.done()]
        assert not running, f"calls still running after the test: {running}"
        await harness.callbacks_delivered()
        assert not list(services.calls), f"actors left: {list(services.calls)}"
        assert not engine.live_legs(), f"live legs: {engine.live_legs()}"
        assert not engine.open_media(), f"open players/recorders: {engine.open_media()}"
        crashes = [r.getMessage() for r in caplog.records if r.exc_info is not None]
        assert not crashes, f"the call path raised: {crashes}"
    finally:
        for gate in app.held.values():
            gate.set()
        for call in harness.calls:
            call.task.cancel()
        await asyncio.gather(*(call.task for call in harness.calls), return_exceptions=True)
        await engine.close()
        await webhooks.close()
        await http.close()
        store.close()
        await server.close()
