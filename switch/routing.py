"""Outbound trunk selection for `<Number>` targets.

The rules, in order:

1. `byoc` on `<Dial>` names a trunk (dialswitch trunks are configured by name, where
   Twilio uses a BYOC trunk SID). An unknown name is a routing failure, never a silent
   fallback: the customer asked for that carrier.
2. Otherwise the longest prefix matching the number wins, across all trunks. A trunk
   with no prefixes is a catch-all: it matches every number with a prefix of length
   zero, so any real prefix match beats it.
3. When nothing matches, the first configured trunk is the default.
4. Ties (equal prefix lengths, several catch-alls) go to the trunk configured first.

Prefixes are written as E.164 leading digits, with or without the `+` (`+44`, `44`,
`+1415`). Selection is pure; a `NoRoute` becomes `DialCallStatus=failed` for the
branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["NoRoute", "TrunkLike", "check_trunks", "select_trunk"]


class TrunkLike(Protocol):
    """What routing needs from a configured trunk: its name and number prefixes."""

    @property
    def name(self) -> str: ...

    @property
    def prefixes(self) -> Sequence[str]: ...


TrunkT = TypeVar("TrunkT", bound=TrunkLike)


class NoRoute(Exception):
    """No trunk can carry the call; `reason` says why, for logs and debugger events."""

    def __init__(self, number: str, reason: str) -> None:
        super().__init__(f"no route to {number}: {reason}")
        self.number = number
        self.reason = reason


def select_trunk(number_e164: str, trunks: Sequence[TrunkT], byoc: str | None) -> TrunkT:
    """Pick the trunk that carries a call to `number_e164` (see the module docstring).

    An empty `byoc` counts as absent, as an empty attribute does in RCML.
    Raises `NoRoute` when no trunk is configured or `byoc` names none of them, and
    `ValueError` when `number_e164` is not in E.164 form or a prefix is not digits.
    """
    digits = _e164_digits(number_e164)
    if not trunks:
        raise NoRoute(number_e164, "no trunks are configured")
    if byoc:
        for trunk in trunks:
            if trunk.name == byoc:
                return trunk
        raise NoRoute(number_e164, f"byoc names no configured trunk: {byoc!r}")
    best: TrunkT | None = None
    best_length = -1
    for trunk in trunks:
        length = _match_length(digits, trunk)
        if length is not None and length > best_length:
            best, best_length = trunk, length
    return best if best is not None else trunks[0]


def check_trunks(trunks: Sequence[TrunkLike]) -> None:
    """Validate trunk configuration at load time, so routing never meets bad data.

    Raises `ValueError` for a duplicate or empty name, or a prefix that is not
    E.164 leading digits.
    """
    seen: set[str] = set()
    for trunk in trunks:
        if not trunk.name:
            raise ValueError("a trunk has an empty name")
        if trunk.name in seen:
            raise ValueError(f"duplicate trunk name {trunk.name!r}")
        seen.add(trunk.name)
        for prefix in trunk.prefixes:
            _prefix_digits(trunk, prefix)


def _e164_digits(number: str) -> str:
    digits = number[1:] if number.startswith("+") else ""
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not an E.164 number: {number!r}")
    return digits


def _prefix_digits(trunk: TrunkLike, prefix: str) -> str:
    digits = prefix.strip().removeprefix("+")
    if digits and not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"trunk {trunk.name!r}: prefix {prefix!r} is not E.164 digits")
    return digits


def _match_length(digits: str, trunk: TrunkLike) -> int | None:
    """Length of the trunk's longest prefix matching `digits`; 0 for a catch-all."""
    if not trunk.prefixes:
        return 0
    lengths = [
        len(prefix)
        for prefix in (_prefix_digits(trunk, p) for p in trunk.prefixes)
        if digits.startswith(prefix)
    ]
    return max(lengths) if lengths else None
