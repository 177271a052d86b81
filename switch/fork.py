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
  ``DialCallStatus``: any answer -> completed; timeout -> no-answer; all
  busy -> busy; otherwise no-answer if any branch was not answered in time,
  else failed.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


class BranchState(enum.Enum):
    RINGING = "ringing"  # INVITE out (or about to be), no final answer yet
    SCREENING = "screening"  # answered; its whisper document runs before it may win
    WON = "won"  # the answered branch that is bridged
    FAILED = "failed"  # a final non-2xx arrived
    CANCELLED = "cancelled"  # we gave up on it (CANCEL, or BYE after a late 2xx)


@dataclass(frozen=True)
class Cancel:
    """CANCEL (or BYE, if it already answered) this branch."""

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

    dial_call_status: str
    winner: Hashable | None


Action = Cancel | Bridge | Screen | RelayEarlyMedia | Finished

_BUSY_CODES = frozenset({486, 600, 603})
_NO_ANSWER_CODES = frozenset({408, 480, 487})


@dataclass
class ForkGroup:
    """Decisions of one ``<Dial>`` over its branches, keyed by any hashable."""

    branches: dict[Hashable, BranchState]
    final_codes: dict[Hashable, int] = field(default_factory=dict)
    winner: Hashable | None = None
    finished: bool = False
    early_media_branch: Hashable | None = None
    deadline_passed: bool = False

    @classmethod
    def of(cls, keys: Iterable[Hashable]) -> ForkGroup:
        return cls(branches={key: BranchState.RINGING for key in keys})

    def ringing_branches(self) -> list[Hashable]:
        return [k for k, s in self.branches.items() if s is BranchState.RINGING]

    def pending_branches(self) -> list[Hashable]:
        """Branches that may still win: ringing or being screened."""
        live = (BranchState.RINGING, BranchState.SCREENING)
        return [k for k, s in self.branches.items() if s in live]

    def _cancel(self, keys: list[Hashable]) -> list[Action]:
        actions: list[Action] = []
        for key in keys:
            self.branches[key] = BranchState.CANCELLED
            actions.append(Cancel(key))
        return actions

    def _cancel_all_ringing(self) -> list[Action]:
        return self._cancel(self.ringing_branches())

    def start(self) -> list[Action]:
        """Called once after the branches were created: an empty group ends now."""
        if not self.branches:
            return self._finish("failed")
        return []

    def early_media(self, key: Hashable) -> list[Action]:
        """A branch sent 183 with SDP. Relayed only when it is the sole target."""
        if self.finished or self.branches.get(key) is not BranchState.RINGING:
            return []
        if len(self.branches) == 1 and self.early_media_branch is None:
            self.early_media_branch = key
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
        return [*self._cancel(others), Bridge(key)]

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
            return self._finish("no-answer")
        return self._finish(self._aggregate())

    def timed_out(self) -> list[Action]:
        """The ``<Dial timeout>`` (plus grace) ran out with nobody answering.

        Ringing branches are cancelled; a branch already answered and in its
        whisper document may still win.
        """
        if self.finished or self.winner is not None:
            return []
        self.deadline_passed = True
        actions = self._cancel_all_ringing()
        if self.pending_branches():
            return actions
        return [*actions, *self._finish("no-answer")]

    def caller_left(self) -> list[Action]:
        """The caller CANCELled or hung up while the fork was ringing."""
        if self.finished or self.winner is not None:
            return []
        return [*self._cancel(self.pending_branches()), *self._finish("no-answer")]

    def bridge_ended(self) -> list[Action]:
        """The bridged call ended, from either side or by ``timeLimit``."""
        if self.finished or self.winner is None:
            return []
        return self._finish("completed")

    def _aggregate(self) -> str:
        codes = [self.final_codes.get(k, 0) for k in self.branches]
        if codes and all(c in _BUSY_CODES for c in codes):
            return "busy"
        if any(c in _NO_ANSWER_CODES for c in codes):
            return "no-answer"
        return "failed"

    def _finish(self, status: str) -> list[Action]:
        self.finished = True
        return [Finished(status, self.winner)]
