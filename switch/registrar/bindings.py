"""The binding table: address-of-record to contacts (RFC 3261 section 10.3).

`BindingTable.register` applies one REGISTER, all or nothing, in the order of
section 10.3 step 6 to 8: a wildcard ``*`` must stand alone with ``Expires: 0``
(else 400) and removes every binding; each contact's expiry comes from its
``expires`` param, else the Expires header, else the default; 0 removes that
contact, an interval under ``min_expires`` fails with 423 and ``Min-Expires``, one
over ``max_expires`` is shortened. A request whose Call-ID matches a binding it
touches must have a higher CSeq, or it is out of order and fails with 500 (the
RFC asks that the update be aborted and names no status). Adding contacts beyond
``max_contacts`` fails with 403.

Bindings are matched by ``+sip.instance`` and ``reg-id`` when both are present
(RFC 5626 section 6), otherwise by Contact URI equality (RFC 3261 section 19.1.4).

Phones behind NAT put private addresses in their Contact, so a binding records
where the REGISTER came from (`Source`) and over which connection; requests to
the phone go to `Binding.source` (over `Binding.connection_id` when set) with the
Contact URI only as Request-URI.

Pure code: ``now`` is passed in; `to_rows` and `from_rows` give a storage layer
plain rows to persist and reload.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from switch.registrar.contact import (
    MAX_DELTA_SECONDS,
    BadContact,
    ContactSpec,
    Params,
    contact_params,
    format_params,
    parse_params,
    uri_key,
)

__all__ = [
    "Binding",
    "BindingKey",
    "BindingRow",
    "BindingTable",
    "RegisterOutcome",
    "Source",
]

BindingKey = tuple[object, ...]
"""What makes two contacts of one address-of-record the same binding."""


@dataclass(frozen=True)
class Source:
    """Where a REGISTER arrived from: the transport and the packet's source address."""

    transport: str
    host: str
    port: int

    @property
    def browser(self) -> bool:
        """A browser over SIP-over-WebSocket: ``host:port`` is the edge's shared TCP
        connection into the engine (switch/sipws), the binding's ``connection_id``
        the browser's flow on it."""
        return self.transport in ("ws", "wss")


@dataclass(frozen=True)
class Binding:
    """One registered contact of an address-of-record (``identity``)."""

    identity: str
    contact_uri: str
    expires_at: float
    call_id: str
    cseq: int
    source: Source
    connection_id: str | None = None
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    params: Params = ()
    updated_at: float = 0.0

    @property
    def key(self) -> BindingKey:
        return binding_key(self.contact_uri, self.instance_id, self.reg_id)

    def alive(self, now: float) -> bool:
        return self.expires_at > now

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up, as listed in the 200 OK."""
        return max(0, math.ceil(self.expires_at - now))

    def contact_header_value(self, now: float) -> str:
        """The Contact value a 200 OK lists for this binding (RFC 3261 section 10.3 step 8)."""
        params = contact_params(
            self.remaining(now), self.q, self.instance_id, self.reg_id, self.params
        )
        return f"<{self.contact_uri}>{format_params(params)}"

    def to_row(self) -> BindingRow:
        return BindingRow(
            identity=self.identity,
            contact_uri=self.contact_uri,
            expires_at=self.expires_at,
            call_id=self.call_id,
            cseq=self.cseq,
            transport=self.source.transport,
            host=self.source.host,
            port=self.source.port,
            connection_id=self.connection_id,
            q=self.q,
            instance_id=self.instance_id,
            reg_id=self.reg_id,
            params=format_params(self.params),
            updated_at=self.updated_at,
        )

    @classmethod
    def from_row(cls, row: BindingRow) -> Binding:
        """Rebuild a binding from `to_row` output; raises ValueError on a bad row."""
        try:
            return cls(
                identity=str(row["identity"]),
                contact_uri=str(row["contact_uri"]),
                expires_at=float(row["expires_at"]),
                call_id=str(row["call_id"]),
                cseq=int(row["cseq"]),
                source=Source(str(row["transport"]), str(row["host"]), int(row["port"])),
                connection_id=_optional_str(row.get("connection_id")),
                q=None if row.get("q") is None else float(row["q"] or 0.0),
                instance_id=_optional_str(row.get("instance_id")),
                reg_id=None if row.get("reg_id") is None else int(row["reg_id"] or 0),
                params=parse_params(row.get("params") or ""),
                updated_at=float(row.get("updated_at") or 0.0),
            )
        except (KeyError, TypeError, BadContact) as exc:
            raise ValueError(f"bad binding row: {exc}") from exc


class BindingRow(TypedDict):
    """A binding as plain values, for a storage layer."""

    identity: str
    contact_uri: str
    expires_at: float
    call_id: str
    cseq: int
    transport: str
    host: str
    port: int
    connection_id: str | None
    q: float | None
    instance_id: str | None
    reg_id: int | None
    params: str
    updated_at: float


@dataclass(frozen=True)
class RegisterOutcome:
    """The answer to one REGISTER.

    ``bindings`` are the identity's live bindings after the request, for the
    Contact headers of a 200 OK. ``added``, ``refreshed`` and ``removed`` say what
    changed, so a store can write just that; ``removed`` includes bindings of this
    identity that had expired.
    """

    status: int
    reason: str
    bindings: tuple[Binding, ...] = ()
    min_expires: int | None = None
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 200

    def contact_header_values(self, now: float) -> list[str]:
        return [binding.contact_header_value(now) for binding in self.bindings]


@dataclass
class _Plan:
    key: BindingKey
    contact: ContactSpec
    expires: int


@dataclass
class BindingTable:
    """The live bindings of every address-of-record, with RFC 3261 registration rules.

    ``identity`` strings are compared exactly: the caller canonicalises the
    address-of-record (from the To header) before it gets here.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5
    _table: dict[str, dict[BindingKey, Binding]] = field(
        default_factory=dict, init=False, repr=False
    )
    _heap: list[tuple[float, int, str, BindingKey]] = field(
        default_factory=list, init=False, repr=False
    )
    _pushes: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if self.min_expires > 3600:
            # Section 10.3 step 7 allows 423 only for intervals under an hour.
            raise ValueError("min_expires must not exceed 3600")
        if self.max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")

    def __len__(self) -> int:
        return sum(len(bindings) for bindings in self._table.values())

    def register(
        self,
        identity: str,
        contacts: Sequence[ContactSpec],
        expires_header: int | None,
        call_id: str,
        cseq: int,
        source: Source,
        now: float,
        connection_id: str | None = None,
    ) -> RegisterOutcome:
        """Apply one REGISTER for ``identity``; nothing changes unless it succeeds."""
        if expires_header is not None and expires_header < 0:
            return RegisterOutcome(400, "Bad Expires header")
        stored = self._table.get(identity, {})
        live = {key: binding for key, binding in stored.items() if binding.alive(now)}
        dead = tuple(binding for binding in stored.values() if not binding.alive(now))

        if any(contact.wildcard for contact in contacts):
            if len(contacts) != 1:
                return RegisterOutcome(400, "Wildcard Contact must be the only contact")
            if expires_header != 0:
                return RegisterOutcome(400, "Wildcard Contact requires Expires: 0")
            if any(_out_of_order(binding, call_id, cseq) for binding in live.values()):
                return RegisterOutcome(500, "Out of order CSeq")
            self._table.pop(identity, None)
            return RegisterOutcome(200, "OK", removed=dead + tuple(live.values()))

        plans: list[_Plan] = []
        for contact in contacts:
            expires = self._requested(contact, expires_header)
            if 0 < expires < self.min_expires:
                return RegisterOutcome(423, "Interval Too Brief", min_expires=self.min_expires)
            key = binding_key(contact.uri, contact.instance_id, contact.reg_id)
            existing = live.get(key)
            if existing is not None and _out_of_order(existing, call_id, cseq):
                return RegisterOutcome(500, "Out of order CSeq")
            plans.append(_Plan(key, contact, min(expires, self.max_expires)))

        updated = dict(live)
        for plan in plans:
            if plan.expires == 0:
                updated.pop(plan.key, None)
                continue
            updated[plan.key] = Binding(
                identity=identity,
                contact_uri=plan.contact.uri,
                expires_at=now + plan.expires,
                call_id=call_id,
                cseq=cseq,
                source=source,
                connection_id=connection_id,
                q=plan.contact.q,
                instance_id=plan.contact.instance_id,
                reg_id=plan.contact.reg_id,
                params=plan.contact.params,
                updated_at=now,
            )
        grows = any(key not in live for key in updated)
        if grows and len(updated) > self.max_contacts:
            return RegisterOutcome(403, f"Too many contacts (at most {self.max_contacts})")

        if updated:
            self._table[identity] = updated
        else:
            self._table.pop(identity, None)
        added = tuple(b for key, b in updated.items() if key not in live)
        refreshed = tuple(b for key, b in updated.items() if key in live and b is not live[key])
        removed = dead + tuple(b for key, b in live.items() if key not in updated)
        for binding in added + refreshed:
            self._schedule(binding)
        return RegisterOutcome(
            200,
            "OK",
            bindings=tuple(_ordered(updated.values())),
            added=added,
            refreshed=refreshed,
            removed=removed,
        )

    def lookup(self, identity: str, now: float) -> list[Binding]:
        """Live bindings of ``identity``, highest q first (absent q counts as 1.0),
        then the most recently registered."""
        stored = self._table.get(identity, {})
        return _ordered(binding for binding in stored.values() if binding.alive(now))

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose expiry has passed."""
        expired: list[Binding] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, _, identity, key = heapq.heappop(self._heap)
            bindings = self._table.get(identity)
            binding = bindings.get(key) if bindings else None
            if bindings is None or binding is None or binding.expires_at != expires_at:
                continue  # refreshed or removed since this entry was pushed
            del bindings[key]
            if not bindings:
                del self._table[identity]
            expired.append(binding)
        return expired

    def drop_connection(self, connection_id: str) -> list[Binding]:
        """Remove and return the bindings reachable only over a connection that closed
        (RFC 5626 section 6: a failed flow makes its bindings unusable)."""
        dropped: list[Binding] = []
        for identity in list(self._table):
            bindings = self._table[identity]
            for key in [k for k, b in bindings.items() if b.connection_id == connection_id]:
                dropped.append(bindings.pop(key))
            if not bindings:
                del self._table[identity]
        return dropped

    def to_rows(self) -> list[BindingRow]:
        """Every stored binding as a plain row (expired ones included until `expire`)."""
        return [
            binding.to_row() for bindings in self._table.values() for binding in bindings.values()
        ]

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[BindingRow],
        now: float,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 5,
    ) -> BindingTable:
        """A table holding the live bindings of ``rows``; raises ValueError on a bad row.

        Where two rows are the same binding, the most recently updated one wins. A
        browser's binding lives as long as its WebSocket, which ended with the
        process that stored it: it is not loaded.
        """
        table = cls(min_expires, max_expires, default_expires, max_contacts)
        for row in rows:
            binding = Binding.from_row(row)
            if not binding.alive(now) or binding.source.browser:
                continue
            bindings = table._table.setdefault(binding.identity, {})
            current = bindings.get(binding.key)
            if current is None or current.updated_at <= binding.updated_at:
                bindings[binding.key] = binding
        for bindings in table._table.values():
            for binding in bindings.values():
                table._schedule(binding)
        return table

    def _requested(self, contact: ContactSpec, expires_header: int | None) -> int:
        if contact.expires is not None:
            return contact.expires
        if expires_header is not None:
            return min(expires_header, MAX_DELTA_SECONDS)
        return self.default_expires

    def _schedule(self, binding: Binding) -> None:
        self._pushes += 1
        heapq.heappush(
            self._heap, (binding.expires_at, self._pushes, binding.identity, binding.key)
        )
        if len(self._heap) > 4 * len(self) + 1024:
            # Refreshes leave superseded entries behind; rebuild from the table.
            # Sequence numbers stay unique so heap entries never compare their keys.
            self._heap = []
            for bindings in self._table.values():
                for live in bindings.values():
                    self._pushes += 1
                    self._heap.append((live.expires_at, self._pushes, live.identity, live.key))
            heapq.heapify(self._heap)


def binding_key(contact_uri: str, instance_id: str | None, reg_id: int | None) -> BindingKey:
    if instance_id is not None and reg_id is not None:
        return ("outbound", instance_id, reg_id)
    return ("uri", *uri_key(contact_uri))


def _out_of_order(binding: Binding, call_id: str, cseq: int) -> bool:
    return binding.call_id == call_id and cseq <= binding.cseq


def _ordered(bindings: Iterable[Binding]) -> list[Binding]:
    return sorted(bindings, key=lambda b: (-(1.0 if b.q is None else b.q), -b.updated_at))


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
