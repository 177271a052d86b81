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

from switch.dial_callbacks import BranchCallbacks
from switch.dial_recording import DialRecording
from switch.engine import Leg
from switch.engine.events import (
    DtmfReceived,
    LegAnswered,
    LegEnded,
    LegEvent,
    LegMediaReady,
    LegProgressed,
    TransferRequested,
)
from switch.fork import Action, Bridge, Cancel, Finished, ForkGroup, RelayEarlyMedia, Screen
from switch.leg import final_call_status
from switch.numbers import InvalidNumber, to_e164
from switch.rcml import model as rcml
from switch.registrar.bindings import Binding
from switch.routing import NoRoute, select_trunk
from switch.script import CallGone, Continue, FailedFetch, LegScript
from switch.sipuri import InvalidSipUri, parse_dial_uri

if TYPE_CHECKING:
    from switch.engine.core import Player
    from switch.session import CallSession

RELEASE_CODES = {"busy": (486, "Busy Here"), "no-answer": (480, "Temporarily Unavailable")}


@dataclass(frozen=True)
class TransferDecided:
    """The app's answer to an accepted REFER: a document to run, or None (declined)."""

    request: TransferRequested
    document: rcml.Document | None


Event = LegEvent | TransferDecided | str


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
    leg: Leg | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered: datetime | None = None
    cancel_status: str | None = None  # CallStatus when we cancelled it
    callbacks: BranchCallbacks | None = None
    screen: asyncio.Task[None] | None = None

    @property
    def screened(self) -> bool:
        target = self.target
        digits = isinstance(target, rcml.Number) and bool(target.send_digits)
        return digits or bool(target.url)

    def final_status(self) -> str:
        """Twilio's CallStatus of this child leg once it ended."""
        leg = self.leg
        if leg is not None and leg.was_answered and self.answered is not None:
            return "completed"
        if self.cancel_status is not None:
            return self.cancel_status
        code = leg.final_code if leg is not None else None
        return final_call_status(False, code, cancelled=False)


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
        self.recording = DialRecording(self) if dial.record.records else None
        self.transfer: Continue | None = None  # the referUrl document that ends this Dial
        self.transfer_task: asyncio.Task[None] | None = None

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
            )

    def _caller_id(self) -> str:
        return self.dial.caller_id or self.session.from_

    # ---- run -------------------------------------------------------------------------

    async def run(self) -> Continue | None:
        self._plan()
        stop_listening = self.caller.subscribe(lambda e: self.events.put_nowait((None, e)))
        try:
            await self._prepare_caller()
            if self.recording is not None and self.recording.from_ringing and self.caller.live:
                self.recording.start()
                if self.ringback is not None:
                    self.recording.hear(self.ringback)
            self.group = ForkGroup.of(self.branches)
            if self.group.start():
                status = "failed"  # no target at all
            elif not self.caller.live:
                # The caller left before the first INVITE went out: send none.
                self.group.caller_left()
                status = "no-answer"
            else:
                for branch in self.branches.values():
                    self._invite(branch)
                status = await self._race()
        finally:
            stop_listening()
            self._stop_ringback()
            await self._end_children()
        return await self._report(status)

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
        )
        branch.leg = leg
        leg.keep_final_response = isinstance(branch.target, rcml.Sip)
        branch.started = datetime.now(UTC)
        key = branch.key
        leg.subscribe(lambda e: self.events.put_nowait((key, e)))
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

    async def _race(self) -> str:
        """Feed events to the fork group until it finishes; returns DialCallStatus."""
        loop = asyncio.get_running_loop()
        timeout = self.dial.timeout + self.services.timeout_grace
        timer = loop.call_later(timeout, lambda: self.events.put_nowait((None, "timeout")))
        limit: asyncio.TimerHandle | None = None
        try:
            while True:
                key, event = await self.events.get()
                if key is None:
                    actions = self._caller_event(event)
                else:
                    actions = self._branch_event(self.branches[key], event)
                bridged = await self._apply(actions)
                if bridged:
                    timer.cancel()
                    limit = loop.call_later(
                        self.dial.time_limit,
                        lambda: self.events.put_nowait((None, "time-limit")),
                    )
                for action in actions:
                    if isinstance(action, Finished):
                        return action.dial_call_status
        finally:
            timer.cancel()
            if limit is not None:
                limit.cancel()

    def _caller_event(self, event: Event) -> list[Action]:
        group = self.group
        match event:
            case "timeout":
                for key in group.ringing_branches():
                    self._branch(key).cancel_status = "no-answer"
                return group.timed_out()
            case "time-limit":
                if self.winner is not None and self.winner.leg is not None:
                    self.winner.leg.hangup()
                return []
            case DtmfReceived(digit="*") if self.dial.hangup_on_star and self.bridged_at:
                if self.winner is not None and self.winner.leg is not None:
                    self.winner.leg.hangup()
                return []
            case TransferRequested(refer_to=target):
                self.session.notify(13802, f"REFER to {target} from the caller declined")
                return []
            case LegEnded():
                if self.winner is not None:
                    return group.bridge_ended()
                for key in group.pending_branches():
                    self._branch(key).cancel_status = "canceled"
                return group.caller_left()
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
                if group.early_media_branch == branch.key and self.winner is None:
                    self._relay_early_media(branch)
                return []
            case LegEnded(sip_code=code):
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
            case "screen-passed":
                return group.screen_passed(branch.key)
            case "screen-failed":
                if branch.leg is not None:
                    branch.leg.hangup()
                return []
        return []

    async def _apply(self, actions: list[Action]) -> bool:
        """Carry out the fork group's actions; True when a bridge was made."""
        bridged = False
        for action in actions:
            match action:
                case Cancel(branch=key):
                    branch = self._branch(key)
                    if branch.cancel_status is None:
                        branch.cancel_status = "canceled"
                    if branch.leg is not None:
                        branch.leg.hangup()
                case RelayEarlyMedia(branch=key):
                    self._relay_early_media(self._branch(key))
                case Screen(branch=key):
                    self._start_screening(self._branch(key))
                case Bridge(branch=key):
                    bridged = await self._bridge(self._branch(key))
        return bridged

    def _branch(self, key: Hashable) -> Branch:
        """The branch a fork-group decision names (its keys are our int keys)."""
        assert isinstance(key, int)
        return self.branches[key]

    def _relay_early_media(self, branch: Branch) -> None:
        leg = branch.leg
        if leg is None or self.dial.ring_tone is not None or not leg.media_ready.is_set():
            return
        if self.dial.answer_on_bridge:
            self.caller.ring(early_media=True)
        if self.caller.audio() is None:
            return  # the caller's 183 media comes up shortly; LegMediaReady retries
        self._stop_ringback()
        self.services.engine.connect(leg, self.caller)
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
        engine = self.services.engine
        engine.connect(self.caller, leg)
        engine.connect(leg, self.caller)
        self.bridged_at = datetime.now(UTC)
        leg.transfers_allowed = bool(self.dial.refer_url)
        if self.recording is not None:
            self.recording.start()  # record-from-answer starts here; no-op if running
            self.recording.hear_caller()
            self.recording.hear(leg)
        if self.session.answered_at is None:
            self.session.answered_at = self.bridged_at
        return True

    # ---- screening: sendDigits and whisper -------------------------------------------

    def _start_screening(self, branch: Branch) -> None:
        async def screen() -> None:
            passed = await self._screen(branch)
            self.events.put_nowait((branch.key, "screen-passed" if passed else "screen-failed"))

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
        self.ringback = self.services.engine.player(path, loop=True)
        self.ringback.start(self.caller)

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

    async def _report(self, status: str) -> Continue | None:
        now = datetime.now(UTC)
        duration = int((now - self.bridged_at).total_seconds()) if self.bridged_at else 0
        ring_end = self.bridged_at or now
        last = self.winner or _last_invited(self.branches)
        if status != "completed" and not self.caller.answered:
            code = RELEASE_CODES.get(status)
            if code is None and last is not None and last.leg is not None:
                sip = last.leg.final_code or 0
                code = (sip, last.leg.final_reason) if 400 <= sip < 700 else None
            self.session.release_code = code or (503, "Service Unavailable")
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


class WhisperScript(LegScript):
    """The whisper document of one target, run on the called party before the bridge."""

    whisper = True

    def __init__(self, runner: DialRunner, branch: Branch):
        assert branch.leg is not None
        adapter = logging.LoggerAdapter(
            logging.getLogger("dialswitch.call"), {"call_sid": branch.leg.call_sid}
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
