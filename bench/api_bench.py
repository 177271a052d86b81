#!/usr/bin/env python3
"""Load benchmark of the REST Calls API: POST Calls.json -> switch -> SIPp callee.

The bench starts everything it measures and stops only what it started (by PID):

- a webhook app (aiohttp, in this process): ``/doc/<n>`` answers call n's
  document ``<Response><Pause length="HOLD"/><Hangup/></Response>`` (with
  ``--redirect``: ``<Pause length="30"/>``, and ``/next/<n>`` answers
  ``<Response><Hangup/></Response>``);
- a switch (``python -m switch``, benchlib's ``Switch``) in its own temporary
  directory on free loopback ports, with ``[api] calls_per_second = --cps`` and
  one trunk to the callee;
- per load step, one SIPp UAS on the trunk port that answers every INVITE after
  ``--ring-ms`` and waits for the switch's BYE;
- the load: ``--calls N`` POSTs of Calls.json at ``--rate R`` per second from an
  aiohttp client in this process, each started on its schedule (not after the
  previous one's answer). Call n has the unique To ``+1555<n, 7 digits>`` and
  the Url ``<app>/doc/<n>``; the callee logs the To user of each INVITE it gets
  and of each BYE, with SIPp's wall-clock timestamp, so each SIP event is matched
  to its API call exactly.

Modes: a fixed run (``--rate --calls --hold``), ``--find-max`` (rates 50, 100,
150, ... until a step has a failure) and ``--redirect`` (K calls parked in a
30 s ``<Pause>``; once call n's document was fetched, POST ``Url=<app>/next/<n>``
to it and time update sent -> ``/next/<n>`` fetched). ``--repeat`` runs the mode
several times, each with a fresh switch, and reports medians.
See bench/README.md, "api_bench".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import benchlib  # bench/ is sys.path[0] when this file is run as a script
from aiohttp import web
from benchlib import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    USAGE_KEYS,
    BenchBase,
    Sipp,
    StepMonitor,
    WebhookServer,
    fmt,
    ms_percentile,
    print_sipp_errors,
    rounded,
    thread_list,
    usage_columns,
    usage_header,
    xml_response,
)

API = f"/2010-04-01/Accounts/{ACCOUNT_SID}"


def to_number(n: int) -> str:
    """Call n's unique To: +1555 and n on 7 digits (a possible NANP number)."""
    return f"+1555{n:07d}"


# The callee: benchlib's answering callee, keyed by the To user (+1555<n>) and logging
# "B n" on the BYE, so that SIPp's events match API calls one to one.
CALLEE_XML = benchlib.answering_callee(
    "api-bench-callee", key_header="To", key_prefix="+1555", key_var="n", log_bye=True
)


# ---- the webhook app -------------------------------------------------------------------------


@dataclass
class Call:
    """One API call's timeline (wall-clock epoch seconds) and outcome."""

    n: int
    created: float = 0.0  # POST Calls.json sent
    created_status: int | None = None  # HTTP status (None: no answer)
    created_at: float | None = None  # its response received
    sid: str | None = None
    error: str | None = None
    invite_at: float | None = None  # the callee received the switch's INVITE
    doc_at: float | None = None  # the switch fetched /doc/n (the call was answered)
    bye_at: float | None = None  # the callee received the switch's BYE
    update_sent: float | None = None  # --redirect: POST Calls/<sid>.json Url=/next/n sent
    update_status: int | None = None
    update_at: float | None = None  # its response received
    next_at: float | None = None  # the switch fetched /next/n
    final_status: str | None = None  # GET Calls/<sid>.json after the step


class App(WebhookServer):
    """The customer's app: call n's document at /doc/n, the redirect's at /next/n."""

    def __init__(self, hold: int):
        super().__init__()
        self.hold = hold
        self.redirect = False
        self.calls: dict[int, Call] = {}
        self.on_document: Any = None  # callback(call) once /doc/n was fetched

    async def _call(self, request: web.Request) -> tuple[float, Call | None]:
        """The request's arrival (wall clock) and the call n of its path."""
        now = await self.hit(request)
        with contextlib.suppress(ValueError):
            return now, self.calls.get(int(request.match_info["n"]))
        return now, None

    async def _doc(self, request: web.Request) -> web.Response:
        now, call = await self._call(request)
        if call is not None and call.doc_at is None:
            call.doc_at = now
            if self.on_document is not None:
                self.on_document(call)
        pause = 30 if self.redirect else self.hold
        hangup = "" if self.redirect else "<Hangup/>"
        return xml_response(f'<Response><Pause length="{pause}"/>{hangup}</Response>')

    async def _next(self, request: web.Request) -> web.Response:
        now, call = await self._call(request)
        if call is not None and call.next_at is None:
            call.next_at = now
        return xml_response("<Response><Hangup/></Response>")

    async def _voice(self, request: web.Request) -> web.Response:
        return xml_response("<Response><Hangup/></Response>")

    def routes(self) -> list[tuple[str, Any]]:
        return [("/doc/{n}", self._doc), ("/next/{n}", self._next), ("/voice", self._voice)]


# ---- one load step -----------------------------------------------------------------------------


@dataclass
class StepResult:
    mode: str
    rate: float
    calls: int
    hold_s: int
    ring_ms: int
    created: int = 0  # 201s
    create_failed: int = 0  # non-201 or no answer
    create_errors: dict[str, int] = field(default_factory=dict)
    reached_callee: int = 0  # callee logged the INVITE
    answered: int = 0  # document fetched
    completed: int = 0  # document fetched and the callee got the switch's BYE
    redirected: int = 0  # --redirect: /next fetched
    final_completed: int | None = None  # GET says "completed" (None: not checked)
    final_other: dict[str, int] = field(default_factory=dict)
    callee_ok: int = 0
    callee_failed: int = 0
    callee_failures: dict[str, int] = field(default_factory=dict)
    callee_exit: int | None = None
    retransmissions: int = 0
    failed: int = 0  # calls that did not go all the way
    cps: float | None = None  # completed / (first POST -> last document fetch)
    create_rate: float | None = None  # POSTs actually sent per second
    window_s: float | None = None
    wall_s: float = 0.0
    create_ms_p50: float | None = None  # POST sent -> 201
    create_ms_p95: float | None = None
    create_ms_p99: float | None = None
    create_ms_max: float | None = None
    invite_ms_p50: float | None = None  # POST sent -> callee INVITE
    invite_ms_p95: float | None = None
    invite_ms_p99: float | None = None
    invite_ms_max: float | None = None
    doc_ms_p50: float | None = None  # POST sent -> document fetched (incl. ring)
    doc_ms_p99: float | None = None
    redirect_ms_p50: float | None = None  # update sent -> /next fetched
    redirect_ms_p95: float | None = None
    redirect_ms_p99: float | None = None
    redirect_ms_max: float | None = None
    update_ms_p50: float | None = None  # update sent -> its 200
    update_ms_p99: float | None = None
    cpu_pct: float = 0.0
    cpu_pct_peak_1s: float = 0.0
    thread_cpu_pct: dict[str, float] = field(default_factory=dict)
    sipp_cpu_pct: float = 0.0
    bench_cpu_pct: float = 0.0
    rss_kb_start: int = 0
    rss_kb_peak: int = 0
    rss_kb_end: int = 0
    calls_peak: int = 0  # peak /healthz "calls"
    leak_check: dict[str, Any] = field(default_factory=dict)
    sipp_errors: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few failed calls
    series: list[list[float]] = field(default_factory=list)  # [t s, cpu %, rss kB, calls]

    @property
    def clean(self) -> bool:
        return (
            self.failed == 0
            and self.callee_failed == 0
            and self.callee_exit == 0
            and (self.final_completed is None or self.final_completed == self.calls)
            and bool(self.leak_check.get("ok"))
        )


class Bench(BenchBase[App]):
    """A switch, the webhook app, the API client, and a SIPp callee per step."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        api = f"\n[api]\ncalls_per_second = {args.cps:g}\n"
        super().__init__(args, workdir, App(args.hold), extra_toml=api)
        self.client: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Bench:
        await super().__aenter__()
        basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        self.client = aiohttp.ClientSession(
            headers={"Authorization": f"Basic {basic}"},
            connector=aiohttp.TCPConnector(limit=self.args.connections),
            timeout=aiohttp.ClientTimeout(total=15),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
        await super().__aexit__(*exc)

    @property
    def api(self) -> str:
        assert self.switch is not None
        return f"http://127.0.0.1:{self.switch.http_port}{API}"

    async def create(self, call: Call) -> None:
        assert self.client is not None
        form = {
            "To": to_number(call.n),
            "From": NUMBER,
            "Url": f"{self.app.base}/doc/{call.n}",
            "Method": "POST",
        }
        call.created = time.time()
        try:
            async with self.client.post(f"{self.api}/Calls.json", data=form) as response:
                body = await response.read()
                call.created_at = time.time()
                call.created_status = response.status
                if response.status == 201:
                    call.sid = json.loads(body)["sid"]
                else:
                    call.error = f"{response.status} {body[:200].decode(errors='replace')}"
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
            call.error = f"{type(error).__name__}: {error}"

    async def redirect(self, call: Call) -> None:
        """POST Url=<app>/next/n to a parked call, after --redirect-delay."""
        assert self.client is not None
        await asyncio.sleep(self.args.redirect_delay)
        if call.sid is None:
            return
        form = {"Url": f"{self.app.base}/next/{call.n}", "Method": "POST"}
        call.update_sent = time.time()
        try:
            async with self.client.post(f"{self.api}/Calls/{call.sid}.json", data=form) as resp:
                await resp.read()
                call.update_at = time.time()
                call.update_status = resp.status
        except (aiohttp.ClientError, TimeoutError) as error:
            call.error = f"update {type(error).__name__}: {error}"

    async def final_statuses(self, calls: list[Call], budget: float) -> None:
        """GET each created call's status, 20 at a time, within ``budget`` seconds."""
        assert self.client is not None
        client = self.client
        gate = asyncio.Semaphore(20)

        async def one(call: Call) -> None:
            async with gate:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with client.get(f"{self.api}/Calls/{call.sid}.json") as response:
                        body = await response.json()
                        call.final_status = str(body.get("status", response.status))

        tasks = [asyncio.create_task(one(c)) for c in calls if c.sid]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=budget)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def step(self, rate: float, count: int, redirect: bool = False) -> StepResult:
        a = self.args
        switch = self.switch
        assert switch is not None
        d = self.step_dir()
        (d / "api_callee.xml").write_text(CALLEE_XML)
        hold = 30 if redirect else a.hold
        result = StepResult("redirect" if redirect else "create", rate, count, hold, a.ring_ms)
        duration = count / rate + hold + a.ring_ms / 1000
        budget = duration + 60  # the callee and every wait of the step are bounded by this
        callee = Sipp(d, "callee", "api_callee.xml", switch.trunk_ports[0], a.rtp == "echo")
        await callee.start(["-m", str(count), "-d", str(a.ring_ms)], budget + 10, hold + 30)
        await asyncio.sleep(0.3)  # let it bind
        if callee.process is not None and callee.process.returncode is not None:
            raise RuntimeError(f"the callee SIPp exited at start: {callee.errors(5)}")

        calls = [Call(n) for n in range(count)]
        self.app.calls = {c.n: c for c in calls}
        self.app.redirect = redirect
        redirects: list[asyncio.Task[None]] = []
        self.app.on_document = (
            (lambda call: redirects.append(asyncio.create_task(self.redirect(call))))
            if redirect
            else None
        )

        monitor = StepMonitor(switch, [callee])
        monitor.start()
        # -- the load: call i's POST starts at t0 + i / rate, whatever the others do
        creates: list[asyncio.Task[None]] = []
        start = time.monotonic()
        for call in calls:
            delay = start + call.n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() - start > budget:
                break
            creates.append(asyncio.create_task(self.create(call)))
        sent_s = time.monotonic() - start
        if creates:
            await asyncio.wait(creates, timeout=30)
        # -- every created call answered (and, with --redirect, redirected)
        deadline = time.monotonic() + hold + a.ring_ms / 1000 + 30

        def settled() -> bool:
            for c in calls:
                if c.sid and (c.doc_at is None or (redirect and c.next_at is None)):
                    return False
            return True

        while not settled() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if redirects:
            await asyncio.wait(redirects, timeout=20)
        # -- the callee ends once it saw its -m calls hung up
        result.callee_exit = await callee.wait(max(5.0, hold + a.ring_ms / 1000 + 20))
        monitor.mark_end()
        result.leak_check = await monitor.finish(self.baseline)
        if a.verify:
            await self.final_statuses(calls, 30)
        self.app.on_document = None

        # -- SIP side
        invites = callee.events("C")
        byes = callee.events("B")
        for call in calls:
            call.invite_at = invites.get(call.n)
            call.bye_at = byes.get(call.n)
        tally = callee.tally()
        result.callee_ok = tally.ok
        result.callee_failed = tally.failed
        result.retransmissions = tally.retransmissions
        result.callee_failures = tally.failures
        result.sipp_errors = callee.errors(5)

        # -- outcome per call
        result.created = sum(1 for c in calls if c.created_status == 201)
        result.create_failed = count - result.created
        for c in calls:
            if c.created_status != 201:
                key = str(c.created_status) if c.created_status else (c.error or "?").split(":")[0]
                result.create_errors[key] = result.create_errors.get(key, 0) + 1
        result.reached_callee = sum(1 for c in calls if c.sid and c.invite_at)
        result.answered = sum(1 for c in calls if c.sid and c.doc_at)
        done = [c for c in calls if c.sid and c.doc_at and c.bye_at]
        if redirect:
            done = [c for c in done if c.next_at and c.update_status == 200]
            result.redirected = sum(1 for c in calls if c.next_at)
        result.completed = len(done)
        if a.verify:
            result.final_completed = sum(1 for c in calls if c.final_status == "completed")
            for c in calls:
                if c.final_status != "completed":
                    key = str(c.final_status)
                    result.final_other[key] = result.final_other.get(key, 0) + 1
        failed = {c.n for c in calls} - {c.n for c in done}
        if a.verify:
            failed |= {c.n for c in calls if c.final_status != "completed"}
        result.failed = len(failed)
        result.examples = [asdict(calls[n]) for n in sorted(failed)[:5]]

        # -- latencies (one wall clock: SIPp's timestamps and ours)
        ok = [c for c in calls if c.created_status == 201 and c.created_at]
        create_ms = [(c.created_at - c.created) * 1000 for c in ok if c.created_at]
        invite_ms = [(c.invite_at - c.created) * 1000 for c in ok if c.invite_at]
        doc_ms = [(c.doc_at - c.created) * 1000 for c in ok if c.doc_at]
        redirect_ms = [
            (c.next_at - c.update_sent) * 1000 for c in ok if c.next_at and c.update_sent
        ]
        update_ms = [
            (c.update_at - c.update_sent) * 1000 for c in ok if c.update_at and c.update_sent
        ]
        for name, values in (
            ("create", create_ms),
            ("invite", invite_ms),
            ("doc", doc_ms),
            ("redirect", redirect_ms),
            ("update", update_ms),
        ):
            for p in (50, 95, 99):
                if hasattr(result, f"{name}_ms_p{p}"):
                    setattr(result, f"{name}_ms_p{p}", ms_percentile(values, p))
            if hasattr(result, f"{name}_ms_max") and values:
                setattr(result, f"{name}_ms_max", rounded(max(values)))
        if done:
            first_post = min(c.created for c in calls)
            last_doc = max(c.doc_at for c in done if c.doc_at)
            result.window_s = round(last_doc - first_post, 3)
            if last_doc > first_post:
                result.cps = round(len(done) / (last_doc - first_post), 1)
        if sent_s > 0 and count > 1:
            result.create_rate = round((len(creates) - 1) / sent_s, 1)

        # -- CPU and memory
        monitor.fill(result, live_peak="calls_peak")
        result.sipp_cpu_pct = monitor.sipp_cpu_pct(callee)
        (d / "result.json").write_text(json.dumps(asdict(result), indent=2))
        (d / "calls.json").write_text(json.dumps([asdict(c) for c in calls]))
        return result


# ---- modes ---------------------------------------------------------------------------------------


async def mode_fixed(bench: Bench) -> dict[str, Any]:
    a = bench.args
    step = await bench.step(a.rate, a.calls)
    _print_step(step)
    return {"mode": "fixed", "steps": [asdict(step)], "clean": step.clean}


async def mode_redirect(bench: Bench) -> dict[str, Any]:
    a = bench.args
    step = await bench.step(a.rate, a.calls, redirect=True)
    _print_step(step)
    return {"mode": "redirect", "steps": [asdict(step)], "clean": step.clean}


async def mode_find_max(bench: Bench) -> dict[str, Any]:
    """benchlib's find-max: stop at the first step with a failure, or saturated."""
    return await benchlib.find_max(bench.args, bench.step, _print_step)


# ---- output --------------------------------------------------------------------------------------

HEADER = (
    f"{'rate':>6} {'calls':>6} {'ok':>6} {'fail':>5} {'cps':>6} "
    f"{'c201_50':>7} {'c201_99':>7} {'inv50':>6} {'inv95':>6} {'inv99':>6} "
    f"{'rdr50':>6} {'rdr99':>6} {usage_header('live')}"
)


def _fmt(value: float | None, width: int = 6) -> str:
    return fmt(value, width, digits=1)


def _print_step(s: StepResult) -> None:
    print(
        f"{s.rate:>6g} {s.calls:>6} {s.completed:>6} {s.failed:>5} {_fmt(s.cps)} "
        f"{_fmt(s.create_ms_p50, 7)} {_fmt(s.create_ms_p99, 7)} {_fmt(s.invite_ms_p50)} "
        f"{_fmt(s.invite_ms_p95)} {_fmt(s.invite_ms_p99)} {_fmt(s.redirect_ms_p50)} "
        f"{_fmt(s.redirect_ms_p99)} {usage_columns(s, s.calls_peak)}",
        flush=True,
    )
    print(
        f"       switch threads: {thread_list(s.thread_cpu_pct)}; callee sipp "
        f"{s.sipp_cpu_pct:.0f}%; bench (client+app) {s.bench_cpu_pct:.0f}%; "
        f"POSTs sent at {s.create_rate}/s",
        flush=True,
    )
    if not s.clean:
        print(
            f"       created {s.created}/{s.calls} {s.create_errors or ''}, reached callee "
            f"{s.reached_callee}, answered {s.answered}, completed {s.completed}, final "
            f"completed {s.final_completed} {s.final_other or ''}; callee ok {s.callee_ok} "
            f"failed {s.callee_failed} {s.callee_failures or ''} exit {s.callee_exit}"
        )
        print_sipp_errors(s.sipp_errors)
        for example in s.examples[:3]:
            print(f"       e.g. {example}")


STEP_KEYS = (
    "cps",
    "failed",
    "create_ms_p50",
    "create_ms_p95",
    "create_ms_p99",
    "invite_ms_p50",
    "invite_ms_p95",
    "invite_ms_p99",
    "doc_ms_p50",
    "doc_ms_p99",
    "redirect_ms_p50",
    "redirect_ms_p95",
    "redirect_ms_p99",
    "update_ms_p50",
    "update_ms_p99",
    *USAGE_KEYS,
)


def summarize(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians across repeats of a fixed or redirect run (find-max: benchlib's)."""
    steps = [s for r in runs for s in r.get("steps", [])]
    return {
        f"{mode}_median": benchlib.step_medians(steps, STEP_KEYS),
        "clean_runs": sum(1 for r in runs if r.get("clean")),
        "runs": len(runs),
    }


# ---- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p, mode = benchlib.new_parser(__doc__)
    mode.add_argument(
        "--redirect",
        action="store_true",
        help="--calls calls parked in <Pause length=30>, each redirected to /next once answered",
    )
    p.add_argument("--rate", type=float, default=None, help="calls/s (default 100; redirect 20)")
    p.add_argument("--calls", type=int, default=None, help="calls (default 1000; redirect 200)")
    p.add_argument("--hold", type=int, default=1, help="<Pause length> before <Hangup/> (s, 1)")
    p.add_argument("--ring-ms", type=int, default=100, help="callee ring time (default 100 ms)")
    p.add_argument(
        "--redirect-delay",
        type=float,
        default=0.2,
        help="redirect: seconds from the document fetch to the update POST (default 0.2)",
    )
    p.add_argument("--cps", type=float, default=1000, help="switch [api] calls_per_second (1000)")
    p.add_argument("--connections", type=int, default=100, help="API client connection limit")
    p.add_argument("--rtp", choices=("none", "echo"), default="echo", help="callee RTP echo")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the GET of each call's final status after a step",
    )
    benchlib.add_find_max_options(p)
    p.add_argument("--pause", type=float, default=2, help="find-max: seconds between steps")
    benchlib.add_run_options(p)
    args = p.parse_args(argv)
    if args.rate is None:
        args.rate = 20.0 if args.redirect else 100.0
    if args.calls is None:
        args.calls = 200 if args.redirect else 1000
    if not 1 <= args.calls <= 9_999_999 or args.rate <= 0 or args.hold < 0:
        p.error("--calls must be 1..9999999, --rate > 0, --hold >= 0")
    return args


async def run(args: argparse.Namespace) -> int:
    runs = await benchlib.run_repeats(
        args,
        name="api_bench",
        header=HEADER,
        new_bench=Bench,
        modes={"find-max": mode_find_max, "redirect": mode_redirect, "fixed": mode_fixed},
        step_keys=STEP_KEYS,
        summarize=summarize,
        result_prefix="api-",
        label_result=True,
    )
    return 0 if all(r.get("clean") for r in runs) else 1


def main() -> int:
    args = parse_args()
    return benchlib.launch("api_bench", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
