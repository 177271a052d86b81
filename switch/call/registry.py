"""Every live call by CallSid, and admission of new ones.

A live call is an actor (switch/session.py for inbound and answered API
calls, switch/api_calls.py while an API call is queued or ringing, a
``<Dial>`` child through its runner) that can describe itself (``view``) and
take a REST command (``deliver``). Ended calls leave the registry and are
found in the store. Admission (switch/call/capacity.py) counts legs against
``[dial] max_calls``: the engine's live legs, which the caller passes, the
API calls accepted here but not placed yet, the incoming legs the engine
has not handed over yet, and one leg kept for every top-level call that has
not placed a ``<Dial>`` branch yet. A new call is admitted only with room for
its own leg and the one kept for it, so a call let in is never left without
a leg for its first branch: at capacity the next caller gets 503 rather than
an answer and a hang-up. The kept leg goes with the first branch (or the
call's end) and never comes back, so no count grows while calls end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from switch.call.capacity import Admission, Capacity
from switch.call.commands import Command
from switch.call.status import CallStatus


@dataclass(frozen=True)
class CallView:
    """What Twilio's Call resource says about a call, live or ended."""

    sid: str
    parent_call_sid: str | None
    to: str
    from_: str
    status: CallStatus
    direction: str
    start_time: datetime | None  # None while queued
    end_time: datetime | None
    answer_time: datetime | None
    caller_name: str = ""
    date_created: datetime | None = None

    def duration(self) -> int | None:
        """Whole seconds answered, once ended (Twilio: null while live)."""
        if self.end_time is None:
            return None
        if self.answer_time is None:
            return 0
        return max(0, int((self.end_time - self.answer_time).total_seconds()))


ERROR_CALL_ENDED = 21220
"""Twilio's "Call is not in-progress": a command for a call that has ended."""


class Refused(Exception):
    """A command the call cannot take in its state (Twilio 21220 and friends)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def call_ended(cls) -> Refused:
        return cls(ERROR_CALL_ENDED, "Call is not in-progress. Cannot redirect.")


class LiveCall(Protocol):
    call_sid: str

    def view(self) -> CallView: ...

    def deliver(self, command: Command) -> None:
        """Act on ``command`` at once; raises ``Refused`` when it does not apply."""
        ...


class CallRegistry:
    def __init__(self, max_calls: int):
        self.capacity = Capacity(max_calls)
        self._calls: dict[str, LiveCall] = {}
        self._top_level: set[str] = set()
        self._unplaced: set[str] = set()  # API calls accepted, their legs not placed yet
        self._undialled: set[str] = set()  # top-level calls with no branch placed yet

    @property
    def max_calls(self) -> int:
        return self.capacity.max_legs

    @property
    def stopping(self) -> bool:
        return self.capacity.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.capacity.stopping = value

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[LiveCall]:
        return iter(list(self._calls.values()))

    @property
    def top_level(self) -> int:
        return len(self._top_level)

    @property
    def kept(self) -> int:
        """Legs kept for first branches: one per top-level call that has none yet."""
        return len(self._undialled)

    def admit(
        self, legs: int, now: float, parent: str | None = None, arriving: int = 0
    ) -> Admission:
        """Room for one more leg at ``now`` while the engine has ``legs`` live,
        ``arriving`` of them incoming calls not handed over yet (each will keep a
        leg too): a new call (``parent`` None) needs its own and one kept for its
        ``<Dial>``; the first branch of ``parent`` takes the leg kept for it, any
        other needs one of its own."""
        held = legs + arriving + len(self._unplaced) + len(self._undialled)
        if parent is None:
            return self.capacity.admit(held + 1, now, new_call=True)
        if parent in self._undialled:
            held -= 1
        return self.capacity.admit(held, now, new_call=False)

    def add(self, call: LiveCall, parent: str | None = None, unplaced: bool = False) -> None:
        """Register ``call``, a top-level call or a branch of ``parent``; ``unplaced``:
        an API call whose leg will count from `placed`."""
        sid = call.call_sid
        self._calls[sid] = call
        if parent is None:
            self._top_level.add(sid)
            self._undialled.add(sid)
        else:
            self._undialled.discard(parent)
        if unplaced:
            self._unplaced.add(sid)

    def placed(self, call_sid: str) -> None:
        """The API call's legs are in the engine now (and counted there)."""
        self._unplaced.discard(call_sid)

    def replace(self, call: LiveCall) -> None:
        """Hand a CallSid to the actor that runs it from now on (an answered API call)."""
        self._calls[call.call_sid] = call

    def remove(self, call_sid: str) -> None:
        self._calls.pop(call_sid, None)
        self._top_level.discard(call_sid)
        self._unplaced.discard(call_sid)
        self._undialled.discard(call_sid)

    def get(self, call_sid: str) -> LiveCall | None:
        return self._calls.get(call_sid)
