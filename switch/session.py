"""One call's RCML session: fetch a document, run its verbs in order, repeat.

A session runs a call that is up: an inbound INVITE for one of our numbers (or
from a client), or an API-created call once answered (switch/api_calls.py). It
asks the app for a document (Twilio's voice request), runs each verb, follows
``<Redirect>`` and ``<Dial action>`` to the next document, and hangs up when no
verb is left. Fetch and parse failures go to the fallback URL when one is
configured (with ``ErrorCode``/``ErrorUrl``), otherwise the caller hears a short
"application error" and the call ends. Every failure is a notification with
its Twilio error code, logged with the CallSid and stored for the call.

The session is the call's actor. Everything addressed to the call arrives in
one inbox, in order: the events of its leg, REST commands (``deliver``,
switch/call/commands.py) and its own timers (an API call's ``TimeLimit``). One
dispatcher takes them out: a command acts on the call, a timer hangs it up, a
leg event goes to whatever is listening (``listen``: a ``<Gather>``, a
``<Dial>``'s runner). A new document (``Url`` or ``Twiml``) replaces the running
one at once: the piece of the call in progress (a fetch, a verb) is cancelled,
or, inside a ``<Dial>``, the fork is withdrawn (children cancelled or hung up,
their callbacks sent, no action request); then the new document runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from switch.call.commands import (
    CancelCall,
    Command,
    HangUpCall,
    NewDocument,
    Redirect,
    RunTwiml,
)
from switch.call.events import LegEvent, TimeLimitReached
from switch.call.protocol import Leg
from switch.call.registry import CallView, Refused
from switch.call.status import CallStatus, final_status
from switch.dial_callbacks import BranchCallbacks
from switch.rcml import model as rcml
from switch.script import CallGone, Continue, Fallback, LegScript, Withdrawn
from switch.sipmsg import display_name, uri_user

if TYPE_CHECKING:
    from switch.dial import DialRunner
    from switch.services import NumberApp, Services

log = logging.getLogger("dialswitch.call")

CallInput = LegEvent | Command | TimeLimitReached
"""What a call's inbox carries."""


class CallSession(LegScript):
    """Runs the RCML of one call that is up; the call's actor."""

    def __init__(
        self,
        services: Services,
        leg: Leg,
        app: NumberApp,
        *,
        to: str,
        from_: str,
        direction: str,
        caller_name: str = "",
        extra_params: Mapping[str, str] | None = None,
        callbacks: BranchCallbacks | None = None,
        started: datetime | None = None,
    ):
        fallback = (
            Fallback(app.voice_fallback_url, app.voice_fallback_method)
            if app.voice_fallback_url
            else None
        )
        adapter = logging.LoggerAdapter(
            log, {"call_sid": leg.call_sid, "sip_call_id": leg.sip_call_id}
        )
        super().__init__(services, leg, app.voice_url, fallback, adapter)
        self.call_sid = leg.call_sid
        self.app = app
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.caller_name = caller_name
        self.started = started or datetime.now(UTC)
        self.release_code: tuple[int, str] | None = None  # for an unanswered caller
        self._extra_params = dict(extra_params or {})
        self.callbacks = callbacks
        if callbacks is None and app.status_callback:
            callbacks = BranchCallbacks(
                services.webhooks,
                url=app.status_callback,
                method=app.status_callback_method,
                events=(),
                params=self.params,
            )
            self.callbacks = callbacks
        self.dialling: DialRunner | None = None  # the <Dial> running, if any
        self.pending: NewDocument | None = None  # a REST redirect not taken yet
        self._step_task: asyncio.Task[rcml.Document | None] | None = None
        self.initial: rcml.Document | None = None  # a document given up front (Twiml)
        self.withdrawn_as: CallStatus | None = None  # ended unanswered by the REST API
        self.inbox: asyncio.Queue[CallInput] = asyncio.Queue()
        self._listeners: list[Callable[[LegEvent], None]] = []
        self._time_limit: asyncio.TimerHandle | None = None
        self._unsubscribe = leg.subscribe(self.inbox.put_nowait)

    @classmethod
    def inbound(
        cls, services: Services, leg: Leg, app: NumberApp, to: str, from_: str | None = None
    ) -> CallSession:
        """The session of an INVITE we received (from a trunk or a client)."""
        request = leg.request
        assert request is not None
        from_header = request.header("from") or ""
        extra = {f"SipHeader_{k}": v for k, v in request.x_headers().items()}
        extra["SipCallId"] = leg.sip_call_id
        extra["SipSourceIp"] = leg.source.rsplit(":", 1)[0].strip("[]")
        return cls(
            services,
            leg,
            app,
            to=to,
            from_=from_ or services.caller_number(uri_user(from_header)),
            direction="inbound",
            caller_name=display_name(from_header),
            extra_params=extra,
        )

    # ---- parameters ------------------------------------------------------------------

    def call_status(self) -> CallStatus:
        return self.leg.machine.call_status

    def params(self) -> dict[str, str]:
        """Twilio's voice-request parameters of this call."""
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.services.account_sid,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
            "CallStatus": str(self.call_status()),
            "ApiVersion": "2010-04-01",
            "Direction": self.direction,
            "CallerName": self.caller_name,
        }
        params.update(self._extra_params)
        return params

    def view(self) -> CallView:
        return CallView(
            sid=self.call_sid,
            parent_call_sid=None,
            to=self.to,
            from_=self.from_,
            status=self.call_status(),
            direction=self.direction,
            start_time=self.started,
            end_time=None,
            answer_time=self.answered_at,
            caller_name=self.caller_name,
            date_created=self.started,
        )

    # ---- REST commands ---------------------------------------------------------------

    def deliver(self, command: Command) -> None:
        """A REST command, into the inbox; ``Refused`` (21220) once the call has ended."""
        if not self.leg.live:
            raise Refused.call_ended()
        self.inbox.put_nowait(command)

    def limit_time(self, seconds: float) -> None:
        """Hang the call up ``seconds`` from now (through the inbox, as any input)."""
        loop = asyncio.get_running_loop()
        self._time_limit = loop.call_later(seconds, self.inbox.put_nowait, TimeLimitReached())

    def listen(self, fn: Callable[[LegEvent], None]) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    async def _dispatch(self) -> None:
        """Take every input out of the inbox, in order, for as long as the call runs."""
        while True:
            item = await self.inbox.get()
            match item:
                case HangUpCall() | CancelCall() | Redirect() | RunTwiml():
                    self._command(item)
                case TimeLimitReached():
                    self.log.info("%s: time limit reached", self.call_sid)
                    self.leg.hangup()
                case _:
                    for fn in list(self._listeners):
                        fn(item)

    def _command(self, command: Command) -> None:
        leg = self.leg
        if not leg.live:
            return
        match command:
            case HangUpCall() if leg.answered:
                leg.hangup()
            case HangUpCall() | CancelCall():
                if not leg.answered:  # Twilio leaves an answered call alone on cancel
                    self.withdrawn_as = CallStatus.CANCELED
                    leg.hangup(487, "Request Terminated")
            case _:
                self.log.info("%s: redirected by the REST API", self.call_sid)
                self.pending = command
                if self.dialling is not None:
                    self.dialling.deliver(command)
                elif self._step_task is not None:
                    self._step_task.cancel()

    async def _step(self, work: Coroutine[Any, Any, rcml.Document | None]) -> rcml.Document | None:
        """Await one piece of the call (a fetch, a document's verbs); a REST redirect
        interrupts it and the new document is returned instead.

        A redirect that came between two pieces, or in the tick a piece ended, is
        taken as well: the piece's own result is dropped.
        """
        result = None
        if self.pending is None:
            task = asyncio.ensure_future(work)
            self._step_task = task
            try:
                result = await task
            except (asyncio.CancelledError, Withdrawn):
                if self.pending is None:
                    raise
            finally:
                self._step_task = None
        else:
            work.close()
        if self.pending is None:
            return result
        command, self.pending = self.pending, None
        return await self._step(self._document_for(command))

    async def _document_for(self, command: NewDocument) -> rcml.Document | None:
        if isinstance(command, Redirect):
            self.document_url = command.url
            return await self.fetch(command.url, command.method, {})
        for notice in command.document.notices:
            self.notify(notice.code, notice.message, error=notice.level == "error")
        return command.document

    async def _verbs(self, document: rcml.Document) -> rcml.Document | None:
        return await self.execute(document)

    # ---- the session -----------------------------------------------------------------

    async def first_document(self) -> rcml.Document | None:
        if self.initial is not None:
            return self.initial
        return await self.fetch(self.app.voice_url, self.app.voice_method, {})

    async def run(self) -> None:
        dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        try:
            document = await self._step(self.first_document())
            while document is not None and self.leg.live:
                document = await self._step(self._verbs(document))
            if self.release_code is None and self.leg.live:
                # Twilio answers every call it does not <Reject>, even when the
                # document does nothing: answer, then hang up below.
                await self.ensure_answered()
        except CallGone:
            pass
        except Exception:
            self.log.exception("%s: session failed", self.call_sid)
        finally:
            await self.finish()
            dispatcher.cancel()
            self._unsubscribe()
            if self._time_limit is not None:
                self._time_limit.cancel()

    def final_status(self) -> CallStatus:
        leg = self.leg
        return final_status(leg.was_answered, leg.final_code, self.withdrawn_as)

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
            self.log.error("%s: leg did not end after hangup", self.call_sid)
        ended = datetime.now(UTC)
        status = self.final_status()
        self.services.record_leg(
            leg,
            parent_sid=None,
            from_=self.from_,
            to=self.to,
            direction=self.direction,
            started=self.started,
            answered=self.answered_at,
            ended=ended,
            status=status,
            caller_name=self.caller_name,
        )
        self.services.calls.remove(self.call_sid)
        if self.callbacks is not None:
            duration = int((ended - self.answered_at).total_seconds()) if self.answered_at else 0
            self.callbacks.completed(status, duration)

    async def dial(self, verb: rcml.Dial) -> Continue | None:
        from switch.dial import DialRunner

        return await DialRunner(self, verb).run()
