"""A call created through the REST API, from ``queued`` until it is answered or given up.

Twilio's outbound-api call: created ``queued``, started when the account's
calls-per-second allow (``[api] calls_per_second``), ``initiated`` when the
INVITE is out, ``ringing`` on the first 18x. A ``client:`` To rings every
registration of the identity at once (the fork group decides, first answer
wins). Answered, the call is handed to a ``CallSession`` that fetches its
document with ``Direction=outbound-api`` and ``CallStatus=in-progress`` and
runs it like any other call, ``<Dial>`` included. Unanswered, it ends
``busy``, ``no-answer``, ``failed`` or ``canceled`` (the REST API withdrew it),
and its record and ``completed`` callback say so.

Status callbacks (``StatusCallbackEvent``: initiated ringing answered
completed) carry Twilio's parameters with a running ``SequenceNumber``;
``completed`` has ``CallDuration``. They are sent by the webhook client's
queue, off the call path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.call.commands import CancelCall, Command, HangUpCall, NewDocument, Redirect, RunTwiml
from switch.call.events import LegAnswered, LegEnded, LegEvent, LegProgressed
from switch.call.fork import (
    ANSWERED_ELSEWHERE,
    Action,
    Bridge,
    Cancel,
    Finished,
    ForkGroup,
    next_actions,
)
from switch.call.protocol import Leg
from switch.call.registry import CallView
from switch.call.status import ERROR_SIP_ENDPOINT, CallStatus
from switch.call_recording import CallRecording, RecordingSettings
from switch.call_request import CallRequest
from switch.dial import binding_target
from switch.dial_callbacks import BranchCallbacks
from switch.rcml import model as rcml
from switch.rcml.model import CallEvent
from switch.routing import NoRoute, select_trunk
from switch.script import CallGone
from switch.session import CallSession

if TYPE_CHECKING:
    from switch.services import NumberApp, Services

log = logging.getLogger("dialswitch.call")


class ApiCall:
    """The actor of one API-created call until it is answered."""

    def __init__(
        self,
        services: Services,
        request: CallRequest,
        document: rcml.Document | None,
        call_sid: str,
        start_at: float,
    ):
        self.services = services
        self.request = request
        self.document = document  # the parsed Twiml, when given instead of a Url
        self.call_sid = call_sid
        self.start_at = start_at  # loop time the pacing allows the INVITE
        self.created = datetime.now(UTC)
        self.started: datetime | None = None
        self.status = CallStatus.QUEUED  # until the first leg is placed
        self.legs: dict[int, Leg] = {}
        self.session: CallSession | None = None
        self.redirect: NewDocument | None = None  # an update before answer: used at answer
        self.events: asyncio.Queue[tuple[int | None, LegEvent | Command]] = asyncio.Queue()
        self._unsubscribe: list[Callable[[], None]] = []
        self.log = logging.LoggerAdapter(log, {"call_sid": call_sid})
        self.callbacks: BranchCallbacks | None = None
        if request.status_callback:
            self.callbacks = BranchCallbacks(
                services.webhooks,
                url=request.status_callback,
                method=request.status_callback_method,
                events=[CallEvent(e) for e in request.status_callback_events],
                params=self.params,
            )

    # ---- what the REST API sees ------------------------------------------------------

    def params(self) -> dict[str, str]:
        """Twilio's parameters of this call (its status callbacks' body)."""
        if self.session is not None:
            return self.session.params()
        request = self.request
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.services.account_sid,
            "From": request.from_,
            "To": request.to,
            "Caller": request.from_,
            "Called": request.to,
            "CallStatus": str(self.current_status()),
            "ApiVersion": "2010-04-01",
            "Direction": "outbound-api",
        }

    def current_status(self) -> CallStatus:
        if self.status is not CallStatus.QUEUED or not self.legs:
            return self.status
        statuses = {leg.machine.call_status for leg in self.legs.values() if leg.live}
        return CallStatus.RINGING if CallStatus.RINGING in statuses else CallStatus.INITIATED

    def view(self) -> CallView:
        return CallView(
            sid=self.call_sid,
            parent_call_sid=None,
            to=self.request.to,
            from_=self.request.from_,
            status=self.current_status(),
            direction="outbound-api",
            start_time=self.started,
            end_time=None,
            answer_time=None,
            date_created=self.created,
        )

    def deliver(self, command: Command) -> None:
        """Cancel or hang up: the call is withdrawn. A new document: used once answered."""
        match command:
            case CancelCall() | HangUpCall():
                self.events.put_nowait((None, command))
            case Redirect() | RunTwiml():
                self.redirect = command

    # ---- the call --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._queued():
                leg = await self._ring()
                if leg is not None:
                    await self._answered(leg)
        except Exception:
            self.log.exception("%s: API call failed", self.call_sid)
            for leg in self.legs.values():
                leg.hangup()
            if self.session is None and not self.status.final:
                self._end(CallStatus.FAILED, self._last_leg())
        finally:
            self.services.calls.remove(self.call_sid)

    async def _queued(self) -> bool:
        """Wait for the pacing slot; False when the call was withdrawn meanwhile."""
        loop = asyncio.get_running_loop()
        if self.start_at > loop.time():
            try:
                async with asyncio.timeout_at(self.start_at):
                    await self.events.get()
            except TimeoutError:
                return True
            self._end(CallStatus.CANCELED)
            return False
        if not self.events.empty():
            self._end(CallStatus.CANCELED)
            return False
        return True

    def _targets(self) -> list[tuple[str, str | None, str | None, str]]:
        """(To URI, Request-URI, trunk, SRTP setting) of each leg to place; empty:
        nowhere to ring."""
        services, request = self.services, self.request
        if request.to_kind == "client":
            registrar = services.registrar
            bindings = registrar.lookup(request.identity) if registrar is not None else []
            uri = services.client_uri(request.identity)
            return [
                (uri, binding_target(b), None, services.srtp_for(request.identity, binding=b))
                for b in bindings
            ]
        if request.to_kind == "sip":
            return [(request.to, None, None, services.srtp_for(secure=request.sip_secure))]
        try:
            trunk = select_trunk(request.to, services.trunks, request.byoc)
        except NoRoute as error:
            self.notify(13223, f"no route: {error}")
            return []
        return [(services.trunk_uri(trunk, request.to), None, trunk.name, trunk.srtp)]

    async def _ring(self) -> Leg | None:
        """Place the legs and race them; the answered one, or None (the call ended)."""
        targets = self._targets()
        if not targets:
            self._end(CallStatus.FAILED)
            return None
        loop = asyncio.get_running_loop()
        group = ForkGroup.of(range(len(targets)), ring_timeout=self.request.timeout)
        group.start(loop.time())
        self.started = datetime.now(UTC)
        from_uri = self.services.from_uri(self.request.from_)
        self.services.calls.placed(self.call_sid)  # its legs count in the engine from here
        for key, (uri, target_uri, trunk, srtp) in enumerate(targets):
            leg = self.services.engine.place_call(
                self.call_sid,
                uri,
                from_uri,
                self.request.sip_headers,
                trunk,
                self.request.sip_auth,
                target_uri,
                srtp,
            )
            self.legs[key] = leg
            self._unsubscribe.append(leg.subscribe(self._listener(key)))
            self.services.time_post_dial(leg, "outbound-api")
            if not leg.live:
                self.events.put_nowait((key, LegEnded(leg.final_code or 500, leg.final_reason)))
        if self.callbacks is not None:
            self.callbacks.initiated()

        def handle(item: tuple[int | None, LegEvent | Command]) -> list[Action]:
            source, event = item
            key = -1 if source is None else source
            match event:
                case LegProgressed() if self.callbacks is not None:
                    self.callbacks.ringing()
                case LegAnswered():
                    return group.answered(key)
                case LegEnded(sip_code=code, failure=failure):
                    if failure:
                        self.notify(
                            ERROR_SIP_ENDPOINT, f"{targets[key][0]}: {failure}", error=False
                        )
                    return group.failed(key, code)
                case CancelCall() | HangUpCall():
                    return group.withdrawn()
            return []

        while True:
            for action in await next_actions(group, self.events, handle):
                match action:
                    case Cancel(branch=branch, elsewhere=elsewhere):
                        assert isinstance(branch, int)
                        self.legs[branch].hangup(headers=ANSWERED_ELSEWHERE if elsewhere else ())
                    case Bridge(branch=branch):
                        assert isinstance(branch, int)
                        for unsubscribe in self._unsubscribe:  # the session listens now
                            unsubscribe()
                        return self.legs[branch]
                    case Finished(dial_call_status=status):
                        await self._wait_ended()
                        self._end(CallStatus(status), self._last_leg())
                        return None

    def _listener(self, key: int) -> Callable[[LegEvent], None]:
        return lambda event: self.events.put_nowait((key, event))

    def _last_leg(self) -> Leg | None:
        return self.legs[max(self.legs)] if self.legs else None

    async def _wait_ended(self) -> None:
        waits = [asyncio.shield(leg.ended) for leg in self.legs.values() if leg.live]
        if waits:
            await asyncio.wait(waits, timeout=10)

    async def _answered(self, leg: Leg) -> None:
        """Hand the answered leg to a session that runs the call's document."""
        if self.callbacks is not None:
            self.callbacks.answered()
        request = self.request
        app = self._app()
        session = CallSession(
            self.services,
            leg,
            app,
            to=request.to,
            from_=request.from_,
            direction="outbound-api",
            callbacks=self.callbacks,
            started=self.started,
        )
        session.answered_at = datetime.now(UTC)
        redirect, self.redirect = self.redirect, None
        if isinstance(redirect, RunTwiml):
            session.initial = redirect.document
        elif redirect is None:
            session.initial = self.document
        self.session = session
        self.services.calls.replace(session)
        recording = self._record(session) if request.record else None
        session.limit_time(request.time_limit)
        try:
            if request.send_digits:
                with contextlib.suppress(CallGone):
                    await session.send_digits(leg, request.send_digits)
            await session.run()
        finally:
            if recording is not None:
                if recording.hearing is not None:
                    session.media.unlisten(recording.hearing)
                await recording.finish()
        # Losing registrations of a client were cancelled by the fork: let them end.
        await self._wait_ended()

    def _record(self, session: CallSession) -> CallRecording:
        """``Record=true``: the called party on channel 1, all it hears on channel 2."""
        request = self.request
        settings = RecordingSettings(
            dual=request.recording_channels == "dual",
            from_ringing=False,
            track=rcml.RecordingTrack(request.recording_track),
            trim=request.trim,
            callback_url=request.recording_status_callback,
            callback_method=request.recording_status_callback_method,
            callback_events=tuple(sorted(request.recording_status_callback_events)),
            source="OutboundAPI",
        )
        recording = CallRecording(self.services, self.call_sid, settings, session.notify)
        recording.start(session.leg)
        if recording.hearing is not None:
            session.media.listen(recording.hearing)
        return recording

    def _app(self) -> NumberApp:
        from switch.services import NumberApp

        request, redirect = self.request, self.redirect
        url, method = request.url or "", request.method
        if isinstance(redirect, Redirect):
            url, method = redirect.url, redirect.method
        return NumberApp(
            number=request.from_,
            voice_url=url,
            voice_method=method,
            voice_fallback_url=request.fallback_url,
            voice_fallback_method=request.fallback_method,
            status_callback=None,
            status_callback_method="POST",
        )

    def _end(self, status: CallStatus, leg: Leg | None = None) -> None:
        """Record an unanswered call and send its completed callback."""
        self.status = status
        self.services.record_leg(
            leg,
            call_sid=self.call_sid,
            parent_sid=None,
            from_=self.request.from_,
            to=self.request.to,
            direction="outbound-api",
            started=self.started or self.created,
            answered=None,
            status=status,
        )
        self.services.calls.remove(self.call_sid)
        self.log.info("%s: API call ended %s", self.call_sid, status)
        if self.callbacks is not None:
            self.callbacks.completed(status, 0)

    def notify(self, code: int, message: str, error: bool = True) -> None:
        """A Twilio-coded problem of this call: logged and stored."""
        self.services.notify(self.log, self.call_sid, code, message, error=error)
