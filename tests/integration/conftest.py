"""Integration harness: the real switch process, a real webhook app, SIPp peers.

One switch per test module (starting pjsua2 with 4096 call slots takes about a
second), one aiohttp app server whose documents each test sets, and a trunk
whose far end is the SIPp callee each test starts on ``TRUNK_PORT``. After
every test the switch must report zero live calls, players and recorders (leak check).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.support.certs import TestCa
from tests.support.sipp import free_udp_port

REPO = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "integration-test-auth-token-0123456789"

# The conference bridge's own port: all that remains when no call or media is up.
IDLE_MEDIA_PORTS = 1

# The numbers the switch owns in these tests, and the app path each one runs.
NUMBER = "+15005550100"
FALLBACK_NUMBER = "+15005550101"
CALLBACK_NUMBER = "+15005550102"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair(ip: str = "127.0.0.1") -> int:
    """A port free on ``ip`` for both UDP and TCP (the switch listens on both, SIPp may)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port = int(udp.getsockname()[1])
        try:
            with socket.socket() as tcp:
                tcp.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def bounded(seconds: float) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Fail a test that runs longer than ``seconds`` instead of letting it hang."""

    def decorate(test: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(test)
        async def run(*args: Any, **kwargs: Any) -> Any:
            async with asyncio.timeout(seconds):
                return await test(*args, **kwargs)

        return run

    return decorate


async def run_command(
    *args: str, cwd: Path, timeout: float, stderr: int = asyncio.subprocess.PIPE
) -> tuple[int, bytes, bytes]:
    """Run a command to its end (killed after ``timeout`` s): (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=stderr
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err or b""


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
    config: Path | None = None

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

    async def wait_relayed(self, pairs: int, timeout: float = 10.0) -> None:
        """Wait until /healthz says ``pairs`` bridged pairs exchange RTP on the relay
        path (switch/call/media_paths.py)."""
        async with asyncio.timeout(timeout):
            while (await self.health()).get("relayed") != pairs:
                await asyncio.sleep(0.05)

    async def wait_idle(self, timeout: float = 10.0) -> dict[str, object]:
        """Wait for zero live calls, players and recorders, and the conference bridge
        back to its one idle port; fail the test if anything stays."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            health = await self.health()
            kinds = ("calls", "players", "recorders", "actors", "relayed")
            idle = all(health.get(kind) == 0 for kind in kinds)
            if idle and health.get("media_ports") == IDLE_MEDIA_PORTS:
                return health
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"leaked call objects: {health}")
            await asyncio.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    async def start(
        self, log_path: Path | None = None, timeout: float = 30, own_group: bool = False
    ) -> None:
        """Start ``python -m switch`` on ``config``, its output appended to ``log_path``
        (given, or the handle's); return once it serves /healthz. ``own_group``: in a
        process group of its own, which a test may signal as systemd does."""
        if log_path is not None:
            self.log_path = log_path
        assert self.config is not None and self.log_path is not None
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "switch",
                "--config",
                str(self.config),
                cwd=REPO,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=own_group,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(f"switch exited at start:\n{self.log()[-4000:]}")
            try:
                await self.health()
                return
            except (aiohttp.ClientError, ValueError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it has not gone after ``timeout`` s; its exit code
        (None: it was never started). A switch that has already exited is left as is."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode

    def children(self) -> list[int]:
        """PIDs of the processes the switch started (its recording workers)."""
        assert self.process is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in (task / "children").read_text().split()]
        return pids

    @property
    def database(self) -> Path:
        return self.workdir / "var" / "dialswitch.sqlite3"

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]:
        """The rows of ``sql`` on the switch's database (opened read-only), as dicts."""
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5)
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute(sql, params).fetchall()
        finally:
            connection.close()
        return [dict(row) for row in rows]

    def notifications(self, call_sid: str) -> list[dict[str, Any]]:
        """The switch's stored notifications of one call, oldest first."""
        return self.query(
            "SELECT code, level, message, url FROM notifications WHERE call_sid = ?"
            " ORDER BY time, id",
            call_sid,
        )


Switch = TypeVar("Switch", bound=SwitchProcess)


async def wait_gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not necessarily our child) exits within ``timeout`` s."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(True))
    try:
        return await asyncio.wait_for(gone, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def new_switch(workdir: Path, app: str) -> SwitchProcess:
    """A switch (not started) on free ports, with `write_config`'s file in ``workdir``
    and its log in ``workdir/switch.log``."""
    handle = SwitchProcess(workdir, free_port_pair(), free_tcp_port(), free_udp_port())
    handle.config = write_config(workdir, handle.sip_port, handle.http_port, handle.trunk_port, app)
    handle.log_path = workdir / "switch.log"
    return handle


class TlsSwitch(SwitchProcess):
    """A switch whose SIP listeners are udp: and tls:, with a certificate its own test
    CA signed and that CA as ``tls_ca``."""

    ca: TestCa
    tls_port: int

    @classmethod
    def create(cls, workdir: Path, app: str, sip: str = "") -> Self:
        """`new_switch`'s switch with the tcp: listener made tls: on a port of its own;
        ``sip``: more ``[sip]`` lines."""
        base = new_switch(workdir, app)
        handle = cls(base.workdir, base.sip_port, base.http_port, base.trunk_port)
        handle.config, handle.log_path = base.config, base.log_path
        handle.ca = TestCa(workdir / "ca")
        handle.tls_port = free_tcp_port()
        issued = handle.ca.issue("switch")
        assert handle.config is not None
        text = handle.config.read_text()
        old = f'listen = ["udp:127.0.0.1:{handle.sip_port}", "tcp:127.0.0.1:{handle.sip_port}"]'
        assert old in text
        handle.config.write_text(
            text.replace(
                old,
                f'listen = ["udp:127.0.0.1:{handle.sip_port}", "tls:127.0.0.1:{handle.tls_port}"]\n'
                f'tls_certificate = "{issued.certificate}"\n'
                f'tls_private_key = "{issued.private_key}"\n'
                f'tls_ca = "{handle.ca.path}"\n{sip}',
            )
        )
        return handle


@contextlib.asynccontextmanager
async def running(handle: Switch, log_path: Path | None = None) -> AsyncIterator[Switch]:
    """``handle``'s switch, started (its output to ``log_path``, given, or the handle's),
    then stopped with SIGTERM: it must exit 0."""
    await handle.start(log_path)
    try:
        yield handle
    finally:
        code = await handle.stop()
    assert code == 0, f"switch exited {code} after SIGTERM:\n{handle.log()[-4000:]}"


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
    async with running(new_switch(tmp_path_factory.mktemp("switch"), app_server.base)) as handle:
        yield handle


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
