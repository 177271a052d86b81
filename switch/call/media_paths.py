"""Which bridged pairs of legs take the relay path, and which the bridge.

Two legs that hear each other and no third leg, with nothing played to
either, exchange RTP packet by packet in C (patch 0028 of deploy/pjsua2):
nothing decodes, mixes or re-encodes the audio they send each other, and
nothing of theirs runs on the conference bridge's clock. Whatever must mix
into what a leg hears (a prompt or tone played to it, a third party) puts
the pair back on the bridge, and when it is gone the pair is relayed again.

A recorder only listens: a relayed leg that a recorder hears stays relayed
and also decodes what it receives for the recorder (`Decode`, patch 0041),
so a recording changes nothing the parties hear. Measured in bench/README.md
("Recorded calls"): a recorded call costs less CPU relayed and decoded than
on the bridge.

`MediaPaths` decides from the connections the engine reports and returns
`Relay`, `Unrelay` and `Decode` actions for the engine to carry out, in order
(a `Decode` whose pair's `Relay` the engine was refused meanwhile is void: the
bridge decodes that pair anyway). A pair is relayed
only once both legs have sent RTP (the engine reports it with `heard`): a
relayed leg hears nothing until its peer speaks, while the bridge sends it
silence at least, which a far end that learns where to send from what it
receives, or a NAT binding, needs. A pair whose codecs differ cannot be
relayed (the engine reports it with `refused`) and stays on the bridge,
which transcodes, until either leg's media changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Relay:
    """Relay ``a`` and ``b`` to each other (their bridge connections go)."""

    a: object
    b: object


@dataclass(frozen=True)
class Unrelay:
    """End the relay of ``a`` and ``b`` and give them back to the bridge;
    ``gone`` is the side that ended, if one did (it has nothing to restore)."""

    a: object
    b: object
    gone: object | None = None


@dataclass(frozen=True)
class Decode:
    """While ``leg`` is relayed, decode what it receives for its recorders (``on``),
    or stop. The end of a relay stops it without an action."""

    leg: object
    on: bool


Action = Relay | Unrelay | Decode


class MediaPaths:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._sinks: dict[object, set[object]] = {}  # a leg -> the legs hearing it
        self._sources: dict[object, set[object]] = {}  # a leg -> the legs it hears
        self._taps: Counter[object] = Counter()  # players playing to a leg
        self._recorders: Counter[object] = Counter()  # recorders hearing a leg
        self._relayed: dict[object, object] = {}  # both ways
        self._heard: set[object] = set()  # legs that have sent RTP
        self._waiting: set[object] = set()  # legs whose pair waits for them to send
        self._refused: set[frozenset[object]] = set()

    @property
    def relayed(self) -> int:
        """Pairs on the relay path now."""
        return len(self._relayed) // 2

    def peer(self, leg: object) -> object | None:
        """The leg ``leg`` is relayed with, if it is."""
        return self._relayed.get(leg)

    def connected(self, source: object, sink: object) -> list[Action]:
        """``sink`` hears ``source`` from now on."""
        self._sinks.setdefault(source, set()).add(sink)
        self._sources.setdefault(sink, set()).add(source)
        return self._decide(source, sink)

    def tapped(self, leg: object) -> list[Action]:
        """A player now plays to ``leg``: it needs the bridge. Call before connecting
        the player."""
        self._taps[leg] += 1
        return self._decide(leg)

    def untapped(self, leg: object) -> list[Action]:
        """A player of ``leg`` is gone."""
        _less(self._taps, leg)
        return self._decide(leg)

    def recorded(self, leg: object) -> list[Action]:
        """A recorder now hears ``leg``: if it is relayed, it decodes too. Call before
        connecting the recorder."""
        self._recorders[leg] += 1
        return self._decode(leg, True) if self._recorders[leg] == 1 else []

    def unrecorded(self, leg: object) -> list[Action]:
        """A recorder of ``leg`` is gone: with the last one, a relayed leg stops
        decoding."""
        _less(self._recorders, leg)
        return [] if self._recorders[leg] else self._decode(leg, False)

    def _decode(self, leg: object, on: bool) -> list[Action]:
        """A relayed leg decodes exactly while it has recorders: the change, if it is
        relayed (a relay's end stops decoding, a new relay starts it)."""
        return [Decode(leg, on)] if leg in self._relayed else []

    def heard(self, leg: object) -> list[Action]:
        """``leg`` has sent RTP."""
        self._heard.add(leg)
        return self._decide(leg)

    def unheard(self) -> set[object]:
        """The legs whose first RTP packet is all that keeps their pair off the relay
        path (the engine looks for it)."""
        return set(self._waiting)

    @property
    def waiting(self) -> bool:
        """Whether any leg is `unheard`, without copying them (thousands may be)."""
        return bool(self._waiting)

    def ended(self, leg: object) -> list[Action]:
        """``leg`` ended: its connections go; the legs it was connected with are decided
        again."""
        others = self._sinks.pop(leg, set()) | self._sources.pop(leg, set())
        for other in others:
            self._sinks.get(other, set()).discard(leg)
            self._sources.get(other, set()).discard(leg)
        self._taps.pop(leg, None)
        self._recorders.pop(leg, None)
        self._heard.discard(leg)
        self._waiting.discard(leg)
        self._refused = {pair for pair in self._refused if leg not in pair}
        actions: list[Action] = []
        peer = self._relayed.pop(leg, None)
        if peer is not None:
            del self._relayed[peer]
            actions.append(Unrelay(peer, leg, gone=leg))
        return actions + self._decide(*others)

    def refused(self, a: object, b: object) -> None:
        """The engine could not relay ``a`` and ``b`` (their codecs differ): they stay
        on the bridge until either's media changes."""
        self._refused.add(frozenset((a, b)))
        if self._relayed.get(a) == b:
            del self._relayed[a], self._relayed[b]

    def media_changed(self, leg: object) -> list[Action]:
        """``leg``'s media was negotiated again (a re-INVITE): its stream may be new, so
        a relay of it is made again, and a refused pair is tried again."""
        self._refused = {pair for pair in self._refused if leg not in pair}
        peer = self._relayed.pop(leg, None)
        actions: list[Action] = []
        if peer is not None:
            del self._relayed[peer]
            actions.append(Unrelay(leg, peer))
        return actions + self._decide(leg)

    def _partner(self, leg: object, heard: bool = True) -> object | None:
        """The one leg ``leg`` is bridged with and nothing else, if the pair may be
        relayed (``heard``: and both legs have sent RTP)."""
        if not self.enabled or self._taps[leg]:
            return None
        sinks, sources = self._sinks.get(leg, set()), self._sources.get(leg, set())
        if len(sinks) != 1 or sinks != sources:
            return None
        (other,) = sinks
        if (
            other == leg
            or self._taps[other]
            or self._sinks.get(other) != {leg}
            or self._sources.get(other) != {leg}
            or frozenset((leg, other)) in self._refused
            or (heard and not {leg, other} <= self._heard)
        ):
            return None
        return other

    def _decide(self, *legs: object) -> list[Action]:
        actions: list[Action] = []
        for leg in legs:
            candidate = self._partner(leg, heard=False)
            partner = candidate if candidate is not None and self._partner(leg) else None
            self._waiting.discard(leg)
            if candidate is not None and partner is None:
                self._waiting |= {leg, candidate} - self._heard
            current = self._relayed.get(leg)
            if current is not None and current != partner:
                del self._relayed[leg], self._relayed[current]
                actions.append(Unrelay(leg, current))
            if partner is not None and self._relayed.get(leg) is None:
                self._relayed[leg] = partner
                self._relayed[partner] = leg
                recorded = [Decode(x, True) for x in (leg, partner) if self._recorders[x]]
                actions += [Relay(leg, partner), *recorded]
        return actions


def _less(counts: Counter[object], leg: object) -> None:
    """One fewer of ``leg``'s players or recorders."""
    if counts[leg] <= 1:
        counts.pop(leg, None)
    else:
        counts[leg] -= 1
