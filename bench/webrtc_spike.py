"""WebRTC media spike: who terminates a browser leg, pjsua2 itself or aiortc?

Runs N bridged "browser" legs through one engine process and measures what each
costs. Every browser leg is an aiortc peer in this process (ICE, DTLS-SRTP with
fingerprints, rtcp-mux, one audio m-line with BUNDLE attributes, opus 48 kHz by
default) paired with a plain "phone" (PCMU over UDP, also in this process). The
engine process (a child of this one) bridges the two in pjsua2's conference bridge:

    browser (aiortc) --DTLS-SRTP/ICE--> engine --plain RTP--> phone
                     <----------------         <-----------

  --candidate pjsua2: the browser's offer goes in a SIP INVITE to a pjsua2 account
      with ICE, rtcp-mux, mandatory DTLS-SRTP and opus; pjsua2 terminates it. Needs
      a pjsua2 build with the ICE netlink fix, deploy/pjsua2/patches/0020 (the wheel
      `make install` builds; another build's interpreter with --engine-python).
  --candidate aiortc: aiortc in the engine process answers the offer, decodes the
      browser's audio, re-encodes it as PCMU to a plain-RTP pjsua2 leg over
      loopback (and back: PCMU from pjsua2 to aiortc's encoder).

Each direction carries tone bursts (browser 700 Hz, phone 1100 Hz; 200 ms every
second over a quiet background of the same tone). The receiver finds each burst's
onset to the sample and matches it to the sender's send time, which gives the
one-way delay through the engine (both peers share this process's clock). Setup
time is INVITE/offer sent -> first audio received in both directions. CPU is the
engine process's utime+stime over the measuring window (/proc/PID/stat), less its
idle rate, per leg per second, with a per-thread split.

So that 100 test browsers fit on two cores beside the engine, they replay one tone
cycle encoded once (opus or PCMU) instead of encoding live, and only --probes legs
(10) decode what they receive; the rest count packets. "saturated" says when the
machine could not keep every leg at 50 packets/s each way. pjsua2 without
deploy/pjsua2/patches/0022 answers without a=mid and a=group:BUNDLE, which WebRTC peers
need: bundle_answer() then adds them (it leaves an answer that has them alone).

    .venv/bin/python bench/webrtc_spike.py --candidate aiortc --legs 10 --seconds 20
    .venv/bin/python bench/webrtc_spike.py --candidate pjsua2 --legs 10 --seconds 20

Everything binds to 127.0.0.1; every wait is bounded; the engine child is stopped
by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

FRAME_MS = 20
BROWSER_FREQ = 700.0
PHONE_FREQ = 1100.0
BURST_FRAMES = 10  # 200 ms
CYCLE_FRAMES = 50  # one burst per second
BURST_AMP = 12000.0
BACKGROUND_AMP = 240.0  # 34 dB below the bursts: "media is flowing"
ONSET_THRESHOLD = 0.3 * BURST_AMP
AUDIO_THRESHOLD = 0.25 * BACKGROUND_AMP

# ---------------------------------------------------------------------------------
# G.711 mu-law (lookup tables from the project's media.analysis) and RTP

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from media.analysis import g711_decode, g711_encode, tone_power  # noqa: E402

_ULAW_DECODE = np.asarray(g711_decode(bytes(range(256)), "pcmu")).astype(np.int16)
_ULAW_ENCODE = np.frombuffer(g711_encode(np.arange(-32768, 32768), "pcmu"), dtype=np.uint8)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return _ULAW_ENCODE[pcm.astype(np.int32) + 32768].tobytes()


def ulaw_decode(payload: bytes) -> np.ndarray:
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def rtp_payload(data: bytes) -> bytes | None:
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    start = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if len(data) < start + 4:
            return None
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data)
    if data[0] & 0x20:  # padding
        end -= data[-1]
    return data[start:end]


class RtpSender:
    def __init__(self, payload_type: int = 0) -> None:
        self.pt = payload_type
        self.seq = random.randrange(65536)
        self.ts = random.randrange(1 << 32)
        self.ssrc = random.randrange(1 << 32)

    def packet(self, payload: bytes, samples: int) -> bytes:
        header = struct.pack("!BBHII", 0x80, self.pt, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + samples) & 0xFFFFFFFF
        return header + payload


def tone_cycle(freq: float, rate: int) -> list[np.ndarray]:
    """One second of 20 ms int16 frames: a burst, then the quiet background."""
    n = rate * FRAME_MS // 1000
    t = np.arange(n * CYCLE_FRAMES) / rate
    sine = np.sin(2 * math.pi * freq * t)
    amp = np.full(t.size, BACKGROUND_AMP)
    amp[: n * BURST_FRAMES] = BURST_AMP
    pcm = (sine * amp).astype(np.int16)
    return [pcm[i * n : (i + 1) * n] for i in range(CYCLE_FRAMES)]


@dataclass
class Detector:
    """Finds tone-burst onsets (to the sample) and the first audible frame."""

    freq: float
    first_audio: float | None = None
    onsets: list[float] = field(default_factory=list)
    active: bool = False
    capture: list[np.ndarray] = field(default_factory=list)
    captured: np.ndarray | None = None
    capture_rate: int = 8000
    frames: int = 0

    def feed(self, samples: np.ndarray, rate: int, arrived: float) -> None:
        self.frames += 1
        peak = np.abs(samples)
        if self.first_audio is None and float(peak.max(initial=0)) > AUDIO_THRESHOLD:
            self.first_audio = arrived
        over = np.flatnonzero(peak > ONSET_THRESHOLD)
        active = over.size > 0
        if active and not self.active:
            # The frame is complete when it arrives; a frame starting at the onset
            # would have been complete over[0] samples later.
            self.onsets.append(arrived + over[0] / rate)
            if self.captured is None:
                self.capture = []
                self.capture_rate = rate
        if active and self.captured is None:
            self.capture.append(samples.astype(np.float64))
        elif not active and self.active and self.captured is None and len(self.capture) >= 4:
            self.captured = np.concatenate(self.capture[1:-1])  # whole frames of tone
        self.active = active


def match_delays(sent: list[float], onsets: list[float], start: float, end: float) -> list[float]:
    """One-way delays: each onset minus the latest burst sent before it."""
    delays = []
    sent_arr = np.asarray(sent)
    for onset in onsets:
        if not start <= onset <= end or sent_arr.size == 0:
            continue
        i = int(np.searchsorted(sent_arr, onset, side="right")) - 1
        if i >= 0 and onset - sent_arr[i] < 0.6:
            delays.append(onset - sent_arr[i])
    return delays


def debug(msg: str) -> None:
    if os.environ.get("SPIKE_DEBUG"):
        print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """utime+stime per thread (name:tid), seconds."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name, rest = task.joinpath("stat").read_text().split("(", 1)[1].rsplit(")", 1)
            fields = rest.split()
            out[f"{name}:{task.name}"] = (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK"
            )
    return out


def loopback_ice() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates: this spike is loopback only."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# ---------------------------------------------------------------------------------
# A minimal SIP UAC over UDP (INVITE with SDP, ACK, BYE): enough to hand an offer to
# pjsua2, as the switch's SIP-over-WebSocket edge would.


class SipUac(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.pending: dict[str, asyncio.Future[tuple[int, dict[str, str], str]]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        call_id = headers.get("call-id", headers.get("i", ""))
        if lines[0].startswith("SIP/2.0 "):
            code = int(lines[0].split()[1])
            fut = self.pending.get(call_id + headers.get("cseq", ""))
            if code >= 200 and fut is not None and not fut.done():
                fut.set_result((code, headers, body))
            elif code >= 200 and "INVITE" in headers.get("cseq", ""):
                self._ack(headers, addr)  # a retransmitted 2xx: ACK again
        else:  # a request from pjsua2 (BYE, OPTIONS, ...): 200 without a body
            vias = [v for v in lines[1:] if v.lower().startswith(("via:", "v:"))]
            reply = ["SIP/2.0 200 OK", *vias]
            for name in ("from", "to", "call-id", "cseq"):
                reply.append(f"{name}: {headers.get(name, '')}")
            reply += ["Content-Length: 0", "", ""]
            assert self.transport is not None
            self.transport.sendto("\r\n".join(reply).encode(), addr)

    def _ack(self, headers: dict[str, str], addr: tuple[str, int]) -> None:
        contact = re.search(r"<([^>]+)>", headers.get("contact", ""))
        uri = contact.group(1) if contact else f"sip:{addr[0]}:{addr[1]}"
        cseq = headers["cseq"].split()[0]
        self._send(uri, "ACK", headers["from"], headers["to"], headers["call-id"], cseq, addr)

    def _send(
        self,
        uri: str,
        method: str,
        from_: str,
        to: str,
        call_id: str,
        cseq: str,
        addr: tuple[str, int],
        body: str = "",
        branch: str = "",
    ) -> None:
        branch = branch or f"z9hG4bK{random.getrandbits(48):x}"
        msg = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={branch}",
            "Max-Forwards: 70",
            f"From: {from_}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:spike@127.0.0.1:{self.port}>",
        ]
        if body:
            msg.append("Content-Type: application/sdp")
        msg += [f"Content-Length: {len(body.encode())}", "", body]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(msg).encode(), addr)

    async def invite(self, addr: tuple[str, int], user: str, caller: str, sdp: str) -> Dialog:
        call_id = f"{random.getrandbits(64):x}@spike"
        from_ = f"<sip:{caller}@127.0.0.1>;tag={random.getrandbits(32):x}"
        to = f"<sip:{user}@127.0.0.1>"
        uri = f"sip:{user}@{addr[0]}:{addr[1]}"
        fut: asyncio.Future[tuple[int, dict[str, str], str]] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[call_id + "1 INVITE"] = fut
        try:
            branch = f"z9hG4bK{random.getrandbits(48):x}"  # one transaction
            for wait in (0.5, 1.0, 2.0, 4.0, 8.0):  # timer A, bounded (15.5 s)
                self._send(uri, "INVITE", from_, to, call_id, "1", addr, sdp, branch)
                with contextlib.suppress(TimeoutError):
                    code, headers, body = await asyncio.wait_for(asyncio.shield(fut), wait)
                    break
            else:
                raise TimeoutError(f"no final response to INVITE {user} from {caller}")
        finally:
            del self.pending[call_id + "1 INVITE"]
        if code != 200:
            raise RuntimeError(f"INVITE {user} from {caller}: {code}")
        self._ack(headers, addr)
        contact = re.search(r"<([^>]+)>", headers.get("contact", ""))
        return Dialog(
            addr, contact.group(1) if contact else uri, from_, headers["to"], call_id, body
        )

    async def bye(self, d: Dialog) -> None:
        fut: asyncio.Future[tuple[int, dict[str, str], str]] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[d.call_id + "2 BYE"] = fut
        try:
            branch = f"z9hG4bK{random.getrandbits(48):x}"
            for wait in (0.5, 1.0):
                self._send(d.uri, "BYE", d.from_, d.to, d.call_id, "2", d.addr, branch=branch)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), wait)
                    return
        finally:
            del self.pending[d.call_id + "2 BYE"]


@dataclass
class Dialog:
    addr: tuple[str, int]
    uri: str
    from_: str
    to: str
    call_id: str
    answer: str


def sdp_media_addr(sdp: str) -> tuple[str, int]:
    host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+)", sdp, re.M)
    assert host and port, sdp
    return host.group(1), int(port.group(1))


def bundle_answer(offer: str, answer: str) -> str:
    """pjsua2 2.12 answers without a=mid and a=group:BUNDLE; WebRTC needs both.

    JSEP (RFC 8829 5.3.1) wants the answer's m-line to carry the offer's mid, and
    aiortc refuses an answer without it ("Media sections in answer do not match
    offer"). With one audio m-line the fix is textual: echo the mid, and accept the
    BUNDLE group of that one mid (RFC 8843). The switch's SIP-over-WS edge can do it.
    """
    mid = re.search(r"^a=mid:(\S+)", offer, re.M)
    if not mid or re.search(r"^a=mid:", answer, re.M):
        return answer
    lines = answer.rstrip("\r\n").split("\r\n")
    m_index = next(i for i, line in enumerate(lines) if line.startswith("m="))
    lines.insert(m_index + 1, f"a=mid:{mid.group(1)}")
    if re.search(r"^a=group:BUNDLE ", offer, re.M):
        lines.insert(m_index, f"a=group:BUNDLE {mid.group(1)}")
    return "\r\n".join(lines) + "\r\n"


def pcmu_offer(port: int) -> str:
    sid = random.getrandbits(31)
    return (
        f"v=0\r\no=- {sid} {sid} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


# ---------------------------------------------------------------------------------
# Engine process: pjsua2 (and, for candidate aiortc, the aiortc gateway)


class Engine:
    def __init__(self, candidate: str, legs: int, log_level: int) -> None:
        import pjsua2 as pj

        self.pj = pj
        self.candidate = candidate
        self.calls: dict[int, Any] = {}  # pjsua call id -> call (the only strong refs)
        self.pairs: dict[int, dict[str, Any]] = {}  # leg -> {"web"/"rtp": call}
        self.uac = SipUac()
        self.gateways: dict[int, Any] = {}
        ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = min(2000, 2 * legs + 16)
        cfg.logConfig.level = log_level
        cfg.logConfig.consoleLevel = log_level
        # As switch/engine/core.py: 8 kHz bridge, no VAD, no echo canceller.
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.maxMediaPorts = 8 * legs + 32
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        tcfg.port = 0
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        host, port = ep.transportGetInfo(tid).localName.rsplit(":", 1)
        self.sip_addr = (host, int(port))
        ep.audDevManager().setNullDev()
        ep.libStart()
        self.ep = ep
        self.accounts = [
            self._account("rtp", tid, 20000, webrtc=False),
            self._account("gw", tid, 30000, webrtc=False),
        ]
        if candidate == "pjsua2":
            self.accounts.append(self._account("web", tid, 40000, webrtc=True))

    def _account(self, user: str, tid: int, port: int, webrtc: bool) -> Any:
        pj = self.pj
        engine = self

        class Account(pj.Account):
            def onIncomingCall(self, prm: Any) -> None:
                try:
                    engine.incoming(self, prm)
                except Exception as exc:  # noqa: BLE001 - never let one escape into C
                    print(f"onIncomingCall: {exc!r}", file=sys.stderr)

        ac = pj.AccountConfig()
        ac.idUri = f"sip:{user}@127.0.0.1"
        ac.sipConfig.transportId = tid
        ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        ac.mediaConfig.transportConfig.port = port
        ac.mediaConfig.transportConfig.portRange = 9000
        if webrtc:
            ac.natConfig.iceEnabled = True
            ac.natConfig.iceMaxHostCands = 1
            ac.mediaConfig.rtcpMuxEnabled = True
            ac.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
            ac.mediaConfig.srtpSecureSignaling = 0
            ac.mediaConfig.srtpOpt.keyings = pj.IntVector([pj.PJMEDIA_SRTP_KEYING_DTLS_SRTP])
        acc = Account()
        acc.create(ac)
        acc.kind = user
        return acc

    def incoming(self, acc: Any, prm: Any) -> None:
        pj = self.pj
        engine = self
        m = re.search(r"^(?:From|f):[^\r\n]*sip:(\w+)-(\d+)@", prm.rdata.wholeMsg, re.M | re.I)
        assert m, prm.rdata.wholeMsg
        leg = int(m.group(2))
        side = "rtp" if acc.kind == "rtp" else "web"

        class Call(pj.Call):
            def onCallState(self, prm: Any) -> None:
                try:
                    if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
                        engine.calls.pop(self.getId(), None)
                except Exception as exc:  # noqa: BLE001
                    print(f"onCallState: {exc!r}", file=sys.stderr)

            def onCallMediaState(self, prm: Any) -> None:
                try:
                    info = self.getInfo()  # keep it: .media dangles once a temporary CallInfo dies
                    for mi in info.media:
                        if (
                            mi.type == pj.PJMEDIA_TYPE_AUDIO
                            and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                        ):
                            self.audio = self.getAudioMedia(mi.index)
                            engine.bridge(leg)
                except Exception as exc:  # noqa: BLE001
                    print(f"onCallMediaState: {exc!r}", file=sys.stderr)

        call = Call(acc, prm.callId)
        call.audio = None
        call.bridged = False
        self.calls[prm.callId] = call
        self.pairs.setdefault(leg, {})[side] = call
        op = pj.CallOpParam(True)
        op.statusCode = 200
        call.answer(op)

    def bridge(self, leg: int) -> None:
        pair = self.pairs.get(leg, {})
        web, rtp = pair.get("web"), pair.get("rtp")
        debug(f"bridge {leg}: {pair} {web and web.audio} {rtp and rtp.audio}")
        if web is None or rtp is None or web.audio is None or rtp.audio is None or web.bridged:
            return
        web.audio.startTransmit(rtp.audio)
        rtp.audio.startTransmit(web.audio)
        web.bridged = True

    async def pump(self) -> None:
        while True:
            handled = self.ep.libHandleEvents(0)
            await asyncio.sleep(0 if handled > 0 else 0.002)

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        leg = req["leg"]
        if req["op"] == "phone":
            d = await self.uac.invite(self.sip_addr, "rtp", f"phone-{leg}", pcmu_offer(req["port"]))
            return {"port": sdp_media_addr(d.answer)[1]}
        if req["op"] == "web" and self.candidate == "pjsua2":
            d = await self.uac.invite(self.sip_addr, "web", f"web-{leg}", req["sdp"])
            return {"sdp": bundle_answer(req["sdp"], d.answer)}
        if req["op"] == "web":
            gw = AiortcGateway(leg)
            self.gateways[leg] = gw
            return {"sdp": await gw.answer(req["sdp"], self)}
        raise ValueError(req)

    def shutdown(self) -> None:
        import gc

        self.ep.hangupAllCalls()
        deadline = time.monotonic() + 5
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(10)
        self.pairs.clear()
        self.calls.clear()
        for acc in self.accounts:
            acc.shutdown()
        self.accounts.clear()
        gc.collect()
        self.ep.libDestroy()


class AiortcGateway(asyncio.DatagramProtocol):
    """Candidate aiortc: one browser leg in aiortc, relayed to pjsua2 as PCMU/RTP."""

    def __init__(self, leg: int) -> None:
        self.leg = leg
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.rtp = RtpSender(0)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.pc: Any = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        payload = rtp_payload(data)
        if payload:
            if self.queue.qsize() > 5:  # keep latency bounded
                self.queue.get_nowait()
            self.queue.put_nowait(payload)

    async def answer(self, offer: str, engine: Engine) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.transport = transport  # type: ignore[assignment]
        port = transport.get_extra_info("sockname")[1]
        d = await engine.uac.invite(engine.sip_addr, "gw", f"gw-{self.leg}", pcmu_offer(port))
        self.remote = sdp_media_addr(d.answer)
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def on_track(track: Any) -> None:
            asyncio.ensure_future(self.to_engine(track))

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        pc.addTrack(_gateway_track_class()(self.queue))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def to_engine(self, track: Any) -> None:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        pending = np.zeros(0, dtype=np.int16)
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):
                    pending = np.concatenate([pending, out.to_ndarray().reshape(-1)])
                while pending.size >= 160 and self.transport and self.remote:
                    self.transport.sendto(
                        self.rtp.packet(ulaw_encode(pending[:160]), 160), self.remote
                    )
                    pending = pending[160:]


@functools.cache
def _gateway_track_class() -> type:
    from aiortc import MediaStreamTrack

    class GatewayTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, queue: asyncio.Queue[bytes]) -> None:
            super().__init__()
            self.queue = queue
            self.pts = 0

        async def recv(self) -> Any:
            import av

            try:
                payload = await asyncio.wait_for(self.queue.get(), 0.1)
                pcm = ulaw_decode(payload)
            except TimeoutError:
                pcm = np.zeros(160, dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 8000
            frame.pts = self.pts
            frame.time_base = Fraction(1, 8000)
            self.pts += pcm.size
            return frame

    return GatewayTrack


async def engine_main(args: argparse.Namespace) -> None:
    if args.candidate == "aiortc":
        loopback_ice()
    engine = Engine(args.candidate, args.legs, args.log_level)
    await engine.uac.start()
    pump = asyncio.ensure_future(engine.pump())
    stop = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def one(req: dict[str, Any]) -> None:
            try:
                reply = {"id": req["id"], **await engine.handle(req)}
            except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
                reply = {"id": req["id"], "error": repr(exc)}
            writer.write((json.dumps(reply) + "\n").encode())

        while line := await reader.readline():
            req = json.loads(line)
            if req["op"] == "stop":
                stop.set()
                break
            asyncio.ensure_future(one(req))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"READY {server.sockets[0].getsockname()[1]} {os.getpid()}", flush=True)
    await asyncio.wait_for(stop.wait(), args.seconds + 600)
    for gw in engine.gateways.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(gw.pc.close(), 5)
    pump.cancel()
    engine.shutdown()
    server.close()


# ---------------------------------------------------------------------------------
# Orchestrator: browsers and phones


class Control:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while line := await self.reader.readline():
            reply = json.loads(line)
            fut = self.waiting.pop(reply["id"], None)
            if fut and not fut.done():
                fut.set_result(reply)
        for fut in self.waiting.values():  # the engine is gone (a crash?)
            if not fut.done():
                fut.set_result({"error": "engine closed the control connection"})

    async def request(self, **req: Any) -> dict[str, Any]:
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        self.writer.write((json.dumps({"id": self.next_id, **req}) + "\n").encode())
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply


class Phone(asyncio.DatagramProtocol):
    def __init__(self, leg: int) -> None:
        self.leg = leg
        self.rtp = RtpSender(0)
        self.detector = Detector(BROWSER_FREQ)
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.received = 0
        self.sent = 0
        self.probe = True

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        payload = rtp_payload(data)
        if payload:
            self.received += 1
            if self.probe or self.detector.first_audio is None:
                self.detector.feed(ulaw_decode(payload), 8000, now)


class Browser:
    def __init__(self, leg: int, codec: str) -> None:
        self.leg = leg
        self.codec = codec
        self.detector = Detector(PHONE_FREQ)
        self.sent_bursts: list[float] = []
        self.pc: Any = None
        self.offer_sent = 0.0
        self.sent = 0
        self.received = 0
        self.probe = True
        self.answered = 0.0
        self.dtls_state = ""

    async def start(self, ctl: Control) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver(ToneTrack(self), direction="sendrecv")
        transceiver.receiver.spike_browser = self
        wanted = {"opus": "audio/opus", "pcmu": "audio/PCMU"}[self.codec]
        codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == wanted]
        transceiver.setCodecPreferences(codecs)

        @pc.on("track")
        def on_track(track: Any) -> None:
            asyncio.ensure_future(self.listen(track))

        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if TAMPER_FINGERPRINT:
            offer = re.sub(
                r"(a=fingerprint:sha-256 )(..)",
                lambda m: m.group(1) + ("00" if m.group(2) != "00" else "11"),
                offer,
            )
        self.offer_sent = time.monotonic()
        reply = await ctl.request(op="web", leg=self.leg, sdp=offer)
        self.answer = reply["sdp"]
        self.answered = time.monotonic()
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))

    async def listen(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                self.received += 1
                if self.probe or self.detector.first_audio is None:
                    now = time.monotonic()
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    self.detector.feed(pcm, frame.sample_rate, now)


@functools.cache
def encoded_cycle(codec: str) -> tuple[list[bytes], int]:
    """The browser's tone cycle encoded once (opus or PCMU), replayed by every leg.

    A real browser encodes live; encoding once keeps 100 test browsers within this
    machine's two cores (the engine's side, which is measured, is unchanged). Opus
    packets of a continuous stream, replayed in a loop, decode cleanly.
    """
    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    if codec == "opus":
        params = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    else:
        params = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1)
    encoder = get_encoder(params)
    frames = tone_cycle(BROWSER_FREQ, 48000)
    payloads: list[bytes] = []
    for index in range(3 * CYCLE_FRAMES):  # the last cycle is in a steady state
        pcm = frames[index % CYCLE_FRAMES]
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = index * pcm.size
        frame.time_base = Fraction(1, 48000)
        out, _ = encoder.encode(frame)
        payloads += out
    cycle = payloads[-CYCLE_FRAMES:]
    # The encoder's delay moved the onset: rotate so packet 0 carries it again.
    lag = len(payloads) - 3 * CYCLE_FRAMES
    cycle = cycle[-lag:] + cycle[:-lag] if lag > 0 else cycle
    return cycle, params.clockRate


def ToneTrack(browser: Browser) -> Any:  # noqa: N802 - a class made lazily
    import av
    from aiortc import MediaStreamTrack

    payloads, clock = encoded_cycle(browser.codec)
    step = clock * FRAME_MS // 1000

    class _ToneTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.start: float | None = None

        async def recv(self) -> Any:
            if self.start is None:
                self.start = time.monotonic()
            due = self.start + self.index * FRAME_MS / 1000
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Half a cycle after the phone's bursts, so the two never overlap.
            k = (self.index + CYCLE_FRAMES // 2) % CYCLE_FRAMES
            if k == 0:
                browser.sent_bursts.append(time.monotonic())
            packet = av.Packet(payloads[k])
            packet.pts = self.index * step
            packet.time_base = Fraction(1, clock)
            self.index += 1
            browser.sent += 1
            return packet

    return _ToneTrack()


def sink_load_legs() -> None:
    """Test browsers that are not probes count their RTP but neither buffer nor decode it."""
    import aiortc.rtcrtpreceiver as receiver

    original = receiver.RTCRtpReceiver._handle_rtp_packet

    async def handle(self: Any, packet: Any, arrival_time_ms: int) -> None:
        browser = getattr(self, "spike_browser", None)
        if browser is None or browser.probe:
            await original(self, packet, arrival_time_ms)
            return
        browser.received += 1
        if browser.detector.first_audio is None:
            browser.detector.first_audio = time.monotonic()

    receiver.RTCRtpReceiver._handle_rtp_packet = handle


TAMPER_FINGERPRINT = False


def short_jitter_buffer() -> None:
    """aiortc's audio jitter buffer holds 4 frames; the test browser keeps 1 (20 ms)."""
    import aiortc.rtcrtpreceiver as receiver

    original = receiver.JitterBuffer

    def jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> Any:
        return original(
            capacity=capacity,
            prefetch=min(prefetch, 1) if not is_video else prefetch,
            is_video=is_video,
        )

    receiver.JitterBuffer = jitter_buffer


async def phone_clock(
    phones: list[Phone], sent: dict[int, list[float]], stop: asyncio.Event
) -> None:
    frames = [ulaw_encode(f) for f in tone_cycle(PHONE_FREQ, 8000)]
    start = time.monotonic()
    tick = 0
    while not stop.is_set():
        due = start + tick * FRAME_MS / 1000
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        k = tick % CYCLE_FRAMES
        for phone in list(phones):
            if phone.remote and phone.transport:
                phone.transport.sendto(phone.rtp.packet(frames[k], 160), phone.remote)
                phone.sent += 1
                if k == 0:
                    sent.setdefault(phone.leg, []).append(now)
        tick += 1


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    global TAMPER_FINGERPRINT
    TAMPER_FINGERPRINT = args.tamper_fingerprint
    loopback_ice()
    short_jitter_buffer()
    sink_load_legs()
    python = args.engine_python or sys.executable
    cmd = [
        python,
        __file__,
        "--role",
        "engine",
        "--candidate",
        args.candidate,
        "--legs",
        str(args.legs),
    ]
    cmd += ["--seconds", str(args.seconds), "--log-level", str(args.log_level)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    result: dict[str, Any] = {
        "candidate": args.candidate,
        "legs": args.legs,
        "seconds": args.seconds,
    }
    try:
        assert proc.stdout is not None
        for _ in range(500):  # pjsua2 may log to stdout before READY
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            if not line or line.startswith(b"READY "):
                break
        if not line.startswith(b"READY "):
            raise RuntimeError(f"engine did not start: {line!r}")
        threading.Thread(target=drain, args=(proc.stdout, args.engine_log), daemon=True).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", int(line.split()[1]))
        engine_pid = int(line.split()[2])  # not proc.pid when a wrapper (gdb) runs it
        ctl = Control(reader, writer)
        hz = os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu_seconds(engine_pid), time.monotonic()
        await asyncio.sleep(3)
        idle_rate = (cpu_seconds(engine_pid) - c0) / (time.monotonic() - t0)
        result["engine_idle_cpu_pct"] = round(100 * idle_rate, 2)

        phones: list[Phone] = []
        browsers: list[Browser] = []
        sent_phone: dict[int, list[float]] = {}
        stop = asyncio.Event()
        clock = asyncio.ensure_future(phone_clock(phones, sent_phone, stop))
        sem = asyncio.Semaphore(args.parallel)
        failures: list[str] = []

        async def leg(i: int) -> None:
            async with sem:
                try:
                    phone = Phone(i)
                    loop = asyncio.get_running_loop()
                    tr, _ = await loop.create_datagram_endpoint(
                        lambda: phone, local_addr=("127.0.0.1", 0)
                    )
                    phone.transport = tr
                    reply = await ctl.request(
                        op="phone", leg=i, port=tr.get_extra_info("sockname")[1]
                    )
                    phone.remote = ("127.0.0.1", reply["port"])
                    phones.append(phone)
                    phone.probe = i < args.probes
                    browser = Browser(i, args.codec)
                    browser.probe = i < args.probes
                    browsers.append(browser)
                    await asyncio.wait_for(browser.start(ctl), 30)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failures.append(f"leg {i}: {exc!r}")

        setup_started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(leg(i) for i in range(args.legs))), 60 + args.legs)
        # Media must flow both ways on every leg within 15 s of the last offer.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(b.detector.first_audio for b in browsers) and all(
                p.detector.first_audio for p in phones
            ):
                break
            await asyncio.sleep(0.1)
        result["setup_all_s"] = round(time.monotonic() - setup_started, 2)
        await asyncio.sleep(2)

        def packets() -> int:
            return sum(b.sent + b.received for b in browsers) + sum(
                p.sent + p.received for p in phones
            )

        t0 = thread_cpu(engine_pid)
        e0, o0, w0, k0 = cpu_seconds(engine_pid), time.process_time(), time.monotonic(), packets()
        await asyncio.sleep(args.seconds)
        e1, o1, w1, k1 = cpu_seconds(engine_pid), time.process_time(), time.monotonic(), packets()
        t1 = thread_cpu(engine_pid)
        stop.set()
        await clock
        wall = w1 - w0
        n = args.legs - len(failures)
        engine_rate = (e1 - e0) / wall
        result.update(
            {
                "legs_up": n,
                "failures": failures[:5],
                "failures_count": len(failures),
                "clk_tck": hz,
                "engine_cpu_pct": round(100 * engine_rate, 1),
                "engine_cpu_pct_per_leg": round(100 * (engine_rate - idle_rate) / max(n, 1), 3),
                "peers_cpu_pct": round(100 * (o1 - o0) / wall, 1),
                "engine_threads_cpu_pct": {
                    k: round(100 * (v - t0.get(k, 0.0)) / wall, 1)
                    for k, v in sorted(t1.items(), key=lambda kv: t0.get(kv[0], 0.0) - kv[1])
                    if v - t0.get(k, 0.0) > 0.01 * wall
                },
                # A leg at full rate moves 4 x 50 packets/s through the engine
                # (browser->engine, engine->phone, phone->engine, engine->browser).
                "packets_pct_of_nominal": round(100 * (k1 - k0) / wall / (200 * max(n, 1)), 1),
                # Below ~95 % the peers (or the engine) cannot keep up on this machine:
                # queues grow, and a delay past the 1 s burst cycle aliases.
                "saturated": (k1 - k0) / wall < 0.95 * 200 * max(n, 1),
                "engine_cpu_pct_per_nominal_leg": round(
                    100 * (engine_rate - idle_rate) / max((k1 - k0) / wall / 200, 1e-9), 3
                ),
            }
        )
        delays_w2p: list[float] = []
        delays_p2w: list[float] = []
        steady_w2p: list[float] = []  # second half of the window: jitter buffers settled
        steady_p2w: list[float] = []
        half = w0 + (w1 - w0) / 2
        setups: list[float] = []
        answers = [b.answered - b.offer_sent for b in browsers if b.answered]
        decoded = {"browser_to_phone": 0, "phone_to_browser": 0}
        tone_powers = {"browser_to_phone": [], "phone_to_browser": []}
        by_leg = {p.leg: p for p in phones}
        for b in browsers:
            p = by_leg.get(b.leg)
            if p is None or not b.probe:
                if p is not None and b.detector.first_audio and p.detector.first_audio:
                    setups.append(
                        max(b.detector.first_audio, p.detector.first_audio) - b.offer_sent
                    )
                continue
            delays_w2p += match_delays(b.sent_bursts, p.detector.onsets, w0, w1)
            delays_p2w += match_delays(sent_phone.get(b.leg, []), b.detector.onsets, w0, w1)
            steady_w2p += match_delays(b.sent_bursts, p.detector.onsets, half, w1)
            steady_p2w += match_delays(sent_phone.get(b.leg, []), b.detector.onsets, half, w1)
            if b.detector.first_audio and p.detector.first_audio:
                setups.append(max(b.detector.first_audio, p.detector.first_audio) - b.offer_sent)
            for name, det, freq in (
                ("browser_to_phone", p.detector, BROWSER_FREQ),
                ("phone_to_browser", b.detector, PHONE_FREQ),
            ):
                if det.captured is not None and det.captured.size:
                    chunk = det.captured[: det.capture_rate // 10]  # 100 ms
                    power = tone_power(chunk, det.capture_rate, freq)
                    tone_powers[name].append(power)
                    if power > 0.8:
                        decoded[name] += 1
        expected = args.seconds * min(n, args.probes)
        result["frames_received"] = {
            "phones": sum(p.detector.frames for p in phones),
            "browsers": sum(b.detector.frames for b in browsers),
        }
        result["first_audio_legs"] = {
            "phones": sum(1 for p in phones if p.detector.first_audio),
            "browsers": sum(1 for b in browsers if b.detector.first_audio),
        }
        result.update(
            {
                "codec": args.codec,
                "decoded_legs": decoded,
                "tone_power_min": {
                    k: round(min(v), 3) if v else None for k, v in tone_powers.items()
                },
                "bursts_seen_pct": {
                    "browser_to_phone": round(100 * len(delays_w2p) / max(expected, 1), 1),
                    "phone_to_browser": round(100 * len(delays_p2w) / max(expected, 1), 1),
                },
                "delay_ms": {
                    "browser_to_phone": [round(1000 * pct(delays_w2p, q), 1) for q in (50, 99)],
                    "phone_to_browser": [round(1000 * pct(delays_p2w, q), 1) for q in (50, 99)],
                },
                "delay_ms_2nd_half": {
                    "browser_to_phone": [round(1000 * pct(steady_w2p, q), 1) for q in (50, 99)],
                    "phone_to_browser": [round(1000 * pct(steady_p2w, q), 1) for q in (50, 99)],
                },
                "setup_ms": [round(1000 * pct(setups, q), 1) for q in (50, 99)],
                "answer_ms": [round(1000 * pct(answers, q), 1) for q in (50, 99)],
            }
        )
        result["raw"] = {
            "delay_browser_to_phone_s": delays_w2p,
            "delay_phone_to_browser_s": delays_p2w,
            "setup_s": setups,
        }
        if browsers and browsers[0].pc is not None:
            b = browsers[0]
            result["first_answer_sdp"] = getattr(b, "answer", "")
        with contextlib.suppress(Exception):
            writer.write(b'{"op": "stop"}\n')
            await writer.drain()
        await asyncio.gather(
            *(asyncio.wait_for(b.pc.close(), 5) for b in browsers if b.pc), return_exceptions=True
        )
        for p in phones:
            if p.transport:
                p.transport.close()
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    result["engine_exit"] = proc.returncode
    return result


def drain(stream: Any, path: str | None) -> None:
    """Keep reading the engine's stdout (pjsua2 logs there) so it never blocks."""
    with open(path or os.devnull, "wb") as out:
        for chunk in iter(lambda: stream.read1(65536), b""):
            out.write(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--candidate", choices=("pjsua2", "aiortc"), required=True)
    ap.add_argument("--legs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument(
        "--codec", choices=("opus", "pcmu"), default="opus", help="what the browsers offer"
    )
    ap.add_argument(
        "--probes", type=int, default=10, help="legs whose tones are analysed (the rest only load)"
    )
    ap.add_argument("--parallel", type=int, default=10, help="legs set up at once")
    ap.add_argument("--engine-python", help="interpreter for the engine (its pjsua2 build)")
    ap.add_argument("--log-level", type=int, default=1, help="pjsua2 log level in the engine")
    ap.add_argument("--engine-log", help="write the engine's pjsua2 log here")
    ap.add_argument(
        "--tamper-fingerprint", action="store_true", help="corrupt the offer's fingerprint"
    )
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--show-sdp", action="store_true")
    ap.add_argument(
        "--role", choices=("orchestrator", "engine"), default="orchestrator", help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if not 1 <= args.legs <= 500 or not 1 <= args.seconds <= 300:
        ap.error("--legs 1..500, --seconds 1..300")
    if args.role == "engine":
        asyncio.run(engine_main(args))
        return
    result = asyncio.run(orchestrate(args))
    sdp = result.pop("first_answer_sdp", "")
    raw = result.pop("raw", {})
    if args.show_sdp:
        print(sdp)
    for key, value in result.items():
        print(f"{key:24} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "raw": raw}, indent=2) + "\n")


if __name__ == "__main__":
    main()
