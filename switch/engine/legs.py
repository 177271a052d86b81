"""Call legs: the pjsua2 ``Call`` subclass and the ``Leg`` the call logic holds.

Lifetime rules (ARCHITECTURE.md, "pjsua2"): the engine's registry holds the only
strong reference to each ``_PjCall``; the ``Leg`` drops its reference inside the
leg's own DISCONNECTED callback, so the SWIG object dies before pjsua2 can reuse
its slot. Every callback is guarded: an exception is logged, never raised back
into pjsua2. Events reach subscribers through ``loop.call_soon`` so that no call
logic runs re-entrantly inside a pjsua2 callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from switch.call.events import (
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegEvent,
    LegMediaReady,
    LegProgressed,
    TransferRequested,
)
from switch.call.leg import LegInput, LegMachine, LegState
from switch.call.protocol import unsubscribed
from switch.sipmsg import SipMessage

if TYPE_CHECKING:
    from switch.engine.core import Engine

log = logging.getLogger("dialswitch.engine")

_STATE_CALLING = pj.PJSIP_INV_STATE_CALLING
_STATE_INCOMING = pj.PJSIP_INV_STATE_INCOMING
_STATE_EARLY = pj.PJSIP_INV_STATE_EARLY
_STATE_CONNECTING = pj.PJSIP_INV_STATE_CONNECTING
_STATE_CONFIRMED = pj.PJSIP_INV_STATE_CONFIRMED
_STATE_DISCONNECTED = pj.PJSIP_INV_STATE_DISCONNECTED
# A stream that carries audio: active, or held by the far end (``a=sendonly``),
# which may send music on hold for the other party to hear.
_MEDIA_FLOWING = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)

SRTP_USE = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    "dtls": pj.PJMEDIA_SRTP_MANDATORY,  # a browser's leg: the account keys it with DTLS
}
"""A leg's ``srtp`` setting (switch.config_tls) as pjmedia's policy."""


def add_headers(vector: pj.SipHeaderVector, headers: Sequence[tuple[str, str]]) -> None:
    """Append (name, value) pairs to the extra headers of a request or response."""
    for name, value in headers:
        header = pj.SipHeader()
        header.hName = name
        header.hValue = value
        vector.append(header)


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Wrap a pjsua2 callback so that no exception escapes into C."""

    def wrapper(self: Any, *args: Any) -> None:
        try:
            fn(self, *args)
        except Exception:  # noqa: BLE001 - a callback must never raise into pjsua2
            log.exception("error in pjsua2 callback %s", fn.__name__)

    wrapper.__name__ = fn.__name__
    return wrapper


class _PjCall(pj.Call):  # type: ignore[misc]
    """The pjsua2 object of one leg. Only the engine and ``Leg`` touch it."""

    def __init__(self, account: pj.Account, leg: Leg, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.acc = account
        self.leg = leg
        self.slot = call_id  # pjsua's call id, the engine registry's key
        self.gone = False

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802 - pjsua2 name
        info = self.getInfo()
        state = info.state
        leg = self.leg
        if state == _STATE_DISCONNECTED:
            self.gone = True
            leg._disconnected(self, info.lastStatusCode, info.lastReason)
            return
        if state == _STATE_EARLY:
            code = info.lastStatusCode
            if leg.outbound and code in (180, 181, 182, 183):
                leg._progress(code)
        elif state == _STATE_CONFIRMED:
            leg._answered()

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in _MEDIA_FLOWING:
                self.leg._media_active(self, index)
                return

    @guarded
    def onCreateMediaTransportSrtp(self, prm: pj.OnCreateMediaTransportSrtpParam) -> None:  # noqa: N802
        """The leg's own SRTP policy (an inbound leg keeps the account's: optional)."""
        prm.srtpUse = SRTP_USE[self.leg.srtp]

    @guarded
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        self.leg._emit(DtmfReceived(prm.digit))

    @guarded
    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:  # noqa: N802
        """Keep the last final response to our INVITE (for ``DialSip*`` params), and
        an incoming REFER, which ``onCallTransferRequest`` reads right after this."""
        body = prm.e.body.tsxState
        if body.type != pj.PJSIP_EVENT_RX_MSG:
            return
        if body.tsx.method == "REFER" and body.tsx.role == pj.PJSIP_ROLE_UAS:
            self.leg._refer = SipMessage.parse(body.src.rdata.wholeMsg)
            return
        if not self.leg.keep_final_response:
            return  # the message's text is read only where it is used
        text = body.src.rdata.wholeMsg
        if text.startswith("SIP/2.0") and " INVITE" in text.split("CSeq:", 1)[-1][:40]:
            message = SipMessage.parse(text)
            if message.status_code >= 200:
                self.leg.final_response = message

    @guarded
    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:  # noqa: N802
        """A REFER in this dialog: accepted (202) only where the call logic allows it.

        pjsua never carries a transfer out itself (patch 0011 of deploy/pjsua2):
        it answers with the code set here, 603 unless it is a 2xx.
        """
        prm.statusCode = self.leg._transfer_requested(prm.dstUri)

    @guarded
    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:  # noqa: N802
        """Count the stream's RTP while it still exists (pjmedia's RTCP statistics).

        pjsua calls this on every way a stream ends: our hang-up (before its BYE
        or CANCEL), the far end's BYE (before DISCONNECTED), a re-INVITE that
        replaces the stream. Only counters change here: no call logic runs.
        """
        self.leg.engine.rtp.add(self.getStreamStat(prm.streamIdx).rtcp)


class Leg:
    """One SIP call leg as the call logic sees it.

    Methods are safe in any state: asking an ended leg to hang up does nothing.
    """

    def __init__(self, engine: Engine, call_sid: str, outbound: bool, request: SipMessage | None):
        self.engine = engine
        self.call_sid = call_sid
        self.outbound = outbound
        self.request = request  # inbound: the INVITE we received
        self.final_response: SipMessage | None = None  # outbound: final answer
        self.keep_final_response = False  # parse it (for DialSip* params) only if asked
        self.machine = LegMachine(call_sid, outbound)
        self.sip_call_id = ""
        self.source = ""  # inbound: "ip:port" the INVITE came from
        self.signalling = ""  # "ip:port" its requests go to (inbound: source)
        self.flow = ""  # a browser leg's WebSocket connection (switch/sipws), else ""
        self.final_code: int | None = None
        self.final_reason = ""
        self.was_answered = False
        self.transfers_allowed = False  # accept the next REFER (a <Dial referUrl> bridge)
        # What the INVITE offers (switch.config_tls), or "dtls": a browser's leg
        # (ICE and DTLS-SRTP, on the engine's browser account).
        self.srtp = "optional"
        self.tls_destination = ""  # outbound over TLS: "host:port" the INVITE goes to
        self.final_failure = ""  # why the far end was never reached (LegEnded.failure)
        self._refer: SipMessage | None = None  # the REFER being decided
        self._ok_sent = False  # inbound: our 200 is out (answered once the ACK comes)
        self._hangup_after_ack = False
        self._media_started = False  # a browser's leg: its first packet arrived
        self._media_failure = ""
        self._call: _PjCall | None = None
        self._media_index: int | None = None
        self._subscribers: list[Callable[[LegEvent], None]] = []
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[LegEnded] = loop.create_future()
        self.media_ready = asyncio.Event()

    # ---- state as seen from outside -------------------------------------------------

    @property
    def state(self) -> LegState:
        return self.machine.state

    @property
    def live(self) -> bool:
        return self.machine.live

    @property
    def answered(self) -> bool:
        return self.machine.answered

    def subscribe(self, fn: Callable[[LegEvent], None]) -> Callable[[], None]:
        """Receive this leg's events; returns a function that unsubscribes. An ended
        leg has sent its last event (LegEnded), so subscribing to it does nothing."""
        if self.ended.done():
            return unsubscribed
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    # ---- requests from the call logic ----------------------------------------------

    def ring(self, early_media: bool) -> None:
        """Inbound only: send 180 (caller rings locally) or 183 with SDP (we play audio)."""
        if self._call is None or self.outbound or self.state is LegState.ANSWERED:
            return
        if early_media and self.state is LegState.EARLY_MEDIA:
            return
        if not early_media and self.state in (LegState.RINGING, LegState.EARLY_MEDIA):
            return
        self._respond(183 if early_media else 180)
        self.machine.process(LegInput.EARLY_MEDIA if early_media else LegInput.RANG)

    def answer(self) -> None:
        """Inbound only: send 200 OK. The leg becomes ANSWERED when the ACK arrives."""
        if self._call is None or self.outbound or self.state is LegState.ANSWERED:
            return
        self._ok_sent = self._respond(200)

    def hangup(
        self,
        sip_code: int | None = None,
        reason: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """End the leg: reject (inbound, unanswered), CANCEL (outbound, unanswered) or BYE.

        ``headers`` go on a rejecting response (e.g. Proxy-Authenticate on a 407)
        or on the CANCEL (e.g. Reason: answered elsewhere).
        An inbound leg whose 200 is not ACKed yet is hung up when the ACK comes:
        pjsua's BYE sent before it was followed by a second one.
        """
        call = self._call
        if call is None or call.gone:
            return
        if self._ok_sent and not self.answered:
            self._hangup_after_ack = True
            return
        prm = pj.CallOpParam(True)
        if sip_code is not None and not self.outbound and not self.answered:
            prm.statusCode = sip_code
            if reason:
                prm.reason = reason
            add_headers(prm.txOption.headers, headers)
        elif self.outbound and not self.answered:
            add_headers(prm.txOption.headers, headers)
        try:
            call.hangup(prm)
        except pj.Error as error:
            log.debug("%s: hangup refused: %s", self.call_sid, error.info())

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits now (no ``w``: pauses are scheduled by the caller)."""
        if self._call is not None and digits:
            self._call.dialDtmf(digits)

    def notify_transfer(self, sip_code: int, reason: str, final: bool = True) -> None:
        """Report an accepted REFER's progress to the referrer (RFC 3515 section 2.4.5).

        A NOTIFY of the ``refer`` event in this dialog, with the outcome as a
        ``message/sipfrag`` status line; the final one ends the implicit
        subscription.
        """
        call = self._call
        if call is None or call.gone:
            return
        state = "terminated;reason=noresource" if final else "active;expires=60"
        prm = pj.CallSendRequestParam()
        prm.method = "NOTIFY"
        add_headers(prm.txOption.headers, [("Event", "refer"), ("Subscription-State", state)])
        prm.txOption.contentType = "message/sipfrag;version=2.0"
        prm.txOption.msgBody = f"SIP/2.0 {sip_code} {reason}\r\n"
        try:
            call.sendRequest(prm)
        except pj.Error as error:
            log.warning("%s: NOTIFY not sent: %s", self.call_sid, error.info())

    def stream(self) -> tuple[_PjCall, int] | None:
        """The call and media index of this leg's audio stream, while both are live."""
        call, index = self._call, self._media_index
        if call is None or index is None or call.gone:
            return None
        return call, index

    def codec(self) -> tuple[str, int, int] | None:
        """The codec of this leg's audio stream (name, clock rate, channels), while it
        is live: two legs can be relayed only with the same one."""
        stream = self.stream()
        if stream is None:
            return None
        call, index = stream
        try:
            info = call.getStreamInfo(index)
        except pj.Error:
            return None
        return info.codecName.lower(), info.codecClockRate, info.audCodecParam.info.channelCnt

    def audio(self) -> pj.AudioMedia | None:
        """The conference-bridge port of this leg's audio, once media is up."""
        if self._call is None or self._media_index is None:
            return None
        try:
            return self._call.getAudioMedia(self._media_index)
        except pj.Error:
            return None

    # ---- called by _PjCall (inside pjsua2 callbacks) --------------------------------

    def _attach(self, call: _PjCall) -> None:
        self._call = call

    def _respond(self, code: int) -> bool:
        """Send ``code`` to the INVITE; False when pjsua refused to."""
        assert self._call is not None
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        try:
            self._call.answer(prm)
        except pj.Error as error:
            log.warning("%s: answer %d refused: %s", self.call_sid, code, error.info())
            return False
        return True

    def _transfer_requested(self, refer_to: str) -> int:
        """The status to answer a REFER with: 202 once, when the call logic allows it."""
        refer, self._refer = self._refer, None
        accepted = self.transfers_allowed and self.answered
        self.transfers_allowed = False  # one transfer at a time; the owner re-allows
        subscription = True
        headers: tuple[tuple[str, str], ...] = ()
        if refer is not None:
            subscription = (refer.header("refer-sub") or "true").strip().lower() != "false"
            headers = tuple(refer.x_headers().items())
        target = _refer_target(refer_to)
        code = 202 if accepted else 603
        log.info("%s: REFER to %s answered %d", self.call_sid, target, code)
        self._emit(TransferRequested(target, headers, subscription, accepted))
        return code

    def _emit(self, event: LegEvent) -> None:
        loop = self.engine.loop
        for fn in list(self._subscribers):
            loop.call_soon(fn, event)

    def _progress(self, code: int) -> None:
        if self.machine.process(LegInput.EARLY_MEDIA if code == 183 else LegInput.RANG):
            self._emit(LegProgressed(code, early_media=code == 183))

    def _answered(self) -> None:
        if self.srtp == "dtls" and not self._media_started:
            # A browser whose ICE and DTLS never complete is hung up. Its answer
            # to our INVITE counts once its media flows: one that never gets there
            # fails like a branch that never answered.
            self.engine.await_browser_media(self, self._browser_media_started)
            if self.outbound:
                return
        self.was_answered = True
        if self.machine.process(LegInput.ANSWERED):
            self._emit(LegAnswered())
        if self._hangup_after_ack:
            self.hangup()

    def _browser_media_started(self) -> None:
        self._media_started = True
        if self.outbound:
            self._answered()

    def _browser_media_failed(self, seconds: float) -> None:
        """ICE or DTLS never completed: hang up, and end as 488 with why."""
        self._media_failure = f"browser media (ICE/DTLS) did not start within {seconds:.0f} s"
        log.warning("%s: %s: hanging up", self.call_sid, self._media_failure)
        self.hangup()

    def _media_active(self, call: _PjCall, index: int) -> None:
        self._media_index = index
        self.engine._media_changed(self)
        if not self.media_ready.is_set():
            self.media_ready.set()
            self._emit(LegMediaReady())

    def _disconnected(self, call: _PjCall | None, code: int, reason: str) -> None:
        failure = ""
        if self.tls_destination and not self.was_answered and code in (408, 503):
            now = self.engine.loop.time()
            failure = self.engine.tls_failures.explain(self.tls_destination, now) or ""
            if failure:
                log.warning("%s: INVITE not delivered: %s", self.call_sid, failure)
        if self._media_failure and not self.was_answered:
            code, reason, failure = 488, "Not Acceptable Here", self._media_failure
        self.final_code = code
        self.final_reason = reason
        self.final_failure = failure
        self._call = None
        self._media_index = None
        self.machine.process(LegInput.ENDED)
        self.engine._leg_ended(self)
        if call is not None:
            self.engine._release(call)
        event = LegEnded(code, reason, failure)
        if not self.ended.done():
            self.ended.set_result(event)
        self._emit(event)
        # LegEnded is the last event. Subscribers' closures refer back to whoever
        # holds this leg (a <Dial>'s runner, a session): dropping them here lets
        # reference counting free the call's objects now, not a full collection later.
        self._subscribers.clear()

    def _mark_calling(self, sip_call_id: str) -> None:
        self.sip_call_id = sip_call_id
        self.machine.process(LegInput.INVITED)


def _refer_target(refer_to: str) -> str:
    """The URI of a Refer-To value: ``<sip:a@b?Replaces=..>;p=1`` -> ``sip:a@b?Replaces=..``."""
    value = refer_to.strip()
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()
