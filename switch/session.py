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
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.engine import Leg
from switch.rcml import model as rcml
from switch.script import CallGone, Continue, Fallback, LegScript
from switch.sipmsg import display_name, uri_user
from switch.timestamps import rfc2822

if TYPE_CHECKING:
    from switch.services import NumberApp, Services

log = logging.getLogger("dialswitch.call")


class CallSession(LegScript):
    """Runs the RCML of one inbound call leg."""

    def __init__(
        self, services: Services, leg: Leg, app: NumberApp, to: str, from_: str | None = None
    ):
        fallback = (
            Fallback(app.voice_fallback_url, app.voice_fallback_method)
            if app.voice_fallback_url
            else None
        )
        adapter = logging.LoggerAdapter(log, {"call_sid": leg.call_sid})
        super().__init__(services, leg, app.voice_url, fallback, adapter)
        self.app = app
        request = leg.request
        assert request is not None
        from_header = request.header("from") or ""
        self.from_ = from_ or services.caller_number(uri_user(from_header))
        self.to = to
        self.caller_name = display_name(from_header)
        self.started = datetime.now(UTC)
        self.release_code: tuple[int, str] | None = None  # for an unanswered caller
        leg.machine.log = self.log
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

    # ---- the session -----------------------------------------------------------------

    async def run(self) -> None:
        try:
            document = await self.fetch(self.app.voice_url, self.app.voice_method, {})
            await self.run_document(document)
            if self.release_code is None and self.leg.live:
                # Twilio answers every call it does not <Reject>, even when the
                # document does nothing: answer, then hang up below.
                await self.ensure_answered()
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
                Timestamp=rfc2822(ended),
                CallbackSource="call-progress-events",
                SequenceNumber="0",
            )
            self.services.webhooks.post_callback(
                self.app.status_callback, self.app.status_callback_method, params, key=leg.call_sid
            )

    async def dial(self, verb: rcml.Dial) -> Continue | None:
        from switch.dial import DialRunner

        return await DialRunner(self, verb).run()
