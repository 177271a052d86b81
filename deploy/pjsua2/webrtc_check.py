#!/usr/bin/env python3
"""Check the pjsua2 build for what browser (WebRTC) legs need.

Run with the interpreter the wheel was installed into:

    .venv/bin/python deploy/pjsua2/webrtc_check.py            # JSON on stdout
    .venv/bin/python deploy/pjsua2/webrtc_check.py --log-file /tmp/pj.log

One pjsua2 endpoint on 127.0.0.1 (ephemeral ports), configured as the call engine
configures it (no pjsua worker threads, one thread polls everything), with three SIP
listeners: UDP, a "public" TCP one and a "relay" TCP one, and three accounts: the
default account (plain RTP) whose user and domain match the test INVITEs, a browser
account (ICE, rtcp-mux, mandatory DTLS-SRTP) bound to the relay listener as the call
engine's is, and an ICE account with media on every address. The SIP peers are raw
sockets in this process. It checks (patch numbers of deploy/pjsua2/patches):

- ice_any (0020): an ICE account whose media listen on every IPv4 and IPv6 address
  offers the machine's addresses as candidates: the netlink scans for deprecated IPv6
  addresses ran and returned (before 0020 they waited for ever: a watchdog ends a stuck
  run); timed from makeCall() to the INVITE;
- routing (0023): an INVITE over the relay listener reaches the browser account; the
  same INVITE over UDP and over the public TCP listener reaches the default account;
- tcp_nodelay (0025, 0027): the connections pjsua accepted over TCP (the relay
  listener) and over TLS have TCP_NODELAY;
- answers (0022): a Chromium-like offer (BUNDLE, mid, ICE, DTLS fingerprint, rtcp-mux,
  opus and PCMU) gets an answer with its a=mid and a=group:BUNDLE, ICE candidates (on
  127.0.0.1: 0020's loopback candidate) and a fingerprint; a plain offer with a mid gets
  the mid and the group, one without gets neither, and one with two audio lines in two
  groups gets both mids but only the group of the line pjsua accepts;
- browser_account_offer: what the browser account offers when it calls a browser
  (recorded for the report, refused with 486);
- no_sdp_offer: a call from the browser account with PJSUA_CALL_NO_SDP_OFFER sends an
  INVITE without SDP over the connection the peer opened to the relay listener, takes
  the offer in the 200 and sends its answer (with a=mid and BUNDLE) in the ACK;
- dtls (0021, 0023, 0024): DTLS-SRTP calls over ICE from the browser account to the
  relay listener (so to the browser account again) complete both handshakes and carry
  SRTP both ways, no single poll of the endpoint stalls (with a 4 Hz retransmission
  clock each completed handshake blocked the polling thread for about 250 ms), and no
  poll that completes a handshake takes 10 ms (with 0021's 50 Hz clock it waited about
  20 ms for the clock thread; 0024 stops the clock without waiting for its thread);
- dtls_renegotiation (0024): a re-INVITE that swaps the DTLS roles (a=setup) on an
  established browser-account call makes both ends run a new handshake on their
  transports, with a retransmission clock thread running again (the one stopped after
  the first handshake was not joined), and SRTP flows both ways again afterwards.

Prints one JSON object on stdout (pjsua's own output goes to stderr); "ok" is true when
every entry of "checks" is. Exit status 0 when ok, 1 when a check failed, 3 when a step
hung (the JSON then names it in "hung"). GPL-3.0-or-later.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import pjsua2 as pj

HOST = "127.0.0.1"
USER = "alice"  # the default account's user, and the To user of the routing INVITEs
STEP_TIMEOUT = 8.0  # seconds for one step before the watchdog ends the run
DTLS_CALLS = 3
# The longest one poll of the endpoint may take while DTLS handshakes complete. With the
# 4 Hz retransmission clock each completed handshake blocked its poll for about 250 ms
# (measured 246-258 ms: the clock thread had just started its first 250 ms sleep); with
# patch 0021's 50 Hz clock for about 20 ms.
POLL_STALL_LIMIT_MS = 200.0
# The longest a poll that completes a DTLS handshake may take (patch 0024). The poll's
# own work there (SRTP keys, the callback, maybe the other leg's handshake step) takes
# 1-3 ms on a small machine, and the packet is already waiting: both ends are in this
# process. Before 0024 the poll also joined the retransmission clock's thread, which
# sleeps until its next tick: about 20 ms at 0021's 50 Hz, since the handshake ends a
# few ms after that thread started its first 20 ms sleep (measured 14-22 ms). 10 ms
# leaves a busy shared machine a few ms of scheduling delay and is still half of that.
HANDSHAKE_POLL_LIMIT_MS = 10.0
# What pjsua logs (level 2) when a DTLS-SRTP handshake completes.
HANDSHAKE_DONE = "DTLS-SRTP negotiation completed"

T = TypeVar("T")

# ---------------------------------------------------------------------------------
# SDP


def browser_offer(ice_port: int, mid: str = "0") -> str:
    """An offer as Chromium (through JsSIP, ICE gathering complete) writes it."""
    fingerprint = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
    ssrc = secrets.randbelow(2**31)
    lines = [
        "v=0",
        f"o=- {secrets.randbelow(2**62)} 2 IN IP4 {HOST}",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS stream0",
        f"m=audio {ice_port} UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        f"c=IN IP4 {HOST}",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=candidate:1467250027 1 udp 2122260223 {HOST} {ice_port} typ host generation 0",
        f"a=ice-ufrag:{secrets.token_hex(2)}",
        f"a=ice-pwd:{secrets.token_hex(12)}",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
        f"a=mid:{mid}",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendrecv",
        "a=msid:stream0 track0",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        f"a=ssrc:{ssrc} cname:{secrets.token_hex(8)}",
        f"a=ssrc:{ssrc} msid:stream0 track0",
    ]
    return "\r\n".join(lines) + "\r\n"


def plain_offer(rtp_port: int, *mids: str) -> str:
    """A phone's offer: RTP/AVP, PCMU. With ``mids``: one audio line per mid, each
    with its a=mid and a BUNDLE group of its own."""
    lines = [
        "v=0",
        f"o=phone {secrets.randbelow(2**31)} 1 IN IP4 {HOST}",
        "s=-",
        f"c=IN IP4 {HOST}",
        "t=0 0",
    ]
    lines += [f"a=group:BUNDLE {mid}" for mid in mids]
    for i, mid in enumerate(mids or [None]):
        lines.append(f"m=audio {rtp_port + 2 * i} RTP/AVP 0 101")
        if mid is not None:
            lines.append(f"a=mid:{mid}")
        lines += ["a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def sdp_summary(sdp: str) -> dict[str, Any]:
    """What a WebRTC peer looks at in an answer."""
    lines = [line.strip() for line in sdp.splitlines() if line.strip()]
    media = [line for line in lines if line.startswith("m=")]
    attrs = [line[2:] for line in lines if line.startswith("a=")]

    def values(name: str) -> list[str]:
        return [a.split(":", 1)[1] if ":" in a else "" for a in attrs if a.split(":", 1)[0] == name]

    m_fields = media[0].split() if media else []
    rtpmaps = [v.split(" ", 1)[1] for v in values("rtpmap") if " " in v]
    fingerprint = values("fingerprint")
    return {
        "m": media,
        "profile": m_fields[2] if len(m_fields) > 2 else None,
        "port": int(m_fields[1]) if len(m_fields) > 1 else None,
        "codecs": rtpmaps,
        "mid": values("mid"),
        "group": values("group"),
        "candidates": len(values("candidate")),
        "ice_ufrag": bool(values("ice-ufrag")),
        "fingerprint": fingerprint[0].split()[0] if fingerprint else None,
        "setup": values("setup"),
        "rtcp_mux": bool([a for a in attrs if a == "rtcp-mux"]),
        "rtcp": values("rtcp"),
        "ssrc_lines": len(values("ssrc")),
        "msid": bool(values("msid")),
        "direction": [a for a in attrs if a in ("sendrecv", "sendonly", "recvonly", "inactive")],
    }


# ---------------------------------------------------------------------------------
# A raw SIP peer (one TCP connection or one UDP socket)


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str:
        compact = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m"}
        names = {name.lower(), compact.get(name.lower(), "")}
        for key, value in self.headers:
            if key.lower() in names:
                return value
        return ""

    def vias(self) -> list[str]:
        return [value for key, value in self.headers if key.lower() in ("via", "v")]

    @property
    def status(self) -> int:
        if self.first_line.startswith("SIP/2.0 "):
            return int(self.first_line.split()[1])
        return 0

    @property
    def method(self) -> str:
        return "" if self.status else self.first_line.split()[0]

    @property
    def cseq_method(self) -> str:
        return self.header("CSeq").split()[-1]


def parse_message(head: str, body: str) -> SipMessage:
    lines = head.split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        elif ":" in line:
            key, value = line.split(":", 1)
            headers.append((key.strip(), value.strip()))
    return SipMessage(lines[0], headers, body)


class SipPeer:
    """A SIP peer on a raw socket: sends what it is given, collects what arrives."""

    def __init__(self, transport: str, server: tuple[str, int]) -> None:
        self.transport = transport
        self.server = server
        if transport == "tcp":
            self.sock = socket.create_connection(server, timeout=2)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((HOST, 0))
            self.sock.connect(server)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.buf = b""
        self.inbox: list[SipMessage] = []
        self.closed = False

    @property
    def via_transport(self) -> str:
        return self.transport.upper()

    def send(self, text: str) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(text.encode())
        finally:
            self.sock.setblocking(False)

    def poll(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            if self.transport == "udp":
                head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
                self.inbox.append(parse_message(head, body))
            else:
                self.buf += data
                self._split_stream()

    def _split_stream(self) -> None:
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode(errors="replace")
            match = re.search(r"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
            length = int(match.group(1)) if match else 0
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length].decode(errors="replace")
            self.buf = self.buf[end + 4 + length :]
            self.inbox.append(parse_message(head, body))

    def take(self, pred: Callable[[SipMessage], bool]) -> SipMessage | None:
        for i, msg in enumerate(self.inbox):
            if pred(msg):
                return self.inbox.pop(i)
        return None

    def close(self) -> None:
        self.sock.close()
        self.closed = True


def request(
    peer: SipPeer,
    method: str,
    uri: str,
    *,
    call_id: str,
    from_tag: str,
    to: str,
    cseq: int,
    body: str = "",
    to_tag: str = "",
) -> str:
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{peer.via_transport} {HOST}:{peer.port};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:browser-peer@{HOST}>;tag={from_tag}",
        f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:browser-peer@{HOST}:{peer.port};transport={peer.transport}>",
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def response(peer: SipPeer, req: SipMessage, status: int, reason: str, body: str = "") -> str:
    to = req.header("To")
    if ";tag=" not in to:
        to += ";tag=" + secrets.token_hex(4)
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in req.vias()]
    lines += [
        f"From: {req.header('From')}",
        f"To: {to}",
        f"Call-ID: {req.header('Call-ID')}",
        f"CSeq: {req.header('CSeq')}",
        f"Contact: <sip:browser-peer@{HOST}:{peer.port};transport={peer.transport}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def contact_uri(msg: SipMessage) -> str:
    match = re.search(r"<([^>]+)>", msg.header("Contact"))
    return match.group(1) if match else msg.header("Contact")


def to_tag(msg: SipMessage) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", msg.header("To"))
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------------
# pjsua2 side


class Check:
    """Shared state: the endpoint, its accounts, what happened, the watchdog's step."""

    def __init__(self) -> None:
        self.ep = pj.Endpoint()
        self.incoming: list[str] = []  # the account each incoming call reached
        self.calls: list[Leg] = []
        self.errors: list[str] = []
        self.step = "starting"
        self.step_deadline = time.monotonic() + STEP_TIMEOUT
        self.polls_ms: list[float] = []  # how long each poll of the endpoint took
        self.log = PjLog()  # pjsua's log: counts the completed DTLS handshakes
        # How long each poll took that completed a DTLS handshake, and how long it ran
        # on after the handshake completed (the first one, if it completed several).
        self.handshake_polls_ms: list[float] = []
        self.after_handshake_ms: list[float] = []
        self.checks: dict[str, bool] = {}
        self.result: dict[str, Any] = {}

    def begin(self, step: str, timeout: float = STEP_TIMEOUT) -> None:
        self.step = step
        self.step_deadline = time.monotonic() + timeout

    def ok(self, name: str, cond: bool) -> bool:
        self.checks[name] = bool(cond)
        return bool(cond)

    def guard(self, fn: Callable[[], T]) -> T | None:
        """Run a callback body: an exception must never escape into pjsua2."""
        try:
            return fn()
        except Exception:  # noqa: BLE001 - recorded and reported
            self.errors.append(traceback.format_exc())
            return None

    def poll(self, peers: tuple[SipPeer, ...] = ()) -> None:
        handshakes = self.log.handshakes
        start = time.perf_counter()
        self.ep.libHandleEvents(5)
        end = time.perf_counter()
        self.polls_ms.append((end - start) * 1000)
        if self.log.handshakes != handshakes:
            self.handshake_polls_ms.append((end - start) * 1000)
            first_done = self.log.done_at[handshakes]
            self.after_handshake_ms.append((end - max(first_done, start)) * 1000)
        for peer in peers:
            peer.poll()

    def until(
        self, cond: Callable[[], T | None], peers: tuple[SipPeer, ...] = (), timeout: float = 5.0
    ) -> T | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(peers)
            value = cond()
            if value:
                return value
        return None

    def wait_msg(
        self, peer: SipPeer, pred: Callable[[SipMessage], bool], timeout: float = 5.0
    ) -> SipMessage | None:
        return self.until(lambda: peer.take(pred), (peer,), timeout)


class PjLog(pj.LogWriter):  # type: ignore[misc]
    """pjsua's log: notes when DTLS handshakes complete, writes the rest to stderr up
    to ``echo_level``. Called on the polling thread only (mainThreadOnly queues other
    threads' messages for it), so a handshake completed in a poll is noted in it."""

    def __init__(self) -> None:
        super().__init__()
        self.echo_level = 0
        self.handshakes = 0
        self.done_at: list[float] = []  # perf_counter() of each completed handshake

    def write(self, entry: pj.LogEntry) -> None:
        if HANDSHAKE_DONE in entry.msg:
            self.done_at.append(time.perf_counter())
            self.handshakes += 1
        if entry.level <= self.echo_level:
            sys.stderr.write(entry.msg if entry.msg.endswith("\n") else entry.msg + "\n")


def accepted_nodelay(peer: tuple[str, int]) -> bool | None:
    """Whether the socket pjsua accepted from ``peer`` (host, port) has TCP_NODELAY
    (patch 0025); None if no such socket is open in this process."""
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername()[:2] == peer:
                    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            finally:
                sock.close()
    return None


def live_threads() -> int:
    """The process's threads that have not exited (a DTLS retransmission clock runs
    one while its handshake is in progress)."""
    return len(os.listdir("/proc/self/task"))


class Leg(pj.Call):  # type: ignore[misc]
    """A call; ``Check.calls`` holds it until shutdown."""

    def __init__(self, check: Check, acc: Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.check = check
        self.account = acc.name
        self.state = 0
        self.audio_index = -1
        self.swap_setup = False  # in the next SDP: a=setup:active <-> a=setup:passive
        self.swapped: list[str] = []  # the a=setup values swapped
        check.calls.append(self)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802 - pjsua2 name
        def body() -> None:
            self.state = self.getInfo().state

        self.check.guard(body)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        def body() -> None:
            info = self.getInfo()  # keep it: its media vector dies with it
            for media in info.media:
                active = media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                if media.type == pj.PJMEDIA_TYPE_AUDIO and active:
                    # The null device's silence, so that RTP flows both ways.
                    self.audio_index = media.index
                    tx = self.check.ep.audDevManager().getCaptureDevMedia()
                    tx.startTransmit(self.getAudioMedia(media.index))

        self.check.guard(body)

    def onCallSdpCreated(self, prm: pj.OnCallSdpCreatedParam) -> None:  # noqa: N802
        def body() -> None:
            if not self.swap_setup:
                return
            self.swap_setup = False
            swap = {"active": "passive", "passive": "active"}

            def repl(m: re.Match[str]) -> str:
                self.swapped.append(m.group(1))
                return "a=setup:" + swap[m.group(1)]

            prm.sdp.wholeSdp = re.sub(r"a=setup:(active|passive)\b", repl, prm.sdp.wholeSdp)

        self.check.guard(body)

    def rx_packets(self) -> int:
        if self.audio_index < 0:
            return 0
        try:
            return int(self.getStreamStat(self.audio_index).rtcp.rxStat.pkt)
        except pj.Error:
            return 0


class Account(pj.Account):  # type: ignore[misc]
    """Answers every incoming call with 200 and notes which account took it."""

    def __init__(self, check: Check, name: str) -> None:
        super().__init__()
        self.check = check
        self.name = name

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        def body() -> None:
            self.check.incoming.append(self.name)
            leg = Leg(self.check, self, prm.callId)
            op = pj.CallOpParam(True)
            op.statusCode = 200
            leg.answer(op)

        self.check.guard(body)


def make_account(
    check: Check, name: str, id_uri: str, browser_tid: int | None, ice_any: bool = False
) -> Account:
    """The default account (plain RTP), the browser account (bound to ``browser_tid``),
    or with ``ice_any`` an ICE account whose media listen on every IPv4 and IPv6
    address (its host candidates are the machine's addresses: the netlink scans)."""
    acfg = pj.AccountConfig()
    acfg.idUri = id_uri
    acfg.regConfig.registerOnAdd = False
    acfg.mediaConfig.transportConfig.boundAddress = "" if ice_any else HOST
    acfg.mediaConfig.transportConfig.port = 0
    if ice_any:
        acfg.natConfig.iceEnabled = True
        acfg.mediaConfig.ipv6Use = pj.PJSUA_IPV6_ENABLED
    if browser_tid is not None:
        # The call engine's browser account (switch/engine/core.py).
        acfg.sipConfig.transportId = browser_tid
        acfg.natConfig.iceEnabled = True
        acfg.mediaConfig.rtcpMuxEnabled = True
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        acfg.mediaConfig.srtpSecureSignaling = 0
        acfg.mediaConfig.srtpOpt.keyings.clear()
        acfg.mediaConfig.srtpOpt.keyings.append(pj.PJMEDIA_SRTP_KEYING_DTLS_SRTP)
    else:
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_DISABLED
    acc = Account(check, name)
    acc.create(acfg, browser_tid is None and not ice_any)
    return acc


# ---------------------------------------------------------------------------------
# The steps


@dataclass
class Setup:
    udp: tuple[str, int]
    tcp: tuple[str, int]
    relay: tuple[str, int]
    tls: tuple[str, int]
    default: Account
    browser: Account
    ice_any: Account


def start(check: Check, log_level: int, log_file: str | None) -> Setup:
    ep = check.ep
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = 32
    cfg.medConfig.threadCnt = 0
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    # The writer gets messages up to consoleLevel and must see the level 2 message of a
    # completed DTLS handshake; it writes to stderr what was asked for. libDestroy()
    # deletes the writer: pjsua2 owns it.
    check.log.echo_level = 0 if log_file else log_level
    cfg.logConfig.level = max(log_level, 2)
    cfg.logConfig.consoleLevel = max(check.log.echo_level, 2)
    check.log.__disown__()
    cfg.logConfig.writer = check.log
    if log_file:
        cfg.logConfig.filename = log_file
    ep.libInit(cfg)

    def listener(kind: int) -> tuple[int, tuple[str, int]]:
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = HOST
        tcfg.port = 0
        tid = ep.transportCreate(kind, tcfg)
        host, port = ep.transportGetInfo(tid).localName.rsplit(":", 1)
        return tid, (host, int(port))

    _, udp = listener(pj.PJSIP_TRANSPORT_UDP)
    _, tcp = listener(pj.PJSIP_TRANSPORT_TCP)
    relay_tid, relay = listener(pj.PJSIP_TRANSPORT_TCP)
    tls = tls_listener(ep)
    ep.audDevManager().setNullDev()
    ep.libStart()
    default = make_account(check, "default", f"sip:{USER}@{HOST}", None)
    browser = make_account(
        check, "browser", f"sip:browser@{relay[0]}:{relay[1]};transport=tcp", relay_tid
    )
    ice_any = make_account(check, "ice_any", f"sip:ice@{HOST}", None, ice_any=True)
    return Setup(udp, tcp, relay, tls, default, browser, ice_any)


def tls_listener(ep: pj.Endpoint) -> tuple[str, int]:
    """A TLS listener with a self-signed certificate (made by openssl in a temporary
    directory, kept until the process exits)."""
    directory = tempfile.mkdtemp(prefix="webrtc-check-tls-")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = HOST
    tcfg.port = 0
    tcfg.tlsConfig.certFile = cert
    tcfg.tlsConfig.privKeyFile = key
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
    host, port = ep.transportGetInfo(tid).localName.rsplit(":", 1)
    return host, int(port)


def step_tcp_nodelay(check: Check, s: Setup, relay_peer: SipPeer) -> None:
    """0025, 0027: the SIP connections pjsua accepted, over TCP and over TLS, have
    TCP_NODELAY (no Nagle delay behind an unacknowledged message)."""
    check.begin("TCP_NODELAY on accepted TCP and TLS connections")
    tcp = accepted_nodelay(relay_peer.sock.getsockname())
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(s.tls, timeout=2)
    raw.setblocking(False)
    tls = context.wrap_socket(raw, do_handshake_on_connect=False)
    deadline = time.monotonic() + 5
    shaken = False
    while not shaken and time.monotonic() < deadline:  # the endpoint answers in its polls
        check.poll()
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError):
            tls.do_handshake()
            shaken = True
    nodelay_tls = accepted_nodelay(tls.getsockname()) if shaken else None
    tls.close()
    check.result["accepted_nodelay"] = {"tcp": tcp, "tls": nodelay_tls}
    check.ok("relay_accepted_socket_nodelay", tcp is True)
    check.ok("tls_accepted_socket_nodelay", nodelay_tls is True)


def invite_and_answer(
    check: Check, peer: SipPeer, server: tuple[str, int], offer: str
) -> tuple[SipMessage | None, float, str]:
    """Send an INVITE to alice, take the final response, ACK and BYE a 200.

    Returns (the final response, INVITE -> final response in ms, the account that
    took the call)."""
    call_id = secrets.token_hex(10) + "@webrtc-check"
    from_tag = secrets.token_hex(4)
    uri = f"sip:{USER}@{server[0]}:{server[1]};transport={peer.transport}"
    to = f"sip:{USER}@{HOST}"
    before = len(check.incoming)
    sent = time.monotonic()
    peer.send(
        request(peer, "INVITE", uri, call_id=call_id, from_tag=from_tag, to=to, cseq=1, body=offer)
    )
    final = check.wait_msg(peer, lambda m: m.cseq_method == "INVITE" and m.status >= 200)
    took = (time.monotonic() - sent) * 1000
    account = check.incoming[before] if len(check.incoming) > before else ""
    if final is None:
        return None, took, account
    tag = to_tag(final)
    target = contact_uri(final) if final.status == 200 else uri
    peer.send(
        request(peer, "ACK", target, call_id=call_id, from_tag=from_tag, to=to, cseq=1, to_tag=tag)
    )
    if final.status == 200:
        peer.send(
            request(
                peer, "BYE", target, call_id=call_id, from_tag=from_tag, to=to, cseq=2, to_tag=tag
            )
        )
        check.wait_msg(peer, lambda m: m.cseq_method == "BYE" and m.status >= 200)
    return final, took, account


def step_routing_and_answers(check: Check, s: Setup) -> SipPeer:
    """(0023, 0022, 0020) INVITEs over the three listeners; returns the relay peer."""
    check.begin("routing: INVITE over the relay listener (ICE media transport)")
    ice_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the offer's candidate
    ice_sock.bind((HOST, 0))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the plain offers' RTP port
    sink.bind((HOST, 0))
    relay_peer = SipPeer("tcp", s.relay)
    final, took, account = invite_and_answer(
        check, relay_peer, s.relay, browser_offer(ice_sock.getsockname()[1])
    )
    answer = sdp_summary(final.body) if final is not None else {}
    check.result["browser_invite"] = {
        "status": final.status if final else None,
        "account": account,
        "invite_to_200_ms": round(took, 1),
        "answer": answer,
        "answer_sdp": final.body if final else "",
    }
    check.ok("relay_invite_answered_200", final is not None and final.status == 200)
    check.ok("relay_invite_reaches_browser_account", account == "browser")
    check.ok("browser_answer_mid_0", answer.get("mid") == ["0"])
    check.ok("browser_answer_group_bundle_0", answer.get("group") == ["BUNDLE 0"])
    check.ok("browser_answer_has_ice_candidates", answer.get("candidates", 0) > 0)
    check.ok("browser_answer_has_fingerprint", bool(answer.get("fingerprint")))

    plain: dict[str, Any] = {}
    for name, transport, server, mids in (
        ("udp", "udp", s.udp, ()),
        ("public_tcp", "tcp", s.tcp, ("a0",)),
        # pjsua answers one audio line: it rejects the second after negotiating
        # and negotiates again; the second group must not survive that.
        ("udp_two_lines", "udp", s.udp, ("a", "b")),
    ):
        check.begin(f"routing: INVITE over the {name} listener")
        peer = SipPeer(transport, server)
        offer = plain_offer(sink.getsockname()[1], *mids)
        final, took, account = invite_and_answer(check, peer, server, offer)
        peer.close()
        answer = sdp_summary(final.body) if final is not None else {}
        plain[name] = {
            "status": final.status if final else None,
            "account": account,
            "offer_mids": mids,
            "answer": {k: answer.get(k) for k in ("m", "mid", "group", "candidates")},
        }
        check.ok(f"{name}_invite_reaches_default_account", account == "default")
        check.ok(f"{name}_invite_answered_200", final is not None and final.status == 200)
        check.ok(f"{name}_answer_mids", answer.get("mid") == list(mids))
        check.ok(f"{name}_answer_group", answer.get("group") == [f"BUNDLE {m}" for m in mids[:1]])
    check.result["plain_invites"] = plain
    ice_sock.close()
    sink.close()
    return relay_peer


def step_ice_any(check: Check, s: Setup) -> None:
    """(0020) An ICE media transport on every address: the netlink scans run."""
    check.begin("ice_any: ICE media transport on 0.0.0.0 and ::")
    peer = SipPeer("udp", s.udp)
    leg = Leg(check, s.ice_any)
    started = time.monotonic()
    leg.makeCall(f"sip:peer@{HOST}:{peer.port}", pj.CallOpParam(True))
    invite = check.wait_msg(peer, lambda m: m.method == "INVITE")
    took = (time.monotonic() - started) * 1000
    offer = sdp_summary(invite.body) if invite is not None else {}
    candidates = re.findall(
        r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", invite.body if invite else "", re.M
    )
    check.result["ice_any"] = {
        "make_call_to_invite_ms": round(took, 1),
        "candidates": candidates,
        "profile": offer.get("profile"),
    }
    check.ok("ice_any_offer_sent", invite is not None and offer.get("candidates", 0) > 0)
    if invite is not None:
        peer.send(response(peer, invite, 486, "Busy Here"))
    check.until(lambda: leg.state == pj.PJSIP_INV_STATE_DISCONNECTED, (peer,), 2.0)
    peer.close()


def step_browser_account_offer(check: Check, s: Setup, peer: SipPeer) -> None:
    """What the browser account offers to a browser (recorded, then refused 486)."""
    check.begin("offer: call with SDP from the browser account")
    leg = Leg(check, s.browser)
    leg.makeCall(f"sip:browser-peer@{HOST}:{peer.port};transport=tcp", pj.CallOpParam(True))
    invite = check.wait_msg(peer, lambda m: m.method == "INVITE")
    offer = sdp_summary(invite.body) if invite is not None else {}
    check.result["browser_account_offer"] = {"offer": offer}
    check.ok("browser_account_offer_sent", bool(offer.get("candidates")))
    if invite is not None:
        peer.send(response(peer, invite, 486, "Busy Here"))
        check.wait_msg(peer, lambda m: m.method == "ACK", 2.0)
    check.until(lambda: leg.state == pj.PJSIP_INV_STATE_DISCONNECTED, (peer,), 2.0)


def step_no_sdp_offer(check: Check, s: Setup, peer: SipPeer) -> None:
    """A delayed-offer call from the browser account over the peer's own connection."""
    check.begin("no_sdp_offer: call from the browser account without SDP")
    ice_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ice_sock.bind((HOST, 0))
    leg = Leg(check, s.browser)
    prm = pj.CallOpParam(True)
    prm.opt.flag |= pj.PJSUA_CALL_NO_SDP_OFFER
    started = time.monotonic()
    leg.makeCall(f"sip:browser-peer@{HOST}:{peer.port};transport=tcp", prm)
    invite = check.wait_msg(peer, lambda m: m.method == "INVITE")
    result: dict[str, Any] = {"invite_arrived": invite is not None}
    check.ok("no_sdp_offer_invite_over_peer_connection", invite is not None)
    if invite is None:
        check.result["no_sdp_offer"] = result
        return
    result["make_call_to_invite_ms"] = round((time.monotonic() - started) * 1000, 1)
    result["invite_content_length"] = invite.header("Content-Length")
    check.ok("no_sdp_offer_invite_without_sdp", not invite.body.strip())
    offer = browser_offer(ice_sock.getsockname()[1])
    peer.send(response(peer, invite, 200, "OK", offer))
    ack = check.wait_msg(peer, lambda m: m.method == "ACK")
    answer = sdp_summary(ack.body) if ack is not None and ack.body.strip() else {}
    result["ack_has_sdp"] = bool(answer)
    result["answer"] = answer
    result["answer_sdp"] = ack.body if ack is not None else ""
    check.ok("no_sdp_offer_answer_in_ack", bool(answer))
    check.ok("no_sdp_offer_answer_mid_0", answer.get("mid") == ["0"])
    check.ok("no_sdp_offer_answer_group_bundle_0", answer.get("group") == ["BUNDLE 0"])
    check.ok("no_sdp_offer_answer_has_ice_and_fingerprint", bool(answer.get("candidates")))
    result["confirmed"] = bool(
        check.until(lambda: leg.state == pj.PJSIP_INV_STATE_CONFIRMED, (peer,), 2.0)
    )
    check.ok("no_sdp_offer_call_confirmed", result["confirmed"])
    leg.hangup(pj.CallOpParam(True))
    bye = check.wait_msg(peer, lambda m: m.method == "BYE")
    if bye is not None:
        peer.send(response(peer, bye, 200, "OK"))
    check.until(lambda: leg.state == pj.PJSIP_INV_STATE_DISCONNECTED, (peer,), 2.0)
    ice_sock.close()
    check.result["no_sdp_offer"] = result


def step_dtls(check: Check, s: Setup) -> None:
    """DTLS-SRTP over ICE between browser-account legs of this endpoint (0021, 0020).

    One call at a time, so the polls that complete a call's two handshakes are timed
    apart from the other calls'."""
    check.begin("dtls: browser-account calls to the relay listener", STEP_TIMEOUT + 4)
    check.polls_ms.clear()
    handshakes = check.log.handshakes
    setups: list[float] = []
    callees: set[str] = set()
    flowing_calls = 0
    for _ in range(DTLS_CALLS):
        before = len(check.calls)
        started = time.monotonic()
        caller = Leg(check, s.browser)
        caller.makeCall(
            f"sip:browser@{s.relay[0]}:{s.relay[1]};transport=tcp", pj.CallOpParam(True)
        )

        def flowing(before: int = before) -> bool:
            legs = check.calls[before:]
            return len(legs) == 2 and all(leg.rx_packets() > 0 for leg in legs)

        if check.until(flowing, timeout=3.0):
            flowing_calls += 1
            setups.append(round((time.monotonic() - started) * 1000, 1))
        callees.update(leg.account for leg in check.calls[before + 1 :])
        caller.hangup(pj.CallOpParam(True))

        def ended(caller: Leg = caller) -> bool:
            return caller.state == pj.PJSIP_INV_STATE_DISCONNECTED

        check.until(ended, timeout=2.0)
    slowest = sorted(check.polls_ms, reverse=True)[:5]
    handshake_ms = max(check.handshake_polls_ms, default=HANDSHAKE_POLL_LIMIT_MS)
    check.result["dtls"] = {
        "calls": DTLS_CALLS,
        "calls_with_srtp_both_ways": flowing_calls,
        "callee_accounts": sorted(callees),
        "setup_ms": setups,
        "slowest_polls_ms": [round(ms, 1) for ms in slowest],
        "poll_limit_ms": POLL_STALL_LIMIT_MS,
        "handshakes": check.log.handshakes - handshakes,
        **handshake_polls(check),
    }
    check.ok("dtls_srtp_over_ice_both_ways", flowing_calls == DTLS_CALLS)
    check.ok(
        "dtls_handshakes_do_not_stall_the_poll",
        bool(slowest) and slowest[0] < POLL_STALL_LIMIT_MS,
    )
    check.ok("dtls_handshakes_logged", check.log.handshakes - handshakes == 2 * DTLS_CALLS)
    check.ok(
        "dtls_handshake_polls_do_not_wait_for_the_clock", handshake_ms < HANDSHAKE_POLL_LIMIT_MS
    )


def handshake_polls(check: Check) -> dict[str, Any]:
    """The polls that completed DTLS handshakes so far, slowest first (and empties the
    lists)."""
    polls = sorted(check.handshake_polls_ms, reverse=True)
    after = sorted(check.after_handshake_ms, reverse=True)
    check.handshake_polls_ms.clear()
    check.after_handshake_ms.clear()
    return {
        "handshake_polls_ms": [round(ms, 2) for ms in polls],
        "after_handshake_ms": [round(ms, 2) for ms in after],
        "handshake_poll_limit_ms": HANDSHAKE_POLL_LIMIT_MS,
    }


def step_dtls_renegotiation(check: Check, s: Setup) -> None:
    """(0024) A re-INVITE that swaps the DTLS roles on an established call.

    The caller offers a=setup:active where it was passive (its own SDP, edited in
    onCallSdpCreated): the callee answers passive, and each end resets its DTLS state
    and runs a new handshake on the same transport, restarting the retransmission clock
    that stopped after the first handshake. Between polls the new handshakes wait for
    packets with their clock threads running: the process has more live threads than
    before the re-INVITE (with a clock that did not restart: as many). Then SRTP, with
    the new keys, flows both ways again."""
    check.begin("dtls_renegotiation: re-INVITE with swapped DTLS roles", STEP_TIMEOUT + 4)
    result: dict[str, Any] = {}
    check.result["dtls_renegotiation"] = result
    before = len(check.calls)
    caller = Leg(check, s.browser)
    caller.makeCall(f"sip:browser@{s.relay[0]}:{s.relay[1]};transport=tcp", pj.CallOpParam(True))

    def legs() -> list[Leg]:
        return check.calls[before:]

    result["call_flowing"] = bool(
        check.until(
            lambda: len(legs()) == 2 and all(leg.rx_packets() > 0 for leg in legs()), timeout=3.0
        )
    )
    check.ok("dtls_renegotiation_call_flowing", result["call_flowing"])
    if result["call_flowing"]:
        # The first handshakes' clock threads leave within a tick (20 ms) of them.
        check.until(lambda: None, timeout=0.1)
        idle_threads = live_threads()
        handshakes = check.log.handshakes
        check.handshake_polls_ms.clear()
        check.after_handshake_ms.clear()
        caller.swap_setup = True
        caller.reinvite(pj.CallOpParam(True))
        most_threads = idle_threads

        def renegotiated() -> bool:
            nonlocal most_threads
            if check.log.handshakes < handshakes + 2:
                most_threads = max(most_threads, live_threads())
                return False
            return True

        done = bool(check.until(renegotiated, timeout=3.0))
        rx = [leg.rx_packets() for leg in legs()]
        flowing = bool(
            done
            and check.until(
                lambda: all(leg.rx_packets() > n for leg, n in zip(legs(), rx, strict=False)),
                timeout=2.0,
            )
        )
        result.update(
            offer_setup_swapped=caller.swapped,
            handshakes=check.log.handshakes - handshakes,
            live_threads_before=idle_threads,
            live_threads_during=most_threads,
            rx_packets_at_handshake=rx,
            rx_packets_after=[leg.rx_packets() for leg in legs()],
            states=[leg.state for leg in legs()],
            **handshake_polls(check),
        )
        check.ok("dtls_renegotiation_offer_swapped_setup", len(caller.swapped) == 1)
        check.ok("dtls_renegotiation_both_handshakes_completed", done)
        check.ok("dtls_renegotiation_clock_threads_running", most_threads > idle_threads)
        check.ok("dtls_renegotiation_srtp_both_ways", flowing)
        check.ok(
            "dtls_renegotiation_calls_confirmed",
            all(leg.state == pj.PJSIP_INV_STATE_CONFIRMED for leg in legs()),
        )
        check.ok(
            "dtls_renegotiation_polls_do_not_wait_for_the_clock",
            max(result["handshake_polls_ms"], default=0.0) < HANDSHAKE_POLL_LIMIT_MS,
        )
    caller.hangup(pj.CallOpParam(True))
    check.until(lambda: caller.state == pj.PJSIP_INV_STATE_DISCONNECTED, timeout=2.0)


# ---------------------------------------------------------------------------------


def shutdown(check: Check, accounts: list[Account]) -> None:
    """Hang up, drop every pjsua2 object, destroy the library (in that order: a Call
    or Account object that outlives libDestroy() aborts the process)."""
    check.begin("shutting down")
    active = [leg for leg in check.calls if leg.isActive()]
    while active:
        active.pop().hangup(pj.CallOpParam(True))
    check.until(lambda: not any(leg.isActive() for leg in check.calls), timeout=2.0)
    check.calls.clear()
    for acc in accounts:
        acc.shutdown()
    accounts.clear()
    gc.collect()
    check.ep.libDestroy()
    check.step_deadline = float("inf")


def watchdog(check: Check, out: TextIO) -> None:
    """End the process with a JSON verdict if a step hangs (e.g. inside pjsua)."""
    while True:
        time.sleep(0.2)
        if time.monotonic() > check.step_deadline:
            check.result.update(
                ok=False, hung=check.step, checks=check.checks, callback_errors=check.errors
            )
            out.write(json.dumps(check.result) + "\n")
            out.flush()
            os._exit(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", type=int, default=0, help="pjsua log level (0-6)")
    parser.add_argument("--log-file", help="write pjsua's log there instead of stderr")
    args = parser.parse_args()

    # stdout carries the JSON only: whatever pjsua prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    check = Check()
    threading.Thread(target=watchdog, args=(check, out), daemon=True).start()
    check.result["pjsua2"] = ""
    accounts: list[Account] = []
    try:
        s = start(check, args.log_level, args.log_file)
        accounts += [s.default, s.browser, s.ice_any]
        check.result["pjsua2"] = check.ep.libVersion().full
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            check.result["wheel"] = importlib.metadata.version("pjsua2")
        step_ice_any(check, s)
        relay_peer = step_routing_and_answers(check, s)
        step_tcp_nodelay(check, s, relay_peer)
        step_browser_account_offer(check, s, relay_peer)
        step_no_sdp_offer(check, s, relay_peer)
        relay_peer.close()
        step_dtls(check, s)
        step_dtls_renegotiation(check, s)
    except Exception:  # noqa: BLE001 - reported in the JSON
        check.errors.append(traceback.format_exc())
    shutdown(check, accounts)
    check.ok("no_exception", not check.errors)
    check.result["checks"] = check.checks
    check.result["callback_errors"] = check.errors
    check.result["ok"] = all(check.checks.values())
    out.write(json.dumps(check.result) + "\n")
    out.flush()
    return 0 if check.result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
