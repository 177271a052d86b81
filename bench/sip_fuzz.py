"""sip_fuzz: throw mutated and out-of-order SIP at a real switch and watch it survive.

A bench tool, not part of the test run. It starts its own switch the way the
integration tests do (``tests.support.sipp_reg.ClientSwitch``: a config with a
number, ``[[clients]]`` and a ``[registrar]``, plus a second trunk to a UDP sink),
runs the webhook app itself (the conftest's ``AppServer``), and then, for
``--duration`` seconds at ``--rate`` messages per second:

- sends single requests built from valid seeds (INVITE with SDP, ACK, CANCEL,
  BYE, REGISTER, OPTIONS, REFER, NOTIFY, INFO, UPDATE, PRACK, MESSAGE,
  SUBSCRIBE, unknown methods) with grammar-level mutations (headers dropped,
  duplicated, reordered, methods swapped, odd numbers, bad Content-Length and
  Via, folding, whitespace, NUL/high bytes, huge headers, truncation, byte
  flips, broken SDP and multipart bodies), over UDP and TCP;
- runs stateful sequences: Via branches reused by another method after an
  ACKed final response, Call-IDs reused with new/old CSeqs, CANCEL/ACK/BYE for
  unknown or finished transactions, retransmissions, interleaved transactions,
  digest REGISTERs and client calls, and real calls to the number whose dialog
  (Call-ID, tags, CSeq) then carries mutated REFER/NOTIFY/INFO/UPDATE/...

and watches the switch: process death (exit code, signal), hangs (an OPTIONS a
second from another address must be answered within 2 s; a SIPp call every
~10 s must be answered and hang up cleanly), tracebacks, ``ERROR ... exception``
lines and pjsip assertions in its log, and leaked calls (``/healthz`` after a
drain). A death, hang or traceback saves the last ``--history`` messages
(timestamps, addresses, exact bytes) to ``bench/results/``; ``--replay FILE``
sends such a file again to a fresh switch. The message contents are a function
of ``--seed`` (ports and timing are not). Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/sip_fuzz.py`: make `tests` importable
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from tests.integration.conftest import NUMBER, AppServer  # noqa: E402
from tests.support import sipp  # noqa: E402
from tests.support.sipp_reg import DOMAIN, ClientSwitch, require_tool  # noqa: E402

RESULTS = REPO / "bench" / "results"

CLIENT, CLIENT_PASSWORD = "alice", "alice-fuzz-secret-1"
CLIENTS = {CLIENT: CLIENT_PASSWORD, "bob": "bob-fuzz-secret-22"}
REGISTRAR: dict[str, object] = {
    # MD5 first: the harness's digest answers whichever challenge comes first anyway.
    "digest_algorithms": ["MD5", "SHA-256"],
    "min_expires": 60,
    "max_contacts": 5,
    # The fuzzer fails authentication all the time; it must not get itself blocked
    # for long, or every later request would only see 403.
    "max_failures": 1000,
    "failure_window": 1,
    "block_seconds": 1,
    "register_rate": 10000,
}
PROBE_CALLER = "+14155550199"
"""The caller ID of the liveness calls: the app dials the SIPp callee for it only."""
CALLEE = "+15551230001"
SINK_PREFIX = "+1888"
UNKNOWN_NUMBER = "+15005550999"

FUZZ_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
"""Fuzz traffic comes from these; the probes come from 127.0.0.1, so the registrar's
per-source throttles never hold back a probe."""
PROBE_IP = "127.0.0.1"

# ---- SIP text ------------------------------------------------------------------------

COMPACT = {
    "i": "call-id",
    "v": "via",
    "f": "from",
    "t": "to",
    "m": "contact",
    "l": "content-length",
}
COMPACT.update({"c": "content-type", "k": "supported", "e": "content-encoding", "o": "event"})


@dataclass
class SipMsg:
    """A received SIP message, parsed just enough to match and count it."""

    first: str
    headers: dict[str, list[str]]
    body: bytes

    @property
    def status(self) -> int | None:
        parts = self.first.split(" ", 2)
        if parts[0].startswith("SIP/") and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
        return None

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0]

    def h(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    def cseq(self) -> tuple[str, str]:
        parts = self.h("cseq").split()
        return (parts[0], parts[1]) if len(parts) == 2 else ("", "")

    def key(self) -> tuple[str, str, str]:
        number, method = self.cseq()
        return self.h("call-id"), number, method


def parse(data: bytes) -> SipMsg | None:
    """Parse one message (None when it has no start line); tolerant, never raises."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0]:
        return None
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.setdefault(COMPACT.get(key, key), []).append(value.strip())
    return SipMsg(lines[0], headers, body)


def tag_of(value: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", value)
    return match.group(1) if match else ""


def uri_of(value: str) -> str:
    match = re.search(r"<([^>]*)>", value)
    return match.group(1) if match else value.split(";")[0].strip()


AUTO = "\x00auto"
"""A Content-Length value replaced by the body's real length when rendering."""


@dataclass
class Request:
    """A request as a list of header lines that mutators edit before it is rendered."""

    method: str
    uri: str
    headers: list[list[str]]
    body: bytes = b""
    version: str = "SIP/2.0"
    start: str | None = None
    eol: str = "\r\n"

    def header(self, name: str) -> list[str] | None:
        for h in self.headers:
            if h[0].lower() == name.lower():
                return h
        return None

    def set(self, name: str, value: str) -> None:
        h = self.header(name)
        if h is None:
            self.headers.insert(len(self.headers) - 1, [name, value])
        else:
            h[1] = value

    def render(self) -> bytes:
        start = self.start if self.start is not None else f"{self.method} {self.uri} {self.version}"
        lines = [start]
        for name, value in self.headers:
            if value == AUTO:
                value = str(len(self.body))
            lines.append(f"{name}: {value}" if name else value)
        text = self.eol.join(lines) + self.eol + self.eol
        return text.encode("latin-1", "replace") + self.body


@dataclass
class Dialog:
    """Where a request goes and whose it is: addresses, Call-ID, tags, CSeq."""

    transport: str
    local: tuple[str, int]
    target: tuple[str, int]
    call_id: str
    from_user: str
    to_user: str
    from_tag: str
    to_tag: str = ""
    cseq: int = 1
    remote_uri: str = ""
    domain: str = ""

    def via(self, branch: str) -> str:
        host, port = self.local
        return f"SIP/2.0/{self.transport} {host}:{port};branch={branch};rport"

    def contact(self) -> str:
        host, port = self.local
        return f"<sip:{self.from_user}@{host}:{port};transport={self.transport.lower()}>"


def new_branch(rng: Random) -> str:
    return f"z9hG4bK-fz{rng.getrandbits(48):012x}"


def new_tag(rng: Random) -> str:
    return f"fz{rng.getrandbits(32):08x}"


def new_call_id(rng: Random) -> str:
    return f"fz-{rng.getrandbits(64):016x}@127.0.0.2"


def sdp_lines(rng: Random, port: int) -> list[str]:
    """A valid audio offer on loopback (PCMU, PCMA, telephone-event)."""
    session = rng.randrange(1, 10**9)
    return [
        "v=0",
        f"o=fuzz {session} {session} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]


def sdp_body(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("latin-1", "replace")


BODIES: dict[str, tuple[str, Callable[[Random, Dialog], bytes]]] = {
    "INVITE": (
        "application/sdp",
        lambda r, d: sdp_body(sdp_lines(r, 40000 + 2 * r.randrange(500))),
    ),
    "UPDATE": (
        "application/sdp",
        lambda r, d: sdp_body(sdp_lines(r, 40000 + 2 * r.randrange(500))),
    ),
    "INFO": ("application/dtmf-relay", lambda r, d: b"Signal=5\r\nDuration=160\r\n"),
    "NOTIFY": ("message/sipfrag;version=2.0", lambda r, d: b"SIP/2.0 200 OK\r\n"),
    "MESSAGE": ("text/plain", lambda r, d: b"hello from the fuzzer"),
}

METHODS = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "REGISTER",
    "OPTIONS",
    "REFER",
    "NOTIFY",
    "INFO",
    "UPDATE",
    "PRACK",
    "MESSAGE",
    "SUBSCRIBE",
    "PUBLISH",
    "FOOBAR",
)


def seed(
    method: str,
    dialog: Dialog,
    rng: Random,
    *,
    branch: str | None = None,
    cseq_method: str | None = None,
    body: bool = True,
    extra: list[list[str]] | None = None,
) -> Request:
    """A valid request ``method`` in ``dialog`` (the seed every mutation starts from)."""
    host, port = dialog.target
    domain = dialog.domain or f"{host}:{port}"
    if method == "REGISTER":
        uri = f"sip:{domain}"
    else:
        uri = dialog.remote_uri or f"sip:{dialog.to_user}@{host}:{port}"
    to = f"<sip:{dialog.to_user}@{domain}>" + (f";tag={dialog.to_tag}" if dialog.to_tag else "")
    headers = [
        ["Via", dialog.via(branch or new_branch(rng))],
        ["Max-Forwards", "70"],
        ["From", f'"Fuzz" <sip:{dialog.from_user}@{domain}>;tag={dialog.from_tag}'],
        ["To", to],
        ["Call-ID", dialog.call_id],
        ["CSeq", f"{dialog.cseq} {cseq_method or method}"],
    ]
    if method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER", "UPDATE", "NOTIFY", "OPTIONS"):
        headers.append(["Contact", dialog.contact()])
    if method == "REGISTER":
        headers.append(["Expires", "3600"])
    elif method == "SUBSCRIBE":
        headers += [["Event", "presence"], ["Expires", "60"], ["Accept", "application/pidf+xml"]]
    elif method == "NOTIFY":
        headers += [["Event", "refer"], ["Subscription-State", "active;expires=60"]]
    elif method == "REFER":
        headers += [
            ["Refer-To", f"<sip:{UNKNOWN_NUMBER}@{host}:{port}>"],
            ["Referred-By", "<sip:x@127.0.0.2>"],
        ]
    elif method == "PRACK":
        headers.append(["RAck", f"1 {max(dialog.cseq - 1, 1)} INVITE"])
    elif method == "INVITE":
        headers += [["Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"]]
        headers += [["Supported", "replaces, timer"]]
    headers += extra or []
    payload = b""
    if body and method in BODIES:
        content_type, make = BODIES[method]
        payload = make(rng, dialog)
        headers.append(["Content-Type", content_type])
    headers.append(["Content-Length", AUTO])
    return Request(method, uri, headers, payload)


# ---- mutations -----------------------------------------------------------------------

WEIRD_NUMBERS = (
    "0",
    "-1",
    "-2147483649",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "1.5",
    "0x10",
    "1e9",
    "",
    " ",
    "abc",
    "+1",
    "00000000000000000000001",
)
BAD_HOSTS = (
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "[::1]",
    "[::1",
    "::1",
    "",
    "127.0.0.256",
)
MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Contact")


def _pick(rng: Random, req: Request, names: tuple[str, ...] = ()) -> list[str] | None:
    named = [h for h in req.headers if h[0] in names] if names else []
    pool = named if named and rng.random() < 0.7 else [h for h in req.headers if h[0]]
    return rng.choice(pool) if pool else None


def m_drop(req: Request, rng: Random) -> str:
    h = _pick(rng, req, MANDATORY)
    if h is not None:
        req.headers.remove(h)
        return f"drop-{h[0]}"
    return "drop-none"


def m_duplicate(req: Request, rng: Random) -> str:
    h = _pick(rng, req, ("Via", "Call-ID", "CSeq", "To", "From", "Content-Length", "Max-Forwards"))
    if h is None:
        return "dup-none"
    value = h[1]
    if rng.random() < 0.6:
        if h[0] == "CSeq":
            value = f"{rng.choice(WEIRD_NUMBERS[:8])} {rng.choice(METHODS)}"
        elif h[0] == "Content-Length":
            value = str(rng.randrange(0, 5000))
        elif h[0] == "To":
            value = f"{value};tag=dup{rng.getrandbits(16)}"
        else:
            value = f"{value}x{rng.getrandbits(16)}"
    req.headers.insert(rng.randrange(len(req.headers) + 1), [h[0], value])
    return f"dup-{h[0]}"


def m_reorder(req: Request, rng: Random) -> str:
    if rng.random() < 0.5:
        rng.shuffle(req.headers)
        return "shuffle"
    h = _pick(rng, req, ("Via", "Content-Length", "CSeq"))
    if h is not None:
        req.headers.remove(h)
        req.headers.insert(rng.choice((0, len(req.headers))), h)
    return "move"


def m_swap_method(req: Request, rng: Random) -> str:
    cseq = req.header("CSeq")
    other = rng.choice(METHODS)
    choice = rng.randrange(4)
    if choice == 0 and cseq is not None:
        number = cseq[1].split(" ")[0]
        cseq[1] = f"{number} {other}"
    elif choice == 1:
        req.method = other
    elif choice == 2:
        req.method = req.method.lower()
    elif cseq is not None:
        number, _, method = cseq[1].partition(" ")
        cseq[1] = f"{number} {req.method}"
        req.method = method or other
    return "swap-method"


def m_number(req: Request, rng: Random) -> str:
    weird = rng.choice(WEIRD_NUMBERS)
    target = rng.choice(("CSeq", "Max-Forwards", "Expires", "RAck", "Session-Expires", "uri-port"))
    if target == "CSeq":
        method = (req.header("CSeq") or ["", "1 " + req.method])[1].split(" ")[-1]
        req.set("CSeq", f"{weird} {method}")
    elif target == "RAck":
        req.set("RAck", f"{weird} {rng.choice(WEIRD_NUMBERS)} INVITE")
    elif target == "uri-port":
        req.uri = re.sub(r":\d+", f":{weird}", req.uri, count=1)
    else:
        req.set(target, weird)
    return f"number-{target}"


def m_content_length(req: Request, rng: Random) -> str:
    h = req.header("Content-Length")
    n = len(req.body)
    values = [str(n + 1), str(max(n - 1, 0)), str(n + 5000), "-1", "-100", "abc", "", "99999999999"]
    values += [f"{n} {n}", f"0{n}", f"{n}, {n + 10}"]
    if h is None:
        req.headers.append(["Content-Length", rng.choice(values)])
        return "clen-added"
    choice = rng.randrange(3)
    if choice == 0:
        req.headers.remove(h)
        return "clen-missing"
    if choice == 1:
        req.headers.insert(rng.randrange(len(req.headers)), ["Content-Length", rng.choice(values)])
        return "clen-duplicate"
    h[1] = rng.choice(values)
    return "clen-bad"


def m_via(req: Request, rng: Random) -> str:
    h = req.header("Via")
    if h is None:
        return "via-none"
    value = h[1]
    choices: list[Callable[[str], str]] = [
        lambda v: re.sub(r";branch=[^;]*", "", v),
        lambda v: re.sub(r";branch=[^;]*", ";branch=", v),
        lambda v: re.sub(r";branch=[^;]*", ";branch=z9hG4bK", v),
        lambda v: re.sub(r";branch=[^;]*", f";branch=nocookie{rng.getrandbits(20)}", v),
        lambda v: re.sub(r";branch=[^;]*", ";branch=z9hG4bK" + "a" * rng.randrange(200, 5000), v),
        lambda v: re.sub(r";branch=([^;]*)", r";branch=\1;branch=z9hG4bKother", v),
        lambda v: v.replace("SIP/2.0/UDP", "SIP/2.0/XYZ").replace("SIP/2.0/TCP", "SIP/2.0/XYZ"),
        lambda v: v.replace("SIP/2.0/", "SIP/3.0/"),
        lambda v: v.replace("SIP/2.0/", "SIP/2.0 /"),
        lambda v: re.sub(r" \S+:\d+;", f" {rng.choice(BAD_HOSTS)};", v),
        lambda v: re.sub(r" (\S+):(\d+);", r" [::1]:\2;", v),
        lambda v: v + ";received=" + rng.choice(("", "abc", "::1", "127.0.0.1;received=x")),
        lambda v: v.replace(";rport", ";rport=" + rng.choice(WEIRD_NUMBERS)),
        lambda v: v + ", SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bKsecond",
        lambda v: v + "," * rng.randrange(1, 50),
        lambda v: "SIP/2.0/UDP",
        lambda v: "",
    ]
    h[1] = rng.choice(choices)(value)
    if rng.random() < 0.3:
        req.headers.insert(0, ["Via", "SIP/2.0/UDP 127.0.0.1:1;branch=" + new_branch(rng)])
    return "via"


def m_fold(req: Request, rng: Random) -> str:
    h = _pick(rng, req)
    if h is None or not h[1]:
        return "fold-none"
    cut = rng.randrange(len(h[1]) + 1)
    fold = rng.choice(("\r\n ", "\r\n\t", "\r\n  \t ", "\r\n", "\n ", "\r "))
    h[1] = h[1][:cut] + fold + h[1][cut:]
    return "fold"


def m_whitespace(req: Request, rng: Random) -> str:
    choice = rng.randrange(9)
    if choice == 0:
        req.eol = rng.choice(("\n", "\r", "\n\r", "\r\r\n"))
    elif choice == 1:
        req.start = rng.choice(("  ", "\t", " ")).join((req.method, req.uri, req.version))
    elif choice == 2:
        req.start = "\r\n" * rng.randrange(1, 5) + f"{req.method} {req.uri} {req.version}"
    elif choice == 3:
        h = _pick(rng, req)
        if h is not None:
            h[0] = h[0] + rng.choice(("  ", "\t", " \t "))
    elif choice == 4:
        h = _pick(rng, req)
        if h is not None:
            h[1] = rng.choice(("", "   ", "\t")) + h[1] + rng.choice(("   ", "\t", " \t"))
    elif choice == 5:
        req.headers.insert(rng.randrange(len(req.headers) + 1), ["", rng.choice(("", " ", "\t"))])
    elif choice == 6:
        for h in req.headers:
            h[1] = h[1].replace(" ", rng.choice(("  ", "\t", "")))
    elif choice == 7:
        h = _pick(rng, req)
        if h is not None:
            req.headers[req.headers.index(h)] = ["", f"{h[0]}:{h[1]}"]
    else:
        req.start = f"{req.method} {req.uri} {req.version}" + rng.choice((" ", "\t", "  x"))
    return "whitespace"


ODD = (
    "\x00",
    "%00",
    "\xff",
    "\xfe\xff",
    "\xc3\x28",
    "\xe2\x82",
    "%",
    "%zz",
    "\\",
    '"',
    "\x7f",
    "\x1b[0m",
)


def m_bytes(req: Request, rng: Random) -> str:
    odd = rng.choice(ODD) * rng.choice((1, 1, 2, 50))
    if rng.random() < 0.3:
        cut = rng.randrange(len(req.uri) + 1)
        req.uri = req.uri[:cut] + odd + req.uri[cut:]
        return "bytes-uri"
    h = _pick(rng, req)
    if h is None:
        return "bytes-none"
    where = rng.randrange(3)
    if where == 0:
        cut = rng.randrange(len(h[1]) + 1)
        h[1] = h[1][:cut] + odd + h[1][cut:]
    elif where == 1:
        h[0] = h[0] + odd
    else:
        h[1] = '"' + h[1] if rng.random() < 0.5 else h[1] + "\\"
    return "bytes-header"


def m_huge(req: Request, rng: Random) -> str:
    size = rng.choice((1024, 4000, 8192, 16384, 65000, 70000))
    choice = rng.randrange(5)
    if choice == 0:
        h = _pick(rng, req)
        if h is not None:
            h[1] += "a" * size
    elif choice == 1:
        for i in range(rng.choice((50, 200, 1000))):
            req.headers.insert(1, [f"X-Fuzz-{i}", "y" * rng.randrange(1, 40)])
    elif choice == 2:
        req.uri = req.uri.replace("sip:", "sip:" + "9" * size, 1)
    elif choice == 3:
        req.set("Call-ID", "c" * size)
    else:
        req.headers.insert(1, ["X-Fuzz", ",".join(["v"] * (size // 2))])
    return "huge"


def m_uri(req: Request, rng: Random) -> str:
    options = (
        "",
        "sip:",
        "sip:@",
        "tel:+15005550100",
        "sips:+15005550100@127.0.0.1",
        "<sip:+15005550100@127.0.0.1>",
        "sip:+15005550100@127.0.0.1;transport=foo;lr;maddr=127.0.0.1",
        "sip:+15005550100@127.0.0.1?Route=%3Csip:127.0.0.1%3E&body=x",
        "sip:%2B15005550100@127.0.0.1",
        "sip:user:password@127.0.0.1",
        "sip:+1500555' OR 1=1--@127.0.0.1",
        "mailto:x@y",
        "*",
        "sip:" + "a" * 300 + "@127.0.0.1",
        "sip:+15005550100@[::1]",
        "sip:+15005550100@[::1",
        "sip:127.0.0.1:5060:5060",
        "sip:;;;;;@127.0.0.1",
    )
    req.uri = rng.choice(options)
    return "uri"


def m_start_line(req: Request, rng: Random) -> str:
    options = (
        f"{req.method} {req.uri} SIP/2.1",
        f"{req.method} {req.uri} SIP/2.0x",
        f"{req.method} {req.uri} sip/2.0",
        f"{req.method} {req.uri}",
        f"{req.method}  SIP/2.0",
        f"{req.method}",
        f"{req.uri} SIP/2.0",
        f"{req.method} {req.uri} SIP/2.0 extra",
        f"SIP/2.0 200 OK {req.method}",
        f"SIP/2.0 {rng.choice(WEIRD_NUMBERS)} Weird",
        "",
        f"{req.method}\x00 {req.uri} SIP/2.0",
        f"{'X' * rng.choice((16, 300, 4000))} {req.uri} SIP/2.0",
    )
    req.start = rng.choice(options)
    return "start-line"


def m_name_addr(req: Request, rng: Random) -> str:
    target = rng.choice(("From", "To", "Contact", "Refer-To", "Record-Route", "Route"))
    options = (
        "<sip:x@127.0.0.1",
        "sip:x@127.0.0.1>",
        '"unterminated <sip:x@127.0.0.1>;tag=a',
        '"esc\\" <sip:x@127.0.0.1>;tag=a',
        "<>;tag=a",
        "<sip:x@127.0.0.1>;tag=",
        "<sip:x@127.0.0.1>;tag=a;tag=b",
        "*",
        "<sip:x@127.0.0.1>,<sip:y@127.0.0.1>",
        "<sip:127.0.0.1:1;lr>,<sip:127.0.0.1:2>",
        "<sip:x@127.0.0.1;transport=tcp;lr>;expires=-1",
        "<sip:x@127.0.0.1>;expires=99999999999999999999",
        "<sip:x@127.0.0.1?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        "<tel:+1>",
        "<sip:%00@127.0.0.1>",
        '"\xff\xfe" <sip:x@127.0.0.1>;tag=a',
        "",
    )
    req.set(target, rng.choice(options))
    return f"name-addr-{target}"


def m_headers(req: Request, rng: Random) -> str:
    """Headers that switch on extension behaviour: 100rel, timers, Replaces, routes."""
    options = (
        ["Require", rng.choice(("100rel", "timer", "foo", "replaces", "", "100rel, 100rel"))],
        ["Proxy-Require", "foo"],
        ["Supported", rng.choice(("100rel", "timer", "", ",,,"))],
        ["Session-Expires", rng.choice(("1", "0", "90;refresher=uac", "-5", "1800;refresher=x"))],
        ["Min-SE", rng.choice(("0", "-1", "99999999999"))],
        ["Replaces", rng.choice(("abc;to-tag=1;from-tag=2", "", ";;;", "x;early-only"))],
        ["Join", "abc;to-tag=1;from-tag=2"],
        ["Event", rng.choice(("refer", "", "presence;id=", "dialog", "x" * 200))],
        ["Subscription-State", rng.choice(("terminated", "active;expires=-1", "bogus", ""))],
        ["RAck", rng.choice(("1 1 INVITE", "x y z", "", "1"))],
        ["Allow", rng.choice(("", ",", "INVITE," * 100))],
        ["Accept", rng.choice(("", "*/*", "application/sdp;q=abc"))],
        [
            "Authorization",
            rng.choice(("Digest", 'Digest username="alice"', "Basic abc", "Digest ,,,,")),
        ],
        ["Proxy-Authorization", 'Digest username="alice", realm="x", nonce="", response=""'],
        ["Record-Route", "<sip:127.0.0.1:9;lr>"],
        ["Route", rng.choice(("<sip:127.0.0.1:9;lr>", "<sip:127.0.0.1:9>", "<sip:[::1]:9;lr>"))],
        ["Expires", rng.choice(("0", "-1", "abc"))],
        ["Content-Encoding", rng.choice(("gzip", "deflate", "x"))],
        ["Content-Disposition", rng.choice(("session;handling=required", "render", ";;"))],
        ["P-Asserted-Identity", "<sip:+1@127.0.0.1>"],
        ["Diversion", "<sip:+1@127.0.0.1>;reason=unconditional"],
        ["Referred-By", "<sip:x@127.0.0.1"],
        [
            "Refer-To",
            rng.choice(("<sip:+15551230001@127.0.0.1>", "", "<sip:x@127.0.0.1?Replaces=a")),
        ],
    )
    pick = list(rng.choice(options))
    req.headers.insert(rng.randrange(1, len(req.headers)), pick)
    return f"header-{pick[0]}"


def m_compact(req: Request, rng: Random) -> str:
    reverse = {v: k for k, v in COMPACT.items()}
    for h in req.headers:
        if rng.random() < 0.5 and h[0].lower() in reverse:
            h[0] = reverse[h[0].lower()]
        elif rng.random() < 0.3:
            h[0] = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in h[0])
    return "compact"


SDP_BAD_LINES = (
    "m=audio abc RTP/AVP 0",
    "m=audio 0 RTP/AVP 0",
    "m=audio 65536 RTP/AVP 0",
    "m=audio -1 RTP/AVP 0",
    "m=audio 4000/2 RTP/AVP 0",
    "m=audio 4000 RTP/SAVP 0",
    "m=audio 4000 RTP/AVP",
    "m=audio 4000 RTP/AVP 999",
    "m=audio 4000 RTP/AVP " + " ".join(str(i) for i in range(128)),
    "m=video 4002 RTP/AVP 96",
    "m=application 4004 UDP/BFCP *",
    "m=",
    "m=audio",
    "a=rtpmap:0",
    "a=rtpmap:abc PCMU/8000",
    "a=rtpmap:101 telephone-event/0",
    "a=rtpmap:101 telephone-event/-8000",
    "a=rtpmap:96 opus/48000/2/2",
    "a=rtpmap:1000 PCMU/8000",
    "a=rtpmap:8 PCMU/99999999999",
    "a=fmtp:101 0-",
    "a=fmtp:101 99999999-0",
    "a=fmtp:",
    "a=fmtp:101 " + "0-15," * 500,
    "c=IN IP4 256.256.256.256",
    "c=IN IP4",
    "c=IN IP6 ::1",
    "c=IN IP4 ::1",
    "c=IN IP4 0.0.0.0",
    "c=IN IP4 127.0.0.1/127/3",
    "c=XX IP9 x",
    "c=IN IP6 [::1]",
    "o=- - - IN IP4",
    "o=",
    "v=1",
    "v=",
    "t=-1 -1",
    "a=sendonly",
    "a=recvonly",
    "a=inactive",
    "a=rtcp:abc",
    "a=rtcp:65536 IN IP4 127.0.0.1",
    "a=ptime:0",
    "a=ptime:-1",
    "a=ptime:100000",
    "a=maxptime:0",
    "b=AS:-1",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
    "a=" + "x" * 20000,
    "x=unknown",
    "=",
    "a",
    "",
)


def m_sdp(req: Request, rng: Random) -> str:
    lines = sdp_lines(rng, 40000 + 2 * rng.randrange(500))
    choice = rng.randrange(8)
    if choice == 0:
        del lines[rng.randrange(len(lines))]
    elif choice == 1:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif choice == 2:
        for _ in range(rng.randrange(1, 4)):
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(SDP_BAD_LINES))
    elif choice == 3:
        i = next(i for i, line in enumerate(lines) if line.startswith("m="))
        lines[i] = rng.choice([line for line in SDP_BAD_LINES if line.startswith("m=")])
    elif choice == 4:
        for n in range(rng.choice((2, 8, 64, 300))):
            kind = rng.choice(("audio", "video", "audio", "text"))
            lines += [f"m={kind} {42000 + 2 * n} RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000", "a=sendrecv"]
    elif choice == 5:
        lines = [
            line
            for line in lines
            if not line.startswith(rng.choice(("v=", "o=", "s=", "c=", "t=", "m=")))
        ]
    elif choice == 6:
        lines = [rng.choice(SDP_BAD_LINES) for _ in range(rng.randrange(1, 20))]
    else:
        i = rng.randrange(len(lines))
        lines[i] = lines[i] + rng.choice(ODD) + "y" * rng.choice((0, 100, 70000))
    eol = rng.choice(("\r\n", "\r\n", "\n", "\r"))
    body = eol.join(lines) + rng.choice((eol, "", eol * 3))
    req.body = body.encode("latin-1", "replace")
    if req.header("Content-Type") is None:
        req.set("Content-Type", "application/sdp")
    return "sdp"


def m_multipart(req: Request, rng: Random) -> str:
    boundary = rng.choice(("b1", "unique-boundary-1", "", "x" * 100, '"quoted"'))
    sdp = "\r\n".join(sdp_lines(rng, 40000 + 2 * rng.randrange(500)))
    parts = [
        f"Content-Type: application/sdp\r\n\r\n{sdp}\r\n",
        "Content-Type: application/isup;version=itu-t92+\r\n"
        "Content-Disposition: signal;handling=optional\r\n\r\n\x01\x10\x00\xff\r\n",
        "Content-Type: text/plain\r\n\r\nhello\r\n",
        "\r\n",
        "Content-Type: multipart/mixed;boundary=inner\r\n\r\n--inner\r\n\r\n--inner--\r\n",
    ]
    chosen = [rng.choice(parts) for _ in range(rng.randrange(1, 5))]
    b = boundary.strip('"')
    body = "".join(f"--{b}\r\n{p}" for p in chosen)
    body += rng.choice((f"--{b}--\r\n", "", f"--{b}\r\n", "--other--\r\n"))
    req.body = body.encode("latin-1", "replace")
    req.set(
        "Content-Type", f"multipart/mixed;boundary={boundary}" if boundary else "multipart/mixed"
    )
    return "multipart"


def m_content_type(req: Request, rng: Random) -> str:
    options = (
        "",
        "application/sdp;charset=",
        "text/html",
        "application/sdp,application/sdp",
        "/",
        "x",
    )
    req.set("Content-Type", rng.choice(options))
    if not req.body and rng.random() < 0.5:
        req.body = sdp_body(sdp_lines(rng, 40000))
    return "content-type"


STRUCTURAL: list[tuple[Callable[[Request, Random], str], int]] = [
    (m_drop, 8),
    (m_duplicate, 7),
    (m_reorder, 4),
    (m_swap_method, 6),
    (m_number, 7),
    (m_content_length, 7),
    (m_via, 7),
    (m_fold, 4),
    (m_whitespace, 5),
    (m_bytes, 5),
    (m_huge, 3),
    (m_uri, 4),
    (m_start_line, 3),
    (m_name_addr, 5),
    (m_headers, 6),
    (m_compact, 2),
    (m_sdp, 10),
    (m_multipart, 3),
    (m_content_type, 2),
]


def mutate(req: Request, rng: Random) -> tuple[bytes, str]:
    """Apply 1-3 grammar-level mutations, sometimes a byte-level one; (bytes, labels)."""
    funcs, weights = zip(*STRUCTURAL, strict=True)
    labels = [rng.choices(funcs, weights)[0](req, rng) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    data = req.render()
    roll = rng.random()
    if roll < 0.08 and len(data) > 1:
        data = data[: rng.randrange(1, len(data))]
        labels.append("truncate")
    elif roll < 0.16:
        buf = bytearray(data)
        for _ in range(rng.choice((1, 2, 5, 20))):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
        labels.append("flip")
    return data, "+".join(labels)


# ---- digest --------------------------------------------------------------------------


def digest(
    challenge: str, method: str, uri: str, user: str, password: str, rng: Random, nc: int = 1
) -> str:
    """An Authorization value answering ``challenge`` (RFC 7616, MD5 or SHA-256)."""
    params = {
        m.group(1).lower(): m.group(3) if m.group(3) is not None else m.group(4)
        for m in re.finditer(r'(\w+)=("([^"]*)"|([^,\s]*))', challenge)
    }
    algorithm = params.get("algorithm", "MD5")

    def hash_(text: str) -> str:
        fn = hashlib.sha256 if algorithm.upper().startswith("SHA-256") else hashlib.md5
        return fn(text.encode()).hexdigest()

    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hash_(f"{user}:{realm}:{password}")
    ha2 = hash_(f"{method}:{uri}")
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "qop" in params:
        cnonce = f"{rng.getrandbits(32):08x}"
        response = hash_(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        value += f', qop=auth, nc={nc:08x}, cnonce="{cnonce}"'
    else:
        response = hash_(f"{ha1}:{nonce}:{ha2}")
    value += f', response="{response}", algorithm={algorithm}'
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return value


# ---- bookkeeping ---------------------------------------------------------------------


@dataclass
class Entry:
    """One message in the history: what was sent (or received), when, where, by what."""

    t: float
    direction: str
    transport: str
    src: str
    dst: str
    scenario: str
    kind: str
    data: bytes
    conn: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "t": round(self.t, 6),
            "dir": self.direction,
            "transport": self.transport,
            "src": self.src,
            "dst": self.dst,
            "conn": self.conn,
            "scenario": self.scenario,
            "kind": self.kind,
            # latin-1 maps every byte to one code point: lossless through JSON.
            "data": self.data.decode("latin-1"),
        }


@dataclass
class Problem:
    kind: str
    detail: str
    t: float
    file: str = ""


@dataclass
class Stats:
    sent_by_method: Counter[str] = field(default_factory=Counter)
    sent_by_scenario: Counter[str] = field(default_factory=Counter)
    sent_by_transport: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    """5xx responses by their status line: which internal error the switch reports."""
    requests_from_switch: Counter[str] = field(default_factory=Counter)
    probes: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    tracebacks: Counter[str] = field(default_factory=Counter)


class History:
    """The last ``size`` messages sent and received, dumped to a file on a problem."""

    def __init__(self, size: int):
        self.sent: deque[Entry] = deque(maxlen=size)
        self.received: deque[Entry] = deque(maxlen=size)

    def add(self, entry: Entry) -> None:
        (self.sent if entry.direction == "sent" else self.received).append(entry)

    def dump(self, path: Path, meta: dict[str, object]) -> None:
        entries = sorted([*self.sent, *self.received], key=lambda e: e.t)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            out.write(json.dumps({"meta": meta}) + "\n")
            for entry in entries:
                out.write(json.dumps(entry.to_json()) + "\n")


# ---- transports ----------------------------------------------------------------------


class Hub:
    """Everything shared by the endpoints: the history, counters, response waiters."""

    def __init__(self, stats: Stats, history: History):
        self.stats = stats
        self.history = history
        self.waiters: dict[tuple[str, str, str], asyncio.Queue[SipMsg]] = {}
        self.to_tags: dict[str, str] = {}
        """Replay only: recorded To tag -> the tag the fresh switch gave the same Call-ID."""
        self.on_response: Callable[[SipMsg], None] | None = None

    def expect(self, call_id: str, cseq: int, method: str) -> asyncio.Queue[SipMsg]:
        queue: asyncio.Queue[SipMsg] = asyncio.Queue()
        self.waiters[(call_id, str(cseq), method)] = queue
        return queue

    def forget(self, call_id: str, cseq: int, method: str) -> None:
        self.waiters.pop((call_id, str(cseq), method), None)

    def received(self, data: bytes, send: Callable[[bytes, str], None], probe: bool) -> None:
        msg = parse(data)
        if msg is None:
            return
        status = msg.status
        if status is not None:
            if not probe:
                self.stats.responses[status] += 1
                if status >= 500:
                    self.stats.server_errors[f"{msg.first[8:60]} ({msg.cseq()[1]})"] += 1
            if self.on_response is not None:
                self.on_response(msg)
            queue = self.waiters.get(msg.key())
            if queue is not None:
                queue.put_nowait(msg)
            elif 200 <= status < 300 and msg.cseq()[1] == "INVITE":
                send(ack_for(msg), "ACK(auto)")
            return
        self.stats.requests_from_switch[msg.method] += 1
        reply = answer(msg)
        if reply:
            send(reply, f"reply-{msg.method}")


def ack_for(resp: SipMsg) -> bytes:
    """The ACK of a 2xx to an INVITE nobody waits for (so the switch stops resending)."""
    target = uri_of(resp.h("contact")) or "sip:127.0.0.1"
    via = re.sub(
        r";branch=[^;,\s]*",
        f";branch=z9hG4bK-ack{hashlib.md5(resp.h('call-id').encode()).hexdigest()[:12]}",
        resp.h("via"),
    )
    lines = [
        f"ACK {target} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {resp.h('from')}",
        f"To: {resp.h('to')}",
        f"Call-ID: {resp.h('call-id')}",
        f"CSeq: {resp.cseq()[0]} ACK",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(req: SipMsg) -> bytes:
    """Our answer to a request from the switch: 486 to INVITE, nothing to ACK, else 200."""
    if req.method == "ACK":
        return b""
    code = "486 Busy Here" if req.method == "INVITE" else "200 OK"
    to = req.h("to")
    if req.method == "INVITE" and not tag_of(to):
        to += ";tag=fzbusy"
    lines = [f"SIP/2.0 {code}"]
    lines += [f"Via: {v}" for v in req.headers.get("via", [])]
    lines += [f"From: {req.h('from')}", f"To: {to}", f"Call-ID: {req.h('call-id')}"]
    lines += [f"CSeq: {req.h('cseq')}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket of the harness: sends, records, and hands what arrives to the hub."""

    def __init__(self, hub: Hub, probe: bool = False):
        self.hub = hub
        self.probe = probe
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    @classmethod
    async def open(cls, hub: Hub, ip: str, port: int = 0, probe: bool = False) -> UdpEndpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: cls(hub, probe), local_addr=(ip, port)
        )
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local = transport.get_extra_info("sockname")[:2]

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) are expected while the switch restarts."""

    def send(self, data: bytes, dst: tuple[str, int], scenario: str, kind: str) -> None:
        if self.transport is None:
            return
        if not self.probe:
            self.hub.history.add(
                Entry(
                    time.time(), "sent", "UDP", _addr(self.local), _addr(dst), scenario, kind, data
                )
            )
        with contextlib.suppress(OSError):
            self.transport.sendto(data[:65507], dst)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.probe:
            self.hub.history.add(
                Entry(time.time(), "recv", "UDP", _addr(addr), _addr(self.local), "", "", data)
            )
        self.hub.received(data, lambda d, k: self.send(d, addr[:2], "auto", k), self.probe)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _addr(addr: tuple[str, int] | tuple[Any, ...]) -> str:
    return f"{addr[0]}:{addr[1]}"


class TcpConnection:
    """One TCP connection to the switch, framing what it receives by Content-Length."""

    counter = 0

    def __init__(self, hub: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        TcpConnection.counter += 1
        self.id = TcpConnection.counter
        self.hub, self.reader, self.writer = hub, reader, writer
        self.local: tuple[str, int] = writer.get_extra_info("sockname")[:2]
        self.remote: tuple[str, int] = writer.get_extra_info("peername")[:2]
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, hub: Hub, ip: str, target: tuple[str, int]) -> TcpConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target[0], target[1], local_addr=(ip, 0)), 3
        )
        return cls(hub, reader, writer)

    def send(self, data: bytes, scenario: str, kind: str) -> None:
        entry = Entry(
            time.time(),
            "sent",
            "TCP",
            _addr(self.local),
            _addr(self.remote),
            scenario,
            kind,
            data,
            self.id,
        )
        self.hub.history.add(entry)
        if not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        buf = b""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await self.reader.read(65536):
                buf += chunk
                while b"\r\n\r\n" in buf:
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                    length = int(match.group(1)) if match else 0
                    if len(rest) < length:
                        break
                    data, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                    self.hub.history.add(
                        Entry(
                            time.time(),
                            "recv",
                            "TCP",
                            _addr(self.remote),
                            _addr(self.local),
                            "",
                            "",
                            data,
                            self.id,
                        )
                    )
                    self.hub.received(data, lambda d, k: self.send(d, "auto", k), False)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)
        self.task.cancel()


class Pacer:
    """Spaces all fuzz messages ``1/rate`` s apart (no bursts after a stall)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = 0.0

    async def take(self) -> None:
        now = time.monotonic()
        self.next = max(self.next, now)
        wait = self.next - now
        self.next += self.interval
        if wait > 0:
            await asyncio.sleep(wait)


# ---- the fuzzer ----------------------------------------------------------------------


class Fuzzer:
    """Generates scenarios (one or more messages each) from a seeded RNG."""

    def __init__(
        self,
        hub: Hub,
        udp: list[UdpEndpoint],
        target: tuple[str, int],
        pacer: Pacer,
        exclude: list[str],
        only: list[str],
    ):
        self.hub, self.udp, self.target, self.pacer = hub, udp, target, pacer
        self.exclude = exclude
        self.only = only
        self.count = 0
        self.scenarios: list[tuple[str, Callable[[Random, str], Any], int]] = [
            ("single", self.single, 45),
            ("valid", self.valid, 5),
            ("tcp", self.tcp, 8),
            ("branch_reuse", self.branch_reuse, 2),
            ("callid_reuse", self.callid_reuse, 5),
            ("orphan", self.orphan, 5),
            ("dialog", self.dialog, 8),
            ("cancel", self.cancel, 4),
            ("retrans", self.retrans, 6),
            ("register", self.register, 5),
            ("client_call", self.client_call, 3),
            ("interleave", self.interleave, 4),
        ]

    def allowed(self, name: str) -> bool:
        if self.only and not any(name.startswith(prefix) for prefix in self.only):
            return False
        return not any(name.startswith(prefix) for prefix in self.exclude)

    async def send(
        self, ep: UdpEndpoint | TcpConnection, data: bytes | Request, scenario: str, kind: str
    ) -> None:
        await self.pacer.take()
        raw = data.render() if isinstance(data, Request) else data
        method = kind.split(":")[0]
        self.hub.stats.sent_by_method[method] += 1
        self.hub.stats.sent_by_scenario[scenario.split("#")[0]] += 1
        if isinstance(ep, UdpEndpoint):
            self.hub.stats.sent_by_transport["UDP"] += 1
            ep.send(raw, self.target, scenario, kind)
        else:
            self.hub.stats.sent_by_transport["TCP"] += 1
            ep.send(raw, scenario, kind)

    def dialog_for(
        self,
        rng: Random,
        ep: UdpEndpoint | TcpConnection,
        *,
        to_user: str | None = None,
        from_user: str | None = None,
    ) -> Dialog:
        transport = "UDP" if isinstance(ep, UdpEndpoint) else "TCP"
        app_kind = rng.choice(("0", "0", "2", "3"))
        return Dialog(
            transport,
            ep.local,
            self.target,
            new_call_id(rng),
            from_user or f"+1415555{app_kind}{rng.randrange(1000):03d}",
            to_user or rng.choice((NUMBER, NUMBER, NUMBER, UNKNOWN_NUMBER, CLIENT, "")),
            new_tag(rng),
        )

    async def final(self, queue: asyncio.Queue[SipMsg], timeout: float) -> SipMsg | None:
        """The first final response on ``queue`` within ``timeout`` s (None: none came)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                return None
            if (msg.status or 0) >= 200:
                return msg
        return None

    async def transact(
        self,
        ep: UdpEndpoint | TcpConnection,
        req: Request,
        dialog: Dialog,
        name: str,
        kind: str,
        timeout: float = 4.0,
    ) -> SipMsg | None:
        """Send a (valid enough) request and wait for its final response."""
        cseq = req.header("CSeq")
        number, _, method = (cseq[1] if cseq else "0 X").partition(" ")
        queue = self.hub.expect(dialog.call_id, int(number) if number.isdigit() else 0, method)
        try:
            await self.send(ep, req, name, kind)
            return await self.final(queue, timeout)
        finally:
            self.hub.forget(dialog.call_id, int(number) if number.isdigit() else 0, method)

    def ack(self, dialog: Dialog, resp: SipMsg, branch: str | None, rng: Random) -> Request:
        """The ACK of ``resp`` (a non-2xx: same ``branch``; a 2xx: a new one, To with tag)."""
        req = seed("ACK", dialog, rng, branch=branch)
        req.set("To", resp.h("to"))
        if branch is None and resp.h("contact"):
            req.uri = uri_of(resp.h("contact"))
        return req

    async def run_one(self, rng: Random) -> None:
        self.count += 1
        names = [s for s in self.scenarios if self.allowed(s[0])]
        name, func, _ = rng.choices(names, [w for _, _, w in names])[0]
        await func(rng, f"{name}#{self.count}")

    # -- scenarios --------------------------------------------------------------------

    async def single(self, rng: Random, name: str) -> None:
        """One mutated request over UDP."""
        ep = rng.choice(self.udp)
        method = rng.choice(METHODS)
        dialog = self.dialog_for(rng, ep)
        dialog.cseq = rng.randrange(1, 100)
        data, labels = mutate(seed(method, dialog, rng), rng)
        await self.send(ep, data, name, f"{method}:{labels}")

    async def valid(self, rng: Random, name: str) -> None:
        """An unmutated seed: what the switch sees from well-behaved peers."""
        ep = rng.choice(self.udp)
        method = rng.choice(METHODS)
        await self.send(ep, seed(method, self.dialog_for(rng, ep), rng), name, f"{method}:valid")

    async def tcp(self, rng: Random, name: str) -> None:
        """A TCP connection carrying several requests: mutated, pipelined, split, cut off."""
        try:
            conn = await TcpConnection.open(self.hub, rng.choice(FUZZ_IPS), self.target)
        except (OSError, TimeoutError):
            return
        try:
            for _ in range(rng.randrange(1, 6)):
                method = rng.choice(METHODS)
                dialog = self.dialog_for(rng, conn)
                req = seed(method, dialog, rng)
                data, labels = mutate(req, rng) if rng.random() < 0.7 else (req.render(), "valid")
                style = rng.randrange(4)
                if style == 0 and len(data) > 2:
                    cut = rng.randrange(1, len(data))
                    await self.send(conn, data[:cut], name, f"{method}:split1:{labels}")
                    await asyncio.sleep(rng.random() * 0.3)
                    await self.send(conn, data[cut:], name, f"{method}:split2:{labels}")
                elif style == 1:
                    await self.send(conn, data + data, name, f"{method}:pipelined:{labels}")
                else:
                    await self.send(conn, data, name, f"{method}:{labels}")
            if rng.random() < 0.2:
                await self.send(
                    conn,
                    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 500\r\n\r\nabc",
                    name,
                    "INVITE:partial",
                )
            await asyncio.sleep(rng.choice((0.0, 0.2, 1.0)))
        finally:
            await conn.close()

    async def branch_reuse(self, rng: Random, name: str) -> None:
        """A final response to an INVITE, the ACK, then another request on the same branch.

        The reused request is a non-INVITE with ``CSeq: n INVITE`` (pjsip matches it to
        the finished INVITE transaction), with its own method in CSeq, or an INVITE.
        """
        ep = rng.choice(self.udp)
        to_user = rng.choice((UNKNOWN_NUMBER, NUMBER, CLIENT))
        dialog = self.dialog_for(
            rng, ep, to_user=to_user, from_user=f"+14155550{rng.randrange(1000):03d}"
        )
        dialog.cseq = rng.randrange(1, 50)
        branch = new_branch(rng)
        invite = seed("INVITE", dialog, rng, branch=branch)
        if to_user == NUMBER and rng.random() < 0.5:
            m_sdp(invite, rng)  # a bad offer: 488 or similar
        resp = await self.transact(ep, invite, dialog, name, "INVITE:branch-reuse", 6)
        if resp is None:
            return
        ok = 200 <= (resp.status or 0) < 300
        await self.send(
            ep, self.ack(dialog, resp, None if ok else branch, rng), name, "ACK:branch-reuse"
        )
        await asyncio.sleep(rng.uniform(0, 4))
        method = rng.choice(
            (
                "BYE",
                "INFO",
                "OPTIONS",
                "CANCEL",
                "MESSAGE",
                "NOTIFY",
                "UPDATE",
                "REFER",
                "PRACK",
                "INVITE",
                "ACK",
            )
        )
        variant = rng.randrange(3)
        cseq_method = "INVITE" if variant == 0 else method
        if variant == 2:
            dialog.cseq += 1
        if ok:
            dialog.to_tag = tag_of(resp.h("to"))
        again = seed(method, dialog, rng, branch=branch, cseq_method=cseq_method)
        await self.send(ep, again, name, f"{method}:branch-reuse-cseq-{cseq_method}")
        if ok:
            dialog.cseq += 1
            await self.send(ep, seed("BYE", dialog, rng), name, "BYE:branch-reuse-end")

    async def callid_reuse(self, rng: Random, name: str) -> None:
        """A finished transaction, then the same Call-ID with new, equal and older CSeqs."""
        ep = rng.choice(self.udp)
        dialog = self.dialog_for(rng, ep)
        dialog.cseq = rng.randrange(2, 1000)
        method = rng.choice(("INVITE", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "SUBSCRIBE"))
        first = seed(method, dialog, rng)
        resp = await self.transact(ep, first, dialog, name, f"{method}:callid-first", 5)
        if resp is not None and method == "INVITE":
            ok = 200 <= (resp.status or 0) < 300
            await self.send(ep, self.ack(dialog, resp, None, rng), name, "ACK:callid")
            if ok:
                dialog.to_tag = tag_of(resp.h("to"))
        for _ in range(rng.randrange(1, 5)):
            dialog.cseq += rng.choice((-5, -1, 0, 1, 1, 2, 10**6))
            other = rng.choice(METHODS)
            req = seed(other, dialog, rng)
            if rng.random() < 0.3:
                req.set("From", f"<sip:other@127.0.0.1>;tag={new_tag(rng)}")
            data, labels = mutate(req, rng) if rng.random() < 0.3 else (req.render(), "valid")
            await self.send(ep, data, name, f"{other}:callid-reuse:{labels}")
            await asyncio.sleep(rng.random() * 0.5)

    async def orphan(self, rng: Random, name: str) -> None:
        """CANCEL/ACK/BYE/PRACK/UPDATE for transactions and dialogs that do not exist."""
        ep = rng.choice(self.udp)
        dialog = self.dialog_for(rng, ep)
        if rng.random() < 0.5:
            dialog.to_tag = new_tag(rng)
        dialog.cseq = rng.randrange(1, 10)
        method = rng.choice(("CANCEL", "ACK", "BYE", "PRACK", "UPDATE", "NOTIFY", "REFER", "INFO"))
        req = seed(method, dialog, rng, cseq_method=rng.choice((method, method, "INVITE")))
        await self.send(ep, req, name, f"{method}:orphan")

    async def place_call(
        self, rng: Random, name: str, ep: UdpEndpoint
    ) -> tuple[Dialog, str] | None:
        """A real call to the number whose app keeps it up a few seconds: INVITE, 200, ACK."""
        dialog = self.dialog_for(
            rng, ep, to_user=NUMBER, from_user=f"+14155551{rng.randrange(1000):03d}"
        )
        branch = new_branch(rng)
        resp = await self.transact(
            ep, seed("INVITE", dialog, rng, branch=branch), dialog, name, "INVITE:dialog", 8
        )
        if resp is None:
            return None
        ok = 200 <= (resp.status or 0) < 300
        await self.send(ep, self.ack(dialog, resp, None if ok else branch, rng), name, "ACK:dialog")
        if not ok:
            return None
        dialog.to_tag = tag_of(resp.h("to"))
        dialog.remote_uri = uri_of(resp.h("contact"))
        return dialog, branch

    async def dialog(self, rng: Random, name: str) -> None:
        """Mutated and out-of-order in-dialog requests inside a call the harness placed."""
        ep = rng.choice(self.udp)
        placed = await self.place_call(rng, name, ep)
        if placed is None:
            return
        dialog, invite_branch = placed
        for _ in range(rng.randrange(2, 9)):
            dialog.cseq += rng.choice((1, 1, 1, 0, -1, 100))
            method = rng.choice(
                (
                    "REFER",
                    "NOTIFY",
                    "INFO",
                    "INFO",
                    "UPDATE",
                    "INVITE",
                    "OPTIONS",
                    "MESSAGE",
                    "PRACK",
                    "SUBSCRIBE",
                    "BYE",
                    "FOOBAR",
                )
            )
            if method == "BYE" and rng.random() < 0.7:
                continue
            branch = invite_branch if rng.random() < 0.1 else None
            req = seed(method, dialog, rng, branch=branch)
            if rng.random() < 0.5:
                data, labels = mutate(req, rng)
                await self.send(ep, data, name, f"{method}:in-dialog:{labels}")
                await asyncio.sleep(rng.random() * 0.3)
                continue
            resp = await self.transact(ep, req, dialog, name, f"{method}:in-dialog", 2)
            if method == "INVITE" and resp is not None:
                await self.send(ep, self.ack(dialog, resp, None, rng), name, "ACK:re-invite")
        if rng.random() < 0.8:
            dialog.cseq += 1
            bye = seed("BYE", dialog, rng)
            await self.send(ep, bye, name, "BYE:dialog")
            if rng.random() < 0.3:
                await self.send(ep, bye, name, "BYE:dialog-retrans")
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random())
                dialog.cseq += 1
                after = rng.choice(("INFO", "BYE", "REFER", "ACK", "CANCEL"))
                await self.send(ep, seed(after, dialog, rng), name, f"{after}:after-bye")

    async def cancel(self, rng: Random, name: str) -> None:
        """CANCELs racing an INVITE: right, wrong branch or CSeq, twice, after the final."""
        ep = rng.choice(self.udp)
        dialog = self.dialog_for(rng, ep, to_user=rng.choice((NUMBER, UNKNOWN_NUMBER, CLIENT)))
        branch = new_branch(rng)
        queue = self.hub.expect(dialog.call_id, dialog.cseq, "INVITE")
        try:
            await self.send(ep, seed("INVITE", dialog, rng, branch=branch), name, "INVITE:cancel")
            await asyncio.sleep(rng.choice((0.0, 0.01, 0.05, 0.2, 1.0)))
            variant = rng.randrange(4)
            cancel = seed("CANCEL", dialog, rng, branch=new_branch(rng) if variant == 1 else branch)
            if variant == 2:
                cancel.set("CSeq", f"{dialog.cseq + 1} CANCEL")
            await self.send(ep, cancel, name, f"CANCEL:race-{variant}")
            if variant == 3:
                await self.send(ep, cancel, name, "CANCEL:twice")
            resp = await self.final(queue, 5)
        finally:
            self.hub.forget(dialog.call_id, dialog.cseq, "INVITE")
        if resp is not None:
            ok = 200 <= (resp.status or 0) < 300
            await self.send(
                ep, self.ack(dialog, resp, None if ok else branch, rng), name, "ACK:cancel"
            )
            if ok:
                dialog.to_tag = tag_of(resp.h("to"))
                dialog.cseq += 1
                await self.send(ep, seed("BYE", dialog, rng), name, "BYE:cancel")
            await self.send(ep, cancel, name, "CANCEL:after-final")

    async def retrans(self, rng: Random, name: str) -> None:
        """A request retransmitted, identical or with its body/method changed in between."""
        ep = rng.choice(self.udp)
        method = rng.choice(METHODS)
        dialog = self.dialog_for(rng, ep)
        branch = new_branch(rng)
        req = seed(method, dialog, rng, branch=branch)
        data, labels = mutate(req, rng) if rng.random() < 0.3 else (req.render(), "valid")
        for i in range(rng.randrange(2, 6)):
            if i and rng.random() < 0.2:
                changed = seed(rng.choice(METHODS), dialog, rng, branch=branch)
                data, labels = changed.render(), "changed"
            await self.send(ep, data, name, f"{method}:retrans-{i}:{labels}")
            await asyncio.sleep(rng.choice((0.0, 0.05, 0.5, 0.6)))
        if method == "INVITE" and rng.random() < 0.5:
            await asyncio.sleep(1)
            await self.send(ep, seed("CANCEL", dialog, rng), name, "CANCEL:retrans")

    async def register(self, rng: Random, name: str) -> None:
        """REGISTER, its 401, then a digest answer (correct or mutated); maybe unregister."""
        ep = rng.choice(self.udp)
        user = rng.choice((CLIENT, CLIENT, "bob", "mallory"))
        dialog = self.dialog_for(rng, ep, to_user=user, from_user=user)
        dialog.domain = DOMAIN
        req = seed("REGISTER", dialog, rng)
        resp = await self.transact(ep, req, dialog, name, "REGISTER:initial", 4)
        if resp is None or resp.status not in (401, 407):
            return
        challenge = resp.h("www-authenticate") or resp.h("proxy-authenticate")
        password = CLIENTS.get(user, "wrong-password")
        if rng.random() < 0.2:
            password = "wrong"
        for round_ in range(rng.randrange(1, 3)):
            dialog.cseq += 1
            req = seed("REGISTER", dialog, rng)
            req.set(
                "Authorization",
                digest(challenge, "REGISTER", req.uri, user, password, rng, round_ + 1),
            )
            if rng.random() < 0.4:
                h = req.header("Authorization")
                assert h is not None
                h[1] = rng.choice(
                    (
                        h[1].replace('nonce="', 'nonce="x'),
                        h[1].replace("algorithm=MD5", "algorithm=SHA-512"),
                        h[1].replace('response="', 'response="0'),
                        h[1].replace('uri="', 'uri="sip:other'),
                        h[1] + ", " + h[1],
                        h[1].replace(", ", ","),
                        h[1].replace("nc=00000001", "nc=zzzz"),
                        h[1].replace('username="', 'username="' + "u" * 5000),
                        re.sub(r'realm="[^"]*"', 'realm=""', h[1]),
                    )
                )
                data, labels = (
                    mutate(req, rng) if rng.random() < 0.3 else (req.render(), "auth-mutated")
                )
                await self.send(ep, data, name, f"REGISTER:{labels}")
                return
            final = await self.transact(ep, req, dialog, name, "REGISTER:auth", 4)
            if final is None:
                return
        if rng.random() < 0.4:
            dialog.cseq += 1
            req = seed("REGISTER", dialog, rng)
            req.set("Expires", "0")
            if rng.random() < 0.5:
                req.set("Contact", "*")
            await self.send(ep, req, name, "REGISTER:unregister")

    async def client_call(self, rng: Random, name: str) -> None:
        """A client's INVITE, the 407 (ACKed on the INVITE's branch), the INVITE with
        credentials, its answer, ACK and BYE; some reuse the 407's branch afterwards."""
        ep = rng.choice(self.udp)
        dialog = self.dialog_for(
            rng, ep, to_user=rng.choice((NUMBER, "+15551230002", "bob")), from_user=CLIENT
        )
        dialog.domain = DOMAIN
        branch = new_branch(rng)
        resp = await self.transact(
            ep, seed("INVITE", dialog, rng, branch=branch), dialog, name, "INVITE:client", 4
        )
        if resp is None:
            return
        await self.send(ep, self.ack(dialog, resp, branch, rng), name, "ACK:client-407")
        if resp.status not in (401, 407):
            return
        challenge = resp.h("proxy-authenticate") or resp.h("www-authenticate")
        dialog.cseq += 1
        auth_branch = new_branch(rng)
        req = seed("INVITE", dialog, rng, branch=auth_branch)
        req.set(
            "Proxy-Authorization",
            digest(challenge, "INVITE", req.uri, CLIENT, CLIENT_PASSWORD, rng),
        )
        if rng.random() < 0.3:
            m_sdp(req, rng)
        final = await self.transact(ep, req, dialog, name, "INVITE:client-auth", 8)
        if final is None:
            return
        ok = 200 <= (final.status or 0) < 300
        await self.send(
            ep, self.ack(dialog, final, None if ok else auth_branch, rng), name, "ACK:client"
        )
        if ok:
            dialog.to_tag = tag_of(final.h("to"))
            dialog.remote_uri = uri_of(final.h("contact"))
            await asyncio.sleep(rng.random())
            dialog.cseq += 1
            await self.send(ep, seed("BYE", dialog, rng), name, "BYE:client")

    async def interleave(self, rng: Random, name: str) -> None:
        """Two transactions of one Call-ID overlapping: INFO/BYE/UPDATE/INVITE before the
        first INVITE's final response, BYE before ACK."""
        ep = rng.choice(self.udp)
        dialog = self.dialog_for(rng, ep, to_user=NUMBER)
        branch = new_branch(rng)
        queue = self.hub.expect(dialog.call_id, dialog.cseq, "INVITE")
        try:
            await self.send(
                ep, seed("INVITE", dialog, rng, branch=branch), name, "INVITE:interleave"
            )
            for _ in range(rng.randrange(1, 4)):
                other = rng.choice(
                    ("INFO", "BYE", "UPDATE", "INVITE", "OPTIONS", "PRACK", "CANCEL", "ACK")
                )
                second = Dialog(**{**dialog.__dict__, "cseq": dialog.cseq + rng.choice((0, 1, 2))})
                await self.send(ep, seed(other, second, rng), name, f"{other}:interleave")
            resp = await self.final(queue, 5)
        finally:
            self.hub.forget(dialog.call_id, dialog.cseq, "INVITE")
        if resp is not None:
            ok = 200 <= (resp.status or 0) < 300
            if ok:
                dialog.to_tag = tag_of(resp.h("to"))
                if rng.random() < 0.5:
                    dialog.cseq += 1
                    await self.send(ep, seed("BYE", dialog, rng), name, "BYE:before-ack")
                    dialog.cseq -= 1
            await self.send(
                ep, self.ack(dialog, resp, None if ok else branch, rng), name, "ACK:interleave"
            )
            if ok:
                dialog.cseq += 2
                await self.send(ep, seed("BYE", dialog, rng), name, "BYE:interleave")


# ---- the environment: app, sink, switch, monitors ------------------------------------


def app_routes() -> dict[str, Any]:
    """The webhook app: the probe caller is dialled through to the SIPp callee; fuzz
    callers get a short <Say>, a longer call (dialog scenarios), a <Dial> to the
    UDP sink (never answers) or to the client alice (whose contact is the fuzzer)."""

    async def voice(request: web.Request) -> web.Response:
        form = await request.post()
        caller = str(form.get("From", ""))
        if caller == PROBE_CALLER:
            doc = f"<Dial><Number>{CALLEE}</Number></Dial>"
        elif caller.startswith("+14155551"):
            doc = '<Say>fuzz dialog</Say><Pause length="4"/><Hangup/>'
        elif caller.startswith("+14155552"):
            doc = f'<Dial timeout="2"><Number>{SINK_PREFIX}5550100</Number></Dial><Say>no</Say>'
        elif caller.startswith("+14155553"):
            doc = f'<Dial timeout="2"><Client>{CLIENT}</Client></Dial>'
        else:
            doc = "<Say>fuzz</Say><Hangup/>"
        return web.Response(text=f"<Response>{doc}</Response>", content_type="text/xml")

    client = "<Response><Say>client call</Say><Hangup/></Response>"
    return {"/voice": voice, "/client": client, "/status": "<Response/>"}


class Sink(asyncio.DatagramProtocol):
    """The far end of the ``sink`` trunk: swallows the switch's INVITEs, never answers."""

    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1


ERROR_PATTERNS = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r" ERROR .*exception"),
    re.compile(r"Assertion .* failed|assert(ion)? failed|pj_assert", re.IGNORECASE),
    re.compile(r"\bCRITICAL\b|Fatal Python error|Segmentation fault|core dumped"),
)


class Harness:
    """The switch under test and everything watching it."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.stats = Stats()
        self.history = History(args.history)
        self.hub = Hub(self.stats, self.history)
        self.app = AppServer(routes=app_routes())
        self.switch: ClientSwitch | None = None
        self.up = asyncio.Event()
        self.stopping = False
        self.restarts = 0
        self.log_offset = 0
        self.saved: Counter[str] = Counter()
        self.started = time.time()
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self._cleanup: list[Callable[[], Any]] = []
        self.sink = Sink()

    # -- setup ------------------------------------------------------------------------

    async def start(self) -> None:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self.app.handle)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, PROBE_IP, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.app.base = f"http://{PROBE_IP}:{port}"
        self._cleanup.append(runner.cleanup)
        loop = asyncio.get_running_loop()
        sink_transport, _ = await loop.create_datagram_endpoint(
            lambda: self.sink, local_addr=(PROBE_IP, 0)
        )
        self._cleanup.append(sink_transport.close)
        sink_port = sink_transport.get_extra_info("sockname")[1]
        switch = ClientSwitch.create(self.workdir, self.app.base, CLIENTS, REGISTRAR)
        assert switch.config is not None
        text = switch.config.read_text().replace("max_calls = 100", "max_calls = 1000")
        text += (
            f'\n[[trunks]]\nname = "sink"\nuri = "sip:{PROBE_IP}:{sink_port}"\n'
            f'prefixes = ["{SINK_PREFIX}"]\n'
        )
        switch.config.write_text(text)
        self.switch = switch
        await switch.start()
        self.up.set()

    @property
    def target(self) -> tuple[str, int]:
        assert self.switch is not None
        return (PROBE_IP, self.switch.sip_port)

    async def close(self) -> int | None:
        """Stop the switch (SIGTERM) and return its exit code; close the app and sink."""
        self.stopping = True
        code = await self.switch.stop(timeout=20) if self.switch else None
        for cleanup in reversed(self._cleanup):
            result = cleanup()
            if asyncio.iscoroutine(result):
                await result
        return code

    # -- problems ---------------------------------------------------------------------

    def problem(self, kind: str, detail: str, save: bool, signature: str | None = None) -> str:
        """Record a problem; save the history when asked (--max-repro files per signature)."""
        file = ""
        signature = signature or kind
        if save and self.saved[signature] < self.args.max_repro:
            self.saved[signature] += 1
            n = sum(self.saved.values())
            path = RESULTS / f"sip-fuzz-{self.stamp}-seed{self.args.seed}-{n:02d}-{kind}.jsonl"
            meta: dict[str, object] = {
                "problem": kind,
                "detail": detail,
                "seed": self.args.seed,
                "time": time.time(),
                "switch_sip": f"{self.target[0]}:{self.target[1]}",
                "log_tail": self.log_tail(40),
                "replay": f".venv/bin/python bench/sip_fuzz.py --replay {path.relative_to(REPO)}",
            }
            self.history.dump(path, meta)
            file = str(path.relative_to(REPO))
        self.stats.problems.append(Problem(kind, detail, time.time() - self.started, file))
        where = f" -> {file}" if file else ""
        print(
            f"[{time.time() - self.started:7.1f}s] PROBLEM {kind}: {detail[:300]}{where}",
            flush=True,
        )
        return file

    def log_tail(self, lines: int) -> list[str]:
        if self.switch is None or self.switch.log_path is None or not self.switch.log_path.exists():
            return []
        with open(self.switch.log_path, "rb") as log:
            log.seek(max(0, log.seek(0, 2) - 20000))
            return log.read().decode("utf-8", "replace").splitlines()[-lines:]

    # -- monitors ---------------------------------------------------------------------

    async def watch_process(self) -> None:
        """Death: record exit code/signal and the log's last lines, save, restart."""
        while not self.stopping:
            assert self.switch is not None and self.switch.process is not None
            code = await self.switch.process.wait()
            if self.stopping:
                return
            self.up.clear()
            await asyncio.sleep(0.3)  # let the log writer finish
            self.scan_log()
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            tail = [line for line in self.log_tail(60) if line.strip()]
            assertion = next((ln for ln in reversed(tail) if ERROR_PATTERNS[2].search(ln)), "")
            python_line = next(
                (ln for ln in reversed(tail) if re.match(r"\d{4}-\d\d-\d\d ", ln)), ""
            )
            detail = f"switch died ({how}): " + (
                assertion.strip() or f"no assertion logged; last log line: {python_line.strip()}"
            )
            self.problem("death", detail, True, f"death:{how}:{_signature(assertion)}")
            if not self.args.no_restart and not self.stopping:
                self.restarts += 1
                await self.switch.start()
                self.up.set()
            else:
                return

    async def probe_options(self) -> None:
        """Liveness: an OPTIONS a second from 127.0.0.1, answered within 2 s."""
        ep = await UdpEndpoint.open(self.hub, PROBE_IP, probe=True)
        self._cleanup.append(ep.close)
        rng = Random(1)
        missed_since: float | None = None
        n = 0
        while not self.stopping:
            await self.up.wait()
            n += 1
            dialog = Dialog(
                "UDP",
                ep.local,
                self.target,
                f"probe-{n}-{rng.getrandbits(32):x}",
                "probe",
                "probe",
                new_tag(rng),
                cseq=n,
            )
            queue = self.hub.expect(dialog.call_id, n, "OPTIONS")
            sent = time.monotonic()
            ep.send(seed("OPTIONS", dialog, rng).render(), self.target, "probe", "OPTIONS")
            self.stats.probes["options_sent"] += 1
            try:
                await asyncio.wait_for(queue.get(), 2.0)
                self.stats.probes["options_answered"] += 1
                missed_since = None
            except TimeoutError:
                if self.up.is_set() and not self.stopping:
                    self.stats.probes["options_missed"] += 1
                    if missed_since is None:
                        missed_since = sent
                        self.problem("hang", "OPTIONS probe unanswered within 2 s", True, "hang")
                    elif time.monotonic() - missed_since > self.args.hang_kill:
                        await self.kill_hung()
                        missed_since = None
            finally:
                self.hub.forget(dialog.call_id, n, "OPTIONS")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - sent)))

    async def kill_hung(self) -> None:
        """A switch silent for ``--hang-kill`` s: SIGABRT (so it leaves a trace), restart."""
        assert self.switch is not None and self.switch.process is not None
        self.problem("hang", f"no answer for {self.args.hang_kill} s: killing the switch", False)
        self.up.clear()
        with contextlib.suppress(ProcessLookupError):
            self.switch.process.send_signal(signal.SIGABRT)

    async def probe_calls(self) -> None:
        """Liveness: a real call every ~10 s (SIPp caller -> switch -> SIPp callee)."""
        n = 0
        while not self.stopping:
            await asyncio.sleep(self.args.call_every)
            await self.up.wait()
            if self.stopping:
                return
            n += 1
            assert self.switch is not None
            workdir = self.workdir / "probe-call"
            workdir.mkdir(exist_ok=True)
            caller = sipp.caller(
                NUMBER, sipp.free_udp_port(), caller_id=PROBE_CALLER, hangup_after_ms=500
            )
            callee = sipp.callee("answer")
            restarts = self.restarts
            try:
                await sipp.run_call(self.switch, workdir, caller, callee, timeout=12, callee_wait=8)
                self.stats.probes["calls_ok"] += 1
            except Exception as e:  # SIPp's failure, a timeout, or SIPp not starting at all
                if self.stopping or restarts != self.restarts or not self.up.is_set():
                    continue  # the switch died during the call: reported as a death
                self.stats.probes["calls_failed"] += 1
                why = (str(e).strip().splitlines() or [repr(e)])[0][:200]
                for log in sorted(workdir.glob("*.errors.log")):
                    last = log.read_text(errors="replace").strip().splitlines()[-1:]
                    why += f"; {log.name}: {last[0][:200]}" if last else ""
                file = self.problem(
                    "call-probe", f"probe call {n} failed: {why}", True, "call-probe"
                )
                if file:  # keep what the two SIPps saw next to the repro file
                    shutil.copytree(workdir, REPO / file.replace(".jsonl", "-sipp"))

    def scan_log(self) -> None:
        """New log lines: tracebacks, ERROR ... exception, assertions, fatal errors."""
        if self.switch is None or self.switch.log_path is None or not self.switch.log_path.exists():
            return
        with open(self.switch.log_path, "rb") as log:
            log.seek(self.log_offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1
        self.log_offset += end
        lines = chunk[:end].decode("utf-8", "replace").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if ERROR_PATTERNS[0].search(line):
                block = [line]
                i += 1
                while i < len(lines) and (
                    lines[i].startswith((" ", "\t"))
                    or not block[-1].strip()
                    or lines[i].startswith(("During handling", "The above"))
                    or block[-1].startswith(("During handling", "The above"))
                ):
                    block.append(lines[i])
                    i += 1
                if i < len(lines):
                    block.append(lines[i])
                last = block[-1].strip()
                self.record_traceback("traceback", last, "\n".join(block))
            elif any(p.search(line) for p in ERROR_PATTERNS[1:]):
                self.record_traceback("log-error", line.strip(), line)
            i += 1

    def record_traceback(self, kind: str, last: str, text: str) -> None:
        signature = _signature(last)
        first = self.stats.tracebacks[signature] == 0
        self.stats.tracebacks[signature] += 1
        if first:
            self.problem(kind, text[-1500:], True, f"{kind}:{signature}")

    async def watch_log(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.5)
            self.scan_log()

    async def drain(self) -> None:
        """After the run: /healthz must come back to no calls/media within ``--drain`` s."""
        assert self.switch is not None
        if self.switch.process is None or self.switch.process.returncode is not None:
            return
        try:
            health = await self.switch.wait_idle(self.args.drain)
            print(f"healthz after drain: {health}")
        except AssertionError as e:
            self.problem("leak", str(e), False)
        except Exception as e:  # /healthz itself failing is a finding too
            self.problem("leak", f"/healthz failed: {e!r}", False)


def _signature(line: str) -> str:
    """A line with numbers, hex ids and addresses blanked: equal bugs, equal signatures."""
    line = re.sub(r"^\S+ \S+ ", "", line.strip())  # the log's date and time
    return re.sub(r"0x[0-9a-f]+|\d+|CA[0-9a-f]{32}", "#", line)[:200]


# ---- run, replay, summary ------------------------------------------------------------


async def fuzz(args: argparse.Namespace) -> int:
    require_tool("sipp", "sip-tester")
    with tempfile.TemporaryDirectory(prefix="sip-fuzz-") as tmp:
        harness = Harness(args, Path(tmp))
        await harness.start()
        assert harness.switch is not None
        print(
            f"switch on udp/tcp {harness.target[0]}:{harness.target[1]}, "
            f"log {harness.switch.log_path}; "
            f"seed {args.seed}, {args.duration} s at {args.rate} msg/s",
            flush=True,
        )
        udp = [await UdpEndpoint.open(harness.hub, ip) for ip in FUZZ_IPS]
        harness._cleanup += [ep.close for ep in udp]
        fuzzer = Fuzzer(harness.hub, udp, harness.target, Pacer(args.rate), args.exclude, args.only)
        monitors = [
            asyncio.create_task(m)
            for m in (
                harness.watch_process(),
                harness.probe_options(),
                harness.probe_calls(),
                harness.watch_log(),
            )
        ]
        for task in monitors:
            task.add_done_callback(functools.partial(_report_monitor, harness=harness))
        master = Random(args.seed)
        inflight: set[asyncio.Task[None]] = set()
        limit = asyncio.Semaphore(args.inflight)
        deadline = time.monotonic() + args.duration

        def finished(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            limit.release()
            _report_crash(task, harness)

        last_report = time.monotonic()
        while time.monotonic() < deadline:
            if not harness.up.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(harness.up.wait(), 1)
                continue
            await limit.acquire()
            task = asyncio.create_task(fuzzer.run_one(Random(master.getrandbits(64))))
            inflight.add(task)
            task.add_done_callback(finished)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                sent = sum(harness.stats.sent_by_method.values())
                print(
                    f"[{time.time() - harness.started:7.1f}s] sent {sent}, responses "
                    f"{sum(harness.stats.responses.values())}, "
                    f"problems {len(harness.stats.problems)}",
                    flush=True,
                )
            await asyncio.sleep(0)
        print("fuzzing done; waiting for scenarios in flight and draining", flush=True)
        if inflight:
            await asyncio.wait(inflight, timeout=15)
            for task in inflight:
                task.cancel()
        await asyncio.sleep(1)
        harness.scan_log()
        await harness.drain()
        harness.scan_log()
        for task in monitors:
            task.cancel()
        alive = harness.switch.process is not None and harness.switch.process.returncode is None
        code = await harness.close()
        if alive and code != 0:
            harness.problem("unclean-exit", f"switch exited {code} after SIGTERM", False)
        harness.scan_log()
        if args.keep:
            keep = RESULTS / f"sip-fuzz-{harness.stamp}-switch.log"
            assert harness.switch.log_path is not None
            keep.write_bytes(harness.switch.log_path.read_bytes())
            print(f"switch log kept: {keep.relative_to(REPO)}")
        summary(harness, fuzzer.count)
        return 1 if harness.stats.problems else 0


def _report_monitor(task: asyncio.Task[None], harness: Harness) -> None:
    """A monitor that stopped with an exception stops watching: a problem of the run."""
    if not task.cancelled() and task.exception() is not None:
        harness.problem("harness", f"a monitor failed: {task.exception()!r}", False)


def _report_crash(task: asyncio.Task[None], harness: Harness) -> None:
    """A scenario that raised is a bug in the harness: say so, do not hide it."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        harness.stats.probes["harness_errors"] += 1
        if harness.stats.probes["harness_errors"] <= 3:
            print(f"harness scenario error: {exc!r}", file=sys.stderr)


async def replay(args: argparse.Namespace) -> int:
    """Send a reproduction file's messages again, with their timing, to a fresh switch."""
    path = Path(args.replay)
    lines = path.read_text().splitlines()
    meta = json.loads(lines[0])["meta"]
    entries = [json.loads(line) for line in lines[1:]]
    sent = [e for e in entries if e["dir"] == "sent" and e["scenario"] != "auto"]
    if args.filter:
        sent = [e for e in sent if re.search(args.filter, e["scenario"])]
    # Tags the old switch handed out, per Call-ID, to map onto the fresh switch's.
    old_tags: dict[str, str] = {}
    for e in entries:
        if e["dir"] == "recv":
            msg = parse(e["data"].encode("latin-1"))
            if msg and msg.status and tag_of(msg.h("to")):
                old_tags.setdefault(msg.h("call-id"), tag_of(msg.h("to")))
    print(
        f"{path}: {meta['problem']}: {meta['detail'][:200]}\nreplaying {len(sent)} messages",
        flush=True,
    )
    args.seed = meta.get("seed", 0)
    with tempfile.TemporaryDirectory(prefix="sip-fuzz-replay-") as tmp:
        harness = Harness(args, Path(tmp))
        harness.stamp += "-replay"
        await harness.start()
        hub = harness.hub

        def learn(msg: SipMsg) -> None:
            old = old_tags.get(msg.h("call-id"))
            new = tag_of(msg.h("to"))
            if old and new and old != new:
                hub.to_tags[old] = new

        hub.on_response = learn
        old_sip = meta["switch_sip"]
        new_sip = f"{harness.target[0]}:{harness.target[1]}"
        monitors = [
            asyncio.create_task(m)
            for m in (harness.watch_process(), harness.probe_options(), harness.watch_log())
        ]
        udp: dict[str, UdpEndpoint] = {}
        tcp: dict[int, TcpConnection] = {}
        start = sent[0]["t"] if sent else 0.0
        t0 = time.monotonic()
        for e in sent:
            delay = (e["t"] - start) / args.speed - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if not harness.up.is_set():
                break
            text = e["data"].replace(old_sip, new_sip)
            for old, new in hub.to_tags.items():
                text = text.replace(old, new)
            data = text.encode("latin-1")
            ip = e["src"].rsplit(":", 1)[0]
            if e["transport"] == "UDP":
                if ip not in udp:
                    udp[ip] = await UdpEndpoint.open(hub, ip)
                udp[ip].send(data, harness.target, e["scenario"], e["kind"])
            else:
                if e["conn"] not in tcp:
                    with contextlib.suppress(OSError, TimeoutError):
                        tcp[e["conn"]] = await TcpConnection.open(hub, ip, harness.target)
                if e["conn"] in tcp:
                    tcp[e["conn"]].send(data, e["scenario"], e["kind"])
        await asyncio.sleep(args.replay_wait)
        harness.scan_log()
        died = (
            harness.switch is not None
            and harness.switch.process is not None
            and (harness.switch.process.returncode is not None or not harness.up.is_set())
        )
        for task in monitors:
            task.cancel()
        for conn in tcp.values():
            await conn.close()
        for ep in udp.values():
            ep.close()
        if not died:
            await harness.drain()
        code = await harness.close()
        if not died and code != 0:
            harness.problem("unclean-exit", f"switch exited {code} after SIGTERM", False)
        print(
            f"replay: {'REPRODUCED' if harness.stats.problems else 'no problem'}; "
            f"switch exit {code}"
        )
        for p in harness.stats.problems:
            print(f"  {p.kind}: {p.detail[:300]} {p.file}")
        return 1 if harness.stats.problems else 0


def summary(h: Harness, scenarios: int) -> None:
    s = h.stats
    elapsed = time.time() - h.started

    def row(title: str, counter: Counter[Any], top: int = 30) -> None:
        items = ", ".join(f"{k}={v}" for k, v in counter.most_common(top))
        print(f"{title:<22}{items or '-'}")

    print("\n==== sip_fuzz summary ====")
    print(
        f"{'elapsed':<22}{elapsed:.1f} s, seed {h.args.seed}, scenarios {scenarios}, "
        f"messages {sum(s.sent_by_method.values())}"
    )
    row("sent by method", s.sent_by_method)
    row("sent by scenario", s.sent_by_scenario)
    row("sent by transport", s.sent_by_transport)
    row("responses by status", Counter({str(k): v for k, v in s.responses.items()}))
    row("5xx/6xx by reason", s.server_errors, 8)
    row("switch requests", s.requests_from_switch)
    row("probes", s.probes)
    kinds = Counter(p.kind for p in s.problems)
    print(f"{'deaths':<22}{kinds['death']}  (restarts {h.restarts})")
    print(f"{'hangs':<22}{kinds['hang']}  call probe failures {kinds['call-probe']}")
    print(f"{'tracebacks/errors':<22}{sum(s.tracebacks.values())} ({len(s.tracebacks)} distinct)")
    print(f"{'leaks':<22}{kinds['leak']}")
    if s.problems:
        print("problems:")
        for p in s.problems:
            where = f"\n      repro: {p.file}" if p.file else ""
            print(f"  {p.t:7.1f}s {p.kind}: {p.detail.splitlines()[0][:240]}{where}")
        for signature, count in s.tracebacks.items():
            print(f"  log x{count}: {signature}")
    print("result:", "PROBLEMS FOUND" if s.problems else "clean")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600, help="seconds of fuzzing (600)")
    parser.add_argument("--rate", type=float, default=200, help="fuzz messages per second (200)")
    parser.add_argument(
        "--seed", type=int, default=1, help="RNG seed: same seed, same messages (1)"
    )
    parser.add_argument("--history", type=int, default=2000, help="messages kept for a repro file")
    parser.add_argument("--inflight", type=int, default=64, help="concurrent scenarios (64)")
    parser.add_argument("--call-every", type=float, default=10, help="seconds between probe calls")
    parser.add_argument(
        "--hang-kill",
        type=float,
        default=10,
        help="seconds without OPTIONS answers before the switch is killed",
    )
    parser.add_argument(
        "--drain", type=float, default=45, help="seconds for calls to drain at the end"
    )
    parser.add_argument("--max-repro", type=int, default=3, help="repro files per distinct problem")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="skip scenarios whose name starts with this (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="run only scenarios whose name starts with this (repeatable)",
    )
    parser.add_argument("--no-restart", action="store_true", help="stop at the first death")
    parser.add_argument("--keep", action="store_true", help="copy the switch log to bench/results/")
    parser.add_argument("--replay", metavar="FILE", help="resend a repro file to a fresh switch")
    parser.add_argument("--filter", metavar="REGEX", help="replay: only scenarios matching this")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="replay: time scale (2 = twice as fast)"
    )
    parser.add_argument(
        "--replay-wait", type=float, default=5, help="replay: seconds to watch afterwards"
    )
    args = parser.parse_args()
    if args.replay:
        return asyncio.run(replay(args))
    return asyncio.run(fuzz(args))


if __name__ == "__main__":
    sys.exit(main())
