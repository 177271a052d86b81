"""A browser-like SIP peer for tests: SIP over WebSocket (RFC 7118), WebRTC media by aiortc.

`WsPhone` registers with digest auth over a ``sip`` WebSocket with a ``.invalid``
Contact as browser SIP stacks do, places calls with an aiortc offer (ICE,
DTLS-SRTP, rtcp-mux, BUNDLE) and answers calls whose INVITE carries no offer by
offering in its 200 (the switch's browser legs are late-offer). `ToneTrack`
sends a sine; `Listener` keeps what the far end sent, decoded, for frequency
checks. Deliberately independent of the switch's own SIP code.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import hashlib
import itertools
import math
import secrets
import ssl as ssl_module
import time
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz


@dataclass
class SipMsg:
    start: str
    headers: list[tuple[str, str]]
    body: str = ""

    @classmethod
    def parse(cls, text: str) -> SipMsg:
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return cls(lines[0], headers, body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        if self.is_response:
            return (self.header("CSeq") or " ").split()[1]
        return self.start.split()[0]

    def render(self) -> str:
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers)]
        lines.append(f"Content-Length: {len(self.body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + self.body


def digest(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """An Authorization value answering an MD5 challenge (RFC 2617, qop=auth)."""
    params = dict(
        (k.strip(), v.strip().strip('"'))
        for k, _, v in (p.partition("=") for p in challenge.removeprefix("Digest ").split(","))
    )
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce = secrets.token_hex(8)
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "qop" in params:
        response = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
        value += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return value + f', response="{response}", algorithm=MD5'


class ToneTrack(MediaStreamTrack):  # type: ignore[misc]
    """A sine at ``freq`` Hz, 48 kHz mono, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float, level: float = 0.3):
        super().__init__()
        self.freq = freq
        self.level = level
        self.sent = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.sent / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (np.arange(FRAME) + self.sent) / RATE
        samples = (np.sin(2 * math.pi * self.freq * t) * self.level * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += FRAME
        return frame


TELEPHONE_EVENT_PT = 101
"""The payload type `with_telephone_event` offers RFC 4733 events on (aiortc offers none)."""
EVENT_DIGITS = "0123456789*#"


def with_telephone_event(sdp: str) -> str:
    """An aiortc offer that also offers telephone-event/48000 (RFC 4733), as browsers do."""
    lines = sdp.split("\r\n")
    out = []
    for line in lines:
        if line.startswith("m=audio "):
            line += f" {TELEPHONE_EVENT_PT}"
        out.append(line)
        if line.startswith("m=audio "):
            out.append(f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/48000")
    return "\r\n".join(out)


@dataclass
class Listener:
    """Decoded audio the far end sent, as mono samples at the frames' rate, and the
    RFC 4733 digits it sent (each event once, by its timestamp)."""

    chunks: list[np.ndarray] = field(default_factory=list)
    rate: int = RATE
    task: asyncio.Task[None] | None = None
    digit_events: dict[int, str] = field(default_factory=dict)  # RTP timestamp -> digit

    @property
    def digits(self) -> str:
        return "".join(self.digit_events[t] for t in sorted(self.digit_events))

    def spy_on(self, pc: RTCPeerConnection) -> None:
        """Keep the telephone-events reaching ``pc``, which aiortc itself drops (it
        routes no RFC 4733): watched where its DTLS transport hands on RTP."""
        transport = pc.getTransceivers()[0].receiver.transport
        handle = transport._handle_rtp_data

        async def spy(data: bytes, arrival_time_ms: int) -> None:
            with contextlib.suppress(ValueError):
                packet = RtpPacket.parse(data)
                if packet.payload_type == TELEPHONE_EVENT_PT and packet.payload:
                    event = packet.payload[0]
                    if event < len(EVENT_DIGITS):
                        self.digit_events[packet.timestamp] = EVENT_DIGITS[event]
            await handle(data, arrival_time_ms)

        transport._handle_rtp_data = spy

    def follow(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.rate = frame.sample_rate
                self.chunks.append(data.astype(np.float64))

    def seconds(self) -> float:
        return sum(len(c) for c in self.chunks) / self.rate

    def dominant(self, last: float = 1.0) -> float:
        """The strongest frequency of the last ``last`` seconds received."""
        samples = np.concatenate(self.chunks)[-int(last * self.rate) :] if self.chunks else []
        if len(samples) < self.rate // 10:
            return 0.0
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        return float(np.argmax(spectrum) * self.rate / len(samples))

    async def hears(self, freq: float, timeout: float = 10.0, tolerance: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.seconds() > 0.5 and abs(self.dominant(0.5) - freq) < tolerance:
                return True
            await asyncio.sleep(0.1)
        return False


@dataclass
class Call:
    """A call of a `WsPhone`: its dialog's identifiers and its media."""

    phone: WsPhone
    call_id: str
    local_tag: str
    remote_uri: str
    pc: RTCPeerConnection
    listener: Listener
    invite: SipMsg | None = None  # incoming: the INVITE
    remote_tag: str = ""
    route_uri: str = ""  # the remote target (its Contact)
    cseq: int = 1
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""

    async def hangup(self) -> SipMsg:
        self.cseq += 1
        bye = self.phone.request(
            "BYE", self.route_uri, self, cseq=self.cseq, to_tag=self.remote_tag
        )
        response = await self.phone.transact(bye)
        await self.close("local BYE")
        return response

    async def connected(self, timeout: float = 10.0) -> bool:
        """Wait for ICE and DTLS to complete (the peer connection is "connected")."""
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return bool(self.pc.connectionState == "connected")

    async def dtmf_info(self, digit: str) -> SipMsg:
        """One digit as SIP INFO (application/dtmf-relay), as JsSIP sends by default."""
        self.cseq += 1
        info = self.phone.request(
            "INFO",
            self.route_uri,
            self,
            cseq=self.cseq,
            to_tag=self.remote_tag,
            body=f"Signal={digit}\r\nDuration=160\r\n",
            content_type="application/dtmf-relay",
        )
        return await self.phone.transact(info)

    async def close(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()
        await self.pc.close()
        if self.listener.task is not None:
            self.listener.task.cancel()


class WsPhone:
    """One browser-like SIP user agent over a ``sip`` WebSocket."""

    def __init__(
        self,
        url: str,
        identity: str,
        password: str,
        domain: str,
        tone: float = 1000.0,
        ssl: ssl_module.SSLContext | None = None,
        local_host: str | None = None,
    ):
        self.url = url
        self.ssl = ssl
        self.local_host = local_host  # the address it connects from (127.0.0.x)
        self.identity = identity
        self.password = password
        self.domain = domain
        self.tone = tone
        self.contact_user = secrets.token_hex(4)
        self.contact = f"sip:{self.contact_user}@{secrets.token_hex(4)}.invalid;transport=ws"
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pending: dict[str, asyncio.Future[SipMsg]] = {}
        self.incoming: asyncio.Queue[SipMsg] = asyncio.Queue()
        self.received: list[SipMsg] = []
        self.calls: dict[str, Call] = {}
        self.invites: dict[str, SipMsg] = {}  # incoming, by Call-ID
        self.cancelled: set[str] = set()  # Call-IDs of INVITEs the switch CANCELled
        self.closed = asyncio.Event()
        self.rings = True  # answer an INVITE with 180 at once (False: stay silent)
        self._reader: asyncio.Task[None] | None = None
        self._branches = itertools.count(1)

    @property
    def aor(self) -> str:
        return f"sip:{self.identity}@{self.domain}"

    async def connect(self, protocols: tuple[str, ...] = ("sip",)) -> None:
        connector = aiohttp.TCPConnector(
            local_addr=(self.local_host, 0) if self.local_host else None
        )
        self.session = aiohttp.ClientSession(connector=connector)
        self.ws = await self.session.ws_connect(
            self.url, protocols=protocols, autoping=True, ssl=self.ssl or True
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        for call in list(self.calls.values()):
            await call.close("phone closed")
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.session is not None:
            await self.session.close()

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = SipMsg.parse(message.data)
                self.received.append(msg)
                if msg.is_response:
                    branch = _branch(msg.header("Via") or "")
                    future = self.pending.get(f"{branch}:{msg.method}")
                    if future is not None and not future.done() and msg.status >= 200:
                        future.set_result(msg)
                    continue
                await self._on_request(msg)
        finally:
            self.closed.set()
            for call in list(self.calls.values()):
                if not call.ended.is_set():
                    call.end_reason = "connection closed"
                    call.ended.set()

    async def send(self, msg: SipMsg) -> None:
        assert self.ws is not None
        await self.ws.send_str(msg.render())

    def request(
        self,
        method: str,
        uri: str,
        call: Call | None = None,
        cseq: int = 1,
        to_tag: str = "",
        body: str = "",
        extra: tuple[tuple[str, str], ...] = (),
        to_uri: str | None = None,
        content_type: str = "application/sdp",
    ) -> SipMsg:
        branch = f"z9hG4bK{secrets.token_hex(6)}{next(self._branches)}"
        call_id = call.call_id if call else secrets.token_hex(8)
        tag = call.local_tag if call else secrets.token_hex(4)
        to = f"<{to_uri or (call.remote_uri if call else uri)}>" + (
            f";tag={to_tag}" if to_tag else ""
        )
        headers = [
            ("Via", f"SIP/2.0/WSS {secrets.token_hex(4)}.invalid;branch={branch}"),
            ("Max-Forwards", "69"),
            ("To", to),
            ("From", f"<{self.aor}>;tag={tag}"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<{self.contact};ob>"),
            *extra,
        ]
        if body:
            headers.append(("Content-Type", content_type))
        return SipMsg(f"{method} {uri} SIP/2.0", headers, body)

    async def transact(self, msg: SipMsg, timeout: float = 10.0) -> SipMsg:
        key = f"{_branch(msg.header('Via') or '')}:{msg.method}"
        future: asyncio.Future[SipMsg] = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        await self.send(msg)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(key, None)

    async def _authenticated(self, msg: SipMsg, first: SipMsg) -> SipMsg:
        """Send ``msg``; answer one 401/407 with credentials."""
        response = await self.transact(msg)
        if response.status not in (401, 407):
            return response
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        uri = msg.start.split()[1]
        value = digest(response.header(name) or "", msg.method, uri, self.identity, self.password)
        cseq = int((msg.header("CSeq") or "1").split()[0]) + 1
        again = SipMsg(msg.start, [], msg.body)
        for key, old in msg.headers:
            if key == "Via":
                branch = f"z9hG4bK{secrets.token_hex(8)}"
                old = f"SIP/2.0/WSS {secrets.token_hex(4)}.invalid;branch={branch}"
            elif key == "CSeq":
                old = f"{cseq} {msg.method}"
            elif key == "Content-Type":
                continue
            again.headers.append((key, old))
        again.headers.append((header, value))
        if msg.body:
            again.headers.append(("Content-Type", "application/sdp"))
        return await self.transact(again)

    async def register(self, expires: int = 600) -> SipMsg:
        msg = self.request(
            "REGISTER", f"sip:{self.domain}", extra=(("Expires", str(expires)),), to_uri=self.aor
        )
        return await self._authenticated(msg, msg)

    # ---- calls ---------------------------------------------------------------------

    def _peer(self) -> tuple[RTCPeerConnection, Listener]:
        pc = RTCPeerConnection()
        listener = Listener()
        pc.addTrack(ToneTrack(self.tone))

        @pc.on("track")  # type: ignore[misc]
        def on_track(track: MediaStreamTrack) -> None:
            listener.follow(track)

        return pc, listener

    async def dial(self, target: str, sdp_edit: object = None) -> tuple[Call, SipMsg]:
        """INVITE ``target`` (a user part: a number or a client identity) with an offer;
        returns the call and the final response (ACKed if 2xx)."""
        pc, listener = self._peer()
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if callable(sdp_edit):
            offer = sdp_edit(offer)
        listener.spy_on(pc)
        uri = f"sip:{target}@{self.domain}"
        call = Call(self, secrets.token_hex(8), secrets.token_hex(4), uri, pc, listener)
        self.calls[call.call_id] = call
        invite = self.request("INVITE", uri, call, body=offer)
        response = await self._authenticated(invite, invite)
        call.cseq = int((response.header("CSeq") or "1").split()[0])
        call.remote_tag = _tag(response.header("To") or "")
        if 200 <= response.status < 300:
            call.route_uri = _uri(response.header("Contact") or "") or uri
            await self.send(self.request("ACK", call.route_uri, call, call.cseq, call.remote_tag))
            await pc.setRemoteDescription(RTCSessionDescription(response.body, "answer"))
        else:
            await call.close(f"{response.status}")
            self.calls.pop(call.call_id, None)
        return call, response

    async def _on_request(self, msg: SipMsg) -> None:
        call_id = msg.header("Call-ID") or ""
        method = msg.method
        if method == "INVITE" and call_id not in self.calls:
            self.invites[call_id] = msg
            await self.incoming.put(msg)
            if self.rings:
                await self.send(_reply(msg, 180, "Ringing", to_tag=self._tag_for(msg)))
            return
        call = self.calls.get(call_id)
        if method == "ACK":
            if call is not None and msg.body and call.pc.signalingState == "have-local-offer":
                await call.pc.setRemoteDescription(RTCSessionDescription(msg.body, "answer"))
            return
        if method == "BYE":
            await self.send(_reply(msg, 200, "OK"))
            if call is not None:
                await call.close("remote BYE")
            return
        if method == "CANCEL":
            await self.send(_reply(msg, 200, "OK"))
            self.cancelled.add(call_id)
            invite = self.invites.get(call_id)
            if invite is not None and call is None:
                await self.send(_reply(invite, 487, "Request Terminated", self._tag_for(invite)))
            return
        await self.send(_reply(msg, 200, "OK"))  # OPTIONS, INFO, re-INVITE: accept

    def _tag_for(self, invite: SipMsg) -> str:
        return hashlib.md5((invite.header("Call-ID") or "").encode()).hexdigest()[:8]

    async def answer(self, invite: SipMsg, media: bool = True, sdp_edit: object = None) -> Call:
        """Answer an INVITE: offer in the 200 (late offer) or answer its offer.
        ``media=False``: a browser whose ICE never answers (its sockets are closed);
        ``sdp_edit`` changes the offer (as `dial`'s does)."""
        pc, listener = self._peer()
        tag = self._tag_for(invite)
        call = Call(self, invite.header("Call-ID") or "", tag, "", pc, listener, invite=invite)
        call.remote_tag = _tag(invite.header("From") or "")
        call.route_uri = _uri(invite.header("Contact") or "")
        self.calls[call.call_id] = call
        if invite.body:
            await pc.setRemoteDescription(RTCSessionDescription(invite.body, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        else:
            await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        if callable(sdp_edit) and not invite.body:
            sdp = sdp_edit(sdp)
        listener.spy_on(pc)
        if not media:
            await pc.close()
        await self.send(_reply(invite, 200, "OK", to_tag=tag, body=sdp, contact=self.contact))
        return call

    async def decline(self, invite: SipMsg, code: int = 486, reason: str = "Busy Here") -> None:
        await self.send(_reply(invite, code, reason, to_tag=self._tag_for(invite)))


def _reply(
    request: SipMsg,
    status: int,
    reason: str,
    to_tag: str = "",
    body: str = "",
    contact: str = "",
) -> SipMsg:
    headers = [
        (k, v) for k, v in request.headers if k.lower() in ("via", "from", "call-id", "cseq")
    ]
    to = request.header("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    headers.insert(2, ("To", to))
    if contact:
        headers.append(("Contact", f"<{contact}>"))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return SipMsg(f"SIP/2.0 {status} {reason}", headers, body)


def _branch(via: str) -> str:
    for part in via.split(";"):
        if part.strip().startswith("branch="):
            return part.strip()[7:]
    return ""


def _tag(value: str) -> str:
    for part in value.split(";")[1:]:
        if part.strip().startswith("tag="):
            return part.strip()[4:]
    return ""


def _uri(value: str) -> str:
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()
