"""One call's RCML session: fetch a document, run its verbs in order, repeat.

A session starts when an INVITE for one of our numbers arrives. It asks the
number's app for a document (Twilio's voice request), runs each verb, follows
``<Redirect>`` and ``<Dial action>`` to the next document, and hangs up when no
verb is left. Fetch and parse failures go to the fallback URL when one is
configured (with ``ErrorCode``/``ErrorUrl``), otherwise the caller hears a short
"application error" and the call ends. Every failure is a notification with
its Twilio error code, logged with the CallSid and stored for the call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from switch.engine import Leg
from switch.rcml import model as rcml
from switch.rcml.parser import parse
from switch.sipmsg import display_name, uri_user
from switch.webhook import WebhookError

if TYPE_CHECKING:
    from switch.services import NumberApp, Services

APPLICATION_ERROR = "An application error has occurred. Goodbye."
LOOP_FOREVER = 1000  # a ``loop="0"`` prompt repeats until the call moves on
MEDIA_WAIT = 5.0  # seconds to wait for audio after answering

log = logging.getLogger("dialswitch.call")


class CallGone(Exception):
    """The caller hung up while a verb was running."""


@dataclass
class Continue:
    """What to run next: a new document fetched from ``url`` (None: next verb)."""

    document: rcml.Document | None
    url: str


class CallSession:
    """Runs the RCML of one inbound call leg."""

    def __init__(self, services: Services, leg: Leg, app: NumberApp, to: str):
        self.services = services
        self.leg = leg
        self.app = app
        request = leg.request
        assert request is not None
        from_header = request.header("from") or ""
        self.from_ = services.caller_number(uri_user(from_header))
        self.to = to
        self.caller_name = display_name(from_header)
        self.started = datetime.now(UTC)
        self.answered_at: datetime | None = None
        self.release_code: tuple[int, str] | None = None  # for an unanswered caller
        self.log = logging.LoggerAdapter(log, {"call_sid": leg.call_sid})
        leg.machine.log = self.log
        self.document_url = app.voice_url
        self._sip_headers = {f"SipHeader_{k}": v for k, v in request.x_headers().items()}

    # ---- parameters ------------------------------------------------------------------

    def call_status(self) -> str:
        if not self.leg.live:
            return "completed"
        return "in-progress" if self.leg.answered else "ringing"

    def params(self) -> dict[str, str]:
        """Twilio's voice-request parameters of this call."""
        leg = self.leg
        params = {
            "CallSid": leg.call_sid,
            "AccountSid": self.services.account_sid,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
            "CallStatus": self.call_status(),
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            "CallerName": self.caller_name,
            "SipCallId": leg.sip_call_id,
            "SipSourceIp": leg.source.rsplit(":", 1)[0].strip("[]"),
        }
        params.update(self._sip_headers)
        return params

    def notify(self, code: int, message: str, url: str | None = None, error: bool = True) -> None:
        """A Twilio-coded problem of this call: logged and stored for the call."""
        level = "error" if error else "warning"
        self.log.log(
            logging.ERROR if error else logging.WARNING,
            "%s %d: %s%s",
            self.leg.call_sid,
            code,
            message,
            f" ({url})" if url else "",
        )
        self.services.store.record_notification(
            self.leg.call_sid, code, level, message, url, datetime.now(UTC)
        )

    # ---- the session -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            document = await self.fetch(self.app.voice_url, self.app.voice_method, {})
            while document is not None and self.leg.live:
                document = await self.execute(document)
        except CallGone:
            pass
        except Exception:
            self.log.exception("%s: session failed", self.leg.call_sid)
        finally:
            await self.finish()

    async def finish(self) -> None:
        leg = self.leg
        if leg.live:
            if leg.answered or self.release_code is None:
                leg.hangup()
            else:
                leg.hangup(*self.release_code)
        try:
            await asyncio.wait_for(asyncio.shield(leg.ended), 10)
        except TimeoutError:
            self.log.error("%s: leg did not end after hangup", leg.call_sid)
        self.services.record_leg(
            leg,
            parent_sid=None,
            from_=self.from_,
            to=self.to,
            direction="inbound",
            started=self.started,
            answered=self.answered_at,
        )
        if self.app.status_callback:
            ended = datetime.now(UTC)
            duration = int((ended - self.answered_at).total_seconds()) if self.answered_at else 0
            params = self.params()
            params.update(
                CallStatus=self.services.final_status(leg),
                CallDuration=str(duration),
                Timestamp=_rfc2822(ended),
                CallbackSource="call-progress-events",
                SequenceNumber="0",
            )
            self.services.webhooks.post_callback(
                self.app.status_callback, self.app.status_callback_method, params, key=leg.call_sid
            )

    async def fetch(self, url: str, method: str, extra: dict[str, str]) -> rcml.Document | None:
        """Fetch and parse a document; on failure try the fallback, else speak the error."""
        url = urljoin(self.document_url, url)
        params = self.params() | extra
        try:
            return self._parse(await self.services.webhooks.fetch_document(url, method, params))
        except (WebhookError, rcml.RcmlError) as error:
            self.notify(error.code, error.message, url)
            failed = error
        fallback = self.app.voice_fallback_url
        if fallback:
            params = self.params() | extra | {"ErrorCode": str(failed.code), "ErrorUrl": url}
            try:
                return self._parse(
                    await self.services.webhooks.fetch_document(
                        fallback, self.app.voice_fallback_method, params
                    )
                )
            except (WebhookError, rcml.RcmlError) as error:
                self.notify(error.code, f"fallback: {error.message}", fallback)
        if self.leg.live:
            await self.say(rcml.Say(APPLICATION_ERROR))
        return None

    def _parse(self, fetched: object) -> rcml.Document:
        url = fetched.url  # type: ignore[attr-defined]
        document = parse(fetched.body)  # type: ignore[attr-defined]
        self.document_url = url
        for notice in document.notices:
            self.notify(notice.code, notice.message, url, error=notice.level == "error")
        return document

    async def execute(self, document: rcml.Document) -> rcml.Document | None:
        """Run the verbs in order; returns the next document, if a verb names one."""
        for verb in document.verbs:
            if not self.leg.live:
                raise CallGone
            nxt = await self.run_verb(verb)
            if nxt is not None:
                return nxt.document
        return None

    async def run_verb(self, verb: rcml.Verb) -> Continue | None:
        match verb:
            case rcml.Say():
                await self.say(verb)
            case rcml.Play():
                await self.play(verb)
            case rcml.Pause():
                await self.pause(verb.length)
            case rcml.Hangup():
                self.leg.hangup()
                raise CallGone
            case rcml.Reject():
                code, reason = (486, "Busy Here") if verb.reason == "busy" else (603, "Decline")
                self.leg.hangup(code, reason)
                raise CallGone
            case rcml.Redirect():
                doc = await self.fetch(verb.url, verb.method, {})
                return Continue(doc, verb.url)
            case rcml.Gather():
                return await self.gather(verb)
            case rcml.Dial():
                from switch.dial import DialRunner

                return await DialRunner(self, verb).run()
        return None

    # ---- media helpers ---------------------------------------------------------------

    async def ensure_answered(self) -> None:
        leg = self.leg
        if not leg.live:
            raise CallGone
        if not leg.answered:
            leg.answer()
        await self.wait_media(leg)
        if self.answered_at is None:
            self.answered_at = datetime.now(UTC)

    async def wait_media(self, leg: Leg) -> None:
        """Wait until ``leg`` has audio; CallGone if the caller left meanwhile."""
        if leg.media_ready.is_set():
            return
        media = asyncio.ensure_future(leg.media_ready.wait())
        done, _ = await asyncio.wait(
            {media, self.leg.ended}, timeout=MEDIA_WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        media.cancel()
        if not leg.media_ready.is_set():
            raise CallGone

    async def wait(self, seconds: float) -> None:
        """Sleep, but raise CallGone as soon as the caller hangs up."""
        try:
            await asyncio.wait_for(asyncio.shield(self.leg.ended), seconds)
        except TimeoutError:
            return
        raise CallGone

    async def play_file(self, path: object, loops: int) -> None:
        from media.audio import wav_duration

        duration = wav_duration(path)  # type: ignore[arg-type]
        for _ in range(loops):
            player = self.services.engine.player(path, loop=False)  # type: ignore[arg-type]
            try:
                player.start(self.leg)
                await self.wait(duration + 0.05)
            finally:
                player.close()

    async def say(self, verb: rcml.Say) -> None:
        await self.ensure_answered()
        if not verb.text.strip():
            return
        path = await self.services.audio.speech(
            verb.text, verb.voice or "man", verb.language or "en-US"
        )
        await self.play_file(path, verb.loop or LOOP_FOREVER)

    async def play(self, verb: rcml.Play) -> None:
        await self.ensure_answered()
        if verb.digits:
            await self.send_digits(self.leg, verb.digits)
            return
        url = urljoin(self.document_url, verb.url)
        try:
            path = await self.services.fetch_audio(url)
        except Exception as error:  # noqa: BLE001 - any fetch/decode failure is 11200
            self.notify(11200, f"cannot play audio: {error}", url)
            return
        await self.play_file(path, verb.loop or LOOP_FOREVER)

    async def pause(self, length: int) -> None:
        """``<Pause>``; before answer it only delays (Twilio answers after it)."""
        await self.wait(max(0, length))

    async def send_digits(self, leg: Leg, digits: str) -> None:
        """RFC 4733 digits; ``w`` waits half a second."""
        for chunk in _digit_runs(digits):
            if chunk == "w":
                await self.wait(0.5)
            else:
                leg.send_dtmf(chunk)
                await self.wait(0.1 * len(chunk))

    async def gather(self, verb: rcml.Gather) -> Continue | None:
        """DTMF ``<Gather>``: prompts, then digits until numDigits/finishOnKey/timeout."""
        await self.ensure_answered()
        digits: list[str] = []
        got = asyncio.Event()

        def on_event(event: object) -> None:
            from switch.engine.events import DtmfReceived

            if isinstance(event, DtmfReceived):
                digits.append(event.digit)
                got.set()

        unsubscribe = self.leg.subscribe(on_event)
        try:
            for prompt in verb.prompts:
                if digits:
                    break
                await self.run_verb(prompt)
            while True:
                if verb.finish_on_key and verb.finish_on_key in digits:
                    digits = digits[: digits.index(verb.finish_on_key)]
                    break
                if verb.num_digits and len(digits) >= verb.num_digits:
                    break
                got.clear()
                waiter = asyncio.ensure_future(got.wait())
                done, _ = await asyncio.wait({waiter, self.leg.ended}, timeout=verb.timeout)
                waiter.cancel()
                if self.leg.ended.done():
                    raise CallGone
                if not done:
                    break
        finally:
            unsubscribe()
        result = "".join(digits)
        if not result and not verb.action_on_empty_result:
            return None
        action = verb.action or self.document_url
        doc = await self.fetch(action, verb.method, {"Digits": result})
        return Continue(doc, action)


def _digit_runs(digits: str) -> list[str]:
    """Split ``12w34ww5`` into ``["12", "w", "34", "w", "w", "5"]``."""
    runs: list[str] = []
    for ch in digits:
        if ch == "w" or not runs or runs[-1] == "w":
            runs.append(ch)
        else:
            runs[-1] += ch
    return runs


def _rfc2822(moment: datetime) -> str:
    from email.utils import format_datetime

    return format_datetime(moment.astimezone(UTC), usegmt=False).replace("-0000", "+0000")
