"""Running RCML verbs on one call leg.

``LegScript`` holds what every document run needs: fetching and parsing a
document (with the fallback URL on failure), the verb runners (``<Say>``,
``<Play>``, ``<Pause>``, ``<Gather>``, ``<Hangup>``, ``<Reject>``,
``<Redirect>``) and the waits that end as soon as the leg hangs up. Two kinds
of script use it: the inbound call's session (switch/session.py), and the
whisper document run on a called party before it is bridged (switch/dial.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from media.audio import wav_duration
from switch.call.events import DtmfReceived, LegEvent
from switch.call.media import CallMedia
from switch.call.protocol import Leg
from switch.rcml import model as rcml
from switch.rcml.parser import parse
from switch.webhook import FetchedDocument, WebhookError

if TYPE_CHECKING:
    from switch.services import Services

APPLICATION_ERROR = "An application error has occurred. Goodbye."
LOOP_FOREVER = 1000  # a ``loop="0"`` prompt repeats until the call moves on
MEDIA_WAIT = 5.0  # seconds to wait for audio after answering


class CallGone(Exception):
    """The leg hung up while a verb was running."""


class Withdrawn(Exception):
    """A REST command replaced what the call was doing (a redirect during ``<Dial>``)."""


@dataclass
class Continue:
    """What to run next: a new document fetched from ``url`` (None: stop)."""

    document: rcml.Document | None
    url: str


@dataclass(frozen=True)
class FailedFetch:
    """What the fallback URL is told: the failure's code and the URL that failed."""

    code: int
    url: str


@dataclass(frozen=True)
class Fallback:
    url: str
    method: str


class LegScript:
    """Runs documents on ``leg``; subclasses say what the requests carry."""

    whisper = False  # documents for a called party: parse_whisper rules

    def __init__(
        self,
        services: Services,
        leg: Leg,
        document_url: str,
        fallback: Fallback | None,
        log: logging.LoggerAdapter[logging.Logger],
    ):
        self.services = services
        self.leg = leg
        self.document_url = document_url
        self.fallback = fallback
        self.log = log
        self.answered_at: datetime | None = None
        self.media = CallMedia(services.engine, leg)

    def params(self) -> dict[str, str]:
        raise NotImplementedError

    def listen(self, fn: Callable[[LegEvent], None]) -> Callable[[], None]:
        """Receive the events of this script's leg; returns a function that stops them.

        A call's session hands them out from its inbox; a whisper script, which has
        no actor of its own, takes them from the leg.
        """
        return self.leg.subscribe(fn)

    def resolve(self, url: str) -> str:
        """A URL from a document, relative ones resolved against the document's URL."""
        return urljoin(self.document_url, url)

    def notify(
        self,
        code: int,
        message: str,
        url: str | None = None,
        error: bool = True,
        logged: bool = False,
    ) -> None:
        """A Twilio-coded problem of this call: logged (unless it already was) and stored."""
        self.services.notify(self.log, self.leg.call_sid, code, message, url, error, logged)

    async def run_document(self, document: rcml.Document | None) -> None:
        """Run ``document`` and every document its verbs lead to."""
        while document is not None and self.leg.live:
            document = await self.execute(document)

    async def fetch(self, url: str, method: str, extra: dict[str, str]) -> rcml.Document | None:
        """Fetch and parse a document; on failure try the fallback, else speak the error."""
        result = await self.fetch_once(url, method, extra)
        if not isinstance(result, FailedFetch):
            return result
        fallback = self.fallback
        if fallback is not None:
            try:
                fetched = await self.services.webhooks.fetch_fallback(
                    (fallback.url, fallback.method), self.params() | extra, result
                )
                return self._parse(fetched)
            except (WebhookError, rcml.RcmlError) as error:
                self.notify(
                    error.code,
                    f"fallback: {error.message}",
                    fallback.url,
                    logged=isinstance(error, WebhookError),
                )
        if self.leg.live:
            await self.say(rcml.Say(APPLICATION_ERROR))
        return None

    async def fetch_once(
        self, url: str, method: str, extra: dict[str, str]
    ) -> rcml.Document | FailedFetch:
        """Fetch and parse a document; a failure is notified and returned, nothing more."""
        url = self.resolve(url)
        try:
            params = self.params() | extra
            return self._parse(await self.services.webhooks.fetch_document(url, method, params))
        except (WebhookError, rcml.RcmlError) as error:
            # A failed fetch is logged by the webhook client; a bad document is not.
            self.notify(error.code, error.message, url, logged=isinstance(error, WebhookError))
            return FailedFetch(error.code, url)

    def _parse(self, fetched: FetchedDocument) -> rcml.Document:
        url = fetched.url
        if fetched.content_type == "text/plain":
            # Twilio reads a plain-text answer out, as one <Say>.
            text = fetched.body.decode(fetched.charset or "utf-8", "replace")
            document = rcml.Document(verbs=(rcml.Say(text=" ".join(text.split())),))
        else:
            document = parse(fetched.body, whisper=self.whisper)
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
                # Twilio answers before hanging up; only <Reject> refuses a call.
                await self.ensure_answered()
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
                return await self.dial(verb)
        return None

    async def dial(self, verb: rcml.Dial) -> Continue | None:
        """Only an inbound call's session dials; whisper documents cannot (13201)."""
        self.notify(13201, "<Dial> is not allowed here")
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
        waits: set[asyncio.Future[Any]] = {media, self.leg.ended}
        await asyncio.wait(waits, timeout=MEDIA_WAIT, return_when=asyncio.FIRST_COMPLETED)
        media.cancel()
        if not leg.media_ready.is_set():
            raise CallGone

    async def wait(self, seconds: float) -> None:
        """Sleep, but raise CallGone as soon as this leg hangs up."""
        await sleep_unless_ended(self.leg, seconds)

    async def play_file(self, path: Path, loops: int) -> None:
        duration = wav_duration(path)
        for _ in range(loops):
            player = self.media.play(path, loop=False)
            try:
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
        url = self.resolve(verb.url)
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

        def on_event(event: LegEvent) -> None:
            if isinstance(event, DtmfReceived):
                digits.append(event.digit)
                got.set()

        unsubscribe = self.listen(on_event)
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
                waits: set[asyncio.Future[Any]] = {waiter, self.leg.ended}
                done, _ = await asyncio.wait(
                    waits, timeout=verb.timeout, return_when=asyncio.FIRST_COMPLETED
                )
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


async def sleep_unless_ended(leg: Leg, seconds: float) -> None:
    """Sleep ``seconds``; raise CallGone as soon as ``leg`` ends."""
    try:
        await asyncio.wait_for(asyncio.shield(leg.ended), seconds)
    except TimeoutError:
        return
    raise CallGone


def _digit_runs(digits: str) -> list[str]:
    """Split ``12w34ww5`` into ``["12", "w", "34", "w", "w", "5"]``."""
    runs: list[str] = []
    for ch in digits:
        if ch == "w" or not runs or runs[-1] == "w":
            runs.append(ch)
        else:
            runs[-1] += ch
    return runs
