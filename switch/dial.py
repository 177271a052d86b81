"""``<Dial>``: ring the targets, bridge the winner, report to the action URL.

The decisions live in ``ForkGroup`` (switch/fork.py); this runner turns SIP
events into calls on it and carries out the actions it returns. What the
caller hears while the targets ring:

- without ``answerOnBridge`` the caller is answered first and hears generated
  ringback (``ringTone``, else the configured default country), or the single
  target's own early media when it sends 183 and no ``ringTone`` was asked;
- with ``answerOnBridge`` the caller stays unanswered: 183 with the generated
  tone when ``ringTone`` is set, the target's early media when it sends one,
  180 otherwise; if nobody answers, the caller is released with the mapped
  failure (busy 486, no-answer 480, failed 503 or the target's own code)
  once the rest of the document is done.

A target with ``sendDigits`` or a whisper ``url`` is screened when it answers:
the digits are sent, then its document runs on the called party (switch/script.py
rules for whisper documents), while the other targets keep ringing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.call.capacity import ERROR_CAPACITY
from switch.call.commands import (
    CancelCall,
    Command,
    HangUpCall,
    NewDocument,
    Redirect,
    RunTwiml,
)
from switch.call.events import (
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegEvent,
    LegMediaReady,
    LegProgressed,
    TransferRequested,
)
from switch.call.fork import (
    ANSWERED_ELSEWHERE,
    Action,
    Bridge,
    Cancel,
    Finished,
    ForkGroup,
    HangUp,
    RelayEarlyMedia,
    Screen,
    next_actions,
)
from switch.call.protocol import Leg, Player
from switch.call.registry import ERROR_CALL_ENDED, CallView, Refused
from switch.call.status import ERROR_SIP_ENDPOINT, CallStatus, final_status, release_code
from switch.call_recording import CallRecording, RecordingSettings
from switch.dial_callbacks import BranchCallbacks
from switch.numbers import InvalidNumber, caller_id, to_e164
from switch.rcml import model as rcml
from switch.registrar.bindings import Binding
from switch.routing import NoRoute, select_trunk
from switch.script import CallGone, Continue, FailedFetch, LegScript, Withdrawn
from switch.sipuri import InvalidSipUri, parse_dial_uri

if TYPE_CHECKING:
    from switch.session import CallSession


@dataclass(frozen=True)
class TransferDecided:
    """The app's answer to an accepted REFER: a document to run, or None (declined)."""

    request: TransferRequested
    document: rcml.Document | None


@dataclass(frozen=True)
class ScreenEnded:
    """A branch's sendDigits and whisper document are done; ``passed``: it stayed."""

    passed: bool


Event = LegEvent | TransferDecided | ScreenEnded | Command


@dataclass
class Branch:
    """One target of the fork and, once INVITEd, its leg."""

    key: int
    target: rcml.Target
    to: str  # the To of the child call (E.164 number, SIP URI or client:name)
    uri: str = ""
    target_uri: str | None = None  # Request-URI when it differs from To (clients)
    trunk: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    credentials: tuple[str, str] | None = None
    srtp: str = "optional"  # off | optional | mandatory (switch.config_tls)
    leg: Leg | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered: datetime | None = None
    cancel_status: CallStatus | None = None  # what it ends as when we cancelled it
    callbacks: BranchCallbacks | None = None
    screen: asyncio.Task[None] | None = None

    @property
    def screened(self) -> bool:
        target = self.target
        digits = isinstance(target, rcml.Number) and bool(target.send_digits)
        return digits or bool(target.url)

    def final_status(self) -> CallStatus:
        """Twilio's CallStatus of this child leg once it ended."""
        leg = self.leg
        answered = leg is not None and leg.was_answered and self.answered is not None
        code = leg.final_code if leg is not None else None
        return final_status(answered, code, self.cancel_status)


class DialRunner:
    def __init__(self, session: CallSession, dial: rcml.Dial):
        self.session = session
        self.services = session.services
        self.dial = dial
        self.caller = session.leg
        self.branches: dict[int, Branch] = {}
        self.group = ForkGroup.of(())
        self.events: asyncio.Queue[tuple[int | None, Event]] = asyncio.Queue()
        self.ringback: Player | None = None
        self.winner: Branch | None = None
        self.bridged_at: datetime | None = None
        self.started = datetime.now(UTC)
        self.log = session.log
        self.recording = (
            CallRecording(
                self.services,
                self.caller.call_sid,
                RecordingSettings.of_dial(dial, session.resolve),
                session.notify,
            )
            if dial.record.records
            else None
        )
        self.transfer: Continue | None = None  # the referUrl document that ends this Dial
        self.transfer_task: asyncio.Task[None] | None = None
        self.withdrawn = False  # a REST redirect ended the Dial: no action request
        self.racing = True  # the fork is undecided: commands go through the queue
        self.caller_id: str | None = None  # From of the children, chosen once

    # ---- setup -----------------------------------------------------------------------

    def _plan(self) -> None:
        """Turn each target into a branch; unroutable ones fail at once."""
        for target in self.dial.targets:
            match target:
                case rcml.Number():
                    self._plan_number(len(self.branches), target)
                case rcml.Sip():
                    self._plan_sip(len(self.branches), target)
                case rcml.Client():
                    self._plan_client(target)
        if self.dial.call_reason:
            for branch in self.branches.values():
                branch.headers = (*branch.headers, ("X-Call-Reason", self.dial.call_reason))

    def _plan_number(self, key: int, target: rcml.Number) -> None:
        try:
            number = to_e164(target.number, self.services.default_region)
        except InvalidNumber:
            self.branches[key] = Branch(key, target, to=target.number)
            self.session.notify(13223, f"invalid phone number {target.number!r}")
            return
        branch = Branch(key, target, to=number)
        self.branches[key] = branch
        try:
            trunk = select_trunk(number, self.services.trunks, target.byoc)
        except NoRoute as error:
            self.session.notify(13223 if target.byoc is None else 21211, f"no route: {error}")
            return
        branch.trunk = trunk.name
        branch.uri = self.services.trunk_uri(trunk, number)
        branch.srtp = trunk.srtp

    def _plan_sip(self, key: int, target: rcml.Sip) -> None:
        branch = Branch(key, target, to=target.uri)
        self.branches[key] = branch
        try:
            parsed = parse_dial_uri(target.uri)
        except InvalidSipUri as error:
            self.session.notify(error.code, str(error))
            return
        for notice in parsed.notices:
            self.session.notify(notice.code, notice.message, error=False)
        branch.uri = parsed.uri
        branch.to = parsed.uri
        branch.headers = parsed.headers
        branch.srtp = self.services.srtp_for(secure=parsed.secure)
        if target.username and target.password:
            branch.credentials = (target.username, target.password)

    def _plan_client(self, target: rcml.Client) -> None:
        """One branch per live registration; none registered: one branch failing at once."""
        identity = target.identity
        registrar = self.services.registrar
        bindings = registrar.lookup(identity) if registrar is not None else []
        headers = (
            *((_x_name(p.name), p.value) for p in target.parameters),
            *target.sip_headers,
        )
        if not bindings:
            self.log.info("%s: client %r is not registered", self.caller.call_sid, identity)
            key = len(self.branches)
            self.branches[key] = Branch(key, target, to=f"client:{identity}")
            return
        for binding in bindings:
            key = len(self.branches)
            self.branches[key] = Branch(
                key,
                target,
                to=f"client:{identity}",
                uri=self.services.client_uri(identity),
                target_uri=binding_target(binding),
                headers=headers,
                srtp=self.services.srtp_for(client=identity, binding=binding),
            )

    def _caller_id(self) -> str:
        if self.caller_id is None:
            self.caller_id = self._choose_caller_id()
        return self.caller_id

    def _choose_caller_id(self) -> str:
        """``callerId`` normalised for a From header (E.164 for numbers); an
        unusable one is 13214 and the caller's own number (SEMANTICS.md)."""
        wanted = self.dial.caller_id
        if wanted:
            normalised = caller_id(wanted, self.services.default_region)
            if normalised is not None:
                return normalised
            self.session.notify(
                13214, f"invalid callerId {wanted!r}; the caller's number is used", error=False
            )
        return self.session.from_

    # ---- run -------------------------------------------------------------------------

    async def run(self) -> Continue | None:
        self._plan()
        stop_listening = self.session.listen(lambda e: self.events.put_nowait((None, e)))
        self.session.dialling = self
        try:
            await self._prepare_caller()
            if self.recording is not None and self.recording.from_ringing and self.caller.live:
                self.recording.start(self.caller)
                if self.ringback is not None:
                    self.recording.hear_tone(self.ringback)
            self.group = ForkGroup.of(
                self.branches,
                ring_timeout=self.dial.timeout + self.services.timeout_grace,
                time_limit=self.dial.time_limit,
                relay_early_media=self.dial.ring_tone is None,
            )
            if self.group.start(asyncio.get_running_loop().time()):
                status = CallStatus.FAILED  # no target at all
            elif not self.caller.live:
                # The caller left before the first INVITE went out: send none.
                self.group.caller_left()
                status = CallStatus.NO_ANSWER
            elif self.withdrawn:
                # Redirected through the REST API while the caller was being answered.
                self.group.withdrawn()
                status = CallStatus.CANCELED
            else:
                for branch in self.branches.values():
                    self._invite(branch)
                status = await self._race()
        finally:
            self.racing = False
            stop_listening()
            self._stop_ringback()
            await self._end_children()
            self.session.dialling = None
        if self.withdrawn:
            if self.recording is not None:
                await self.recording.finish()
            raise Withdrawn
        return await self._report(status)

    def deliver(self, command: NewDocument) -> None:
        """A REST redirect of the parent call while this Dial runs.

        While the fork is undecided it is withdrawn; once it is over, only its
        action request is skipped. Either way the Dial ends ``Withdrawn``, even
        when the fork finishes in the same tick and the command stays unread.
        """
        self.withdrawn = True
        if self.racing:
            self.events.put_nowait((None, command))

    def cancel_child(self, call_sid: str) -> bool:
        """``Status=canceled`` for one of this Dial's children; False if it is not ringing."""
        for branch in self.branches.values():
            if branch.leg is not None and branch.leg.call_sid == call_sid:
                if branch.leg.answered or not branch.leg.live:
                    return False
                self.events.put_nowait((branch.key, CancelCall()))
                return True
        return False

    async def _prepare_caller(self) -> None:
        dial, caller = self.dial, self.caller
        if not caller.live:
            return
        try:
            if not dial.answer_on_bridge:
                await self.session.ensure_answered()
                self._start_ringback()
            elif dial.ring_tone:
                caller.ring(early_media=True)
                await self.session.wait_media(caller)
                self._start_ringback()
            else:
                caller.ring(early_media=False)
        except CallGone:
            return

    def _invite(self, branch: Branch) -> None:
        if not branch.uri:
            self.events.put_nowait((branch.key, LegEnded(404, "No Route")))
            return
        if not self.services.admit_leg("dial", parent=self.caller.call_sid):
            self.session.notify(
                ERROR_CAPACITY,
                f"{branch.uri}: not dialled, the switch is at max_calls",
                error=False,
            )
            self.events.put_nowait((branch.key, LegEnded(503, "Service Unavailable")))
            return
        callbacks = self._callbacks_for(branch)
        from_uri = self.services.from_uri(self._caller_id())
        sid = self.services.new_call_sid()
        leg = self.services.engine.place_call(
            sid,
            branch.uri,
            from_uri,
            branch.headers,
            branch.trunk,
            branch.credentials,
            branch.target_uri,
            branch.srtp,
        )
        branch.leg = leg
        self.services.calls.add(ChildCall(self, branch, leg), parent=self.caller.call_sid)
        leg.keep_final_response = isinstance(branch.target, rcml.Sip)
        branch.started = datetime.now(UTC)
        key = branch.key
        leg.subscribe(lambda e: self.events.put_nowait((key, e)))
        self.services.time_post_dial(leg, "outbound-dial")
        if callbacks is not None:
            callbacks.initiated()
        if not leg.live:  # never sent: its LegEnded was emitted before we subscribed
            self.events.put_nowait((key, LegEnded(leg.final_code or 500, leg.final_reason)))

    def _callbacks_for(self, branch: Branch) -> BranchCallbacks | None:
        target = branch.target
        if not target.status_callback:
            return None
        branch.callbacks = BranchCallbacks(
            self.services.webhooks,
            url=self.session.resolve(target.status_callback),
            method=target.status_callback_method,
            events=target.status_callback_event,
            params=lambda: self._child_params(branch),
        )
        return branch.callbacks

    async def _race(self) -> CallStatus:
        """Feed events and deadlines to the fork group until it finishes.

        Returns the DialCallStatus. The group says when it next needs the clock
        (``get_timer``); the queue carries frozen events only.
        """
        while True:
            actions = await next_actions(self.group, self.events, self._event)
            await self._apply(actions)
            for action in actions:
                if isinstance(action, Finished):
                    self.withdrawn = self.withdrawn or action.withdrawn
                    return action.dial_call_status

    def _event(self, item: tuple[int | None, Event]) -> list[Action]:
        key, event = item
        if key is None:
            return self._caller_event(event)
        return self._branch_event(self.branches[key], event)

    def _caller_event(self, event: Event) -> list[Action]:
        group = self.group
        match event:
            case DtmfReceived(digit="*") if self.dial.hangup_on_star and self.bridged_at:
                return group.hangup_on_star()
            case TransferRequested(refer_to=target):
                self.session.notify(13802, f"REFER to {target} from the caller declined")
                return []
            case LegEnded():
                if self.winner is not None:
                    return group.bridge_ended()
                if self.session.withdrawn_as is CallStatus.CANCELED:
                    return group.caller_left(CallStatus.CANCELED)  # by the REST API
                return group.caller_left()
            case LegMediaReady() if group.early_media_branch is not None:
                # The caller's own 183 media came up after the branch's: relay now.
                return group.media_ready(group.early_media_branch)
            case Redirect() | RunTwiml():
                return group.withdrawn()
        return []

    def _branch_event(self, branch: Branch, event: Event) -> list[Action]:
        group = self.group
        callbacks = branch.callbacks
        match event:
            case LegProgressed(early_media=early):
                if callbacks is not None:
                    callbacks.ringing()
                return group.early_media(branch.key) if early else []
            case LegAnswered():
                branch.answered = datetime.now(UTC)
                if callbacks is not None:
                    callbacks.answered()
                return group.answered(branch.key, screened=branch.screened)
            case LegMediaReady():
                return group.media_ready(branch.key)
            case LegEnded(sip_code=code, failure=failure):
                if failure:
                    self.session.notify(ERROR_SIP_ENDPOINT, f"{branch.uri}: {failure}", error=False)
                if callbacks is not None:
                    callbacks.completed(
                        branch.final_status(), self._duration(branch), self._recording_params()
                    )
                if self.winner is branch:
                    return group.bridge_ended()
                return group.failed(branch.key, code)
            case TransferRequested():
                self._transfer_requested(branch, event)
                return []
            case TransferDecided():
                self._transfer_decided(branch, event)
                return []
            case ScreenEnded(passed=True):
                return group.screen_passed(branch.key)
            case ScreenEnded(passed=False):
                if branch.leg is not None:
                    branch.leg.hangup()
                return []
            case CancelCall():
                return group.branch_canceled(branch.key)
        return []

    async def _apply(self, actions: list[Action]) -> None:
        """Carry out the fork group's actions, in order."""
        for action in actions:
            match action:
                case Cancel(branch=key, status=status, elsewhere=elsewhere):
                    branch = self._branch(key)
                    if branch.cancel_status is None:
                        branch.cancel_status = status
                    if branch.leg is not None:
                        branch.leg.hangup(headers=ANSWERED_ELSEWHERE if elsewhere else ())
                case HangUp(branch=key):
                    leg = self._branch(key).leg
                    if leg is not None:
                        leg.hangup()
                case RelayEarlyMedia(branch=key):
                    self._relay_early_media(self._branch(key))
                case Screen(branch=key):
                    self._start_screening(self._branch(key))
                case Bridge(branch=key):
                    if await self._bridge(self._branch(key)):
                        self.group.bridged(asyncio.get_running_loop().time())

    def _branch(self, key: Hashable) -> Branch:
        """The branch a fork-group decision names (its keys are our int keys)."""
        assert isinstance(key, int)
        return self.branches[key]

    def _relay_early_media(self, branch: Branch) -> None:
        leg = branch.leg
        if leg is None or not leg.media_ready.is_set():
            return
        if self.dial.answer_on_bridge:
            self.caller.ring(early_media=True)
        if not self.caller.media_ready.is_set():
            return  # the caller's 183 media comes up shortly; LegMediaReady retries
        self._stop_ringback()
        self.session.media.connect(leg, self.caller)
        if self.recording is not None:
            self.recording.hear(leg)

    async def _bridge(self, branch: Branch) -> bool:
        self.winner = branch
        leg = branch.leg
        assert leg is not None
        self._stop_ringback()
        if self.dial.answer_on_bridge:
            self.caller.answer()
        try:
            await self.session.wait_media(self.caller)
            await self.session.wait_media(leg)
        except CallGone:
            return False  # the caller's LegEnded is queued and ends the race
        media = self.session.media
        media.connect(self.caller, leg)
        media.connect(leg, self.caller)
        self.bridged_at = datetime.now(UTC)
        leg.transfers_allowed = bool(self.dial.refer_url)
        if self.recording is not None:
            self.recording.start(self.caller)  # record-from-answer starts here, once
            self.recording.hear_own(self.caller)
            self.recording.hear(leg)
        if self.session.answered_at is None:
            self.session.answered_at = self.bridged_at
        return True

    # ---- screening: sendDigits and whisper -------------------------------------------

    def _start_screening(self, branch: Branch) -> None:
        async def screen() -> None:
            passed = await self._screen(branch)
            self.events.put_nowait((branch.key, ScreenEnded(passed)))

        branch.screen = asyncio.get_running_loop().create_task(screen())

    async def _screen(self, branch: Branch) -> bool:
        """Send the digits, run the whisper document; True if the callee stayed."""
        leg = branch.leg
        assert leg is not None
        target = branch.target
        script = WhisperScript(self, branch)
        try:
            await script.wait_media(leg)
            if isinstance(target, rcml.Number) and target.send_digits:
                await script.send_digits(leg, target.send_digits)
            if target.url:
                document = await script.fetch(target.url, target.method, {})
                if document is None:
                    return False
                await script.run_document(document)
        except CallGone:
            return False
        except Exception:
            self.log.exception("%s: whisper failed", leg.call_sid)
            return False
        return leg.live

    # ---- transfer: a REFER from the bridged party (Twilio's referUrl) -----------------

    def _transfer_requested(self, branch: Branch, request: TransferRequested) -> None:
        """The leg answered the REFER (202 or 603); an accepted one asks the referUrl."""
        if not request.accepted:
            if not self.dial.refer_url:
                reason = "the <Dial> has no referUrl"
            elif branch is not self.winner:
                reason = "the party is not bridged"
            else:
                reason = "another transfer is under way"
            self.session.notify(13802, f"REFER to {request.refer_to} declined: {reason}")
            return
        leg = branch.leg
        assert leg is not None and self.dial.refer_url
        if request.subscription:
            leg.notify_transfer(100, "Trying", final=False)
        self.transfer_task = asyncio.get_running_loop().create_task(
            self._ask_refer_url(branch, request)
        )

    async def _ask_refer_url(self, branch: Branch, request: TransferRequested) -> None:
        assert self.dial.refer_url
        extra = {"ReferTransferTarget": request.refer_to}
        extra.update((f"SipHeader_{name}", value) for name, value in request.headers)
        current_url = self.session.document_url
        result = await self.session.fetch_once(self.dial.refer_url, self.dial.refer_method, extra)
        document = None if isinstance(result, FailedFetch) else result
        if document is not None and (
            not document.verbs or isinstance(document.verbs[0], rcml.Reject)
        ):
            document = None  # an empty answer or <Reject> declines the transfer
        if document is None:
            self.session.document_url = current_url  # the Dial's own URLs stay relative to it
        self.events.put_nowait((branch.key, TransferDecided(request, document)))

    def _transfer_decided(self, branch: Branch, decided: TransferDecided) -> None:
        """Accepted: tell the referrer, let it go, run the document on the caller.

        Declined: the referrer hears 603 in a NOTIFY and the bridge goes on.
        """
        leg = branch.leg
        if leg is None or not leg.live or branch is not self.winner:
            return
        request, url = decided.request, self.dial.refer_url
        if decided.document is None or url is None:
            if request.subscription:
                leg.notify_transfer(603, "Declined")
            leg.transfers_allowed = True
            return
        if request.subscription:
            leg.notify_transfer(200, "OK")
        self.log.info("%s: transferred to %s by the app", self.caller.call_sid, request.refer_to)
        self.transfer = Continue(decided.document, url)
        leg.hangup()

    # ---- ringback --------------------------------------------------------------------

    def _start_ringback(self) -> None:
        code = self.dial.ring_tone or self.services.default_ringtone
        path = self.services.ringback_file(code)
        self.ringback = self.session.media.play(path, loop=True)

    def _stop_ringback(self) -> None:
        player, self.ringback = self.ringback, None
        if player is not None:
            player.close()

    # ---- parameters ------------------------------------------------------------------

    def _child_params(self, branch: Branch) -> dict[str, str]:
        """Voice-request parameters of a child leg (status callbacks, whisper)."""
        leg = branch.leg
        status = "queued"
        if leg is not None:
            status = leg.machine.call_status if leg.live else branch.final_status()
        return {
            "CallSid": leg.call_sid if leg is not None else "",
            "ParentCallSid": self.caller.call_sid,
            "AccountSid": self.services.account_sid,
            "From": self._caller_id(),
            "To": branch.to,
            "Caller": self._caller_id(),
            "Called": branch.to,
            "CallStatus": status,
            "ApiVersion": "2010-04-01",
            "Direction": "outbound-dial",
            "SipCallId": leg.sip_call_id if leg is not None else "",
        }

    @staticmethod
    def _duration(branch: Branch) -> int:
        if branch.answered is None:
            return 0
        return int((datetime.now(UTC) - branch.answered).total_seconds())

    def _recording_params(self) -> dict[str, str]:
        return self.recording.progress_params() if self.recording is not None else {}

    # ---- the end ---------------------------------------------------------------------

    async def _end_children(self) -> None:
        if self.transfer_task is not None and not self.transfer_task.done():
            self.transfer_task.cancel()
        for branch in self.branches.values():
            if branch.screen is not None and not branch.screen.done():
                branch.screen.cancel()
        legs = [b.leg for b in self.branches.values() if b.leg is not None]
        for leg in legs:
            leg.hangup()
        waits = [asyncio.shield(leg.ended) for leg in legs if leg.live]
        if waits:
            await asyncio.wait(waits, timeout=10)
        for branch in self.branches.values():
            # Legs ended by the end of the fork: the race no longer reads their
            # LegEnded, so their completed callback goes out here (never twice).
            if branch.callbacks is not None and branch.leg is not None:
                branch.callbacks.completed(
                    branch.final_status(), self._duration(branch), self._recording_params()
                )
        ended = datetime.now(UTC)
        for branch in self.branches.values():
            if branch.leg is not None:
                self.services.record_leg(
                    branch.leg,
                    parent_sid=self.caller.call_sid,
                    from_=self._caller_id(),
                    to=branch.to,
                    direction="outbound-dial",
                    started=branch.started,
                    answered=branch.answered if branch is self.winner else None,
                    trunk=branch.trunk,
                    call_reason=self.dial.call_reason,
                    ended=ended,
                    status=branch.final_status(),
                )
                self.services.calls.remove(branch.leg.call_sid)

    async def _report(self, status: CallStatus) -> Continue | None:
        now = datetime.now(UTC)
        duration = int((now - self.bridged_at).total_seconds()) if self.bridged_at else 0
        ring_end = self.bridged_at or now
        last = self.winner or _last_invited(self.branches)
        if status is not CallStatus.COMPLETED and not self.caller.answered:
            last_leg = last.leg if last is not None else None
            self.session.release_code = release_code(
                status,
                last_leg.final_code if last_leg is not None else None,
                last_leg.final_reason if last_leg is not None else "",
            )
        extra = {
            "DialCallStatus": status,
            "DialCallSid": last.leg.call_sid if last and last.leg else "",
            "DialCallDuration": str(duration),
            "DialBridged": "true" if self.bridged_at else "false",
            "DialRingDuration": str(int((ring_end - self.started).total_seconds())),
        }
        if last is not None and isinstance(last.target, rcml.Sip) and last.leg is not None:
            extra.update(_sip_extras(last.leg))
        if self.recording is not None:
            extra.update(await self.recording.finish())
        if self.transfer is not None:
            # Twilio: the referUrl's document replaces the rest; no action request.
            return self.transfer if self.caller.live else None
        if not self.dial.action:
            return None
        doc = await self.session.fetch(self.dial.action, self.dial.method, extra)
        if not self.caller.live:
            return Continue(None, self.dial.action)
        return Continue(doc, self.dial.action)


class ChildCall:
    """A ``<Dial>`` child as the REST API reaches it while it is live.

    ``Status=canceled`` withdraws it while it rings (the Dial's status is then
    ``canceled``), ``Status=completed`` hangs it up. Redirecting a child out of
    its bridge is not supported: redirect the parent call.
    """

    def __init__(self, runner: DialRunner, branch: Branch, leg: Leg):
        self.runner = runner
        self.branch = branch
        self.leg = leg
        self.call_sid = leg.call_sid

    def view(self) -> CallView:
        branch, leg = self.branch, self.leg
        return CallView(
            sid=self.call_sid,
            parent_call_sid=self.runner.caller.call_sid,
            to=branch.to,
            from_=self.runner._caller_id(),
            status=leg.machine.call_status if leg.live else branch.final_status(),
            direction="outbound-dial",
            start_time=branch.started,
            end_time=None,
            answer_time=branch.answered,
            date_created=branch.started,
        )

    def deliver(self, command: Command) -> None:
        if not self.leg.live:
            raise Refused.call_ended()
        match command:
            case CancelCall():
                self.runner.cancel_child(self.call_sid)  # an answered child stays
            case HangUpCall() if not self.leg.answered:
                self.runner.cancel_child(self.call_sid)  # a ringing one is cancelled
            case HangUpCall():
                self.leg.hangup()
            case _:
                raise Refused(
                    ERROR_CALL_ENDED,
                    "A <Dial> child cannot be redirected; redirect its parent call",
                )


class WhisperScript(LegScript):
    """The whisper document of one target, run on the called party before the bridge."""

    whisper = True

    def __init__(self, runner: DialRunner, branch: Branch):
        assert branch.leg is not None
        leg = branch.leg
        adapter = logging.LoggerAdapter(
            logging.getLogger("dialswitch.call"),
            {"call_sid": leg.call_sid, "sip_call_id": leg.sip_call_id},
        )
        super().__init__(runner.services, branch.leg, runner.session.document_url, None, adapter)
        self.runner = runner
        self.branch = branch

    def params(self) -> dict[str, str]:
        return self.runner._child_params(self.branch)

    def notify(
        self,
        code: int,
        message: str,
        url: str | None = None,
        error: bool = True,
        logged: bool = False,
    ) -> None:
        """Problems of a whisper document are the parent call's notifications."""
        self.runner.session.notify(code, f"whisper: {message}", url, error, logged)


def _x_name(name: str) -> str:
    """A <Parameter> name as the X- header a SIP client receives it in."""
    return name if name.lower().startswith("x-") else f"X-{name}"


def binding_target(binding: Binding) -> str:
    """The Request-URI that reaches a registration where its REGISTER came from.

    The user part of the registered Contact is kept; host, port and transport
    are the source of the REGISTER, so a phone behind NAT is reached through
    its own mapping (and a TCP phone over its own connection).
    """
    scheme, _, rest = binding.contact_uri.partition(":")
    user = rest.split("@", 1)[0] + "@" if "@" in rest else ""
    source = binding.source
    host = f"[{source.host}]" if ":" in source.host else source.host
    if source.browser:  # the edge's connection, and the browser's flow on it (switch/sipws)
        return f"sip:{user}{host}:{source.port};transport=tcp;flow={binding.connection_id}"
    transport = "" if source.transport == "udp" else f";transport={source.transport}"
    return f"{scheme}:{user}{host}:{source.port}{transport}"


def _last_invited(branches: dict[int, Branch]) -> Branch | None:
    invited = [b for b in branches.values() if b.leg is not None]
    return invited[-1] if invited else None


def _sip_extras(leg: Leg) -> dict[str, str]:
    extras = {"DialSipCallId": leg.sip_call_id, "DialSipResponseCode": str(leg.final_code or 0)}
    if leg.final_response is not None:
        extras["DialSipResponseCode"] = str(leg.final_response.status_code)
        for name, value in leg.final_response.x_headers().items():
            extras[f"DialSipHeader_{name}"] = value
    return extras
