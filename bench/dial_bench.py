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

``--flood RATE`` (fixed run only): while the calls run, a second SIPp UAC bound to
127.0.0.2 -- a source the switch does not trust, unlike the callers' 127.0.0.1 --
sends RATE out-of-dialog INVITEs per second to a number the switch does not own
(``scenarios/flood.xml``: INVITE, 404 if the per-source limit admits it, 503 if it
refuses it, ACK). It starts ``FLOOD_LEAD_S`` before the first call and runs until
the calls are over, bounded by ``-m RATE * seconds`` and ``-timeout``; the step
reports its INVITEs, 404s, 503s, the rest, and the switch's
``dialswitch_flood_refused_total{method="INVITE"}`` delta from /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import benchlib  # bench/ is sys.path[0] when this file is run as a script
from aiohttp import web
from benchlib import (
    NUMBER,
    USAGE_KEYS,
    BenchBase,
    Sipp,
    StepMonitor,
    WebhookServer,
    fmt,
    free_udp_port,
    median,
    ms_percentile,
    print_sipp_errors,
    rss_kb,
    target_number,
    thread_list,
    usage_columns,
    usage_header,
    workers_usage,
    write_bytes,
    xml_response,
)

FLOOD_IP = "127.0.0.2"  # not in the bench switch's [limits] trusted (only 127.0.0.1 is)
FLOOD_NUMBER = "+15005550199"  # not one of the switch's numbers: an admitted INVITE gets 404
FLOOD_LEAD_S = 2.0  # the flood runs this long before the first call (its bucket is empty)
FLOOD_TAIL_S = 1.0  # ... and this long after the last call should have ended
FLOOD_RECV_TIMEOUT_S = 5.0  # a flood INVITE without a final response by then: timeout

# Target 1: benchlib's answering callee, keyed by the From user, which the switch
# forwards from the caller (caller.xml's From user is +1415<call_number>).
CALLEE_XML = benchlib.answering_callee(
    "bench-callee-answer", key_header="From", key_prefix="+1415", key_var="caller_n"
)


# ---- the webhook app ---------------------------------------------------------------


class WebhookApp(WebhookServer):
    """The customer's app: every voice request gets the same <Dial> document."""

    def __init__(self, targets: int, answer_on_bridge: bool, record: str | None = None):
        super().__init__()
        numbers = "".join(f"<Number>{target_number(i)}</Number>" for i in range(1, targets + 1))
        attrs = ' answerOnBridge="true"' if answer_on_bridge else ""
        if record:
            attrs += f' record="{record}"'
        self.document = f"<Response><Dial{attrs}>{numbers}</Dial></Response>"

    async def _voice(self, request: web.Request) -> web.Response:
        await self.hit(request)
        return xml_response(self.document)

    def routes(self) -> list[tuple[str, Any]]:
        return [("/voice", self._voice)]


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
    flood: dict[str, Any] = field(default_factory=dict)  # --flood: see Bench.flood_figures

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


class Bench(BenchBase[WebhookApp]):
    """A switch, its webhook app and the SIPp peers of each load step."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        app = WebhookApp(args.targets, args.answer_on_bridge, args.record)
        super().__init__(args, workdir, app, targets=args.targets)

    async def step(
        self, rate: float, calls: int, hold_s: float, limit: int, plateau_legs: int | None = None
    ) -> StepResult:
        """One SIPp load run against the switch, then the leak check."""
        args = self.args
        switch = self.switch
        assert switch is not None
        d = self.step_dir()
        (d / "callee_answer.xml").write_text(CALLEE_XML)
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
        flood = await self.start_flood(d, duration) if args.flood else None

        pid = switch.pid
        hits0 = self.app.hits
        written0 = write_bytes(pid)
        workers_cpu0, workers_written0 = workers_usage(pid)
        monitor = StepMonitor(switch, [caller, *callees, *([flood.sipp] if flood else [])])
        monitor.start()
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
        monitor.mark_end()
        for callee in callees:
            result.callee_exits.append(await callee.wait(20))
        if flood is not None:
            result.flood = await self.finish_flood(flood)
        result.leak_check = await monitor.finish(self.baseline)

        # -- counters
        tally = caller.tally()
        result.ok_calls = tally.ok
        result.failed_calls = tally.failed
        result.retransmissions = tally.retransmissions
        result.failures = tally.failures
        for callee in callees:
            ctally = callee.tally()
            result.callee_ok += ctally.ok
            result.callee_failed += ctally.failed
            result.retransmissions += ctally.retransmissions
        for sipp in (caller, *callees, *([flood.sipp] if flood else [])):
            result.sipp_errors += [f"{sipp.name}: {e}" for e in sipp.errors(3)]
        result.webhook_hits = self.app.hits - hits0

        # -- latencies from the <log> timestamps (same host, same wall clock)
        sent = caller.events("I")
        answered = caller.events("A")
        reached = callees[0].events("C")
        answer_ms = [(answered[n] - sent[n]) * 1000 for n in answered if n in sent]
        pdd_ms = [(reached[n] - sent[n]) * 1000 for n in reached if n in sent]
        result.answer_ms_p50 = ms_percentile(answer_ms, 50)
        result.answer_ms_p99 = ms_percentile(answer_ms, 99)
        result.pdd_ms_p50 = ms_percentile(pdd_ms, 50)
        result.pdd_ms_p99 = ms_percentile(pdd_ms, 99)
        if args.answer_on_bridge:
            setup = [a - args.ring_ms for a in answer_ms]
            result.setup_ms_p50 = ms_percentile(setup, 50)
            result.setup_ms_p99 = ms_percentile(setup, 99)
        if sent and answered:
            first_sent = min(sent.values())
            last_answered = max(answered.values())
            result.window_s = round(last_answered - first_sent, 3)
            if last_answered > first_sent:
                result.cps = round(result.ok_calls / (last_answered - first_sent), 1)

        # -- CPU and memory
        monitor.fill(result, live_peak="legs_peak")
        # Measured once the switch is idle again, so every recording has been finished.
        workers_cpu1, workers_written1 = workers_usage(pid)
        written = write_bytes(pid) - written0 + workers_written1 - workers_written0
        wall = monitor.wall
        result.disk_write_kbps = round(written / 1024 / wall, 1) if wall > 0 else 0.0
        result.workers_cpu_pct = monitor.pct(workers_cpu1 - workers_cpu0)
        for sipp in (caller, *callees):
            result.sipp_cpu_pct[sipp.name] = monitor.sipp_cpu_pct(sipp)
        if plateau_legs:
            result.plateau_rss_kb = monitor.plateau_rss_kb(plateau_legs)
        (d / "result.json").write_text(json.dumps(asdict(result), indent=2))
        return result

    async def start_flood(self, d: Path, calls_s: float) -> Flood:
        """Start the flooding SIPp (``--flood`` INVITEs/s from FLOOD_IP) for the calls'
        ``calls_s`` seconds plus FLOOD_LEAD_S before and FLOOD_TAIL_S after; return
        once the lead is over, i.e. just before the first call is to be sent."""
        switch = self.switch
        assert switch is not None
        rate = self.args.flood
        seconds = FLOOD_LEAD_S + calls_s + FLOOD_TAIL_S
        invites = int(rate * seconds)
        refused0 = await switch.metric("dialswitch_flood_refused_total", {"method": "INVITE"})
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
        sipp = Sipp(d, "flood", "flood.xml", free_udp_port(FLOOD_IP), False, local_ip=FLOOD_IP)
        t0 = time.monotonic()
        await sipp.start(
            [
                "-s",
                FLOOD_NUMBER,
                "-r",
                f"{rate:g}",
                "-rp",
                "1000",
                "-m",
                str(invites),
                # Calls open at once: up to RATE x the response timeout, so that the
                # limit never paces the flood even if the switch stops answering (below
                # the open-file limit, which SIPp checks -l against).
                "-l",
                str(int(min(rate * (FLOOD_RECV_TIMEOUT_S + 1), nofile - 100))),
            ],
            seconds + 30,
            FLOOD_RECV_TIMEOUT_S,
            f"127.0.0.1:{switch.sip_port}",
        )
        await asyncio.sleep(FLOOD_LEAD_S)
        return Flood(sipp, rate, seconds, invites, refused0, t0)

    async def finish_flood(self, flood: Flood) -> dict[str, Any]:
        """Wait for the flood SIPp (bounded), then its figures and the switch's count."""
        switch = self.switch
        assert switch is not None
        exit_code = await flood.sipp.wait(flood.seconds + 40)
        wall = time.monotonic() - flood.t0
        cpu = max(0.0, flood.sipp.cpu_end - flood.sipp.cpu_start)
        await asyncio.sleep(0.5)  # the switch's last answers (in its event loop)
        refused1 = await switch.metric("dialswitch_flood_refused_total", {"method": "INVITE"})
        stats = flood.sipp.stats()
        tally = flood.sipp.tally()
        sent = benchlib.count(stats, "OutgoingCall(C)")
        got_404 = len(flood.sipp.events("N"))
        got_503 = len(flood.sipp.events("R"))
        delta = (
            None if refused1 is None or flood.refused0 is None else int(refused1 - flood.refused0)
        )
        return {
            "rate": flood.rate,
            "planned_invites": flood.invites,
            "planned_s": round(flood.seconds, 1),
            "invites_sent": sent,
            "achieved_rate": round(sent / wall, 1) if wall > 0 else None,
            "wall_s": round(wall, 2),
            "got_404": got_404,
            "got_503": got_503,
            "other": max(0, sent - got_404 - got_503),
            "failed_calls": tally.failed,
            "failures": tally.failures,
            # responses to calls SIPp had finished (e.g. a 404 retransmitted for a lost ACK)
            "dead_call_msgs": benchlib.count(stats, "DeadCallMsgs(C)"),
            "sipp_exit": exit_code,
            "sipp_cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
            "switch_refused_delta": delta,
        }


@dataclass
class Flood:
    """A running flood: its SIPp, plan, the switch's refused count before, start time."""

    sipp: Sipp
    rate: float
    seconds: float
    invites: int
    refused0: float | None
    t0: float


# ---- modes -------------------------------------------------------------------------------


def _limit(args: argparse.Namespace, rate: float) -> int:
    """SIPp -l: --limit, or what a rate and --hold keep up at once (within max_calls)."""
    return args.limit or int(
        min(args.max_calls // (args.targets + 1) - 10, rate * (args.hold + 10))
    )


async def mode_fixed(bench: Bench) -> dict[str, Any]:
    a = bench.args
    step = await bench.step(a.rate, a.calls, a.hold, _limit(a, a.rate))
    _print_step(step)
    return {"mode": "fixed", "steps": [asdict(step)], "clean": step.clean}


async def mode_find_max(bench: Bench) -> dict[str, Any]:
    a = bench.args

    async def step(rate: float, calls: int) -> StepResult:
        return await bench.step(rate, calls, a.hold, _limit(a, rate))

    return await benchlib.find_max(a, step, _print_step)


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
    f"{usage_header('legs')}"
)


def _print_step(s: StepResult) -> None:
    print(
        f"{s.rate:>6g} {s.calls:>6} {s.ok_calls:>6} {s.failed_total:>5} "
        f"{fmt(s.cps)} {fmt(s.answer_ms_p50)} {fmt(s.answer_ms_p99)} "
        f"{fmt(s.pdd_ms_p50)} {fmt(s.pdd_ms_p99)} {fmt(s.setup_ms_p50)} {fmt(s.setup_ms_p99)} "
        f"{usage_columns(s, s.legs_peak)}",
        flush=True,
    )
    if s.thread_cpu_pct:
        peers = ", ".join(f"{k} {v:.0f}%" for k, v in s.sipp_cpu_pct.items())
        app = f"webhook app {s.bench_cpu_pct:.0f}%"
        workers = f"workers {s.workers_cpu_pct:.0f}%"
        print(
            f"       switch threads: {thread_list(s.thread_cpu_pct)}; {workers}; "
            f"sipp: {peers}; {app}"
        )
        print(f"       switch disk writes: {s.disk_write_kbps:.0f} KiB/s")
    if s.flood:
        f = s.flood
        print(
            f"       flood {f['rate']:g}/s from {FLOOD_IP}: {f['invites_sent']} INVITEs "
            f"({fmt(f['achieved_rate'], 0)}/s over {f['wall_s']} s): 503 {f['got_503']}, "
            f"404 {f['got_404']}, other/timeout {f['other']} {f['failures'] or ''}; "
            f"switch refused_total +{f['switch_refused_delta']}; "
            f"flood sipp {f['sipp_cpu_pct']:.0f}% (exit {f['sipp_exit']})"
        )
    if s.failures or s.sipp_errors:
        print(f"       failures {s.failures} callee_failed={s.callee_failed}")
        print_sipp_errors(s.sipp_errors)


FLOOD_KEYS = (
    "invites_sent",
    "achieved_rate",
    "got_503",
    "got_404",
    "other",
    "switch_refused_delta",
    "sipp_cpu_pct",
)
STEP_KEYS = (
    "cps",
    "failed_calls",
    "answer_ms_p50",
    "answer_ms_p99",
    "pdd_ms_p50",
    "pdd_ms_p99",
    "setup_ms_p50",
    "setup_ms_p99",
    *USAGE_KEYS,
)


def summarize(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians across repeats of the headline figures (find-max: benchlib's)."""
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
    steps = [s for r in runs for s in r["steps"]]
    summary = {"fixed_median": benchlib.step_medians(steps, STEP_KEYS)}
    floods = [s["flood"] for s in steps if s.get("flood")]
    if floods:
        summary["flood_median"] = benchlib.step_medians(floods, FLOOD_KEYS)
    return summary


# ---- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p, mode = benchlib.new_parser(__doc__)
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
    p.add_argument(
        "--flood",
        type=float,
        default=None,
        metavar="RATE",
        help=f"fixed run only: one more SIPp from {FLOOD_IP} (not trusted) sends RATE "
        "INVITEs/s\nto a number the switch does not own during the run (404, or 503 "
        "from the limits)",
    )
    benchlib.add_find_max_options(p)
    p.add_argument("--pause", type=float, default=2, help="seconds between steps")
    p.add_argument("--rounds", type=int, default=2, help="concurrency: rounds per switch")
    p.add_argument(
        "--settle", type=float, default=40, help="concurrency: idle seconds before each round"
    )
    benchlib.add_run_options(p)
    args = p.parse_args(argv)
    args.rate_given = args.rate is not None
    args.hold_given = args.hold is not None
    args.rate = args.rate if args.rate is not None else 100.0
    args.hold = args.hold if args.hold is not None else 1.0
    if not 1 <= args.targets <= 10:
        p.error("--targets must be 1..10")
    if args.flood is not None and (args.find_max or args.concurrency):
        p.error("--flood is for a fixed run (not --find-max or --concurrency)")
    if args.flood is not None and not 1 <= args.flood <= 20000:
        p.error("--flood must be 1..20000 INVITEs/s")
    return args


async def run(args: argparse.Namespace) -> int:
    await benchlib.run_repeats(
        args,
        name="dial_bench",
        header=HEADER,
        new_bench=Bench,
        modes={"find-max": mode_find_max, "concurrency": mode_concurrency, "fixed": mode_fixed},
        step_keys=STEP_KEYS,
        summarize=summarize,
    )
    return 0


def main() -> int:
    args = parse_args()
    return benchlib.launch("dial_bench", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
