#!/usr/bin/env python3
"""relay_bench: K bridged calls' RTP through a media path, and what each packet costs.

Every relay gets the same load from ``rtpload`` (bench/rtpload.c, built on first use
with ``cc -O2`` into bench/results/): each call has two ends, a caller-side and a
callee-side UDP socket on 127.0.0.1, each sending 50 packets/s of 20 ms PCMU (172
bytes; ``--ptime 40``: 25 packets/s of 332 bytes) to its side of the relay and
receiving the other end's stream back on the same socket (symmetric RTP); the 2K
streams are spread over the period. Each
payload carries its stream, sequence and CLOCK_MONOTONIC send time, so rtpload
counts per direction what was sent, received, lost, duplicated or delivered to the
wrong call, and the one-way delay. The relays:

- ``dialswitch``: a real switch (benchlib's config: one number whose webhook answers
  ``<Dial><Number>+15551230001</Number></Dial>``, one trunk to a SIPp UAS). A SIPp
  UAC sets up K calls at ``--rate``; each INVITE's SDP names the caller-side socket
  of its call (``-inf``, ``[field0]``), the callee's 200 names the callee-side one;
  both SIPps ``<log>`` the switch's own SDP address of their leg, which is where
  rtpload sends, from the moment the bench sees that call bridged (as a phone would
  start talking). Calls are held until one moment for all (each caller pauses until
  a wall-clock deadline written into the scenario), then hung up with BYE; then the
  switch's leak check, log and RTP counters. The switch runs from the working tree
  as it is (``--switch-media`` can add lines to its [media] table);
- ``uvloop``: bench/relays/uvloop_relay.py, a minimal Python relay (latching);
- ``rtpengine``: Debian's rtpengine-daemon in userspace (``--table=-1``), calls
  created with its ng control protocol (bencode over UDP: offer, answer, delete);
- ``floor``: ``rtpload relay``, one thread, epoll, one recvfrom and one sendto per
  packet: what any userspace relay pays at least.

For each relay: its CPU (utime + stime of every thread, /proc/PID/stat) over the
measuring window (``--seconds`` after ``--warmup``) divided by the packets
rtpload received through it in that window, and its RSS; rtpload's own CPU.

    .venv/bin/python bench/relay_bench.py                       # 500 calls, 20 s, all
    .venv/bin/python bench/relay_bench.py --calls 100 --seconds 10 --relays floor,uvloop

See bench/README.md, "relay_bench: RTP through the media path".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
import benchlib  # noqa: E402
from aiohttp import web  # noqa: E402
from benchlib import (  # noqa: E402
    NUMBER,
    Sipp,
    Switch,
    WebhookServer,
    cpu_seconds,
    free_udp_port,
    rss_kb,
    target_number,
    thread_cpu_seconds,
    xml_response,
)

RELAYS = ("dialswitch", "uvloop", "rtpengine", "floor")
RTPLOAD_SRC = BENCH / "rtpload.c"
UVLOOP_RELAY = BENCH / "relays" / "uvloop_relay.py"
RTPENGINE = "/usr/bin/rtpengine"
RTPENGINE_PORTS = (10000, 31999)  # as the switch's range: they never run together
DRAIN_S = 1.0  # rtpload waits this long after the window for late packets
# The switch's [dial] max_calls: benchlib's 2000 legs, or 2 per call when K is larger
# (a switch whose maximum is lower refuses the config at start, and says so).
SWITCH_MAX_CALLS = 2000
MAX_CALLS = 2000


# ---- rtpload -------------------------------------------------------------------------


def rtpload_binary() -> Path:
    """bench/results/.rtpload-<hash of the source>, compiled when missing."""
    digest = hashlib.sha256(RTPLOAD_SRC.read_bytes()).hexdigest()[:12]
    out = BENCH / "results" / f".rtpload-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("relay_bench: no C compiler (apt-get install gcc)")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(RTPLOAD_SRC)], check=True)
        tmp.rename(out)
    return out


@dataclass(frozen=True)
class Peer:
    """One plan line: socket ``index`` sends its stream (direction ``dir``: 0 caller to
    callee, 1 back) to ``host:port``; it must arrive on socket ``rx``."""

    index: int
    dir: int
    host: str
    port: int
    rx: int


class Child:
    """A process the bench started: its first stdout lines, and a bounded stop by PID."""

    def __init__(self, name: str, process: asyncio.subprocess.Process):
        self.name = name
        self.process = process

    @classmethod
    async def start(cls, workdir: Path, name: str, *cmd: str, stdin: bool = False) -> Child:
        """Start ``cmd``; its stderr goes to ``workdir/<name>.stderr``."""
        with open(workdir / f"{name}.stderr", "wb") as err:
            process = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=1 << 20,
            )
        return cls(name, process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, timeout: float) -> str:
        """The next line of stdout; an error if it does not come in ``timeout`` s."""
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no output in {timeout:g} s") from None
        if not raw:
            code = await self.process.wait()
            raise RuntimeError(f"{self.name} exited ({code}) before its output")
        return raw.decode().strip()

    async def port_list(self, timeout: float = 30) -> list[int]:
        """The ports of a child's first line, ``{"ports": [...]}``."""
        return [int(p) for p in json.loads(await self.line(timeout))["ports"]]

    async def stop(self, grace: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` s; our own child, by its PID."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode


@dataclass
class Window:
    """What one relay did over the measuring window."""

    relay_cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_kb: int = 0
    threads_pct: dict[str, float] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)  # rtpload's JSON


class Rtpload(Child):
    """``rtpload gen``: its sockets' ports, the plan fed to it while it runs, and the
    measuring window."""

    ports: list[int]

    @classmethod
    async def open(
        cls, workdir: Path, binary: Path, sockets: int, life: float, ptime: int
    ) -> Rtpload:
        """Start it with ``sockets`` sockets, each sending a packet every ``ptime`` ms;
        it exits by itself after ``life`` s."""
        child = await Child.start(
            workdir,
            "rtpload",
            *(str(binary), "gen", str(sockets), f"{life:.0f}", str(ptime)),
            stdin=True,
        )
        load = cls(child.name, child.process)
        try:
            load.ports = await load.port_list()
        except BaseException:
            await load.stop(2)
            raise
        return load

    async def add(self, peers: list[Peer]) -> None:
        """Start these sockets' streams (each from its next slot of the 20 ms period)."""
        await self._send([f"peer {p.index} {p.dir} {p.host} {p.port} {p.rx}" for p in peers])

    async def _send(self, lines: list[str]) -> None:
        assert self.process.stdin is not None
        if lines:
            self.process.stdin.write(("\n".join(lines) + "\n").encode())
            await self.process.stdin.drain()

    async def window(self, pid: int, warmup: float, seconds: float) -> Window:
        """Open the window ``warmup`` s from now and wait for it; the relay ``pid``'s
        CPU between rtpload's window-start and window-end lines, its RSS at the end,
        and rtpload's results."""
        assert self.process.stdin is not None
        await self._send([f"window {warmup:.3f} {seconds:.3f} {DRAIN_S}"])
        self.process.stdin.close()
        window = Window()
        line = await self.line(warmup + 30)
        if line != "window-start":
            raise RuntimeError(f"rtpload: {line}")
        cpu0, threads0, t0 = cpu_seconds(pid), thread_cpu_seconds(pid), time.monotonic()
        line = await self.line(seconds + 30)
        if line != "window-end":
            raise RuntimeError(f"rtpload: {line}")
        cpu1, threads1, t1 = cpu_seconds(pid), thread_cpu_seconds(pid), time.monotonic()
        window.rss_kb = rss_kb(pid)
        window.relay_cpu_s = round(cpu1 - cpu0, 3)
        window.wall_s = round(t1 - t0, 3)
        busy = {k: 100 * (v - threads0.get(k, 0.0)) / window.wall_s for k, v in threads1.items()}
        window.threads_pct = {
            k: round(v, 1) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:5] if v >= 0.5
        }
        window.load = json.loads(await self.line(DRAIN_S + 30))
        await asyncio.wait_for(self.process.wait(), 10)
        return window


def pair_peers(relay_ports: list[int], calls: int) -> list[Peer]:
    """Plan of a latching relay with ports [a0, b0, a1, b1, ...]: rtpload socket j
    sends to relay port j, and its stream comes out at socket j ^ 1."""
    return [Peer(j, j % 2, "127.0.0.1", relay_ports[j], j ^ 1) for j in range(2 * calls)]


# ---- results -------------------------------------------------------------------------


@dataclass
class RelayResult:
    relay: str
    calls: int
    ok: bool = False
    skipped: str = ""
    error: str = ""
    calls_up: int = 0
    warmup_s: float = 0.0
    window_s: float = 0.0
    relayed_pps: float = 0.0
    cpu_us_per_packet: float | None = None
    cpu_pct: float = 0.0
    loss_pct: float | None = None
    delay_ms: dict[str, float] = field(default_factory=dict)
    rss_kb: int = 0
    rtpload_cpu_pct: float = 0.0
    foreign_pps: float = 0.0
    window: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def fill(self, w: Window) -> None:
        load = w.load
        total = load["all"]
        wall = load["window_s"] or w.wall_s
        self.window_s = round(wall, 2)
        self.relayed_pps = round(total["rx_in_window"] / wall, 1) if wall else 0.0
        if total["rx_in_window"]:
            self.cpu_us_per_packet = round(1e6 * w.relay_cpu_s / total["rx_in_window"], 2)
        self.cpu_pct = round(100 * w.relay_cpu_s / w.wall_s, 1) if w.wall_s else 0.0
        if total["sent"]:
            self.loss_pct = round(100 * total["lost"] / total["sent"], 3)
        self.delay_ms = total["delay_ms"]
        self.rss_kb = w.rss_kb
        self.rtpload_cpu_pct = round(100 * load["cpu_window_s"] / wall, 1) if wall else 0.0
        self.foreign_pps = round(load["foreign_in_window"] / wall, 1) if wall else 0.0
        self.window = asdict(w)
        self.ok = True


# ---- latching relays: floor and uvloop ---------------------------------------------


async def run_latching(
    name: str, cmd: list[str], args: argparse.Namespace, rtpload_bin: Path, workdir: Path
) -> RelayResult:
    """A relay started as ``cmd`` that prints its ports [a0, b0, ...] and latches each
    side from its first packet."""
    result = RelayResult(name, args.calls)
    relay = await Child.start(workdir, name, *cmd)
    load: Rtpload | None = None
    try:
        ports = await relay.port_list()
        load = await Rtpload.open(workdir, rtpload_bin, 2 * args.calls, lifetime(args), args.ptime)
        result.calls_up = args.calls
        result.warmup_s = args.warmup
        await load.add(pair_peers(ports, args.calls))
        result.fill(await load.window(relay.pid, args.warmup, args.seconds))
    finally:
        if load is not None:
            await load.stop(2)
        result.extra["relay_exit"] = await relay.stop()
    return result


def lifetime(args: argparse.Namespace) -> float:
    """The seconds a relay or rtpload may live at most (each exits by itself then)."""
    return args.warmup + args.seconds + args.calls / args.rate * 1.2 + args.setup_slack + 120


async def run_floor(args: argparse.Namespace, rtpload_bin: Path, workdir: Path) -> RelayResult:
    cmd = [str(rtpload_bin), "relay", str(args.calls), f"{lifetime(args):.0f}"]
    return await run_latching("floor", cmd, args, rtpload_bin, workdir)


async def run_uvloop(args: argparse.Namespace, rtpload_bin: Path, workdir: Path) -> RelayResult:
    cmd = [sys.executable, str(UVLOOP_RELAY), str(args.calls), "--max-seconds"]
    cmd.append(f"{lifetime(args):.0f}")
    return await run_latching("uvloop", cmd, args, rtpload_bin, workdir)


# ---- rtpengine: the ng control protocol ----------------------------------------------


def bencode(value: Any) -> bytes:
    """Bencode (BEP 3) of str/bytes, int, list and dict (keys sorted)."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """The value of a bencoded message; strings come back as str (UTF-8, replaced)."""

    def at(i: int) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"l", b"d"):
            items: list[Any] = []
            i += 1
            while data[i : i + 1] != b"e":
                item, i = at(i)
                items.append(item)
            if c == b"l":
                return items, i + 1
            return dict(zip(items[::2], items[1::2], strict=True)), i + 1
        colon = data.index(b":", i)
        size = int(data[i:colon])
        return data[colon + 1 : colon + 1 + size].decode(errors="replace"), colon + 1 + size

    value, end = at(0)
    if end != len(data):
        raise ValueError("trailing bytes after a bencoded value")
    return value


class NgClient:
    """Blocking ng requests (cookie, space, bencoded dict) over UDP to rtpengine."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(2.0)
        self.n = 0

    def request(self, message: dict[str, Any], tries: int = 3) -> dict[str, Any]:
        self.n += 1
        cookie = f"{os.getpid()}_{self.n}".encode()
        for _ in range(tries):
            self.sock.send(cookie + b" " + bencode(message))
            try:
                while True:
                    reply = self.sock.recv(65536)
                    head, _, body = reply.partition(b" ")
                    if head == cookie:
                        answer: dict[str, Any] = bdecode(body)
                        if answer.get("result") not in ("ok", "pong"):
                            raise RuntimeError(f"rtpengine {message['command']}: {answer}")
                        return answer
            except TimeoutError:
                continue
        raise RuntimeError(f"rtpengine: no answer to {message['command']}")

    def close(self) -> None:
        self.sock.close()


def plain_sdp(port: int, session: int, ptime: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=relay_bench\r\nc=IN IP4 127.0.0.1\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:{ptime}\r\n"
        "a=sendrecv\r\n"
    )


def sdp_address(sdp: str) -> tuple[str, int]:
    """The connection address and audio port of an SDP (RFC 4566 c= and m= lines)."""
    host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+)", sdp, re.M)
    if not host or not port:
        raise ValueError(f"no c=/m=audio in SDP: {sdp!r}")
    return host.group(1), int(port.group(1))


def rtpengine_calls(ng: NgClient, ports: list[int], calls: int, ptime: int) -> list[Peer]:
    """One rtpengine call per pair: offer the caller side's SDP, answer with the callee
    side's; each end sends to the address rtpengine gave the other end's request."""
    peers = []
    for i in range(calls):
        a, b = 2 * i, 2 * i + 1
        base = {"call-id": f"relay-bench-{i}", "from-tag": f"a{i}"}
        offer = ng.request(
            {"command": "offer", **base, "sdp": plain_sdp(ports[a], i, ptime), "ICE": "remove"}
        )
        answer = ng.request(
            {
                "command": "answer",
                **base,
                "to-tag": f"b{i}",
                "sdp": plain_sdp(ports[b], i, ptime),
            }
        )
        host_b, port_b = sdp_address(offer["sdp"])  # where the callee side sends
        host_a, port_a = sdp_address(answer["sdp"])  # where the caller side sends
        peers += [Peer(a, 0, host_a, port_a, b), Peer(b, 1, host_b, port_b, a)]
    return peers


async def run_rtpengine(args: argparse.Namespace, rtpload_bin: Path, workdir: Path) -> RelayResult:
    result = RelayResult("rtpengine", args.calls)
    ng_port = free_udp_port()
    cmd = [
        RTPENGINE,
        "--config-file=none",  # not /etc/rtpengine/rtpengine.conf
        "--foreground",
        "--log-stderr",
        "--log-level=5",
        "--table=-1",  # userspace forwarding only, no kernel module
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={RTPENGINE_PORTS[0]}",
        f"--port-max={RTPENGINE_PORTS[1]}",
        "--delete-delay=0",
    ]
    relay = await Child.start(workdir, "rtpengine", *cmd)
    ng = NgClient(ng_port)
    load: Rtpload | None = None
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                await asyncio.to_thread(ng.request, {"command": "ping"}, 1)
                break
            except (RuntimeError, OSError):  # not listening yet: refused, or no answer
                if relay.process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("rtpengine did not answer ping") from None
                await asyncio.sleep(0.2)
        load = await Rtpload.open(workdir, rtpload_bin, 2 * args.calls, lifetime(args), args.ptime)
        t0 = time.monotonic()
        peers = await asyncio.to_thread(rtpengine_calls, ng, load.ports, args.calls, args.ptime)
        result.extra["ng_setup_s"] = round(time.monotonic() - t0, 2)
        result.extra["threads"] = len(os.listdir(f"/proc/{relay.pid}/task"))
        result.calls_up = args.calls
        result.warmup_s = args.warmup
        await load.add(peers)
        result.fill(await load.window(relay.pid, args.warmup, args.seconds))
        for i in range(args.calls):
            await asyncio.to_thread(
                ng.request,
                {"command": "delete", "call-id": f"relay-bench-{i}", "from-tag": f"a{i}"},
            )
    finally:
        ng.close()
        if load is not None:
            await load.stop(2)
        result.extra["relay_exit"] = await relay.stop()
    return result


# ---- dialswitch ----------------------------------------------------------------------


class DialApp(WebhookServer):
    """The customer's app: every call is dialled to the trunk's callee, recorded
    in ``record``'s mode (a ``<Dial record>`` value) if one is given."""

    def __init__(self, record: str | None = None):
        super().__init__()
        attribute = f' record="{record}"' if record else ""
        number = target_number(1)
        self.document = f"<Response><Dial{attribute}><Number>{number}</Number></Dial></Response>"

    async def _voice(self, request: web.Request) -> web.Response:
        await self.hit(request)
        return xml_response(self.document)

    def routes(self) -> list[tuple[str, Any]]:
        return [("/voice", self._voice)]


# [field1] of the -inf line: the ptime rtpload sends at.
SDP_LINES = """v=0
      o=sipp 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [field0] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:[field1]
      a=sendrecv"""

# The switch's SDP of a leg: its connection address and audio port, to <log>. (SIPp
# refuses a variable used only once, so the whole matches are logged too, as "X".)
SDP_EREG = """      <ereg regexp="c=IN IP4 ([0-9.]+)" search_in="body" check_it="true"
            assign_to="c_line,rip"/>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true"
            assign_to="m_line,rport"/>"""


def caller_xml(hangup_at: float) -> str:
    """The SIPp UAC: INVITE with rtpload's caller-side port ([field0] of -inf), log
    "I n" when sent, "A n port switch-ip switch-port" when answered, ACK; then pause
    until the wall-clock ``hangup_at`` (computed per call from gettimeofday, so every
    call ends at once however long the setup took), then BYE."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- written by bench/relay_bench.py -->
<scenario name="relay-caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+1415[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+1415[call_number]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {SDP_LINES}
    ]]>
    <action>
      <log message="I [call_number] [timestamp]"/>
    </action>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200">
    <action>
{SDP_EREG}
      <log message="A [call_number] [field0] [$rip] [$rport] [timestamp]"/>
      <log message="X [$c_line] [$m_line]"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop>
    <action>
      <gettimeofday assign_to="now_s,now_us"/>
      <assign assign_to="hold" value="{hangup_at:.3f}"/>
      <subtract assign_to="hold" variable="now_s"/>
      <multiply assign_to="hold" value="1000"/>
      <divide assign_to="now_us" value="1000"/>
      <subtract assign_to="hold" variable="now_us"/>
      <test assign_to="late" variable="hold" compare="less_than" value="1"/>
    </action>
  </nop>
  <nop test="late" next="1"/>
  <pause variable="hold"/>
  <label id="1"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def _callee_reply(status: str, sdp: bool = False) -> str:
    dialog = not status.startswith("100")
    return benchlib.uas_response(status, dialog=dialog, sdp=SDP_LINES if sdp else None)


CALLEE_XML = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- written by bench/relay_bench.py -->
<scenario name="relay-callee">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sip:\\+1415([0-9]+)@" search_in="hdr" header="From:" assign_to="from_all,n"/>
{SDP_EREG}
      <log message="C [$n] [field0] [$rip] [$rport] [timestamp]"/>
      <log message="X [$from_all] [$c_line] [$m_line]"/>
    </action>
  </recv>
{_callee_reply("100 Trying")}{_callee_reply("180 Ringing")}{_callee_reply("200 OK", sdp=True)}
  <recv request="ACK" crlf="true">
    <action>
      <log message="K [$n] [timestamp]"/>
    </action>
  </recv>
  <recv request="BYE"/>
{_callee_reply("200 OK")}</scenario>
"""
"""The SIPp UAS behind the switch's trunk: answers at once with rtpload's callee-side
port ([field0]: the callee takes the -inf lines in the order the INVITEs arrive),
logs "C n port switch-ip switch-port" (n: the caller's call number, from the From
user the switch forwards) and "K n" when the ACK arrives (the call is bridged)."""


class MediaSwitch(Switch):
    """benchlib's switch, with ``--switch-media`` lines added to its [media] table
    (e.g. ``relay = false``, to measure the conference bridge where the switch would
    relay); none by default, so the switch runs as configured."""

    media_lines: tuple[str, ...] = ()

    def write_config(self) -> Path:
        config = super().write_config()
        if self.media_lines:
            text = config.read_text()
            head, table, tail = text.partition("[media]\n")
            if not table:
                raise RuntimeError("benchlib's switch config has no [media] table")
            config.write_text(head + table + "".join(f"{x}\n" for x in self.media_lines) + tail)
        return config


def sipp_lines(sipp: Sipp, kind: str) -> dict[int, list[str]]:
    """<log> lines "KIND n ..." of a SIPp, as {n: the rest of the fields}."""
    found: dict[int, list[str]] = {}
    if sipp.log_file.exists():
        for line in sipp.log_file.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == kind and parts[1].isdigit():
                found.setdefault(int(parts[1]), parts[2:])
    return found


RTP_SAMPLES = {
    "rx": ("dialswitch_rtp_packets_total", "rx"),
    "tx": ("dialswitch_rtp_packets_total", "tx"),
    "rx_lost": ("dialswitch_rtp_packets_lost_total", "rx"),
    "tx_lost": ("dialswitch_rtp_packets_lost_total", "tx"),
    "rx_discarded": ("dialswitch_rtp_packets_discarded_total", "rx"),
}


async def rtp_totals(switch: Switch) -> dict[str, float | None]:
    """The switch's RTP counters of ended streams (/metrics)."""
    return {
        key: await switch.metric(sample, {"direction": direction})
        for key, (sample, direction) in RTP_SAMPLES.items()
    }


def counter_deltas(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, int | None]:
    deltas: dict[str, int | None] = {}
    for key, old in before.items():
        new = after.get(key)
        deltas[key] = None if old is None or new is None else int(new - old)
    return deltas


async def run_dialswitch(args: argparse.Namespace, rtpload_bin: Path, workdir: Path) -> RelayResult:
    calls = args.calls
    result = RelayResult("dialswitch", calls)
    result.extra["switch_media"] = args.switch_media
    result.extra["record"] = args.record
    # rtpload binds its sockets first: the switch's and the SIPps' free ports are
    # picked after, so none of them can be one of rtpload's (all are ephemeral).
    load = await Rtpload.open(workdir, rtpload_bin, 2 * calls, lifetime(args), args.ptime)
    ports = load.ports
    app = DialApp(args.record)
    switch: MediaSwitch | None = None
    sipps: list[Sipp] = []
    try:
        await app.start()
        switch = MediaSwitch(
            workdir,
            1,
            app.base,
            args.log_level,
            max(SWITCH_MAX_CALLS, 2 * calls),
            benchlib.DEFAULT_RTP_PORTS,
        )
        switch.media_lines = tuple(args.switch_media)
        result.extra["switch_tree"] = tree_state()  # what the switch starts from
        await switch.start()
        await asyncio.sleep(1.0)
        baseline = await switch.health()
        rtp0 = await rtp_totals(switch)
        rss_idle = rss_kb(switch.pid)
        index = {port: j for j, port in enumerate(ports)}
        (workdir / "caller.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{ports[2 * i]};{args.ptime};\n" for i in range(calls))
        )
        (workdir / "callee.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{ports[2 * i + 1]};{args.ptime};\n" for i in range(calls))
        )
        setup_budget = calls / args.rate * 1.2 + args.setup_slack
        t_start = time.time()
        setup_deadline = t_start + 1 + setup_budget
        hangup_at = setup_deadline + args.warmup + args.seconds + DRAIN_S + 1.5
        (workdir / "relay_caller.xml").write_text(caller_xml(hangup_at))
        (workdir / "relay_callee.xml").write_text(CALLEE_XML)
        life = hangup_at - t_start + 60  # every SIPp is bounded by this
        callee = Sipp(workdir, "callee", "relay_callee.xml", switch.trunk_ports[0], False)
        await callee.start(["-m", str(calls), "-inf", "callee.csv"], life + 10, life)
        sipps.append(callee)
        await asyncio.sleep(0.3)
        caller = Sipp(workdir, "caller", "relay_caller.xml", free_udp_port(), False)
        extra = ["-s", NUMBER, "-r", f"{args.rate:g}", "-rp", "1000", "-m", str(calls)]
        extra += ["-l", str(calls), "-inf", "caller.csv"]
        await caller.start(extra, life, 30, f"127.0.0.1:{switch.sip_port}")
        sipps.append(caller)

        # -- as each call is bridged (its callee got the ACK), its two ends start
        # sending, as phones would; until every call is, or the setup deadline
        started: set[int] = set()
        peers: list[Peer] = []
        while True:
            answered = sipp_lines(caller, "A")  # n -> [port, switch ip, switch port, ts]
            reached = sipp_lines(callee, "C")  # n -> [port, switch ip, switch port, ts]
            bridged_now = sipp_lines(callee, "K")
            new: list[Peer] = []
            for n in sorted((set(answered) & set(reached) & set(bridged_now)) - started):
                a_port, a_host, a_switch = answered[n][:3]
                b_port, b_host, b_switch = reached[n][:3]
                a, b = index[int(a_port)], index[int(b_port)]
                new += [Peer(a, 0, a_host, int(a_switch), b), Peer(b, 1, b_host, int(b_switch), a)]
                started.add(n)
            await load.add(new)
            peers += new
            caller_ended = caller.process is None or caller.process.returncode is not None
            if len(started) >= calls or caller_ended or time.time() > setup_deadline:
                break
            await asyncio.sleep(0.1)
        t_ready = time.time()
        invited = {n: float(f[-1]) for n, f in sipp_lines(caller, "I").items()}
        bridged = {n: float(f[-1]) for n, f in sipp_lines(callee, "K").items()}
        result.calls_up = len(peers) // 2
        setup_ms = [1000 * (bridged[n] - invited[n]) for n in bridged if n in invited]
        result.extra["setup"] = {
            "calls_up": result.calls_up,
            "all_up_s": round(max(bridged.values()) - min(invited.values()), 2)
            if bridged and invited
            else None,
            "per_call_ms_p50": benchlib.ms_percentile(setup_ms, 50),
            "per_call_ms_p99": benchlib.ms_percentile(setup_ms, 99),
            "legs_live": await switch.live_calls(),
        }
        print(
            f"  dialswitch: {result.calls_up}/{calls} calls bridged in "
            f"{result.extra['setup']['all_up_s']} s at {args.rate:g} calls/s "
            f"(per call p50 {result.extra['setup']['per_call_ms_p50']} ms, "
            f"p99 {result.extra['setup']['per_call_ms_p99']} ms)",
            flush=True,
        )
        if not peers:
            raise RuntimeError(f"no call was bridged: {caller.errors(3) + callee.errors(3)}")

        # -- the window: rtpload's warm-up stretches to the calls' common hang-up time
        room = hangup_at - 1.0 - DRAIN_S - time.time()
        seconds = min(args.seconds, room - 1.0)
        if seconds < 2:
            raise RuntimeError(f"calls up {t_ready - t_start:.1f} s after start: no time left")
        result.warmup_s = round(room - seconds, 2)
        rss_calls = rss_kb(switch.pid)
        result.fill(await load.window(switch.pid, room - seconds, seconds))
        result.extra["rss_kb_idle"] = rss_idle
        result.extra["rss_kb_calls_up"] = rss_calls
        health: dict[str, Any] = {}
        with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
            health = await switch.health()
        result.extra["legs_live_after_window"] = health.get("calls")
        result.extra["relayed_after_window"] = health.get("relayed")  # pairs off the bridge
        result.extra["recorders_after_window"] = health.get("recorders")

        # -- hang-up (the callers' BYEs at hangup_at), leak check, the switch's counters
        caller_exit = await caller.wait(hangup_at - time.time() + 40)
        callee_exit = await callee.wait(30)
        leak = await switch.wait_idle(baseline)
        rtp1 = await rtp_totals(switch)
        caller_tally, callee_tally = caller.tally(), callee.tally()
        result.extra.update(
            {
                "caller": {"exit": caller_exit, **asdict(caller_tally)},
                "callee": {"exit": callee_exit, **asdict(callee_tally)},
                "sipp_errors": caller.errors(3) + callee.errors(3),
                "leak_check": leak,
                "switch_rtp": counter_deltas(rtp0, rtp1),
                "switch_log": switch.log_problems(),
            }
        )
        result.ok = result.ok and bool(leak.get("ok")) and caller_tally.ok == result.calls_up
    finally:
        await load.stop(2)
        for sipp in sipps:
            await sipp.kill()
        if switch is not None:
            result.extra["switch_exit"] = await switch.stop()
        await app.stop()
    return result


def tree_state() -> dict[str, str]:
    """The switch's commit, its local changes (paths, and a hash of the diff and of the
    untracked files under switch/, media/, deploy/ and config/) and the pjsua2 wheel
    installed: the switch runs from the working tree as it is, which may be changing."""
    state = benchlib.git_state()
    paths = ["switch", "media", "deploy", "config"]

    def git(*cmd: str) -> bytes:
        done = subprocess.run(["git", *cmd], cwd=benchlib.REPO, capture_output=True)
        return done.stdout

    digest = hashlib.sha256(git("diff", "HEAD", "--", *paths))
    for name in sorted(git("ls-files", "--others", "--exclude-standard", "--", *paths).split()):
        with contextlib.suppress(OSError):
            digest.update(name + (benchlib.REPO / name.decode()).read_bytes())
    state["local_changes_sha256"] = digest.hexdigest()[:16]
    try:
        state["pjsua2"] = importlib.metadata.version("pjsua2")
    except importlib.metadata.PackageNotFoundError:
        state["pjsua2"] = "not installed"
    return state


# ---- output and main -----------------------------------------------------------------

Runner = Callable[[argparse.Namespace, Path, Path], Awaitable[RelayResult]]
RUNNERS: dict[str, Runner] = {
    "dialswitch": run_dialswitch,
    "uvloop": run_uvloop,
    "rtpengine": run_rtpengine,
    "floor": run_floor,
}

HEADER = (
    f"{'relay':<11} {'calls':>5} {'pkt/s relayed':>13} {'CPU us/pkt':>10} {'CPU %':>6} "
    f"{'loss %':>7} {'delay p50/p99/max ms':>22} {'RSS MiB':>8} {'rtpload CPU %':>13}"
)


def row(r: RelayResult) -> str:
    if not r.ok and not r.window:
        why = (r.skipped or r.error or "failed").splitlines()[0][:120]
        return f"{r.relay:<11} {r.calls:>5}  {why}"
    d = r.delay_ms
    delay = f"{d['p50']:.1f} / {d['p99']:.1f} / {d['max']:.1f}" if d else "-"
    us = "-" if r.cpu_us_per_packet is None else f"{r.cpu_us_per_packet:.1f}"
    loss = "-" if r.loss_pct is None else f"{r.loss_pct:.3f}"
    calls = f"{r.calls_up}" if r.calls_up == r.calls else f"{r.calls_up}/{r.calls}"
    return (
        f"{r.relay:<11} {calls:>5} {r.relayed_pps:>13.0f} {us:>10} {r.cpu_pct:>6.1f} "
        f"{loss:>7} {delay:>22} {r.rss_kb / 1024:>8.1f} {r.rtpload_cpu_pct:>13.1f}"
    )


SLICE_MS = 100  # rtpload's slow_slices: 100 ms of send time each


def slow_stretches(slices: list[list[float]], window_s: float) -> str:
    """Where the packets slower than 5 ms were sent (rtpload's ``slow_slices``): a tail
    of isolated stalls, or stretches in which the relay fell behind."""
    if not slices:
        return "no packet slower than 5 ms"
    starts = [int(start) for start, _, _ in slices]
    longest, run_start, best_start = 1, starts[0], starts[0]
    for before, start in zip(starts, starts[1:], strict=False):
        if start - before != SLICE_MS:
            run_start = start
        length = (start - run_start) // SLICE_MS + 1
        if length > longest:
            longest, best_start = length, run_start
    slow = sum(int(n) for _, n, _ in slices)
    total = max(1, round(window_s * 1000 / SLICE_MS))
    return (
        f"{slow} packets slower than 5 ms, sent in {len(slices)} of {total} slices of "
        f"{SLICE_MS} ms; the longest stretch {longest * SLICE_MS} ms from {best_start} ms"
    )


def details(r: RelayResult) -> list[str]:
    """The lines under a relay's row: per direction, oddities, the switch's checks."""
    if not r.window:
        return [f"    {line}" for line in r.error.splitlines()[1:12]]
    load = r.window["load"]
    out = []
    for name in ("forward", "reverse"):
        d = load[name]
        out.append(
            f"    {name:<7} sent {d['sent']} received {d['received']} lost {d['lost']} "
            f"dup {d['dup']} misrouted {d['misrouted']} delay p50/p99/max "
            f"{d['delay_ms']['p50']}/{d['delay_ms']['p99']}/{d['delay_ms']['max']} ms"
        )
    out.append(
        f"    window {r.window_s} s after {r.warmup_s} s warm-up; not ours {r.foreign_pps}/s, "
        f"RTCP {load['rtcp']} packets; "
        f"rtpload skipped {load['skipped_sends']} sends, {load['late_sends_5ms']} > 5 ms late "
        f"(max {load['send_late_max_ms']} ms)"
    )
    out.append(f"    {slow_stretches(load.get('slow_slices', []), r.window_s)}")
    sends = load["forward"]["sent"] + load["reverse"]["sent"]
    if load["skipped_sends"] > 0.001 * max(1, sends) or r.rtpload_cpu_pct > 85:
        out.append(
            f"    WARNING: rtpload fell behind (CPU {r.rtpload_cpu_pct:.0f}%, "
            f"{load['skipped_sends']} sends skipped): the delays are mostly its own backlog "
            "and the offered load was below a packet per ptime per stream; the machine, not the "
            "relay, is the limit"
        )
    if r.window["threads_pct"]:
        threads = ", ".join(f"{k} {v:.0f}%" for k, v in r.window["threads_pct"].items())
        out.append(f"    threads: {threads}")
    x = r.extra
    if x.get("record"):
        out.append(f'    every call recorded: <Dial record="{x["record"]}">')
    if x.get("switch_media"):
        out.append(f"    switch [media] lines added: {'; '.join(x['switch_media'])}")
    if "leak_check" in x:
        leak = "ok" if x["leak_check"].get("ok") else f"LEAK {x['leak_check']}"
        out.append(
            f"    RSS idle {x['rss_kb_idle'] / 1024:.1f} -> calls up "
            f"{x['rss_kb_calls_up'] / 1024:.1f} -> window end {r.rss_kb / 1024:.1f} MiB; "
            f"leak check {leak}; caller ok/failed {x['caller']['ok']}/{x['caller']['failed']}, "
            f"callee {x['callee']['ok']}/{x['callee']['failed']}; log {x['switch_log']}"
        )
        out.append(
            f"    at the window's end: {x.get('legs_live_after_window')} legs, "
            f"{x.get('relayed_after_window')} pairs relayed, "
            f"{x.get('recorders_after_window')} recorders; "
            f"switch RTP counters over the run: {x['switch_rtp']}"
        )
        for e in x.get("sipp_errors", [])[:4]:
            out.append(f"    sipp: {e[:160]}")
    return out


def available(name: str) -> str:
    """Why a relay cannot run here ('' when it can)."""
    if name == "dialswitch" and shutil.which("sipp") is None:
        return "sipp not found (apt-get install sip-tester)"
    if name == "rtpengine" and not os.access(RTPENGINE, os.X_OK):
        return "not installed"
    return ""


async def run(args: argparse.Namespace) -> int:
    rtpload_bin = rtpload_binary()
    tree = tree_state()
    workdir = Path(tempfile.mkdtemp(prefix="relay_bench-"))
    started = time.monotonic()
    results: list[RelayResult] = []
    print(
        f"relay_bench: {args.calls} calls, 2 x {1000 // args.ptime} packets/s each "
        f"(ptime {args.ptime} ms), {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s window; workdir {workdir}\n"
        f"switch tree {tree['commit'][:10]}, local changes {tree['local_changes_sha256']}, "
        f"pjsua2 {tree['pjsua2']}",
        flush=True,
    )
    for name in args.relays:
        reason = available(name)
        if reason:
            print(f"{name}: {reason}", flush=True)
            results.append(RelayResult(name, args.calls, skipped=reason))
            continue
        print(f"== {name}", flush=True)
        (workdir / name).mkdir()
        budget = args.warmup + args.seconds + args.calls / args.rate * 1.2 + 240
        try:
            result = await asyncio.wait_for(
                RUNNERS[name](args, rtpload_bin, workdir / name), budget
            )
        except Exception as exc:  # one relay's failure is reported, the others still run
            result = RelayResult(name, args.calls, error=f"{type(exc).__name__}: {exc}")
        results.append(result)
        print(row(result), flush=True)
        for line in details(result):
            print(line, flush=True)
    print()
    print(HEADER)
    for result in results:
        print(row(result))
    for result in results:
        setup = result.extra.get("setup")
        if setup:
            print(
                f"{result.relay} setup: {setup['calls_up']}/{result.calls} calls bridged "
                f"{setup['all_up_s']} s after the first INVITE ({args.rate:g} calls/s), per call "
                f"INVITE -> callee ACK p50 {setup['per_call_ms_p50']} ms, "
                f"p99 {setup['per_call_ms_p99']} ms"
            )
    tree_end = tree_state()
    if tree_end != tree:
        print(f"the switch's tree changed during the run: now {tree_end}")
    leftover = benchlib.child_pids(os.getpid())
    if leftover:
        print(f"processes left behind: {leftover}")
    out: Path = args.json or BENCH / "results" / f"relay-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "bench": "relay_bench",
                "switch_tree": tree,
                "switch_tree_end": tree_end,
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
                "wall_s": round(time.monotonic() - started, 1),
                "results": [asdict(r) for r in results],
                "leftover_processes": leftover,
            },
            indent=2,
        )
    )
    print(f"result file: {out} ({time.monotonic() - started:.0f} s)")
    failed = [r.relay for r in results if not r.ok and not r.skipped]
    if args.keep or failed:
        print(f"kept workdir: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed or leftover else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=500, help="bridged calls K (default 500)")
    p.add_argument("--seconds", type=float, default=20, help="measuring window (default 20)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of RTP before it (3)")
    p.add_argument(
        "--ptime",
        type=int,
        default=20,
        choices=(10, 20, 30, 40, 50, 60),
        help="ms of audio per packet (20: 50 packets/s per stream each way)",
    )
    p.add_argument(
        "--relays",
        default=",".join(RELAYS),
        help=f"comma-separated, of {', '.join(RELAYS)} (default: all available)",
    )
    p.add_argument("--rate", type=float, default=100, help="dialswitch: calls/s set up (100)")
    p.add_argument(
        "--setup-slack",
        type=float,
        default=5,
        help="dialswitch: seconds allowed for setup beyond calls/rate x 1.2 (5)",
    )
    p.add_argument("--log-level", default="info", help="dialswitch: [log] level")
    p.add_argument(
        "--record",
        metavar="MODE",
        default=None,
        help="dialswitch: record every call (a <Dial record> value, e.g. record-from-answer-dual)",
    )
    p.add_argument(
        "--switch-media",
        action="append",
        default=[],
        metavar="LINE",
        help='dialswitch: a line for its [media] table, e.g. "relay = false" (repeatable)',
    )
    p.add_argument("--json", type=Path, default=None, help="result file (default bench/results/)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if not 1 <= args.calls <= MAX_CALLS:
        p.error(f"--calls must be 1..{MAX_CALLS}")
    if args.seconds < 2 or args.warmup < 0.5:
        p.error("--seconds must be >= 2 and --warmup >= 0.5")
    args.relays = [r.strip() for r in args.relays.split(",") if r.strip()]
    unknown = set(args.relays) - set(RELAYS)
    if unknown:
        p.error(f"unknown relays {sorted(unknown)}; known: {', '.join(RELAYS)}")
    return args


def main() -> int:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
