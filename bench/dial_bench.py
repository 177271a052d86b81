#!/usr/bin/env python3
"""Load benchmark of ``<Dial><Number>``: SIPp caller -> dialswitch -> SIPp callee.

The bench starts everything it measures and stops only what it started:

- a webhook app (aiohttp, in this process) whose ``/voice`` answers
  ``<Response><Dial><Number>+15551230001</Number></Dial></Response>`` (with
  ``--targets N``: N ``<Number>``s, +15551230001 .. +1555123000N);
- a switch process (``python -m switch --config``) in its own temporary
  directory, on free loopback ports, with one number pointing at that app and
  one trunk per target (trunk i carries prefix +1555123000i to its own callee);
- per load step, one SIPp UAS per target on its trunk port (target 1 answers
  after ``--ring-ms``, the others ring until the switch CANCELs them) and one
  SIPp UAC caller sending ``-r RATE -rp 1000 -m CALLS -l LIMIT`` INVITEs to the
  number; each answered call is held ``--hold`` seconds, then the caller hangs up.

Modes: a fixed run (``--rate --calls --hold``), ``--find-max`` (rate steps, stop
at the first step with a failed call) and ``--concurrency K`` (RSS growth per
concurrent call). ``--repeat`` runs the mode several times, each with a fresh
switch, and reports medians. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
NUMBER = "+15005550100"  # the switch's number the caller dials
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "dial-bench-auth-token-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The switch's RTP range. Wider than the shipped 20000-29999 on purpose: the engine
# splits the range into 1 + trunk accounts + 8 credential-account slices and every
# inbound leg and credential-less trunk call takes its RTP pair from the first slice,
# so 20000-29999 leaves 555 pairs (~270 bridged calls) -- see bench/README.md.
# Kept below the kernel's ephemeral ports (32768+) and away from SIPp's default 6000.
DEFAULT_RTP_PORTS = "10000-31999"


def target_number(i: int) -> str:
    """Fork target i (1-based): +15551230001, +15551230002, ..."""
    return f"+1555123{i:04d}"


# ---- ports and /proc ---------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    raise RuntimeError("no free UDP+TCP port")


def free_media_block() -> int:
    """An even port P with UDP P..P+3 free: SIPp's audio and video RTP/RTCP sockets."""
    for _ in range(200):
        base = random.randrange(61000, 65500, 2)  # above the ephemeral range and RTP
        socks = []
        try:
            for port in range(base, base + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free media port block")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed "name/tid" (/proc/<pid>/task/*/stat)."""
    found: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        label = "main" if tid == str(pid) else name  # the event loop runs on the main thread
        found[f"{label}/{tid}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def child_pids(pid: int) -> list[int]:
    """The processes a process started (the switch's recording workers)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                pids += [
                    int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                ]
    return pids


def workers_usage(pid: int) -> tuple[float, int]:
    """CPU seconds and bytes written to storage by the child processes of ``pid``."""
    children = child_pids(pid)
    return sum(cpu_seconds(c) for c in children), sum(write_bytes(c) for c in children)


def write_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to storage (/proc/<pid>/io)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# ---- the webhook app ---------------------------------------------------------------


class WebhookApp:
    """The customer's app: every voice request gets the same <Dial> document."""

    def __init__(self, targets: int, answer_on_bridge: bool, record: str | None = None):
        numbers = "".join(f"<Number>{target_number(i)}</Number>" for i in range(1, targets + 1))
        attrs = ' answerOnBridge="true"' if answer_on_bridge else ""
        if record:
            attrs += f' record="{record}"'
        self.document = f"<Response><Dial{attrs}>{numbers}</Dial></Response>"
        self.hits = 0
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def _voice(self, request: web.Request) -> web.Response:
        self.hits += 1
        if request.method == "POST":
            await request.read()
        return web.Response(text=self.document, content_type="text/xml")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/voice", self._voice)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_tcp_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024).start()
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ---- the switch ----------------------------------------------------------------------


@dataclass
class Switch:
    workdir: Path
    targets: int
    app_base: str
    log_level: str
    max_calls: int
    rtp_ports: str
    sip_port: int = field(default_factory=free_port_pair)
    http_port: int = field(default_factory=free_tcp_port)
    trunk_ports: list[int] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.trunk_ports = [free_udp_port() for _ in range(self.targets)]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "switch.log"

    def write_config(self) -> Path:
        trunks = "".join(
            f"""
[[trunks]]
name = "target{i}"
uri = "sip:127.0.0.1:{port}"
prefixes = ["{target_number(i)}"]
"""
            for i, port in enumerate(self.trunk_ports, start=1)
        )
        config = self.workdir / "dialswitch.toml"
        config.write_text(
            f"""# written by bench/dial_bench.py
[sip]
listen = ["udp:127.0.0.1:{self.sip_port}", "tcp:127.0.0.1:{self.sip_port}"]
rtp_ports = "{self.rtp_ports}"

[http]
listen = "127.0.0.1:{self.http_port}"

[account]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"

[storage]
path = "{self.workdir / "var"}"

[dial]
timeout_grace = 5
max_calls = {self.max_calls}

[webhooks]
connect_timeout = 5.0
total_timeout = 15.0

[log]
level = "{self.log_level}"
{trunks}
[[numbers]]
number = "{NUMBER}"
voice_url = "{self.app_base}/voice"
"""
        )
        return config

    async def start(self) -> None:
        config = self.write_config()
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps its copy
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "switch",
                "--config",
                str(config),
                cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + 60
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(f"switch exited at start:\n{self.log_tail()}")
            try:
                await self.health()
                return
            except (aiohttp.ClientError, ValueError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"switch not healthy in 60 s:\n{self.log_tail()}") from None
                await asyncio.sleep(0.1)

    async def health(self) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"http://127.0.0.1:{self.http_port}/healthz") as response:
            if response.status != 200:
                raise ValueError(f"healthz {response.status}")
            return dict(await response.json())

    async def wait_idle(self, baseline: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        """Leak check: every live-object count of /healthz back to its idle value.

        ``calls``, ``players`` (and any other count, e.g. ``recorders``) must be 0;
        ``media_ports`` must be back to what it was before the first call (the
        conference bridge's own port).
        """

        def idle(health: dict[str, Any]) -> bool:
            counts = {k: v for k, v in health.items() if isinstance(v, int)}
            if not counts:
                return False
            return all(
                v == (baseline.get(k, 0) if k == "media_ports" else 0) for k, v in counts.items()
            )

        start = time.monotonic()
        health: dict[str, Any] = {}
        while time.monotonic() - start < timeout:
            with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
                health = await self.health()
                if idle(health):
                    break
            await asyncio.sleep(0.1)
        return {
            "ok": idle(health),
            **{k: v for k, v in health.items() if k != "status"},
            "media_ports_idle": baseline.get("media_ports"),
            "waited_s": round(time.monotonic() - start, 2),
        }

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def log_problems(self) -> dict[str, int]:
        counts = {"ERROR": 0, "WARNING": 0, "Traceback": 0}
        if self.log_path.exists():
            for line in self.log_path.read_text(errors="replace").splitlines():
                for key in counts:
                    if key in line:
                        counts[key] += 1
        return counts

    async def stop(self) -> int | None:
        """SIGTERM our switch (by its PID), then SIGKILL if it does not stop in 30 s."""
        if self._session is not None:
            await self._session.close()
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


# ---- SIPp ----------------------------------------------------------------------------


class Sipp:
    """One SIPp process of a load step, with its stat CSV, <log> file and error file."""

    def __init__(self, workdir: Path, name: str, scenario: str, port: int, rtp_echo: bool):
        self.workdir = workdir
        self.name = name
        self.scenario = workdir / scenario
        if not self.scenario.exists():  # SIPp writes its files next to the scenario
            shutil.copy(SCENARIOS / scenario, self.scenario)
        self.port = port
        self.rtp_echo = rtp_echo
        self.stat_file = workdir / f"{name}.stat.csv"
        self.log_file = workdir / f"{name}.log"
        self.error_file = workdir / f"{name}.errors.log"
        self.process: asyncio.subprocess.Process | None = None
        self.cpu_start = 0.0
        self.cpu_end = 0.0

    async def start(
        self, extra: list[str], timeout_s: float, recv_timeout_s: float, target: str | None = None
    ) -> None:
        args = [
            "sipp",
            "-sf",
            str(self.scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(free_media_block()),
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-fd",
            "1",
            "-trace_logs",
            "-log_file",
            str(self.log_file),
            "-trace_err",
            "-error_file",
            str(self.error_file),
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            "-recv_timeout",
            str(int(recv_timeout_s * 1000)),
            "-buff_size",
            str(4 * 1024 * 1024),
            *(["-rtp_echo"] if self.rtp_echo else []),
            *extra,
        ]
        if target:
            args.append(target)
        for path in (self.stat_file, self.log_file, self.error_file):
            path.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            *args,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.cpu_start = cpu_seconds(self.process.pid)

    async def wait(self, timeout: float) -> int:
        """Exit code; a SIPp still running after ``timeout`` is killed (code -9)."""
        assert self.process is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
        except TimeoutError:
            await self.kill()
        return self.process.returncode if self.process.returncode is not None else -1

    def sample_cpu(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.cpu_end = cpu_seconds(self.process.pid) or self.cpu_end

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()  # our own child, by PID
            await self.process.wait()

    def stats(self) -> dict[str, str]:
        """The last row of SIPp's statistics CSV (cumulative counters are the (C) columns)."""
        if not self.stat_file.exists():
            return {}
        lines = [ln for ln in self.stat_file.read_text(errors="replace").splitlines() if ln]
        if len(lines) < 2:
            return {}
        header = lines[0].rstrip(";").split(";")
        row = lines[-1].rstrip(";").split(";")
        return dict(zip(header, row, strict=False))

    def stat_rows(self) -> list[dict[str, str]]:
        if not self.stat_file.exists():
            return []
        lines = [ln for ln in self.stat_file.read_text(errors="replace").splitlines() if ln]
        header = lines[0].rstrip(";").split(";") if lines else []
        return [dict(zip(header, ln.rstrip(";").split(";"), strict=False)) for ln in lines[1:]]

    def events(self, kind: str) -> dict[int, float]:
        """``<log>`` lines "KIND call_number date time epoch" as {call_number: epoch}."""
        found: dict[int, float] = {}
        if not self.log_file.exists():
            return found
        for line in self.log_file.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == kind and parts[1].isdigit():
                with contextlib.suppress(ValueError):
                    found.setdefault(int(parts[1]), float(parts[-1]))
        return found

    def errors(self, lines: int = 5) -> list[str]:
        if not self.error_file.exists():
            return []
        text = self.error_file.read_text(errors="replace").splitlines()
        return [ln for ln in text if ln.strip()][:lines]


def _count(stats: dict[str, str], key: str) -> int:
    try:
        return int(float(stats.get(key, "0") or 0))
    except ValueError:
        return 0


FAILURE_KEYS = (
    "FailedCannotSendMessage(C)",
    "FailedMaxUDPRetrans(C)",
    "FailedTcpConnect(C)",
    "FailedTcpClosed(C)",
    "FailedUnexpectedMessage(C)",
    "FailedCallRejected(C)",
    "FailedCmdNotSent(C)",
    "FailedRegexpDoesntMatch(C)",
    "FailedRegexpShouldntMatch(C)",
    "FailedRegexpHdrNotFound(C)",
    "FailedOutboundCongestion(C)",
    "FailedTimeoutOnRecv(C)",
    "FailedTimeoutOnSend(C)",
)


# ---- one load step ---------------------------------------------------------------------


@dataclass
class StepResult:
    rate: float
    calls: int
    hold_s: float
    ring_ms: int
    targets: int
    answer_on_bridge: bool
    ok_calls: int = 0
    failed_calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    callee_ok: int = 0
    callee_failed: int = 0
    caller_exit: int | None = None
    callee_exits: list[int] = field(default_factory=list)
    retransmissions: int = 0
    cps: float | None = None
    window_s: float | None = None
    wall_s: float = 0.0
    answer_ms_p50: float | None = None
    answer_ms_p99: float | None = None
    setup_ms_p50: float | None = None
    setup_ms_p99: float | None = None
    pdd_ms_p50: float | None = None
    pdd_ms_p99: float | None = None
    cpu_pct: float = 0.0
    disk_write_kbps: float = 0.0  # storage writes of the switch and its workers
    workers_cpu_pct: float = 0.0  # the switch's worker processes (finishing recordings)
    cpu_pct_peak_1s: float = 0.0
    thread_cpu_pct: dict[str, float] = field(default_factory=dict)  # switch threads, % of a core
    sipp_cpu_pct: dict[str, float] = field(default_factory=dict)
    bench_cpu_pct: float = 0.0
    rss_kb_start: int = 0
    rss_kb_peak: int = 0
    rss_kb_end: int = 0
    legs_peak: int = 0
    plateau_rss_kb: int | None = None
    leak_check: dict[str, Any] = field(default_factory=dict)
    webhook_hits: int = 0
    series: list[list[float]] = field(default_factory=list)  # [t s, cpu %, rss kB, legs] per ~1 s
    sipp_errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        # Every caller call succeeded, and so did every callee call: in the default
        # mode the caller is answered before the target is even INVITEd, so only the
        # callees prove that each call reached its target and was torn down cleanly.
        return (
            self.failed_calls == 0
            and self.callee_failed == 0
            and self.ok_calls == self.calls
            and self.callee_ok == self.calls * self.targets
            and self.caller_exit == 0
            and all(code == 0 for code in self.callee_exits)
            and bool(self.leak_check.get("ok"))
        )

    @property
    def failed_total(self) -> int:
        """Failed calls as the caller saw them, or the callees if they saw more."""
        missing = max(0, self.calls * self.targets - self.callee_ok - self.callee_failed)
        return max(
            self.failed_calls + (self.calls - self.ok_calls - self.failed_calls),
            self.callee_failed + missing,
        )


class Bench:
    """A switch, its webhook app and the SIPp peers of each load step."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.app = WebhookApp(args.targets, args.answer_on_bridge, args.record)
        self.switch: Switch | None = None
        self.baseline: dict[str, Any] = {}
        self.rss_cold_kb = 0
        self.step_no = 0

    async def __aenter__(self) -> Bench:
        await self.app.start()
        self.switch = Switch(
            self.workdir,
            self.args.targets,
            self.app.base,
            self.args.log_level,
            self.args.max_calls,
            self.args.rtp_ports,
        )
        await self.switch.start()
        await asyncio.sleep(1.0)
        health = await self.switch.health()
        self.baseline = health
        self.rss_cold_kb = rss_kb(self.switch.pid)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.switch is not None:
            self.exit_code = await self.switch.stop()
        await self.app.stop()

    async def step(
        self, rate: float, calls: int, hold_s: float, limit: int, plateau_legs: int | None = None
    ) -> StepResult:
        """One SIPp load run against the switch, then the leak check."""
        args = self.args
        switch = self.switch
        assert switch is not None
        self.step_no += 1
        d = self.workdir / f"step{self.step_no:02d}"
        d.mkdir()
        result = StepResult(rate, calls, hold_s, args.ring_ms, args.targets, args.answer_on_bridge)
        duration = calls / rate + hold_s + args.ring_ms / 1000
        budget = duration + 60  # every SIPp and the step itself are bounded by this
        echo = args.rtp in ("callee-echo", "both-echo")
        callees = []
        for i, port in enumerate(switch.trunk_ports, start=1):
            scenario = "callee_answer.xml" if i == 1 else "callee_ring.xml"
            callee = Sipp(d, f"callee{i}", scenario, port, echo)
            await callee.start(
                ["-m", str(calls), "-d", str(args.ring_ms)], budget + 10, hold_s + 30
            )
            callees.append(callee)
        caller = Sipp(d, "caller", "caller.xml", free_udp_port(), args.rtp == "both-echo")
        await asyncio.sleep(0.3)  # let the callees bind

        pid = switch.pid
        hits0 = self.app.hits
        result.rss_kb_start = rss_kb(pid)
        cpu0 = cpu_seconds(pid)
        written0 = write_bytes(pid)
        workers_cpu0, workers_written0 = workers_usage(pid)
        threads0 = thread_cpu_seconds(pid)
        bench_cpu0 = time.process_time()
        t0 = time.monotonic()
        samples: list[tuple[float, float, int, int]] = []  # (t, cpu s, rss kB, legs)
        stop = asyncio.Event()

        async def monitor() -> None:
            while not stop.is_set():
                legs = -1
                with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
                    legs = int((await switch.health()).get("calls", -1))
                samples.append((time.monotonic(), cpu_seconds(pid), rss_kb(pid), legs))
                caller.sample_cpu()
                for callee in callees:
                    callee.sample_cpu()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)

        watcher = asyncio.create_task(monitor())
        await caller.start(
            [
                "-s",
                NUMBER,
                "-r",
                f"{rate:g}",
                "-rp",
                "1000",
                "-m",
                str(calls),
                "-l",
                str(limit),
                "-d",
                str(int(hold_s * 1000)),
            ],
            budget,
            30,
            f"127.0.0.1:{switch.sip_port}",
        )
        result.caller_exit = await caller.wait(budget + 5)
        t1 = time.monotonic()
        cpu1 = cpu_seconds(pid)
        threads1 = thread_cpu_seconds(pid)
        bench_cpu1 = time.process_time()
        for callee in callees:
            result.callee_exits.append(await callee.wait(20))
        stop.set()
        await watcher
        result.leak_check = await switch.wait_idle(self.baseline)
        result.rss_kb_end = rss_kb(pid)

        # -- counters
        stats = caller.stats()
        result.ok_calls = _count(stats, "SuccessfulCall(C)")
        result.failed_calls = _count(stats, "FailedCall(C)")
        result.retransmissions = _count(stats, "Retransmissions(C)")
        result.failures = {k[:-3]: _count(stats, k) for k in FAILURE_KEYS if _count(stats, k)}
        for callee in callees:
            cstats = callee.stats()
            result.callee_ok += _count(cstats, "SuccessfulCall(C)")
            result.callee_failed += _count(cstats, "FailedCall(C)")
            result.retransmissions += _count(cstats, "Retransmissions(C)")
        for sipp in (caller, *callees):
            result.sipp_errors += [f"{sipp.name}: {e}" for e in sipp.errors(3)]
        result.webhook_hits = self.app.hits - hits0

        # -- latencies from the <log> timestamps (same host, same wall clock)
        sent = caller.events("I")
        answered = caller.events("A")
        reached = callees[0].events("C")
        answer_ms = [(answered[n] - sent[n]) * 1000 for n in answered if n in sent]
        pdd_ms = [(reached[n] - sent[n]) * 1000 for n in reached if n in sent]
        result.answer_ms_p50 = _round(percentile(answer_ms, 50))
        result.answer_ms_p99 = _round(percentile(answer_ms, 99))
        result.pdd_ms_p50 = _round(percentile(pdd_ms, 50))
        result.pdd_ms_p99 = _round(percentile(pdd_ms, 99))
        if args.answer_on_bridge:
            setup = [a - args.ring_ms for a in answer_ms]
            result.setup_ms_p50 = _round(percentile(setup, 50))
            result.setup_ms_p99 = _round(percentile(setup, 99))
        if sent and answered:
            first = min(sent.values())
            last = max(answered.values())
            result.window_s = round(last - first, 3)
            if last > first:
                result.cps = round(result.ok_calls / (last - first), 1)

        # -- CPU and memory
        wall = t1 - t0
        result.wall_s = round(wall, 2)
        result.cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1) if wall > 0 else 0.0
        # Measured once the switch is idle again, so every recording has been finished.
        workers_cpu1, workers_written1 = workers_usage(pid)
        written = write_bytes(pid) - written0 + workers_written1 - workers_written0
        result.disk_write_kbps = round(written / 1024 / wall, 1) if wall > 0 else 0.0
        result.workers_cpu_pct = round(100 * (workers_cpu1 - workers_cpu0) / wall, 1)
        result.bench_cpu_pct = round(100 * (bench_cpu1 - bench_cpu0) / wall, 1)
        for sipp in (caller, *callees):
            spent = max(0.0, sipp.cpu_end - sipp.cpu_start)
            result.sipp_cpu_pct[sipp.name] = round(100 * spent / wall, 1)
        result.cpu_pct_peak_1s = round(_peak_cpu(samples), 1)
        busy = {
            name: 100 * (spent - threads0.get(name, 0.0)) / wall
            for name, spent in threads1.items()
            if wall > 0
        }
        result.thread_cpu_pct = {
            k: round(v, 1) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:4] if v >= 0.5
        }
        result.rss_kb_peak = max([s[2] for s in samples] + [result.rss_kb_start, result.rss_kb_end])
        result.legs_peak = max([s[3] for s in samples] + [0])
        last: tuple[float, float, int, int] | None = None
        for sample in samples:
            if last is None or sample[0] - last[0] >= 1.0:
                cpu = 100 * (sample[1] - last[1]) / (sample[0] - last[0]) if last else 0.0
                result.series.append(
                    [round(sample[0] - t0, 1), round(cpu, 1), sample[2], sample[3]]
                )
                last = sample
        if plateau_legs:
            plateau = [s[2] for s in samples if s[3] >= plateau_legs]
            result.plateau_rss_kb = int(statistics.median(plateau)) if plateau else None
        (d / "result.json").write_text(json.dumps(asdict(result), indent=2))
        return result


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _peak_cpu(samples: list[tuple[float, float, int, int]]) -> float:
    """Highest CPU % of one core over any window of about a second."""
    best = 0.0
    j = 0
    for i in range(len(samples)):
        while j < i and samples[i][0] - samples[j][0] > 1.0:
            j += 1
        k = max(0, j - 1)
        dt = samples[i][0] - samples[k][0]
        if dt >= 0.9:
            best = max(best, 100 * (samples[i][1] - samples[k][1]) / dt)
    return best


# ---- modes -------------------------------------------------------------------------------


async def mode_fixed(bench: Bench) -> dict[str, Any]:
    a = bench.args
    limit = a.limit or int(min(a.max_calls // (a.targets + 1) - 10, a.rate * (a.hold + 10)))
    step = await bench.step(a.rate, a.calls, a.hold, limit)
    return {"mode": "fixed", "steps": [asdict(step)], "clean": step.clean}


async def mode_find_max(bench: Bench) -> dict[str, Any]:
    a = bench.args
    started = time.monotonic()
    steps: list[StepResult] = []
    best: float | None = None
    sustained: float | None = None  # clean and achieved >= 95 % of the offered rate
    stopped = "max rate reached"
    rate = a.start_rate
    while rate <= a.max_rate:
        if time.monotonic() - started > a.budget:
            stopped = f"time budget ({a.budget:g} s) used"
            break
        calls = int(min(a.max_step_calls, max(50, rate * a.step_seconds)))
        limit = a.limit or int(min(a.max_calls // (a.targets + 1) - 10, rate * (a.hold + 10)))
        step = await bench.step(rate, calls, a.hold, limit)
        steps.append(step)
        _print_step(step)
        if not step.clean:
            stopped = f"failures at {rate:g} calls/s"
            break
        if step.cps is not None and step.cps < 0.8 * rate:
            stopped = f"achieved {step.cps} calls/s at {rate:g} offered (saturated)"
            break
        best = rate
        if step.cps is not None and step.cps >= 0.95 * rate:
            sustained = rate
        rate += a.rate_step
        await asyncio.sleep(a.pause)
    return {
        "mode": "find-max",
        "max_clean_rate": best,
        "max_sustained_rate": sustained,
        "stopped": stopped,
        "steps": [asdict(s) for s in steps],
        "clean": all(s.clean for s in steps),
    }


async def mode_concurrency(bench: Bench) -> dict[str, Any]:
    """RSS growth per concurrent call: idle RSS vs. RSS with K calls held at once."""
    a = bench.args
    k = a.concurrency
    rate = a.rate if a.rate_given else max(10.0, k / 10)
    hold = a.hold if a.hold_given else 30.0
    switch = bench.switch
    assert switch is not None
    # Warm-up: first-call costs (imports, caches, the webhook connection pool, SQLite).
    warm = await bench.step(20, 40, 0.5, 100)
    rounds = []
    legs_per_call = 2  # the caller's leg and the answered target's leg, once the others end
    for _ in range(a.rounds):
        # Let the previous calls' SIP transactions expire (UDP Timer J/D: 32 s) so that
        # "idle" holds no per-call state.
        await asyncio.sleep(a.settle)
        idle = int(statistics.median([rss_kb(switch.pid) for _ in range(5)]))
        step = await bench.step(rate, k, hold, k, plateau_legs=int(0.98 * k * legs_per_call))
        plateau = step.plateau_rss_kb or step.rss_kb_peak
        growth = (plateau - idle) / k
        rounds.append(
            {
                "rss_kb_idle": idle,
                "rss_kb_plateau": plateau,
                "concurrent_calls_peak": step.legs_peak // legs_per_call,
                "rss_growth_kb_per_call": round(growth, 1),
                "rss_kb_after": step.rss_kb_end,
                "step": asdict(step),
            }
        )
        _print_step(step)
        print(
            f"  idle {idle / 1024:.1f} MB -> {plateau / 1024:.1f} MB with "
            f"{step.legs_peak // legs_per_call} calls: {growth:.1f} KB/call; "
            f"after {step.rss_kb_end / 1024:.1f} MB"
        )
    return {
        "mode": "concurrency",
        "k": k,
        "rate": rate,
        "hold_s": hold,
        "rss_kb_cold": bench.rss_cold_kb,
        "warmup": asdict(warm),
        "rounds": rounds,
        "clean": all(r["step"]["leak_check"].get("ok") for r in rounds)
        and all(r["step"]["failed_calls"] == 0 for r in rounds),
    }


# ---- output ------------------------------------------------------------------------------

HEADER = (
    f"{'rate':>6} {'calls':>6} {'ok':>6} {'fail':>5} {'cps':>6} "
    f"{'ans50':>6} {'ans99':>6} {'pdd50':>6} {'pdd99':>6} {'set50':>6} {'set99':>6} "
    f"{'cpu%':>5} {'cpu1s':>5} {'rss0':>6} {'rssPk':>6} {'rss1':>6} {'legs':>5} leak"
)


def _fmt(value: float | None, width: int = 6) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.0f}"


def _print_step(s: StepResult) -> None:
    leak = "ok" if s.leak_check.get("ok") else f"LEAK {s.leak_check}"
    print(
        f"{s.rate:>6g} {s.calls:>6} {s.ok_calls:>6} {s.failed_total:>5} "
        f"{_fmt(s.cps)} {_fmt(s.answer_ms_p50)} {_fmt(s.answer_ms_p99)} "
        f"{_fmt(s.pdd_ms_p50)} {_fmt(s.pdd_ms_p99)} {_fmt(s.setup_ms_p50)} {_fmt(s.setup_ms_p99)} "
        f"{s.cpu_pct:>5.0f} {s.cpu_pct_peak_1s:>5.0f} {s.rss_kb_start / 1024:>6.1f} "
        f"{s.rss_kb_peak / 1024:>6.1f} {s.rss_kb_end / 1024:>6.1f} {s.legs_peak:>5} {leak}",
        flush=True,
    )
    if s.thread_cpu_pct:
        threads = ", ".join(f"{k.split('/')[0]} {v:.0f}%" for k, v in s.thread_cpu_pct.items())
        peers = ", ".join(f"{k} {v:.0f}%" for k, v in s.sipp_cpu_pct.items())
        app = f"webhook app {s.bench_cpu_pct:.0f}%"
        workers = f"workers {s.workers_cpu_pct:.0f}%"
        print(f"       switch threads: {threads}; {workers}; sipp: {peers}; {app}")
        print(f"       switch disk writes: {s.disk_write_kbps:.0f} KiB/s")
    if s.failures or s.sipp_errors:
        print(f"       failures {s.failures} callee_failed={s.callee_failed}")
        for line in s.sipp_errors[:4]:
            print(f"       {line[:160]}")


def summarize(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians across repeats of the headline figures."""
    if mode == "find-max":
        best = [r["max_clean_rate"] for r in runs]
        at_best = []
        for r in runs:
            clean = [s for s in r["steps"] if s["rate"] == r["max_clean_rate"]]
            at_best.extend(clean)
        sustained = [r["max_sustained_rate"] for r in runs]
        return {
            "max_clean_rate_runs": best,
            "max_clean_rate_median": median(best),
            "max_sustained_rate_runs": sustained,
            "max_sustained_rate_median": median(sustained),
            "at_max_clean_rate_median": _step_medians(at_best),
        }
    if mode == "concurrency":
        rounds = [rd for r in runs for rd in r["rounds"]]
        first = [r["rounds"][0] for r in runs if r["rounds"]]
        later = [rd for r in runs for rd in r["rounds"][1:]]
        return {
            # Round 1: a fresh switch (after a 40-call warm-up) going to K calls.
            "rss_growth_kb_per_call_first_round_runs": [
                rd["rss_growth_kb_per_call"] for rd in first
            ],
            "rss_growth_kb_per_call_first_round_median": median(
                [rd["rss_growth_kb_per_call"] for rd in first]
            ),
            # Later rounds: the same switch doing it again (memory of round 1 reused?).
            "rss_growth_kb_per_call_later_rounds_median": median(
                [rd["rss_growth_kb_per_call"] for rd in later]
            ),
            "rss_kb_idle_first_round_median": median([rd["rss_kb_idle"] for rd in first]),
            "rss_kb_plateau_first_round_median": median([rd["rss_kb_plateau"] for rd in first]),
            "concurrent_calls_peak_median": median([rd["concurrent_calls_peak"] for rd in rounds]),
            "rss_kb_cold_median": median([r["rss_kb_cold"] for r in runs]),
        }
    return {"fixed_median": _step_medians([s for r in runs for s in r["steps"]])}


def _step_medians(steps: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "cps",
        "failed_calls",
        "answer_ms_p50",
        "answer_ms_p99",
        "pdd_ms_p50",
        "pdd_ms_p99",
        "setup_ms_p50",
        "setup_ms_p99",
        "cpu_pct",
        "cpu_pct_peak_1s",
        "rss_kb_start",
        "rss_kb_peak",
        "rss_kb_end",
    )
    return {k: median([s.get(k) for s in steps]) for k in keys} | {"n": len(steps)}


# ---- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--find-max", action="store_true", help="step the rate up until a failure")
    mode.add_argument(
        "--concurrency", type=int, metavar="K", help="RSS growth with K calls held at once"
    )
    p.add_argument("--rate", type=float, default=None, help="calls/s (fixed run; default 100)")
    p.add_argument("--calls", type=int, default=1000, help="calls in a fixed run (default 1000)")
    p.add_argument("--hold", type=float, default=None, help="seconds each call is held (default 1)")
    p.add_argument("--ring-ms", type=int, default=100, help="callee ring time (default 100 ms)")
    p.add_argument("--limit", type=int, default=0, help="SIPp -l (default: from rate and hold)")
    p.add_argument("--targets", type=int, default=1, help="<Number>s per <Dial> (1..10)")
    p.add_argument(
        "--record",
        default=None,
        help='<Dial record="...">, e.g. record-from-answer-dual (default: no recording)',
    )
    p.add_argument(
        "--answer-on-bridge",
        action="store_true",
        help='<Dial answerOnBridge="true">: the caller gets its 200 when the callee answers',
    )
    p.add_argument(
        "--rtp",
        choices=("none", "callee-echo", "both-echo"),
        default="callee-echo",
        help="which SIPp peers echo the switch's RTP back (default callee-echo)",
    )
    p.add_argument("--start-rate", type=float, default=50, help="find-max: first rate")
    p.add_argument("--rate-step", type=float, default=50, help="find-max: rate increment")
    p.add_argument("--max-rate", type=float, default=600, help="find-max: last rate tried")
    p.add_argument("--step-seconds", type=float, default=8, help="find-max: seconds of calls/step")
    p.add_argument("--max-step-calls", type=int, default=4000, help="find-max: calls/step cap")
    p.add_argument("--budget", type=float, default=300, help="find-max: seconds before stopping")
    p.add_argument("--pause", type=float, default=2, help="seconds between steps")
    p.add_argument("--rounds", type=int, default=2, help="concurrency: rounds per switch")
    p.add_argument(
        "--settle", type=float, default=40, help="concurrency: idle seconds before each round"
    )
    p.add_argument("--repeat", type=int, default=1, help="runs, each with a fresh switch")
    p.add_argument("--max-calls", type=int, default=2000, help="switch [dial] max_calls")
    p.add_argument("--log-level", default="info", help="switch [log] level")
    p.add_argument(
        "--rtp-ports",
        default=DEFAULT_RTP_PORTS,
        help=f"switch [sip] rtp_ports (default {DEFAULT_RTP_PORTS}; the shipped config has "
        "20000-29999)",
    )
    p.add_argument("--json", type=Path, default=None, help="result file (default bench/results/)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = p.parse_args(argv)
    args.rate_given = args.rate is not None
    args.hold_given = args.hold is not None
    args.rate = args.rate if args.rate is not None else 100.0
    args.hold = args.hold if args.hold is not None else 1.0
    if not 1 <= args.targets <= 10:
        p.error("--targets must be 1..10")
    return args


async def run(args: argparse.Namespace) -> int:
    mode = "find-max" if args.find_max else "concurrency" if args.concurrency else "fixed"
    runs: list[dict[str, Any]] = []
    kept: list[str] = []
    for i in range(args.repeat):
        workdir = Path(tempfile.mkdtemp(prefix="dial_bench-"))
        print(f"== run {i + 1}/{args.repeat} ({mode}), workdir {workdir}", flush=True)
        print(HEADER, flush=True)
        bench = Bench(args, workdir)
        outcome: dict[str, Any] = {}
        try:
            async with bench:
                if mode == "find-max":
                    outcome = await mode_find_max(bench)
                    print(
                        f"  max rate with zero failures: {outcome['max_clean_rate']}, "
                        f"sustained (>= 95% achieved): {outcome['max_sustained_rate']} "
                        f"({outcome['stopped']})"
                    )
                elif mode == "concurrency":
                    outcome = await mode_concurrency(bench)
                else:
                    outcome = await mode_fixed(bench)
                    _print_step(StepResult(**outcome["steps"][0]))
                switch = bench.switch
                assert switch is not None
                outcome["switch_log"] = switch.log_problems()
                outcome["rss_kb_cold"] = bench.rss_cold_kb
        finally:
            outcome["switch_exit"] = getattr(bench, "exit_code", None)
            outcome["workdir"] = str(workdir)
            if args.keep or not outcome.get("clean", False):
                kept.append(str(workdir))
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            # Write back what this run left (and the deletions) before the next run,
            # so one run's disk work does not land in the next one's figures.
            os.sync()
        print(f"  switch log {outcome['switch_log']}, exit {outcome['switch_exit']}", flush=True)
        runs.append(outcome)
    summary = summarize(mode, runs)
    result = {
        "mode": mode,
        "switch_tree": _git_state(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "summary": summary,
        "runs": runs,
        "kept_workdirs": kept,
    }
    out = args.json or (
        Path(__file__).resolve().parent
        / "results"
        / f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("== summary (medians over runs)")
    print(json.dumps(summary, indent=2))
    print(f"result file: {out}")
    if kept:
        print(f"kept workdirs: {' '.join(kept)}")
    return 0


def _git_state() -> dict[str, str]:
    """The commit the switch ran from, and whether its tree had local changes."""
    import subprocess

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_paths": git("status", "--porcelain", "--", "switch", "media", "deploy"),
    }


def main() -> int:
    args = parse_args()
    if shutil.which("sipp") is None:
        print("dial_bench: sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(run(args))
    except ImportError:
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
