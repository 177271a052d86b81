"""Integration harness: the real switch process, a real webhook app, SIPp peers.

One switch per test module (starting pjsua2 with 2048 call slots takes about a
second), one aiohttp app server whose documents each test sets, and a trunk
whose far end is the SIPp callee each test starts on ``TRUNK_PORT``. After
every test the switch must report zero live calls, players and recorders (leak check).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.support.sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "integration-test-auth-token-0123456789"

# The numbers the switch owns in these tests, and the app path each one runs.
NUMBER = "+15005550100"
FALLBACK_NUMBER = "+15005550101"
CALLBACK_NUMBER = "+15005550102"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port free for both UDP and TCP (the switch listens on both)."""
    for _ in range(50):
        port = free_udp_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


@dataclass
class Recorded:
    method: str
    path: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]


Handler = str | Callable[[web.Request], "asyncio.Future[web.StreamResponse] | web.StreamResponse"]


@dataclass
class AppServer:
    """The customer's web app: serves RCML per path and records each request."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    base: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query) if request.method == "GET" else dict(await request.post())
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                str(request.url),
                {k: str(v) for k, v in params.items()},
                dict(request.headers),
            )
        )
        self._changed.set()
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no such path")
        if isinstance(handler, str):
            return web.Response(text=handler, content_type="text/xml")
        result = handler(request)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return result  # type: ignore[return-value]

    def hits(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 20.0) -> list[Recorded]:
        async def arrived() -> list[Recorded]:
            while len(self.hits(path)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.hits(path)

        return await asyncio.wait_for(arrived(), timeout)

    def reset(self) -> None:
        self.routes.clear()
        self.requests.clear()


@dataclass
class SwitchProcess:
    workdir: Path
    sip_port: int
    http_port: int
    trunk_port: int
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    async def health(self) -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.http}/healthz") as response,
        ):
            return dict(await response.json())

    async def wait_idle(self, timeout: float = 10.0) -> dict[str, object]:
        """Wait for zero live calls, players and recorders; fail the test if they stay."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            health = await self.health()
            if all(health.get(kind) == 0 for kind in ("calls", "players", "recorders")):
                return health
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"leaked call objects: {health}")
            await asyncio.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def write_config(workdir: Path, sip_port: int, http_port: int, trunk_port: int, app: str) -> Path:
    # Each switch gets its own RTP range, so two switches on one machine never hear
    # each other's stray packets.
    rtp_low = 20000 + 2000 * random.randrange(20)
    config = workdir / "dialswitch.toml"
    config.write_text(
        f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
rtp_ports = "{rtp_low}-{rtp_low + 1999}"

[http]
listen = "127.0.0.1:{http_port}"

[account]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"

[storage]
path = "{workdir / "var"}"

[dial]
timeout_grace = 1
max_calls = 100

[webhooks]
connect_timeout = 1.0
total_timeout = 3.0

[log]
level = "info"

[[trunks]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port}"

[[trunks]]
name = "nowhere"
uri = "sip:127.0.0.1:9"
prefixes = ["+1999"]

[[numbers]]
number = "{NUMBER}"
voice_url = "{app}/voice"

[[numbers]]
number = "{FALLBACK_NUMBER}"
voice_url = "{app}/broken"
voice_fallback_url = "{app}/fallback"

[[numbers]]
number = "{CALLBACK_NUMBER}"
voice_url = "{app}/voice"
status_callback = "{app}/status"
"""
    )
    return config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app_server() -> AsyncIterator[AppServer]:
    server = AppServer()
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(application)
    await runner.setup()
    port = free_tcp_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server.base = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SwitchProcess]:
    workdir = tmp_path_factory.mktemp("switch")
    handle = SwitchProcess(workdir, free_port_pair(), free_tcp_port(), free_udp_port())
    config = write_config(
        workdir, handle.sip_port, handle.http_port, handle.trunk_port, app_server.base
    )
    handle.log_path = workdir / "switch.log"
    log = open(handle.log_path, "wb")  # noqa: SIM115 - closed at teardown
    handle.process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switch",
        "--config",
        str(config),
        cwd=REPO,
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        if handle.process.returncode is not None:
            raise RuntimeError(f"switch exited at start:\n{handle.log()}")
        try:
            await handle.health()
            break
        except (aiohttp.ClientError, ValueError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
    yield handle
    handle.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(handle.process.wait(), 20)
    log.close()
    assert code == 0, f"switch exited {code} after SIGTERM:\n{handle.log()[-4000:]}"


@pytest_asyncio.fixture(loop_scope="module")
async def switch(
    switch_process: SwitchProcess, app_server: AppServer
) -> AsyncIterator[SwitchProcess]:
    """The module's switch, with the app reset before and a leak check after the test."""
    app_server.reset()
    yield switch_process
    await switch_process.wait_idle()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
