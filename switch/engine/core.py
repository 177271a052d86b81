"""The call engine: one pjsua2 endpoint, pumped from the asyncio loop.

pjsua2 runs no thread of its own for SIP (``uaConfig.threadCnt = 0``): a task
on the event loop calls ``libHandleEvents`` every few milliseconds, and again
at once while it keeps returning events. Two C threads never call Python:
the media thread receives every leg's RTP on an ioqueue of its own (and
sends it on for relayed pairs, patch 0028 of deploy/pjsua2), and the
conference bridge's clock thread mixes audio. What the media thread learns
for the call logic (RFC 4733 digits, media events) is posted to pjsua's
timers and delivered inside ``libHandleEvents`` (patch 0030). Everything that
touches pjsua2 therefore runs on the loop thread.

The one exception is pjsua's recorder closer (patch 0010 of deploy/pjsua2), a C
thread that finishes the files of the recorders the loop hands it and reports each on a
pipe the loop reads; it never calls Python.

The engine owns every pjsua2 object: calls (in ``_calls``), players and the
accounts. ``counts()`` reports what is alive, so tests can prove nothing
leaked after each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ipaddress
import itertools
import logging
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pjsua2 as pj

from switch import sipcheck
from switch.call import protocol
from switch.call.capacity import ENGINE_SLOTS, RETRY_AFTER
from switch.call.first_rtp import FirstRtpLooks
from switch.call.media_paths import Action, Decode, MediaPaths, Relay, Unrelay
from switch.call.protocol import MediaError
from switch.call.rtp_watch import RtpWatch
from switch.config_tls import TlsConfig
from switch.config_webrtc import WebRtcConfig
from switch.engine.legs import Leg, _PjCall, add_headers, guarded
from switch.engine.tls import TlsFailures
from switch.sipmsg import SipMessage
from switch.sipws.framing import flow_of_uri, flow_of_via

log = logging.getLogger("dialswitch.engine")

PUMP_IDLE_SECONDS = 0.002
CREDENTIAL_ACCOUNTS = 8  # <Sip username/password> pairs with an account of their own
PUMP_BURST = 64  # handle at most this many event batches before yielding to the loop
CLOSED_TOKEN = struct.Struct("l")  # a recorder-closed token: a C long, native order
CLOSED_READ = CLOSED_TOKEN.size * 1024  # bytes taken per read: whole tokens only
RTP_CHECK_SECONDS = 5.0  # how often answered legs' RTP counts are read for rtp_timeout
RTP_CHECK_PARTS = 10  # ... a tenth of them at a time: thousands at once held the loop
TLS_HANDSHAKE_MS = 5000  # a TLS handshake not done by then fails the connection
BROWSER_MEDIA_SECONDS = 10.0  # a browser's ICE and DTLS not done by then: hung up
BROWSER_MEDIA_POLL = 0.05
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
BRIDGE_RATE = 8000  # Hz: the conference bridge's clock, and so every leg's audio
ADDRESS_IN_USE = 120098  # PJ_STATUS_FROM_OS(EADDRINUSE): no RTP port pair could be bound
HEARD_POLL = 0.2  # s between looks for the first packet of legs waiting to be relayed
OPUS = "opus/48000/2"
OPUS_RATE_FMTP = ("maxplaybackrate", "sprop-maxcapturerate")
"""The SDES suites offered and accepted: the two every SRTP phone and carrier has
(RFC 4568 section 6.2; AES-256 suites are left out, as many devices refuse them)."""


class EngineError(MediaError):
    """pjsua2 refused an operation (e.g. a recorder on a full disk)."""


@dataclass(frozen=True)
class Listener:
    transport: str  # udp | tcp
    host: str
    port: int


@dataclass(frozen=True)
class TrunkAccount:
    """Credentials the engine answers a carrier's digest challenge with."""

    name: str
    username: str
    password: str


@dataclass(frozen=True)
class EngineSettings:
    listeners: Sequence[Listener]
    public_host: str
    rtp_port_min: int
    rtp_port_max: int
    max_calls: int = 2000
    user_agent: str = "dialswitch"
    trunk_accounts: Sequence[TrunkAccount] = field(default_factory=tuple)
    log_level: int = 1  # pjsua2's own log level (0..6)
    rtp_timeout: float = 60.0  # an answered leg silent this long is hung up; 0: never
    tls: TlsConfig = TlsConfig()
    websocket: bool = False  # browsers: a relay listener and their account (switch/sipws)
    webrtc: WebRtcConfig = WebRtcConfig()  # STUN/TURN of the browsers' media
    relay: bool = True  # bridged pairs exchange RTP in C when nothing else needs it
    media_threads: int = 1  # threads receiving (and relaying) RTP


@dataclass(frozen=True)
class RegisterRequest:
    """An out-of-dialog REGISTER as the registrar needs it."""

    message: SipMessage
    host: str
    port: int
    transport: str  # udp | tcp | tls
    connection_id: str | None  # the TCP/TLS connection it came over


@dataclass
class RtpCounts:
    """RTP packets of the media streams ended so far, for /metrics (switch/metrics.py)."""

    received: int = 0
    received_lost: int = 0  # gaps in the sequence numbers the far ends sent
    received_discarded: int = 0  # dropped: a payload type not negotiated, duplicates...
    sent: int = 0
    sent_lost: int = 0  # what the far ends' RTCP receiver reports said they lost

    def add(self, stat: pj.RtcpStat) -> None:
        """Add one ended stream's statistics."""
        self.received += stat.rxStat.pkt
        self.received_lost += stat.rxStat.loss
        self.received_discarded += stat.rxStat.discard
        self.sent += stat.txStat.pkt
        self.sent_lost += stat.txStat.loss


RegisterHandler = Callable[[RegisterRequest], tuple[int, str, Sequence[tuple[str, str]]]]
AdmitHandler = Callable[[str, str, int, bytes], sipcheck.Answer | None]
"""(method, source host, source port, whole message) of an out-of-dialog request ->
None to go on, or the answer to refuse it with."""


class _Endpoint(pj.Endpoint):  # type: ignore[misc]
    """pjsua2's endpoint with our REGISTER hook (deploy/pjsua2/patches/0004)."""

    def __init__(self, on_register: RegisterHandler | None, admit: AdmitHandler | None = None):
        super().__init__()
        self.on_register = on_register
        self.admit = admit
        self.engine: Engine | None = None

    @guarded
    def onRxRegister(self, prm: pj.OnRxRegisterParam) -> None:  # noqa: N802 - pjsua2 name
        if self.on_register is None:
            return  # 501, the default
        host, port = _split_hostport(prm.rdata.srcAddress)
        request = RegisterRequest(
            SipMessage.parse(prm.rdata.wholeMsg),
            host,
            port,
            prm.transportType.lower(),
            prm.connectionId or None,
        )
        status, reason, headers = self.on_register(request)
        prm.statusCode = status
        prm.reason = reason
        add_headers(prm.headers, headers)

    @guarded
    def onScreenRequest(self, prm: pj.OnScreenRequestParam) -> None:  # noqa: N802
        """Refuse what RFC 3261 and RFC 4475 say a UAS refuses (switch/sipcheck.py).

        Parsed requests (out-of-dialog but ACK, in-dialog of a method pjsua's calls do
        not serve) get a status pjsip answers with, or go on. A request pjsip could not
        parse gets its whole answer written here: 400 with the reason, or for a
        REGISTER the registrar's own answer (RFC 4475 3.3.7: an Authorization of an
        unknown scheme gets a fresh challenge).
        """
        if prm.mediaStatus:
            self._media_failed(prm)
            return
        raw = prm.wholeMsg.encode("utf-8", "surrogateescape")
        if prm.parsed and not prm.dialogExists and self.admit is not None:
            method = raw[:8].split(b" ", 1)[0].decode("ascii", "replace")
            refused = self.admit(method, *_split_hostport(prm.srcAddress), raw)
            if refused is not None:
                prm.statusCode, prm.reason = refused.status, refused.reason
                add_headers(prm.headers, refused.headers)
                return
        datagram = prm.transportType.upper().startswith("UDP")
        answer = sipcheck.screen(raw, datagram=datagram, dialog_exists=prm.dialogExists)
        if prm.parsed:
            if answer is not None:
                log.debug(
                    "SIP request from %s refused: %d %s",
                    prm.srcAddress,
                    answer.status,
                    answer.reason,
                )
                prm.statusCode = answer.status
                prm.reason = answer.reason
                add_headers(prm.headers, answer.headers)
            return
        if answer is None:
            answer = self._unparsed_register(raw, prm) or sipcheck.Answer(
                400, "Bad Request (malformed message)"
            )
        log.debug("unparsed SIP message from %s: %d", prm.srcAddress, answer.status)
        response = sipcheck.stateless_response(raw, answer, to_tag=secrets.token_hex(6))
        if response is not None:
            prm.response = response.decode("utf-8")

    def _media_failed(self, prm: pj.OnScreenRequestParam) -> None:
        """An INVITE let in whose media could not be set up (deploy/pjsua2 patch 0035).

        No free RTP port pair is a shortage, answered like capacity: 503 with
        Retry-After, and said once. Any other cause keeps the SIP stack's answer and
        is logged with it.
        """
        if prm.mediaStatus == ADDRESS_IN_USE and self.engine is not None:
            self.engine._rtp_ports_taken()
            prm.statusCode, prm.reason = 503, "Service Unavailable (no free RTP port)"
            add_headers(prm.headers, (("Retry-After", RETRY_AFTER),))
            return
        log.warning(
            "INVITE from %s refused %d: its media could not be set up: %s",
            prm.srcAddress,
            prm.statusCode,
            prm.mediaError,
        )

    @guarded
    def onTransportState(self, prm: pj.OnTransportStateParam) -> None:  # noqa: N802
        """A TLS connection whose far end failed verification: log and keep why."""
        info = prm.tlsInfo
        if info.isEmpty() or not info.verifyStatus or self.engine is None:
            return
        reasons = ", ".join(str(message) for message in info.verifyMsgs) or "not verified"
        subject = info.remoteCertInfo.subjectCn if not info.remoteCertInfo.isEmpty() else ""
        reason = f"TLS certificate of {info.remoteAddr} refused: {reasons}"
        if subject:
            reason += f" (certificate for {subject!r})"
        log.warning("%s", reason)
        self.engine.tls_failures.record(info.remoteAddr, reason, self.engine.loop.time())

    def _unparsed_register(
        self, raw: bytes, prm: pj.OnScreenRequestParam
    ) -> sipcheck.Answer | None:
        if self.on_register is None or not raw.startswith(b"REGISTER "):
            return None
        host, port = _split_hostport(prm.srcAddress)
        message = SipMessage.parse(raw.decode("utf-8", "replace"))
        request = RegisterRequest(message, host, port, prm.transportType.lower(), None)
        status, reason, headers = self.on_register(request)
        return sipcheck.Answer(status, reason, tuple(headers))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine

    @guarded
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.engine._incoming(self, prm)


class Player:
    """A WAV file playing into the bridge; owned and counted by the engine."""

    def __init__(self, engine: Engine, path: Path, loop: bool):
        self.engine = engine
        self.path = path
        self._player: pj.AudioMediaPlayer | None = pj.AudioMediaPlayer()
        self._player.createPlayer(str(path), 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        self._legs: list[Leg] = []
        engine._players.add(self)

    def start(self, leg: protocol.Leg) -> bool:
        media = _audio(leg)
        if self._player is None or media is None:
            return False
        assert isinstance(leg, Leg)  # _audio has media for our own legs only
        self.engine._tap(leg)  # a relayed leg goes back to the bridge first
        self._legs.append(leg)
        self._player.startTransmit(media)
        return True

    def close(self) -> None:
        """Stop and destroy the player; safe to call twice."""
        player, self._player = self._player, None
        if player is None:
            return
        del player  # its bridge port goes, with every connection to it (see Recorder.close)
        self.engine._players.discard(self)
        legs, self._legs = self._legs, []
        for leg in legs:
            self.engine._untap(leg)


class Recorder:
    """A mono WAV recorder on the bridge, fed by any number of sources.

    pjsua2 fixes the WAV header only when the recorder is destroyed (close);
    a crash leaves a file the start-up repair fixes. The recorder writes a frame
    of silence for every bridge tick in which nothing reaches it (patch 0009 of
    deploy/pjsua2), so recorders started together stay sample-aligned whatever
    their sources do.
    """

    def __init__(self, engine: Engine, path: Path):
        self.engine = engine
        self.path = path
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(str(path))
        self._recorder: pj.AudioMediaRecorder | None = recorder
        self._legs: list[Leg] = []
        self._closed: asyncio.Future[None] | None = None
        engine._recorders.add(self)

    def hear(self, leg: protocol.Leg) -> bool:
        """Record what ``leg``'s peer sends (once its media is up)."""
        media = _audio(leg)
        if self._recorder is None or media is None or leg in self._legs:
            return False
        assert isinstance(leg, Leg)  # _audio has media for our own legs only
        self.engine._record(leg)  # a relayed leg decodes for it first
        media.startTransmit(self._recorder)
        self._legs.append(leg)
        return True

    def hear_player(self, player: protocol.Player) -> None:
        if not isinstance(player, Player):
            return
        if self._recorder is not None and player._player is not None:
            player._player.startTransmit(self._recorder)

    def close(self) -> asyncio.Future[None]:
        """Stop recording; the future is done once the file is complete. Safe to call twice.

        The recorder is handed to pjsua's background closer (patch 0010 of
        deploy/pjsua2), which removes its bridge port, and with it every connection
        to it, writes the WAV header and closes the file: the loop waits neither for
        the bridge's lock, which the media clock holds while it mixes, nor for the disk.
        """
        if self._closed is None:
            recorder, self._recorder = self._recorder, None
            legs, self._legs = self._legs, []
            assert recorder is not None
            self._closed = self.engine._close_later(self, recorder)
            for leg in legs:
                self.engine._unrecord(leg)
        return self._closed


class Engine:
    """Owns the pjsua2 endpoint, its transports, accounts, calls and players."""

    def __init__(
        self,
        settings: EngineSettings,
        on_incoming: Callable[[Leg], None],
        on_register: RegisterHandler | None = None,
        admit: AdmitHandler | None = None,
    ):
        self.settings = settings
        self.on_incoming = on_incoming
        self.on_register = on_register
        self.admit = admit
        self.loop = asyncio.get_running_loop()
        self._endpoint: pj.Endpoint | None = None
        self._default_account: _Account | None = None
        self._trunk_accounts: dict[str, _Account] = {}
        self._credential_accounts: dict[tuple[str, str], _Account] = {}
        self._browser_account: _Account | None = None
        self._relay: tuple[str, int] | None = None
        self._calls: dict[int, _PjCall] = {}
        self._arriving = 0  # incoming legs waiting for _hand_over
        self._players: set[Player] = set()
        self._recorders: set[Recorder] = set()
        self._closing: dict[int, tuple[Recorder, asyncio.Future[None]]] = {}
        self._close_tokens = itertools.count(1)
        self._closed_fd: int | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._media_waits: set[asyncio.Task[None]] = set()
        self._sid_factory: Callable[[], str] | None = None
        self.tls_failures = TlsFailures()
        self.rtp = RtpCounts()  # counted as each stream ends (_PjCall)
        self.paths = MediaPaths(settings.relay)  # which bridged pairs are relayed
        self._heard_poll: asyncio.TimerHandle | None = None
        self._first_rtp = FirstRtpLooks()  # which waiting legs each look reads
        self._out_of_rtp_ports = False  # said once until a leg gets ports again

    # ---- lifecycle -------------------------------------------------------------------

    def start(self, sid_factory: Callable[[], str]) -> None:
        self._sid_factory = sid_factory
        ep = _Endpoint(self.on_register, self.admit)
        ep.engine = self
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        # Every slot the build has (they are static memory anyway): [dial] max_calls
        # refuses first (503), and legs still being torn down, or INVITEs admitted
        # in one burst before their legs exist, never find pjsua's slots gone (486).
        cfg.uaConfig.maxCalls = ENGINE_SLOTS
        cfg.uaConfig.userAgent = self.settings.user_agent
        stun = self.settings.webrtc.stun
        if stun is not None:  # only the browser account uses it (_make_account)
            cfg.uaConfig.stunServer.append(stun.hostport)
        cfg.logConfig.level = self.settings.log_level
        cfg.logConfig.consoleLevel = self.settings.log_level
        cfg.medConfig.hasIoqueue = True  # RTP off the loop: its own ioqueue and threads
        cfg.medConfig.threadCnt = self.settings.media_threads
        cfg.medConfig.clockRate = BRIDGE_RATE
        cfg.medConfig.sndClockRate = BRIDGE_RATE
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.maxMediaPorts = self.settings.max_calls * 4
        ep.libInit(cfg)
        transport_ids = []
        relay_id = self._relay_transport(ep) if self.settings.websocket else None
        for listener in self.settings.listeners:
            tcfg = pj.TransportConfig()
            tcfg.port = listener.port
            tcfg.boundAddress = listener.host
            tcfg.publicAddress = _public_address(self.settings.public_host, listener)
            if listener.transport == "tls":
                _configure_tls(tcfg.tlsConfig, self.settings.tls)
            kind = _transport_type(listener)
            transport_ids.append(ep.transportCreate(kind, tcfg))
        ep.audDevManager().setNullDev()
        _narrowband_opus(ep)
        ep.libStart()
        self._endpoint = ep
        first = self.settings.listeners[0]
        # Every account takes RTP ports from the one range (patch 0019 of deploy/pjsua2).
        self._default_account = self._make_account(f"sip:dialswitch@{_hostport(first)}", None, True)
        for trunk in self.settings.trunk_accounts:
            self._trunk_accounts[trunk.name] = self._make_account(
                f"sip:{trunk.username}@{_hostport(first)}", trunk, False
            )
        if relay_id is not None and self._relay is not None:
            host, port = self._relay
            self._browser_account = self._make_account(
                f"sip:dialswitch@{host}:{port};transport=tcp", None, False, relay_id
            )
        self._closed_fd = pj.AudioMediaRecorder.closedFd()
        self.loop.add_reader(self._closed_fd, self._read_closed)
        self._pump_task = self.loop.create_task(self._pump(), name="pjsua2-pump")
        if self.settings.rtp_timeout > 0:
            self._watch_task = self.loop.create_task(self._watch_rtp(), name="rtp-timeout")
        log.info("call engine started: %d transports", len(transport_ids))

    def _relay_transport(self, ep: pj.Endpoint) -> int:
        """The loopback TCP listener browsers' WebSocket connections are relayed to.

        Only switch/sipws connects to it; the browser account is bound to it, so
        every request relayed from a browser gets browser media (patch 0023).
        """
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        tcfg.port = 0
        relay_id = ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcfg)
        host, port = _split_hostport(ep.transportGetInfo(relay_id).localName)
        self._relay = (host, port)
        return relay_id

    @property
    def websocket_relay(self) -> tuple[str, int] | None:
        """Where switch/sipws relays each browser's SIP (host, port); None until the
        engine has started."""
        return self._relay

    def _make_account(
        self,
        id_uri: str,
        trunk: TrunkAccount | None,
        default: bool,
        browser_transport: int | None = None,
    ) -> _Account:
        """An account: SDES-capable for SIP peers, or with ``browser_transport`` the
        browsers' (bound to the relay listener): ICE, rtcp-mux and DTLS-SRTP only
        (RFC 8827, RFC 5764), which is what a WebRTC peer offers and expects."""
        acfg = pj.AccountConfig()
        acfg.idUri = id_uri
        acfg.regConfig.registerOnAdd = False
        acfg.mediaConfig.transportConfig.port = self.settings.rtp_port_min
        acfg.mediaConfig.transportConfig.portRange = (
            self.settings.rtp_port_max - self.settings.rtp_port_min
        )
        acfg.mediaConfig.transportConfig.boundAddress = self.settings.listeners[0].host
        # SDES only (RFC 4568); which legs use it is set per call (_PjCall).
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_OPTIONAL
        acfg.mediaConfig.srtpSecureSignaling = 0
        acfg.mediaConfig.srtpOpt.keyings.clear()
        acfg.mediaConfig.srtpOpt.keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        acfg.mediaConfig.srtpOpt.cryptos.clear()
        for suite in SRTP_SUITES:
            crypto = pj.SrtpCrypto()
            crypto.name = suite
            acfg.mediaConfig.srtpOpt.cryptos.append(crypto)
        acfg.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        if browser_transport is not None:
            acfg.sipConfig.transportId = browser_transport
            acfg.natConfig.iceEnabled = True
            if self.settings.webrtc.stun is not None:
                acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DEFAULT
            _configure_turn(acfg.natConfig, self.settings.webrtc)
            acfg.mediaConfig.rtcpMuxEnabled = True
            acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
            acfg.mediaConfig.srtpOpt.keyings.clear()
            acfg.mediaConfig.srtpOpt.keyings.append(pj.PJMEDIA_SRTP_KEYING_DTLS_SRTP)
        if trunk is not None:
            cred = pj.AuthCredInfo("digest", "*", trunk.username, 0, trunk.password)
            acfg.sipConfig.authCreds.append(cred)
        account = _Account(self)
        account.create(acfg, default)
        return account

    async def _pump(self) -> None:
        ep = self._endpoint
        assert ep is not None
        while True:
            busy = 0
            while busy < PUMP_BURST and ep.libHandleEvents(0) > 0:
                busy += 1
            await asyncio.sleep(0 if busy == PUMP_BURST else PUMP_IDLE_SECONDS)

    async def _watch_rtp(self) -> None:
        """Hang up answered legs that received no RTP for ``rtp_timeout`` seconds."""
        watch = RtpWatch(self.settings.rtp_timeout)
        every = min(RTP_CHECK_SECONDS, self.settings.rtp_timeout / 2) / RTP_CHECK_PARTS
        for turn in itertools.count():
            await asyncio.sleep(every)
            self._check_rtp(watch, turn % RTP_CHECK_PARTS)

    def _check_rtp(self, watch: RtpWatch, part: int) -> None:
        """One step of `_watch_rtp`: the legs whose slot falls in ``part``. A function
        of its own: a call object left in the task's frame would outlive libDestroy()
        and abort the process."""
        now = self.loop.time()
        for slot, call in list(self._calls.items()):
            if slot % RTP_CHECK_PARTS != part:
                continue
            leg = call.leg
            index = leg._media_index
            if not leg.answered or index is None or call.gone:
                continue
            try:
                packets = call.getStreamStat(index).rtcp.rxStat.pkt
            except pj.Error:
                continue  # no stream at this moment (a re-INVITE in progress)
            if watch.silent(slot, packets, functools.partial(_receiving, call, index), now):
                log.warning(
                    "%s: no RTP received for %.0f s: hanging up ([media] rtp_timeout)",
                    leg.call_sid,
                    self.settings.rtp_timeout,
                )
                leg.hangup()
        if part == RTP_CHECK_PARTS - 1:
            watch.keep_only(self._calls)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Hang up every live call (BYE/CANCEL), wait for them to end, destroy pjsua2."""
        for leg in [call.leg for call in self._calls.values()]:
            leg.hangup(503, "Service Shutting Down")
        deadline = self.loop.time() + grace
        while self._calls and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in (self._pump_task, self._watch_task, *self._media_waits):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._release_all()
        gc.collect()
        if self._closed_fd is not None:
            self.loop.remove_reader(self._closed_fd)
            self._closed_fd = None
        if self._endpoint is not None:
            self._endpoint.libDestroy()  # finishes every recorder still closing first
            self._endpoint = None
        self._closed(list(self._closing))
        log.info("call engine stopped")

    def _release_all(self) -> None:
        """Drop every pjsua2 object before libDestroy().

        An object destroyed after libDestroy() finds pjsua gone and aborts the
        process (a Call's destructor hangs up its slot), so nothing may outlive
        this frame: the legs the call logic still holds let go of their calls.
        """
        if self._heard_poll is not None:
            self._heard_poll.cancel()
            self._heard_poll = None
        stuck = [call.leg for call in self._calls.values()]
        if stuck:
            log.warning("%d calls did not end before shutdown", len(stuck))
        for leg in stuck:
            leg._call = None
        self._calls.clear()
        for player in list(self._players):
            player.close()
        for recorder in list(self._recorders):
            recorder.close()
        self._credential_accounts.clear()
        self._trunk_accounts.clear()
        self._default_account = None
        self._browser_account = None

    # ---- calls -----------------------------------------------------------------------

    def _incoming(self, account: _Account, prm: pj.OnIncomingCallParam) -> None:
        assert self._sid_factory is not None
        request = SipMessage.parse(prm.rdata.wholeMsg)
        leg = Leg(self, self._sid_factory(), outbound=False, request=request)
        leg.source = leg.signalling = prm.rdata.srcAddress
        if account is self._browser_account:
            leg.srtp = "dtls"
            leg.flow = flow_of_via(request.header("via") or "") or ""
        call = _PjCall(account, leg, prm.callId)
        call.slot = prm.callId
        leg._attach(call)
        self._calls[prm.callId] = call
        self._out_of_rtp_ports = False
        leg._mark_calling(request.header("call-id") or "")
        # Not from inside onIncomingCall: pjsua defers a hangup made there
        # (dropping its headers, e.g. Proxy-Authenticate) and aborts when
        # refusing an INVITE without SDP.
        self._arriving += 1
        self.loop.call_soon(self._hand_over, leg)

    def _hand_over(self, leg: Leg) -> None:
        self._arriving -= 1
        self.on_incoming(leg)

    def place_call(
        self,
        call_sid: str,
        to_uri: str,
        from_uri: str,
        headers: Sequence[tuple[str, str]] = (),
        trunk: str | None = None,
        credentials: tuple[str, str] | None = None,
        target_uri: str | None = None,
        srtp: str = "optional",
    ) -> Leg:
        """Send an INVITE to ``to_uri`` with ``from_uri`` in From; returns the leg.

        ``trunk`` selects that trunk's digest credentials; ``credentials``
        (username, password) answer the far end's challenge instead. A failure
        to even send (bad URI, no transport, no account free) ends the leg at
        once: the caller sees a LegEnded like any other. ``target_uri``, when
        given, is the Request-URI (and so where the INVITE goes) while
        ``to_uri`` stays in To: a registered client is reached at the address
        its REGISTER came from. ``srtp`` is off, optional or mandatory
        (switch.config_tls), or dtls for a browser's leg: the browser account,
        and no offer in the INVITE.
        """
        if srtp == "dtls":
            account = self._browser_account
        elif credentials is not None:
            account = self._credential_account(*credentials)
        else:
            account = self._trunk_accounts.get(trunk or "") or self._default_account
        leg = Leg(self, call_sid, outbound=True, request=None)
        leg.srtp = srtp
        leg.tls_destination = tls_destination(target_uri or to_uri)
        leg.signalling = uri_hostport(target_uri or to_uri)
        if srtp == "dtls":
            leg.flow = flow_of_uri(target_uri or to_uri) or ""
        if account is None:
            leg._disconnected(None, 503, "No Account For These Credentials")
            return leg
        call = _PjCall(account, leg)
        leg._attach(call)
        prm = pj.CallOpParam(True)
        if srtp == "dtls":
            # The browser offers in its 200 and we answer in the ACK: pjsua then
            # always answers a WebRTC offer, never makes one (RFC 3261 section 13.2.1).
            prm.opt.flag |= pj.PJSUA_CALL_NO_SDP_OFFER
        prm.txOption.localUri = from_uri
        if target_uri:
            prm.txOption.targetUri = target_uri
        add_headers(prm.txOption.headers, headers)
        try:
            call.makeCall(to_uri, prm)
        except pj.Error as error:
            if error.status == ADDRESS_IN_USE:
                self._rtp_ports_taken()
            log.warning("%s: INVITE to %s not sent: %s", call_sid, to_uri, error.info())
            if not call.gone:
                call.gone = True
                leg._disconnected(call, 500, "Not Sent")
            return leg
        self._out_of_rtp_ports = False
        if not call.gone:
            call.slot = call.getId()
            self._calls[call.slot] = call
            leg._mark_calling(call.getInfo().callIdString)
        return leg

    def _rtp_ports_taken(self) -> None:
        """Every port pair of the range was busy: say so once, with what to change."""
        if self._out_of_rtp_ports:
            return
        self._out_of_rtp_ports = True
        log.warning(
            "no free RTP port pair in [sip] rtp_ports %d-%d: new call legs fail until"
            " ports are free; another process holds ports of the range, or it is too"
            " small: widen [sip] rtp_ports",
            self.settings.rtp_port_min,
            self.settings.rtp_port_max,
        )

    def _credential_account(self, username: str, password: str) -> _Account | None:
        """The account answering challenges with these credentials, made on first use.

        At most CREDENTIAL_ACCOUNTS exist; when all are taken, one with no live
        call is replaced, else None (the branch fails with 503).
        """
        key = (username, password)
        account = self._credential_accounts.pop(key, None)
        if account is None:
            if len(self._credential_accounts) >= CREDENTIAL_ACCOUNTS:
                busy = {id(call.acc) for call in self._calls.values()}
                idle = [k for k, a in self._credential_accounts.items() if id(a) not in busy]
                if not idle:
                    return None
                del self._credential_accounts[idle[0]]
            first = self.settings.listeners[0]
            trunk = TrunkAccount(f"sip-{username}", username, password)
            account = self._make_account(f"sip:{username}@{_hostport(first)}", trunk, False)
        self._credential_accounts[key] = account  # most recently used last
        return account

    def drop_flow(self, flow: str) -> None:
        """A browser's WebSocket (its ``flow``, switch/sipws) closed: end its legs as
        if it hung up.

        An answered leg is hung up (the edge answers its BYE with 430 at once); a
        ringing one is cancelled, and a fork it was in goes on.
        """
        for call in list(self._calls.values()):
            leg = call.leg
            if leg.flow == flow and leg.live:
                log.info("%s: browser connection closed: hanging up", leg.call_sid)
                leg.hangup()

    def await_browser_media(self, leg: Leg, started: Callable[[], None]) -> None:
        """Call ``started`` once a browser's leg has received a packet (its ICE and
        DTLS handshakes are done: nothing is decrypted before), or hang the leg up
        after BROWSER_MEDIA_SECONDS."""
        task = self.loop.create_task(self._browser_media(leg, started))
        self._media_waits.add(task)
        task.add_done_callback(self._media_waits.discard)

    async def _browser_media(self, leg: Leg, started: Callable[[], None]) -> None:
        deadline = self.loop.time() + BROWSER_MEDIA_SECONDS
        while leg.live:
            if self._packets_in(leg):
                started()
                return
            if self.loop.time() > deadline:
                leg._browser_media_failed(BROWSER_MEDIA_SECONDS)
                return
            await asyncio.sleep(BROWSER_MEDIA_POLL)

    def _packets_in(self, leg: Leg) -> int:
        """RTP packets the leg's stream has received (0 before it has one). Kept out
        of the waiting task's frame, which must hold no pjsua2 object."""
        stream = leg.stream()
        if stream is None:
            return 0
        call, index = stream
        try:
            return int(call.getStreamStat(index).rtcp.rxStat.pkt)
        except pj.Error:
            return 0

    def _release(self, call: _PjCall) -> None:
        """Drop the registry's reference; called from the leg's DISCONNECTED."""
        if self._calls.get(call.slot) is call:
            del self._calls[call.slot]

    def connect(self, source: protocol.Leg, sink: protocol.Leg) -> bool:
        """Let ``sink`` hear ``source`` (one direction). Two legs that hear each
        other and nothing else are relayed (switch/call/media_paths.py)."""
        a, b = _audio(source), _audio(sink)
        if a is None or b is None:
            return False
        a.startTransmit(b)
        self._apply(self.paths.connected(source, sink))
        return True

    # ---- the relay path (patch 0028 of deploy/pjsua2) ---------------------------------

    def _tap(self, leg: Leg) -> None:
        """A player is about to play to ``leg``'s bridge port."""
        self._apply(self.paths.tapped(leg))

    def _untap(self, leg: Leg) -> None:
        self._apply(self.paths.untapped(leg))

    def _record(self, leg: Leg) -> None:
        """A recorder is about to hear ``leg``'s bridge port."""
        self._apply(self.paths.recorded(leg))

    def _unrecord(self, leg: Leg) -> None:
        self._apply(self.paths.unrecorded(leg))

    def _leg_ended(self, leg: Leg) -> None:
        self._apply(self.paths.ended(leg))

    def _media_changed(self, leg: Leg) -> None:
        """``leg``'s media was negotiated (again): a relay of it is made again, and a
        pair kept on the bridge because its codecs differed is tried again."""
        self._apply(self.paths.media_changed(leg))

    def _apply(self, actions: list[Action]) -> None:
        """Carry the decisions out; then, if a pair waits for a leg's first RTP
        packet, look for it soon."""
        self._carry_out(actions)
        if self.paths.waiting and self._heard_poll is None:
            self._heard_poll = self.loop.call_later(HEARD_POLL, self._look_for_rtp)

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Relay(a=Leg() as a, b=Leg() as b):
                    self._relay_pair(a, b)
                case Unrelay(a=Leg() as a, b=Leg() as b, gone=gone):
                    self._unrelay_pair(a, b, gone)
                case Decode(leg=Leg() as leg, on=on) if self.paths.peer(leg) is not None:
                    self._relay_decode(leg, on)  # (not if its Relay was just refused)

    def _look_for_rtp(self) -> None:
        """Tell the relay decisions which waiting legs have sent RTP by now; look again
        in HEARD_POLL while some wait. A leg that never sends keeps its pair on the
        bridge, and is read less and less often (switch/call/first_rtp.py): each read
        of a leg's RTCP statistics through pjsua2 costs tens of microseconds."""
        self._heard_poll = None
        now = self.loop.time()
        actions: list[Action] = []
        for leg in self._first_rtp.due(self.paths.unheard(), now):
            if isinstance(leg, Leg) and self._packets_in(leg):
                actions += self.paths.heard(leg)
            else:
                self._first_rtp.nothing_yet(leg, now)
        self._carry_out(actions)
        if self.paths.waiting:
            self._heard_poll = self.loop.call_later(HEARD_POLL, self._look_for_rtp)
        else:
            self._first_rtp.clear()

    def _relay_pair(self, a: Leg, b: Leg) -> None:
        """Relay in C, then take the pair's bridge connections away (its ports are out
        of the bridge's clock from the relay on, so no frame of silence slips out)."""
        ca, cb, ia, ib = a._call, b._call, a._media_index, b._media_index
        ma, mb = a.audio(), b.audio()
        if ca is None or cb is None or ia is None or ib is None or ma is None or mb is None:
            self.paths.refused(a, b)
            return
        codecs = a.codec(), b.codec()
        if codecs[0] != codecs[1]:  # the bridge transcodes (pjsua2 would log an error)
            self.paths.refused(a, b)
            log.debug("%s, %s: bridged, not relayed: %s", a.call_sid, b.call_sid, codecs)
            return
        try:
            ca.relayAudio(ia, cb, ib)
        except pj.Error as error:
            self.paths.refused(a, b)
            log.debug("%s, %s: bridged, not relayed: %s", a.call_sid, b.call_sid, error.info())
            return
        ma.stopTransmit(mb)
        mb.stopTransmit(ma)
        log.debug("%s, %s: relayed", a.call_sid, b.call_sid)

    def _unrelay_pair(self, a: Leg, b: Leg, gone: object) -> None:
        """Give a relayed pair back to the bridge: connections first (their ports are
        still out of the clock), then the relay ends and the clock takes over."""
        ma, mb = a.audio(), b.audio()
        if gone is None and ma is not None and mb is not None:
            ma.startTransmit(mb)
            mb.startTransmit(ma)
        for leg in (a, b):
            call, index = leg._call, leg._media_index
            if leg is gone or call is None or index is None:
                continue
            with contextlib.suppress(pj.Error):
                call.unrelayAudio(index)
        log.debug("%s, %s: back on the bridge", a.call_sid, b.call_sid)

    def _relay_decode(self, leg: Leg, on: bool) -> None:
        """A relayed leg decodes what it receives for its recorders (patch 0041 of
        deploy/pjsua2), or stops: its packets are relayed all the same."""
        stream = leg.stream()
        if stream is None:
            return
        call, index = stream
        try:
            call.relayDecode(index, on)
        except pj.Error as error:
            log.warning("%s: recording of a relayed call: %s", leg.call_sid, error.info())

    def leg_count(self) -> int:
        return len(self._calls)

    def arriving(self) -> int:
        """The INVITEs of one poll are screened one after the other before any is
        handed over: each admission counts the leg those before it will keep for
        their ``<Dial>`` (their own legs are in ``leg_count`` already)."""
        return self._arriving

    def player(self, path: Path, loop: bool) -> Player:
        return Player(self, path, loop)

    def _close_later(
        self, recorder: Recorder, pj_recorder: pj.AudioMediaRecorder
    ) -> asyncio.Future[None]:
        closed = self.loop.create_future()
        token = next(self._close_tokens)
        try:
            pj_recorder.closeLater(token)
        except pj.Error as error:
            # No background closer: the object still owns the recorder, and the last
            # reference to it going (in Recorder.close) destroys it here, waiting.
            log.error("recorder %s closes on the loop: %s", recorder.path, error.info())
            self._recorders.discard(recorder)
            closed.set_result(None)
            return closed
        self._closing[token] = (recorder, closed)
        return closed

    def _read_closed(self) -> None:
        """The background closer's pipe is readable: the tokens of finished files."""
        if self._closed_fd is None:
            return
        try:
            data = os.read(self._closed_fd, CLOSED_READ)
        except BlockingIOError:
            return
        self._closed([token for (token,) in CLOSED_TOKEN.iter_unpack(data)])

    def _closed(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            recorder, closed = self._closing.pop(token)
            self._recorders.discard(recorder)
            if not closed.done():
                closed.set_result(None)

    def recorder(self, path: Path) -> Recorder:
        """Start a WAV recorder at ``path``; EngineError when it cannot (disk full...)."""
        try:
            return Recorder(self, path)
        except pj.Error as error:
            raise EngineError(error.info()) from None

    def counts(self) -> dict[str, int]:
        """Live objects, for /healthz and the leak checks of the tests."""
        ports = 0
        if self._endpoint is not None:
            ports = self._endpoint.mediaActivePorts()
        return {
            "calls": len(self._calls),
            "players": len(self._players),
            "recorders": len(self._recorders),
            "media_ports": ports,
            "relayed": self.paths.relayed,
        }


def _audio(leg: protocol.Leg) -> pj.AudioMedia | None:
    """The bridge port of a leg of this engine (None for any other kind, or no media)."""
    return leg.audio() if isinstance(leg, Leg) else None


def _receiving(call: _PjCall, index: int) -> bool:
    """Whether the call's stream ``index`` should be receiving RTP: its far end does
    not hold it. A hold with ``a=inactive`` leaves the stream without its receiving
    direction; one with ``a=sendonly`` leaves it receiving, in pjsua's REMOTE_HOLD
    state, and a phone may then send music or nothing at all."""
    try:
        media = call.getInfo().media[index]
    except pj.Error:
        return False
    return media.status == pj.PJSUA_CALL_MEDIA_ACTIVE and bool(media.dir & pj.PJMEDIA_DIR_DECODING)


def _narrowband_opus(ep: pj.Endpoint) -> None:
    """Run opus at the bridge's 8 kHz instead of 48 kHz.

    Every leg's audio meets in the 8 kHz conference bridge, so a 48 kHz opus
    stream (what browsers offer) was decoded, resampled to 8 kHz and back, and
    encoded at full band, all on the bridge's clock: about 1.8 % of a core per
    leg. At 8 kHz the codec skips the resampling and encodes narrowband; the RTP
    clock stays 48 kHz (RFC 7587 section 4.1, pjmedia's stream scales the
    timestamps), and ``maxplaybackrate``/``sprop-maxcapturerate`` tell the browser
    that more than narrowband would be wasted (RFC 7587 section 6.1), as pjmedia's
    own opus configuration writes them.
    """
    param = ep.codecGetParam(OPUS)
    param.info.clockRate = BRIDGE_RATE
    param.info.maxBps = BRIDGE_RATE * 2
    fmtp = [f for f in param.setting.decFmtp if f.name not in OPUS_RATE_FMTP]
    for name in OPUS_RATE_FMTP:
        rate = pj.CodecFmtp()
        rate.name, rate.val = name, str(BRIDGE_RATE)
        fmtp.append(rate)
    param.setting.decFmtp = pj.CodecFmtpVector(fmtp)
    ep.codecSetParam(OPUS, param)


def uri_hostport(uri: str, default_port: int = 5060) -> str:
    """``host:port`` a SIP URI is reached at, written as pjsip writes a source
    address (``[v6]:port``)."""
    hostport = uri.partition(":")[2].rpartition("@")[2].split(";", 1)[0].split("?", 1)[0]
    has_port = hostport.rpartition(":")[2].isdigit() and not hostport.endswith("]")
    host, port = _split_hostport(hostport) if has_port else (hostport, default_port)
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_destination(uri: str) -> str:
    """``host:port`` a ``sips:`` or ``;transport=tls`` URI is reached at; "" for others."""
    scheme, _, rest = uri.partition(":")
    params = rest.split("?", 1)[0].split(";")[1:]
    tls = scheme.lower() == "sips" or any(p.lower() == "transport=tls" for p in params)
    return uri_hostport(uri, 5061) if tls else ""


TURN_TRANSPORTS = {"udp": pj.PJ_TURN_TP_UDP, "tcp": pj.PJ_TURN_TP_TCP, "tls": pj.PJ_TURN_TP_TLS}


def _configure_turn(nat: pj.AccountNatConfig, webrtc: WebRtcConfig) -> None:
    """Relayed candidates for browser media through the first TURN server, if any."""
    turn = webrtc.turn
    if turn is None:
        return
    url, server = turn
    nat.turnEnabled = True
    nat.turnServer = url.hostport
    nat.turnConnType = TURN_TRANSPORTS[url.transport]
    nat.turnUserName = server.username
    nat.turnPasswordType = 0  # plain text (PJ_STUN_PASSWD_PLAIN)
    nat.turnPassword = server.credential


def _configure_tls(tls: pj.TlsConfig, config: TlsConfig) -> None:
    """TLS 1.2+ with our certificate; far ends are verified against the CA file."""
    tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
    if config.certificate is not None and config.private_key is not None:
        tls.certFile = str(config.certificate)
        tls.privKeyFile = str(config.private_key)
    ca_file = config.ca_file
    if ca_file is not None:
        tls.CaListFile = str(ca_file)
    tls.verifyServer = config.verify_server
    tls.verifyClient = config.verify_client
    tls.requireClientCert = config.verify_client
    tls.msecTimeout = TLS_HANDSHAKE_MS


def _transport_type(listener: Listener) -> int:
    v6 = ":" in listener.host
    if listener.transport == "tcp":
        return pj.PJSIP_TRANSPORT_TCP6 if v6 else pj.PJSIP_TRANSPORT_TCP
    if listener.transport == "tls":
        return pj.PJSIP_TRANSPORT_TLS6 if v6 else pj.PJSIP_TRANSPORT_TLS
    return pj.PJSIP_TRANSPORT_UDP6 if v6 else pj.PJSIP_TRANSPORT_UDP


def _public_address(public_host: str, listener: Listener) -> str:
    """The address a listener writes in Via and Contact: the public host, unless that is
    an IP address of the other family (an IPv6 listener beside an IPv4 public host keeps
    its own address; pjsua cannot resolve one family's literal as the other's)."""
    try:
        public = ipaddress.ip_address(public_host.strip("[]"))
        own = ipaddress.ip_address(listener.host)
    except ValueError:
        return public_host
    return public_host if public.version == own.version else listener.host


def _split_hostport(address: str) -> tuple[str, int]:
    """``"127.0.0.1:5060"`` or ``"[::1]:5060"`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _hostport(listener: Listener) -> str:
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return f"{host}:{listener.port}"
