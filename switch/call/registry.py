"""Every live call by CallSid, and admission of new ones.

A live call is an actor (switch/session.py for inbound and answered API
calls, switch/api_calls.py while an API call is queued or ringing, a
``<Dial>`` child through its runner) that can describe itself (``view``) and
take a REST command (``deliver``). Ended calls leave the registry and are
found in the store. Admission (switch/call/capacity.py) counts legs against
``[dial] max_calls``: the engine's live legs, which the caller passes, plus
the API calls accepted here but not placed yet.
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

    def admit(self, legs: int, new_call: bool = True) -> Admission:
        """Room for one more leg while the engine has ``legs`` live (``new_call``: it
        starts a call, as opposed to a branch of one already admitted)."""
        return self.capacity.admit(legs + len(self._unplaced), new_call)

    def add(self, call: LiveCall, top_level: bool = True, unplaced: bool = False) -> None:
        """Register ``call``; ``unplaced``: an API call whose leg will count from `placed`."""
        self._calls[call.call_sid] = call
        if top_level:
            self._top_level.add(call.call_sid)
        if unplaced:
            self._unplaced.add(call.call_sid)

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

    def get(self, call_sid: str) -> LiveCall | None:
        return self._calls.get(call_sid)
