"""The fork group: which branch of a ``<Dial>`` wins, and what happens to the rest.

One ``<Dial>`` rings up to ten targets at once. This object holds every
decision about them and does no I/O: the dial runner feeds it what the SIP legs
did and carries out the actions it returns, in order.

Rules (Twilio's ``<Dial>``, see SEMANTICS.md "Fork"):

- the first 2xx wins and is bridged; every other live branch is CANCELled;
- a branch with a whisper document (``url`` on its noun) is *screened* first:
  it answers, its document runs on the called party while the others keep
  ringing, and it wins only when the document completes; if the called party
  hangs up during it, that branch counts as declined and the fork goes on;
- a 2xx arriving after the winner is ACKed by the SIP stack and then BYEd;
- a failure (486, 603, 404, 5xx) ends only its branch while others ring;
- the timeout, or the caller leaving, cancels every live branch;
- exactly one ``Finished`` action per group, carrying the aggregated
  ``DialCallStatus``: any answer -> completed; timeout -> no-answer; a branch
  cancelled through the REST API -> canceled; all busy -> busy; otherwise
  no-answer if any branch was not answered in time, else failed;
- a ``Cancel`` names the status the withdrawn branch ends with: ``no-answer``
  on the timeout, ``canceled`` otherwise;
- the live call can be withdrawn as a whole (a REST redirect or hang-up):
  pending branches are cancelled, the bridged one is hung up, and the group
  finishes without asking for the action.

The group owns its deadlines as aioquic's connection does: ``get_timer()``
says when it next wants ``handle_timer(now)``, which fires the ring timeout
(``<Dial timeout>`` plus grace) before a bridge and ``timeLimit`` after it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from switch.call.status import BUSY_CODES, NO_ANSWER_CODES, CallStatus


class BranchState(enum.Enum):
    RINGING = "ringing"  # INVITE out (or about to be), no final answer yet
    SCREENING = "screening"  # answered; its whisper document runs before it may win
    WON = "won"  # the answered branch that is bridged
    FAILED = "failed"  # a final non-2xx arrived
    CANCELLED = "cancelled"  # we gave up on it (CANCEL, or BYE after a late 2xx)


@dataclass(frozen=True)
class Cancel:
    """CANCEL (or BYE, if it already answered) this branch; it ends with ``status``."""

    branch: Hashable
    status: CallStatus = CallStatus.CANCELED
    elsewhere: bool = False  # another branch answered (RFC 3326: cause=200)


ANSWERED_ELSEWHERE = (("Reason", 'SIP;cause=200;text="Call completed elsewhere"'),)
"""The header on the CANCEL of a branch another one beat (RFC 3326), so a phone
shows "answered elsewhere" rather than a missed call."""


@dataclass(frozen=True)
class HangUp:
    """End the bridged branch (``timeLimit``, ``hangupOnStar``, a withdrawn call)."""

    branch: Hashable


@dataclass(frozen=True)
class Bridge:
    """Connect the caller to this branch's audio."""

    branch: Hashable


@dataclass(frozen=True)
class Screen:
    """Run this answered branch's whisper document; report the outcome back."""

    branch: Hashable


@dataclass(frozen=True)
class RelayEarlyMedia:
    """Let the caller hear this branch's early media (the only live branch)."""

    branch: Hashable


@dataclass(frozen=True)
class Finished:
    """The group is decided; report ``dial_call_status`` to the action URL."""

    dial_call_status: CallStatus
    winner: Hashable | None
    withdrawn: bool = False  # ended by a REST command: no action request


Action = Cancel | HangUp | Bridge | Screen | RelayEarlyMedia | Finished


@dataclass
class ForkGroup:
    """Decisions of one ``<Dial>`` over its branches, keyed by any hashable."""

    branches: dict[Hashable, BranchState]
    final_codes: dict[Hashable, int] = field(default_factory=dict)
    winner: Hashable | None = None
    finished: bool = False
    early_media_branch: Hashable | None = None
    deadline_passed: bool = False
    ring_timeout: float | None = None  # seconds of ringing before giving up
    time_limit: float | None = None  # seconds a bridge may last
    relay_early_media: bool = True  # False when a ringTone was asked for
    api_canceled: bool = False  # a branch was cancelled through the REST API
    _deadline: float | None = None
    _limit_at: float | None = None

    @classmethod
    def of(
        cls,
        keys: Iterable[Hashable],
        ring_timeout: float | None = None,
        time_limit: float | None = None,
        relay_early_media: bool = True,
    ) -> ForkGroup:
        return cls(
            branches={key: BranchState.RINGING for key in keys},
            ring_timeout=ring_timeout,
            time_limit=time_limit,
            relay_early_media=relay_early_media,
        )

    def ringing_branches(self) -> list[Hashable]:
        return [k for k, s in self.branches.items() if s is BranchState.RINGING]

    def pending_branches(self) -> list[Hashable]:
        """Branches that may still win: ringing or being screened."""
        live = (BranchState.RINGING, BranchState.SCREENING)
        return [k for k, s in self.branches.items() if s in live]

    def _cancel(
        self,
        keys: list[Hashable],
        status: CallStatus = CallStatus.CANCELED,
        elsewhere: bool = False,
    ) -> list[Action]:
        actions: list[Action] = []
        for key in keys:
            self.branches[key] = BranchState.CANCELLED
            actions.append(Cancel(key, status, elsewhere))
        return actions

    def start(self, now: float = 0.0) -> list[Action]:
        """Called once after the branches were created: an empty group ends now."""
        if not self.branches:
            return self._finish(CallStatus.FAILED)
        if self.ring_timeout is not None:
            self._deadline = now + self.ring_timeout
        return []

    # ---- deadlines -------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` is next due (loop time), or None."""
        if self.finished:
            return None
        if self.winner is None:
            return None if self.deadline_passed else self._deadline
        return self._limit_at

    def handle_timer(self, now: float) -> list[Action]:
        """Fire whichever deadline has passed by ``now``."""
        if self.finished:
            return []
        if self.winner is None:
            if self._deadline is not None and now >= self._deadline and not self.deadline_passed:
                return self.timed_out()
            return []
        if self._limit_at is not None and now >= self._limit_at:
            self._limit_at = None
            return [HangUp(self.winner)]
        return []

    def bridged(self, now: float) -> list[Action]:
        """The winner's audio is connected: ``timeLimit`` counts from here."""
        if self.time_limit is not None and self.winner is not None and not self.finished:
            self._limit_at = now + self.time_limit
        return []

    # ---- inputs ----------------------------------------------------------------------

    def early_media(self, key: Hashable) -> list[Action]:
        """A branch sent 183 with SDP. Relayed only when it is the sole target."""
        if self.finished or self.branches.get(key) is not BranchState.RINGING:
            return []
        if len(self.branches) == 1 and self.early_media_branch is None:
            self.early_media_branch = key
            return [RelayEarlyMedia(key)] if self.relay_early_media else []
        return []

    def media_ready(self, key: Hashable) -> list[Action]:
        """A branch's audio came up: relay it now if it is the early-media branch."""
        if (
            self.relay_early_media
            and key == self.early_media_branch
            and self.winner is None
            and not self.finished
        ):
            return [RelayEarlyMedia(key)]
        return []

    def answered(self, key: Hashable, screened: bool = False) -> list[Action]:
        """A branch sent 2xx. The first one wins; a later one is hung up.

        ``screened``: the branch has a whisper document, so it is screened
        first and wins only through ``screen_passed``.
        """
        state = self.branches.get(key)
        if state is None:
            return []
        if self.finished or self.winner is not None or state is not BranchState.RINGING:
            if state not in (BranchState.WON, BranchState.SCREENING):
                self.branches[key] = BranchState.CANCELLED
                return [Cancel(key)]
            return []
        if screened:
            self.branches[key] = BranchState.SCREENING
            return [Screen(key)]
        return self._win(key)

    def screen_passed(self, key: Hashable) -> list[Action]:
        """The whisper document of a screened branch completed: it wins if nobody has."""
        if self.branches.get(key) is not BranchState.SCREENING:
            return []
        if self.finished or self.winner is not None:
            return self._cancel([key])
        return self._win(key)

    def _win(self, key: Hashable) -> list[Action]:
        self.winner = key
        self.branches[key] = BranchState.WON
        others = [k for k in self.pending_branches() if k != key]
        return [*self._cancel(others, elsewhere=True), Bridge(key)]

    def failed(self, key: Hashable, sip_code: int) -> list[Action]:
        """A branch ended before answering with ``sip_code`` (0: no response at all)."""
        state = self.branches.get(key)
        if state is None:
            return []
        if state is BranchState.SCREENING:
            # Hung up during its whisper: declined, like a 603 (RFC 3261 21.6.2).
            sip_code = 603
        self.final_codes.setdefault(key, sip_code)
        if state in (BranchState.RINGING, BranchState.SCREENING):
            self.branches[key] = BranchState.FAILED
        if self.finished or self.winner is not None or self.pending_branches():
            return []
        if self.deadline_passed:
            return self._finish(CallStatus.NO_ANSWER)
        return self._finish(self._aggregate())

    def timed_out(self) -> list[Action]:
        """The ``<Dial timeout>`` (plus grace) ran out with nobody answering.

        Ringing branches are cancelled; a branch already answered and in its
        whisper document may still win.
        """
        if self.finished or self.winner is not None:
            return []
        self.deadline_passed = True
        actions = self._cancel(self.ringing_branches(), CallStatus.NO_ANSWER)
        if self.pending_branches():
            return actions
        return [*actions, *self._finish(CallStatus.NO_ANSWER)]

    def caller_left(self, status: CallStatus = CallStatus.NO_ANSWER) -> list[Action]:
        """The caller CANCELled or hung up while the fork was ringing.

        ``status`` is the DialCallStatus: ``canceled`` when the REST API withdrew
        the caller, else ``no-answer``.
        """
        if self.finished or self.winner is not None:
            return []
        return [*self._cancel(self.pending_branches()), *self._finish(status)]

    def hangup_on_star(self) -> list[Action]:
        """The caller pressed ``*`` with ``hangupOnStar``: the bridged branch is hung up."""
        if self.finished or self.winner is None:
            return []
        return [HangUp(self.winner)]

    def branch_canceled(self, key: Hashable) -> list[Action]:
        """The REST API cancelled this branch (``Status=canceled`` on a ringing child)."""
        if self.finished or self.branches.get(key) not in (
            BranchState.RINGING,
            BranchState.SCREENING,
        ):
            return []
        self.api_canceled = True
        actions = self._cancel([key])
        if self.pending_branches():
            return actions
        return [*actions, *self._finish(self._aggregate())]

    def withdrawn(self) -> list[Action]:
        """The call was redirected or hung up through the REST API while dialling.

        Every pending branch is cancelled and the bridged one hung up; the group
        finishes at once with ``withdrawn`` set: the action is not requested.
        """
        if self.finished:
            return []
        actions = self._cancel(self.pending_branches())
        if self.winner is not None:
            actions.append(HangUp(self.winner))
            status = CallStatus.COMPLETED
        else:
            status = CallStatus.CANCELED
        self.finished = True
        return [*actions, Finished(status, self.winner, withdrawn=True)]

    def bridge_ended(self) -> list[Action]:
        """The bridged call ended, from either side or by ``timeLimit``."""
        if self.finished or self.winner is None:
            return []
        return self._finish(CallStatus.COMPLETED)

    def _aggregate(self) -> CallStatus:
        if self.api_canceled:
            return CallStatus.CANCELED
        codes = [self.final_codes.get(k, 0) for k in self.branches]
        if codes and all(c in BUSY_CODES for c in codes):
            return CallStatus.BUSY
        if any(c in NO_ANSWER_CODES for c in codes):
            return CallStatus.NO_ANSWER
        return CallStatus.FAILED

    def _finish(self, status: CallStatus) -> list[Action]:
        self.finished = True
        return [Finished(status, self.winner)]


Input = TypeVar("Input")


async def next_actions(
    group: ForkGroup,
    inputs: asyncio.Queue[Input],
    handle: Callable[[Input], list[Action]],
) -> list[Action]:
    """The actions of the group's next input, or of its deadline if that comes first.

    The loop of whoever drives a group (a ``<Dial>``'s runner, an API call ringing a
    client's registrations): it carries out what this returns and calls it again.
    """
    try:
        async with asyncio.timeout_at(group.get_timer()):
            item = await inputs.get()
    except TimeoutError:
        return group.handle_timer(asyncio.get_running_loop().time())
    return handle(item)
