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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.engine import Leg
from switch.engine.events import LegAnswered, LegEnded, LegEvent, LegMediaReady, LegProgressed
from switch.fork import Bridge, Cancel, Finished, ForkGroup, RelayEarlyMedia
from switch.numbers import InvalidNumber, to_e164
from switch.rcml import model as rcml
from switch.routing import NoRoute, select_trunk

if TYPE_CHECKING:
    from switch.engine.core import Player
    from switch.script import Continue
    from switch.session import CallSession

RELEASE_CODES = {"busy": (486, "Busy Here"), "no-answer": (480, "Temporarily Unavailable")}


@dataclass
class Branch:
    """One target of the fork and, once INVITEd, its leg."""

    key: int
    target: rcml.Target
    to: str  # the To of the child call (E.164 number or SIP URI)
    uri: str = ""
    trunk: str | None = None
    leg: Leg | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    answered: datetime | None = None


class DialRunner:
    def __init__(self, session: CallSession, dial: rcml.Dial):
        self.session = session
        self.services = session.services
        self.dial = dial
        self.caller = session.leg
        self.branches: dict[int, Branch] = {}
        self.group: ForkGroup | None = None
        self.events: asyncio.Queue[tuple[int | None, LegEvent | str]] = asyncio.Queue()
        self.ringback: Player | None = None
        self.winner: Branch | None = None
        self.bridged_at: datetime | None = None
        self.started = datetime.now(UTC)
        self.log = session.log

    # ---- setup -----------------------------------------------------------------------

    def _plan(self) -> None:
        """Turn each target into a branch; unroutable ones fail at once."""
        for key, target in enumerate(self.dial.targets):
            match target:
                case rcml.Number():
                    self._plan_number(key, target)
                case rcml.Sip():
                    self.branches[key] = Branch(key, target, to=target.uri, uri=target.uri)
                case rcml.Client():
                    branch = Branch(key, target, to=f"client:{target.identity}")
                    self.branches[key] = branch
                    self.session.notify(
                        13215, f"client {target.identity!r} has no registration", None
                    )

    def _plan_number(self, key: int, target: rcml.Number) -> None:
        region = self.services.default_region
        try:
            number = to_e164(target.number, region)
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

    def _caller_id(self) -> str:
        return self.dial.caller_id or self.session.from_

    # ---- run -------------------------------------------------------------------------

    async def run(self) -> Continue | None:
        self._plan()
        caller_unsubscribe = self.caller.subscribe(lambda e: self.events.put_nowait((None, e)))
        try:
            await self._prepare_caller()
            self.group = ForkGroup.of(self.branches)
            if self.group.start():
                status = "failed"  # no target at all
            else:
                for branch in self.branches.values():
                    self._invite(branch)
                status = await self._race()
        finally:
            caller_unsubscribe()
            self._stop_ringback()
            await self._end_children()
        return await self._report(status)

    async def _prepare_caller(self) -> None:
        dial, caller = self.dial, self.caller
        if not caller.live:
            return
        if not dial.answer_on_bridge:
            await self.session.ensure_answered()
            self._start_ringback()
        elif dial.ring_tone:
            caller.ring(early_media=True)
            await self.session.wait_media(caller)
            self._start_ringback()
        else:
            caller.ring(early_media=False)

    def _invite(self, branch: Branch) -> None:
        if not branch.uri:
            self.events.put_nowait((branch.key, LegEnded(404, "No Route")))
            return
        headers: list[tuple[str, str]] = []
        if self.dial.call_reason:
            headers.append(("X-Call-Reason", self.dial.call_reason))
        from_uri = self.services.from_uri(self._caller_id())
        sid = self.services.new_call_sid()
        leg = self.services.engine.place_call(sid, branch.uri, from_uri, headers, branch.trunk)
        branch.leg = leg
        branch.started = datetime.now(UTC)
        key = branch.key
        leg.subscribe(lambda e: self.events.put_nowait((key, e)))
        if not leg.live:  # never sent: its LegEnded was emitted before we subscribed
            self.events.put_nowait((key, LegEnded(leg.final_code or 500, leg.final_reason)))

    async def _race(self) -> str:
        """Feed events to the fork group until it finishes; returns DialCallStatus."""
        assert self.group is not None
        loop = asyncio.get_running_loop()
        timeout = self.dial.timeout + self.services.timeout_grace
        timer = loop.call_later(timeout, lambda: self.events.put_nowait((None, "timeout")))
        limit: asyncio.TimerHandle | None = None
        try:
            while True:
                key, event = await self.events.get()
                group = self.group
                if event == "timeout":
                    actions = group.timed_out()
                elif event == "time-limit":
                    actions = group.bridge_ended()
                elif key is None:
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

    def _caller_event(self, event: LegEvent | str) -> list[object]:
        group = self.group
        assert group is not None
        if not isinstance(event, LegEnded):
            return []
        return list(group.bridge_ended() if self.winner else group.caller_left())

    def _branch_event(self, branch: Branch, event: LegEvent | str) -> list[object]:
        group = self.group
        assert group is not None
        match event:
            case LegProgressed(early_media=True):
                return list(group.early_media(branch.key))
            case LegAnswered():
                branch.answered = datetime.now(UTC)
                return list(group.answered(branch.key))
            case LegMediaReady():
                if group.early_media_branch == branch.key and self.winner is None:
                    self._relay_early_media(branch)
                return []
            case LegEnded(sip_code=code):
                if self.winner is branch:
                    return list(group.bridge_ended())
                return list(group.failed(branch.key, code))
        return []

    async def _apply(self, actions: list[object]) -> bool:
        """Carry out the fork group's actions; True when a bridge was made."""
        bridged = False
        for action in actions:
            match action:
                case Cancel(branch=key):
                    leg = self.branches[key].leg  # type: ignore[index]
                    if leg is not None:
                        leg.hangup()
                case RelayEarlyMedia(branch=key):
                    branch = self.branches[key]  # type: ignore[index]
                    if self.dial.ring_tone is None:
                        self._relay_early_media(branch)
                case Bridge(branch=key):
                    bridged = await self._bridge(self.branches[key])  # type: ignore[index]
        return bridged

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
        except Exception:  # noqa: BLE001 - caller gone: the LegEnded event ends the race
            return False
        engine = self.services.engine
        engine.connect(self.caller, leg)
        engine.connect(leg, self.caller)
        self.bridged_at = datetime.now(UTC)
        if self.session.answered_at is None:
            self.session.answered_at = self.bridged_at
        return True

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

    # ---- the end ---------------------------------------------------------------------

    async def _end_children(self) -> None:
        legs = [b.leg for b in self.branches.values() if b.leg is not None]
        for leg in legs:
            leg.hangup()
        waits = [asyncio.shield(leg.ended) for leg in legs if leg.live]
        if waits:
            await asyncio.wait(waits, timeout=10)
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
                )

    async def _report(self, status: str) -> Continue | None:
        from switch.script import Continue

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
        if not self.dial.action:
            return None
        doc = await self.session.fetch(self.dial.action, self.dial.method, extra)
        if not self.caller.live:
            return Continue(None, self.dial.action)
        return Continue(doc, self.dial.action)


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
