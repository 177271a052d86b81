"""What bench/dial_bench.py and bench/api_bench.py share.

- free loopback ports and the ``/proc`` figures of a process (CPU, threads, RSS,
  disk writes, child processes);
- the switch under test (``python -m switch`` in a temporary directory, on free
  loopback ports; ``extra_toml`` appends sections to its config) and its leak check;
- SIPp: one process of a load step, its stat counters and ``<log>`` events, and
  the answering callee scenario, keyed by a header's user;
- ``StepMonitor``: the switch's CPU, RSS and live calls over a load step, and the
  figures both benches report from them;
- the webhook app's server, the bench's setup (app + switch), the command-line
  options both take, ``--find-max``, and the run loop: ``--repeat`` runs, each in a
  fresh temporary directory, then the result JSON and the summary.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SCENARIOS = BENCH / "scenarios"
NUMBER = "+15005550100"  # the switch's number (the caller dials it; API calls are from it)
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
    """Trunk i's number (1-based): +15551230001, +15551230002, ..."""
    return f"+1555123{i:04d}"


# ---- ports and /proc ---------------------------------------------------------------


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binds_udp_and_tcp(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound for both UDP and TCP right now."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, port))
        with socket.socket() as tcp:
            tcp.bind((host, port))
    except OSError:
        return False
    return True


def free_port_pair() -> int:
    """A port free for both UDP and TCP (the switch listens on both)."""
    for _ in range(50):
        port = free_udp_port()
        if _binds_udp_and_tcp("127.0.0.1", port):
            return port
    raise RuntimeError("no free UDP+TCP port")


def free_trunk_port(host: str = "127.0.0.1") -> int:
    """An odd port above the kernel's ephemeral range, free for UDP and TCP: where a
    SIPp trunk listens. In the ephemeral range, the switch's TCP connect to it (pjsip
    sends a request near the MTU over TCP, RFC 3261 18.1.1) could pick the same
    port as its source and connect to itself (TCP simultaneous open), sending the
    trunk's INVITEs back to the switch."""
    for _ in range(200):
        port = random.randrange(61001, 65535, 2)  # free_media_block takes even ones
        if _binds_udp_and_tcp(host, port):
            return port
    raise RuntimeError("no free trunk port")


def free_media_block(host: str = "127.0.0.1") -> int:
    """An even port P with UDP P..P+3 free on ``host``: SIPp's audio and video RTP/RTCP
    sockets."""
    for _ in range(200):
        base = random.randrange(61000, 65500, 2)  # above the ephemeral range and RTP
        socks = []
        try:
            for port in range(base, base + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free media port block")


def _stat_cpu(text: str) -> float:
    """utime + stime, in seconds, of a /proc stat line (fields 14 and 15)."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0


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
        label = "main" if tid == str(pid) else name  # the event loop runs on the main thread
        found[f"{label}/{tid}"] = _stat_cpu(text)
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


def _proc_field(path: str, key: str) -> int:
    """The first number of the ``key`` line of a /proc file (0 when absent or gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to storage (/proc/<pid>/io)."""
    return _proc_field(f"/proc/{pid}/io", "write_bytes:")


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    return _proc_field(f"/proc/{pid}/status", "VmRSS:")


# ---- figures -----------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def ms_percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile of some milliseconds, to 0.1 ms."""
    return rounded(percentile(values, p))


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


Sample = tuple[float, float, int, int]  # (monotonic s, switch CPU s, switch RSS kB, live calls)


def peak_cpu(samples: Sequence[Sample]) -> float:
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


# The switch's CPU and memory figures of a step that both benches summarise.
USAGE_KEYS = ("cpu_pct", "cpu_pct_peak_1s", "rss_kb_start", "rss_kb_peak", "rss_kb_end")


def step_medians(steps: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Medians of some figures over several steps' results, and how many steps."""
    return {k: median([s.get(k) for s in steps]) for k in keys} | {"n": len(steps)}


# ---- the switch ----------------------------------------------------------------------


@dataclass
class Switch:
    """``python -m switch`` in ``workdir``: one number (NUMBER -> ``app_base``/voice)
    and one trunk per target (trunk i: prefix target_number(i) -> its own port).
    ``extra_toml`` is appended to the config as it is (it must not have a ``[limits]``
    table: that one comes from ``trusted``)."""

    workdir: Path
    targets: int
    app_base: str
    log_level: str
    max_calls: int
    rtp_ports: str
    extra_toml: str = ""
    # [limits] trusted: sources the switch's per-source INVITE/OPTIONS limits
    # (default 100 INVITEs/s, burst 200) never apply to. The benches' own load comes
    # from 127.0.0.1 at up to 600 calls/s, so by default 127.0.0.1 is trusted, as a
    # carrier's signalling address would be; otherwise the limiter, not the switch's
    # capacity, would be measured. () leaves the limits on for every source.
    trusted: tuple[str, ...] = ("127.0.0.1",)
    sip_port: int = field(default_factory=free_port_pair)
    http_port: int = field(default_factory=free_tcp_port)
    trunk_ports: list[int] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.trunk_ports = [free_trunk_port() for _ in range(self.targets)]

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
        limits = (
            "\n[limits]\n# bench load from these sources is never throttled (bench/benchlib.py)\n"
            f"trusted = [{', '.join(json.dumps(t) for t in self.trusted)}]\n"
            if self.trusted
            else ""
        )
        config = self.workdir / "dialswitch.toml"
        config.write_text(
            f"""# written by bench/benchlib.py
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

[media]
# The bench's SIPp callers send no RTP: long holds must not be timed out.
rtp_timeout = 0

[log]
level = "{self.log_level}"
{limits}{trunks}
[[numbers]]
number = "{NUMBER}"
voice_url = "{self.app_base}/voice"
{self.extra_toml}"""
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

    async def metrics(self) -> str:
        """The text of /metrics (Basic auth AccountSid:AuthToken, as the REST API)."""
        assert self._session is not None
        auth = aiohttp.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        async with self._session.get(url, auth=auth) as response:
            if response.status != 200:
                raise ValueError(f"metrics {response.status}")
            return await response.text()

    async def metric(self, sample: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample of /metrics (0 for a counter with no such label yet; None when
        /metrics does not answer)."""
        try:
            text = await self.metrics()
        except (aiohttp.ClientError, ValueError, TimeoutError):
            return None
        return metric_value(text, sample, labels or {})

    async def live_calls(self) -> int:
        """/healthz ``calls`` (-1 when it does not answer)."""
        with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
            return int((await self.health()).get("calls", -1))
        return -1

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
        report = {
            "ok": idle(health),
            **{k: v for k, v in health.items() if k != "status"},
            "media_ports_idle": baseline.get("media_ports"),
            "waited_s": round(time.monotonic() - start, 2),
        }
        if health.get("calls"):
            report["live"] = await self.unfinished_calls()
        return report

    async def unfinished_calls(self, most: int = 20) -> list[dict[str, Any]]:
        """The calls the Calls API still lists as queued, ringing or in progress (up to
        ``most`` of each): what a failed leak check left behind."""
        assert self._session is not None
        found: list[dict[str, Any]] = []
        url = f"http://127.0.0.1:{self.http_port}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
        auth = aiohttp.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)
        for status in ("queued", "ringing", "in-progress"):
            with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
                params = {"Status": status, "PageSize": str(most)}
                async with self._session.get(url, params=params, auth=auth) as response:
                    page = await response.json()
                found += [
                    {k: call.get(k) for k in ("sid", "status", "direction", "start_time")}
                    | {"parent": call.get("parent_call_sid")}
                    for call in page.get("calls", [])
                ]
        return found

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


def metric_value(text: str, sample: str, labels: dict[str, str]) -> float:
    """The value of the sample ``sample`` (e.g. ``dialswitch_flood_refused_total``)
    whose labels include ``labels``, in a Prometheus text exposition; 0 when absent
    (a labelled counter has no sample until its first increment)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


# ---- SIPp ----------------------------------------------------------------------------

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


def count(stats: dict[str, str], key: str) -> int:
    """A counter of SIPp's statistics row (0 when absent or not a number)."""
    try:
        return int(float(stats.get(key, "0") or 0))
    except ValueError:
        return 0


@dataclass
class Tally:
    """A SIPp's cumulative call counters: successes, failures (and why), retransmissions."""

    ok: int
    failed: int
    retransmissions: int
    failures: dict[str, int]

    @classmethod
    def of(cls, stats: dict[str, str]) -> Tally:
        return cls(
            count(stats, "SuccessfulCall(C)"),
            count(stats, "FailedCall(C)"),
            count(stats, "Retransmissions(C)"),
            {k[:-3]: count(stats, k) for k in FAILURE_KEYS if count(stats, k)},
        )


SDP_ANSWER = """v=0
      o=sipp 1 1 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv"""


def uas_response(status: str, *, dialog: bool = False, sdp: str | None = None) -> str:
    """A SIPp ``<send>`` of a response to the last request. ``dialog``: with the
    callee's To tag and Contact; ``sdp``: with that body (e.g. SDP_ANSWER),
    retransmitted every 500 ms until the ACK."""
    tag = ";tag=[pid]SIPpTag01[call_number]" if dialog else ""
    contact = (
        "\n      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>"
        if dialog
        else ""
    )
    body = (
        f"\n      Content-Type: application/sdp\n      Content-Length: [len]\n\n      {sdp}"
        if sdp is not None
        else "\n      Content-Length: 0"
    )
    return f"""  <send{' retrans="500"' if sdp is not None else ""}>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]{tag}
      [last_Call-ID:]
      [last_CSeq:]{contact}{body}
    ]]>
  </send>
"""


def answering_callee(
    name: str, *, key_header: str, key_prefix: str, key_var: str, log_bye: bool = False
) -> str:
    """The SIPp scenario of a callee that answers: the far end behind a switch's trunk.

    SIPp UAS: 100, 180, then rings for ``-d RING_MS`` (the bare <pause/>), answers
    200 with SDP ([media_port]: with -rtp_echo SIPp echoes the switch's RTP back),
    and waits for the switch's BYE. Logs "C <n> <user> <timestamp>" when the INVITE
    arrives, ``n`` being taken from the user of its ``key_header`` (``key_prefix``
    then n); with ``log_bye``, also "B <n> <timestamp>" when the BYE arrives.
    """
    user = f"{key_header.lower()}_all"
    prefix = key_prefix.replace("+", "\\+")
    bye_log = f"""
    <action>
      <log message="B [${key_var}] [timestamp]"/>
    </action>
  </recv>"""
    bye = f'<recv request="BYE">{bye_log}' if log_bye else '<recv request="BYE"/>'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- written by bench/benchlib.py answering_callee() -->
<scenario name="{name}">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sip:{prefix}([0-9]+)@" search_in="hdr" header="{key_header}:"
            assign_to="{user},{key_var}"/>
      <log message="C [${key_var}] [${user}] [timestamp]"/>
    </action>
  </recv>

{uas_response("100 Trying")}
{uas_response("180 Ringing", dialog=True)}
  <pause/>

{uas_response("200 OK", dialog=True, sdp=SDP_ANSWER)}
  <recv request="ACK" crlf="true"/>

  {bye}
{uas_response("200 OK")}</scenario>
"""


class Sipp:
    """One SIPp process of a load step, with its stat CSV, <log> file and error file.

    ``scenario`` is a file name in ``workdir``; when it is not there, it is copied
    from bench/scenarios (SIPp writes its files next to the scenario). ``local_ip``:
    the address SIPp binds its SIP and media sockets to (``-i``, ``-mi``).
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        scenario: str,
        port: int,
        rtp_echo: bool,
        local_ip: str = "127.0.0.1",
    ):
        self.workdir = workdir
        self.local_ip = local_ip
        self.name = name
        self.scenario = workdir / scenario
        if not self.scenario.exists():
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
            self.local_ip,
            "-p",
            str(self.port),
            "-mi",
            self.local_ip,
            "-mp",
            str(free_media_block(self.local_ip)),
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
        rows = self.stat_rows()
        return rows[-1] if rows else {}

    def stat_rows(self) -> list[dict[str, str]]:
        if not self.stat_file.exists():
            return []
        lines = [ln for ln in self.stat_file.read_text(errors="replace").splitlines() if ln]
        header = lines[0].rstrip(";").split(";") if lines else []
        return [dict(zip(header, ln.rstrip(";").split(";"), strict=False)) for ln in lines[1:]]

    def tally(self) -> Tally:
        return Tally.of(self.stats())

    def events(self, kind: str) -> dict[int, float]:
        """``<log>`` lines "KIND call_number ... epoch" as {call_number: epoch}."""
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


# ---- one load step: what the switch spent ---------------------------------------------


class StepMonitor:
    """The switch's CPU, RSS and live calls (/healthz ``calls``) over one load step.

    ``start()`` opens the measured window and samples every 0.25 s (also the CPU
    of ``peers``), ``mark_end()`` closes the window, ``finish()`` stops sampling
    and runs the leak check; then ``fill()`` writes the figures into a step result.
    """

    def __init__(self, switch: Switch, peers: Sequence[Sipp]):
        self.switch = switch
        self.pid = switch.pid
        self.peers = list(peers)
        self.samples: list[Sample] = []
        self.rss_kb_start = 0
        self.rss_kb_end = 0
        self.t0 = self.t1 = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.bench_cpu0 = self.bench_cpu1 = 0.0
        self.threads0: dict[str, float] = {}
        self.threads1: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.rss_kb_start = rss_kb(self.pid)
        self.cpu0 = cpu_seconds(self.pid)
        self.threads0 = thread_cpu_seconds(self.pid)
        self.bench_cpu0 = time.process_time()
        self.t0 = time.monotonic()
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while not self._stop.is_set():
            live = await self.switch.live_calls()
            self.samples.append((time.monotonic(), cpu_seconds(self.pid), rss_kb(self.pid), live))
            for peer in self.peers:
                peer.sample_cpu()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.25)

    def mark_end(self) -> None:
        """The end of the measured window (the load is over)."""
        self.t1 = time.monotonic()
        self.cpu1 = cpu_seconds(self.pid)
        self.threads1 = thread_cpu_seconds(self.pid)
        self.bench_cpu1 = time.process_time()

    async def finish(self, baseline: dict[str, Any]) -> dict[str, Any]:
        """Stop sampling, then the switch's leak check (and its RSS once idle)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        leak_check = await self.switch.wait_idle(baseline)
        self.rss_kb_end = rss_kb(self.pid)
        return leak_check

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    def pct(self, cpu_s: float) -> float:
        """CPU seconds spent over the window, as % of one core."""
        return round(100 * cpu_s / self.wall, 1) if self.wall > 0 else 0.0

    def sipp_cpu_pct(self, sipp: Sipp) -> float:
        return self.pct(max(0.0, sipp.cpu_end - sipp.cpu_start))

    def plateau_rss_kb(self, min_live: int) -> int | None:
        """Median RSS while at least ``min_live`` calls were up."""
        plateau = [s[2] for s in self.samples if s[3] >= min_live]
        return int(statistics.median(plateau)) if plateau else None

    def figures(self, live_peak: str) -> dict[str, Any]:
        """Wall time, switch CPU (all, peak ~1 s, top threads), the bench's own CPU,
        RSS (start, peak, end), peak live calls (named ``live_peak``), and a ~1 s
        series [t s, CPU %, RSS kB, live calls]."""
        busy = {
            k: 100 * (v - self.threads0.get(k, 0.0)) / self.wall
            for k, v in self.threads1.items()
            if self.wall > 0
        }
        series: list[list[float]] = []
        last: Sample | None = None
        for sample in self.samples:
            if last is None or sample[0] - last[0] >= 1.0:
                cpu = 100 * (sample[1] - last[1]) / (sample[0] - last[0]) if last else 0.0
                series.append([round(sample[0] - self.t0, 1), round(cpu, 1), sample[2], sample[3]])
                last = sample
        return {
            "wall_s": round(self.wall, 2),
            "cpu_pct": self.pct(self.cpu1 - self.cpu0),
            "cpu_pct_peak_1s": round(peak_cpu(self.samples), 1),
            "thread_cpu_pct": {
                k: round(v, 1)
                for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:4]
                if v >= 0.5
            },
            "bench_cpu_pct": self.pct(self.bench_cpu1 - self.bench_cpu0),
            "rss_kb_start": self.rss_kb_start,
            "rss_kb_peak": max([s[2] for s in self.samples] + [self.rss_kb_start, self.rss_kb_end]),
            "rss_kb_end": self.rss_kb_end,
            live_peak: max([s[3] for s in self.samples] + [0]),
            "series": series,
        }

    def fill(self, result: object, live_peak: str) -> None:
        """Set ``figures(live_peak)`` on a step result, which has a field for each."""
        for key, value in self.figures(live_peak).items():
            if not hasattr(result, key):
                raise AttributeError(f"{type(result).__name__} has no {key}")
            setattr(result, key, value)


# ---- the webhook app and the bench's setup ---------------------------------------------


def xml_response(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml")


class WebhookServer:
    """The customer's app, served by this process on a free loopback port."""

    def __init__(self) -> None:
        self.hits = 0
        self.base = ""
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]]:
        raise NotImplementedError

    async def hit(self, request: web.Request) -> float:
        """Count a webhook request and read its body; the wall-clock time it came."""
        now = time.time()
        self.hits += 1
        if request.method == "POST":
            await request.read()
        return now

    async def start(self) -> None:
        app = web.Application()
        for path, handler in self.routes():
            app.router.add_route("*", path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_tcp_port()
        await web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024).start()
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


AppT = TypeVar("AppT", bound=WebhookServer)


class BenchBase(Generic[AppT]):
    """A run's webhook app and fresh switch (``async with``), and its step directories."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: Path,
        app: AppT,
        targets: int = 1,
        extra_toml: str = "",
    ):
        self.args = args
        self.workdir = workdir
        self.app = app
        self.targets = targets
        self.extra_toml = extra_toml
        self.switch: Switch | None = None
        self.baseline: dict[str, Any] = {}
        self.rss_cold_kb = 0
        self.step_no = 0
        self.exit_code: int | None = None

    async def __aenter__(self) -> Self:
        await self.app.start()
        a = self.args
        self.switch = Switch(
            self.workdir,
            self.targets,
            self.app.base,
            a.log_level,
            a.max_calls,
            a.rtp_ports,
            extra_toml=self.extra_toml,
        )
        try:
            await self.switch.start()
            await asyncio.sleep(1.0)
            self.baseline = await self.switch.health()
        except BaseException:
            await BenchBase.__aexit__(self)  # a switch that did not come up is stopped too
            raise
        self.rss_cold_kb = rss_kb(self.switch.pid)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.switch is not None:
            self.exit_code = await self.switch.stop()
        await self.app.stop()

    def step_dir(self) -> Path:
        """A new directory for the next step's SIPp files and results."""
        self.step_no += 1
        d = self.workdir / f"step{self.step_no:02d}"
        d.mkdir()
        return d


# ---- command line, find-max and the run loop --------------------------------------------


def new_parser(
    description: str | None,
) -> tuple[argparse.ArgumentParser, argparse._MutuallyExclusiveGroup]:
    """A bench's parser and its group of modes, which has ``--find-max``."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--find-max", action="store_true", help="step the rate up until a failure")
    return p, mode


def add_find_max_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start-rate", type=float, default=50, help="find-max: first rate")
    p.add_argument("--rate-step", type=float, default=50, help="find-max: rate increment")
    p.add_argument("--max-rate", type=float, default=600, help="find-max: last rate tried")
    p.add_argument("--step-seconds", type=float, default=8, help="find-max: seconds of calls/step")
    p.add_argument("--max-step-calls", type=int, default=4000, help="find-max: calls/step cap")
    p.add_argument("--budget", type=float, default=300, help="find-max: seconds before stopping")


def add_run_options(p: argparse.ArgumentParser) -> None:
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


class Step(Protocol):
    """What find-max needs of a step result (a dataclass)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    cps: float | None

    @property
    def clean(self) -> bool: ...


StepT = TypeVar("StepT", bound=Step)


async def find_max(
    args: argparse.Namespace,
    step: Callable[[float, int], Awaitable[StepT]],
    print_step: Callable[[StepT], None],
) -> dict[str, Any]:
    """Rates --start-rate, + --rate-step, ... up to --max-rate, each step ``rate x
    --step-seconds`` calls (50 .. --max-step-calls); stop at the first step that is not
    clean or achieves < 80 % of the offered rate, or once --budget seconds are used."""
    a = args
    started = time.monotonic()
    steps: list[StepT] = []
    best: float | None = None
    sustained: float | None = None  # clean and achieved >= 95 % of the offered rate
    stopped = "max rate reached"
    rate = a.start_rate
    while rate <= a.max_rate:
        if time.monotonic() - started > a.budget:
            stopped = f"time budget ({a.budget:g} s) used"
            break
        calls = int(min(a.max_step_calls, max(50, rate * a.step_seconds)))
        result = await step(rate, calls)
        steps.append(result)
        print_step(result)
        if not result.clean:
            stopped = f"failures at {rate:g} calls/s"
            break
        if result.cps is not None and result.cps < 0.8 * rate:
            stopped = f"achieved {result.cps} calls/s at {rate:g} offered (saturated)"
            break
        best = rate
        if result.cps is not None and result.cps >= 0.95 * rate:
            sustained = rate
        rate += a.rate_step
        await asyncio.sleep(a.pause)
    print(
        f"  max rate with zero failures: {best}, "
        f"sustained (>= 95% achieved): {sustained} ({stopped})"
    )
    return {
        "mode": "find-max",
        "max_clean_rate": best,
        "max_sustained_rate": sustained,
        "stopped": stopped,
        "steps": [asdict(s) for s in steps],
        "clean": all(s.clean for s in steps),
    }


def summarize_find_max(runs: list[dict[str, Any]], step_keys: Sequence[str]) -> dict[str, Any]:
    """Medians across repeats of find-max's rates, and of the steps at the clean rate."""
    best = [r.get("max_clean_rate") for r in runs]
    at_best = [s for r in runs for s in r.get("steps", []) if s["rate"] == r["max_clean_rate"]]
    sustained = [r.get("max_sustained_rate") for r in runs]
    return {
        "max_clean_rate_runs": best,
        "max_clean_rate_median": median(best),
        "max_sustained_rate_runs": sustained,
        "max_sustained_rate_median": median(sustained),
        "at_max_clean_rate_median": step_medians(at_best, step_keys),
    }


def git_state() -> dict[str, str]:
    """The commit the switch runs from, and whether its tree has local changes."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_paths": git("status", "--porcelain", "--", "switch", "media", "deploy"),
    }


BenchT = TypeVar("BenchT", bound=BenchBase[Any])


async def run_repeats(
    args: argparse.Namespace,
    *,
    name: str,
    header: str,
    new_bench: Callable[[argparse.Namespace, Path], BenchT],
    modes: dict[str, Callable[[BenchT], Awaitable[dict[str, Any]]]],
    step_keys: Sequence[str],
    summarize: Callable[[str, list[dict[str, Any]]], dict[str, Any]],
    result_prefix: str = "",
    label_result: bool = False,
) -> list[dict[str, Any]]:
    """--repeat runs of a mode, each with a fresh switch in a fresh temporary
    directory (kept with --keep or when the run was not clean); then the result JSON
    (--json, or bench/results/<result_prefix><mode>-<time>.json) and the summary:
    medians over the runs of the ``step_keys`` figures (find-max: at the highest clean
    rate, see ``summarize_find_max``; other modes: ``summarize``).
    ``label_result`` adds the bench's name and the repository to the JSON.

    The mode is the first of ``modes`` whose option is set (``find-max``:
    ``args.find_max``), else ``fixed``."""
    mode = next(
        (m for m in modes if m != "fixed" and getattr(args, m.replace("-", "_"), None)), "fixed"
    )
    run_mode = modes[mode]
    tree = git_state()  # the tree the switch is started from, before it can change
    runs: list[dict[str, Any]] = []
    kept: list[str] = []
    for i in range(args.repeat):
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        print(f"== run {i + 1}/{args.repeat} ({mode}), workdir {workdir}", flush=True)
        print(header, flush=True)
        bench = new_bench(args, workdir)
        outcome: dict[str, Any] = {}
        try:
            async with bench:
                outcome = await run_mode(bench)
                assert bench.switch is not None
                outcome["switch_log"] = bench.switch.log_problems()
                outcome["rss_kb_cold"] = bench.rss_cold_kb
        finally:
            outcome["switch_exit"] = bench.exit_code
            outcome["workdir"] = str(workdir)
            if args.keep or not outcome.get("clean", False):
                kept.append(str(workdir))
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            # Write back what this run left (and the deletions) before the next run,
            # so one run's disk work does not land in the next one's figures.
            os.sync()
        print(
            f"  switch log {outcome.get('switch_log')}, exit {outcome['switch_exit']}", flush=True
        )
        runs.append(outcome)
    find_max_mode = mode == "find-max"
    summary = summarize_find_max(runs, step_keys) if find_max_mode else summarize(mode, runs)
    label = {"bench": name} if label_result else {}
    repo = {"repo": str(REPO)} if label_result else {}
    result = {
        **label,
        "mode": mode,
        "switch_tree": tree,
        **repo,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "summary": summary,
        "runs": runs,
        "kept_workdirs": kept,
    }
    write_results(args, f"{result_prefix}{mode}", result, summary, kept)
    return runs


def write_results(
    args: argparse.Namespace,
    stem: str,
    result: dict[str, Any],
    summary: dict[str, Any],
    kept: Sequence[str],
) -> Path:
    """Write a bench's result JSON (--json, or bench/results/<stem>-<time>.json) and
    print the summary, the file and the workdirs kept."""
    out: Path = args.json or (BENCH / "results" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("== summary (medians over runs)")
    print(json.dumps(summary, indent=2))
    print(f"result file: {out}")
    if kept:
        print(f"kept workdirs: {' '.join(kept)}")
    return out


def launch(name: str, run: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a bench's main coroutine (on uvloop when it is installed), if sipp is there."""
    if shutil.which("sipp") is None:
        print(f"{name}: sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run())
    return uvloop.run(run())


# ---- printing ----------------------------------------------------------------------------


def usage_header(live: str) -> str:
    """The step line's last columns: switch CPU, RSS, peak live calls, leak check."""
    return f"{'cpu%':>5} {'cpu1s':>5} {'rss0':>6} {'rssPk':>6} {'rss1':>6} {live:>5} leak"


class StepUsage(Protocol):
    """The figures of a step result that ``usage_columns`` prints (StepMonitor.fill's)."""

    cpu_pct: float
    cpu_pct_peak_1s: float
    rss_kb_start: int
    rss_kb_peak: int
    rss_kb_end: int
    leak_check: dict[str, Any]


def usage_columns(s: StepUsage, live_peak: int) -> str:
    """The values under ``usage_header``: RSS (start, peak, end) in MiB."""
    leak = "ok" if s.leak_check.get("ok") else f"LEAK {s.leak_check}"
    rss = " ".join(f"{kb / 1024:>6.1f}" for kb in (s.rss_kb_start, s.rss_kb_peak, s.rss_kb_end))
    return f"{s.cpu_pct:>5.0f} {s.cpu_pct_peak_1s:>5.0f} {rss} {live_peak:>5} {leak}"


def fmt(value: float | None, width: int = 6, digits: int = 0) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def thread_list(thread_cpu_pct: dict[str, float]) -> str:
    """ "main 22%, python 3%": the busiest switch threads, % of a core."""
    return ", ".join(f"{k.split('/')[0]} {v:.0f}%" for k, v in thread_cpu_pct.items())


def print_sipp_errors(errors: list[str]) -> None:
    """The first lines of a step's SIPp error files, under its step line."""
    for line in errors[:4]:
        print(f"       {line[:160]}")
