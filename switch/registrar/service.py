"""The registrar: one REGISTER in, one response out (RFC 3261 section 10.3).

Glue between the call engine (which hands us each out-of-dialog REGISTER) and
the pure parts: per-source rate limit and failure throttle, digest
authentication, the binding table, and SQLite so bindings survive a restart.

Abuse rules: an unknown identity and a wrong password get the same 403 after
the same work, so extensions cannot be enumerated; repeated failures from one
source block it for ``block_seconds`` (every request from it then gets the
same 403); a source sending faster than ``register_rate`` gets 503 with
Retry-After, which costs it nothing to other sources.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

from switch.config_clients import ClientConfig, RegistrarConfig
from switch.registrar.bindings import Binding, BindingTable, Source
from switch.registrar.contact import BadContact, UnsupportedUriScheme, parse_contacts
from switch.registrar.digest import Algorithm, AuthFailure, DigestChallenger
from switch.registrar.throttle import FailureThrottle, RateLimiter
from switch.sipmsg import SipMessage, uri_user
from switch.store import Store

log = logging.getLogger("dialswitch.registrar")


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())


class Registrar:
    def __init__(
        self,
        config: RegistrarConfig,
        realm: str,
        clients: tuple[ClientConfig, ...],
        store: Store,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.realm = realm
        self.passwords = {c.identity: c.password for c in clients}
        # Challenges are the same for every identity (nothing tells which exist); a
        # client limited to some algorithms is refused the others at verification.
        self.algorithms = {
            c.identity: frozenset(Algorithm(name) for name in c.digest_algorithms)
            for c in clients
            if c.digest_algorithms is not None
        }
        self.store = store
        self.clock = clock
        self.digest = DigestChallenger(
            realm,
            secrets.token_bytes(32),
            config.nonce_ttl,
            algorithms=tuple(Algorithm(name) for name in config.digest_algorithms),
        )
        self.throttle = FailureThrottle(
            max_failures=config.max_failures,
            window=float(config.failure_window),
            block_for=float(config.block_seconds),
        )
        self.limiter = RateLimiter(rate=config.register_rate, burst=config.register_rate * 2)
        self.table = BindingTable.from_rows(
            store.bindings(),  # type: ignore[arg-type]
            clock(),
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            default_expires=config.default_expires,
            max_contacts=config.max_contacts,
        )

    # ---- lookups for <Dial><Client> and calls from clients ---------------------------

    def lookup(self, identity: str) -> list[Binding]:
        """The live registrations of an identity, newest first."""
        return self.table.lookup(identity, self.clock())

    def password(self, identity: str) -> str | None:
        return self.passwords.get(identity)

    def authenticate(
        self, method: str, message: SipMessage, source_ip: str, header: str
    ) -> tuple[str | None, Reply | None]:
        """Check a request's digest; (identity, None) or (None, the reply to send).

        ``header`` names the credentials header (Authorization for 401
        challenges, Proxy-Authorization for 407).
        """
        now = self.clock()
        if self.throttle.blocked(source_ip, now):
            return None, Reply(403, "Forbidden")
        values = message.header_values(header)
        result = self.digest.verify(
            method, values or None, self.passwords.get, now, allowed=self._allowed
        )
        if result.ok:
            self.throttle.record_success(source_ip, now)
            return result.username, None
        challenge_header = "WWW-Authenticate" if header == "Authorization" else "Proxy-Authenticate"
        challenge_status = 401 if header == "Authorization" else 407
        if result.failure in (AuthFailure.MISSING, AuthFailure.STALE, AuthFailure.REPLAY):
            headers = tuple(
                (challenge_header, value)
                for value in self.digest.challenge(now, stale=result.stale)
            )
            reason = "Unauthorized" if challenge_status == 401 else "Proxy Authentication Required"
            return None, Reply(challenge_status, reason, headers)
        if result.failure is AuthFailure.MALFORMED:
            return None, Reply(400, "Bad Authorization Header")
        if self.throttle.record_failure(source_ip, now):
            log.warning("registrar: %s blocked after repeated failures", source_ip)
        log.info("registrar: failed authentication from %s", source_ip)
        return None, Reply(403, "Forbidden")

    def _allowed(self, identity: str, algorithm: Algorithm) -> bool:
        limited = self.algorithms.get(identity)
        return limited is None or algorithm in limited

    # ---- REGISTER --------------------------------------------------------------------

    def handle(
        self,
        message: SipMessage,
        source: Source,
        connection_id: str | None,
        client_ip: str | None = None,
    ) -> Reply:
        """One REGISTER. ``client_ip`` is the address limits count it under when that
        is not ``source.host`` (a browser, whose source is the WebSocket edge)."""
        now = self.clock()
        ip = client_ip or source.host
        if not self.limiter.allow(ip, now):
            return Reply(503, "Too Many Requests", (("Retry-After", "5"),))
        to = message.header("to") or ""
        scheme = to.split("<", 1)[-1].lstrip().split(":", 1)[0].lower()
        if scheme not in ("sip", "sips"):
            return Reply(416, "Unsupported URI Scheme")
        identity, refusal = self.authenticate("REGISTER", message, ip, "Authorization")
        if refusal is not None:
            return refusal
        assert identity is not None
        if uri_user(to) != identity:
            self.throttle.record_failure(ip, now)
            return Reply(403, "Forbidden")
        try:
            contacts = parse_contacts(message.header_values("contact"))
        except UnsupportedUriScheme as error:
            return Reply(416, f"Unsupported URI Scheme: {error.reason}"[:80])
        except BadContact as error:
            return Reply(400, f"Bad Contact: {error.reason}"[:80])
        expires_text = message.header("expires")
        try:
            expires = int(expires_text) if expires_text is not None else None
        except ValueError:
            return Reply(400, "Bad Expires Header")
        if not contacts:
            return self._ok(self.table.lookup(identity, now), now)
        call_id = message.header("call-id") or ""
        cseq_text = (message.header("cseq") or "0").split()[0]
        outcome = self.table.register(
            identity,
            contacts,
            expires,
            call_id,
            int(cseq_text) if cseq_text.isdigit() else 0,
            source,
            now,
            connection_id=connection_id,
        )
        if not outcome.ok:
            headers: tuple[tuple[str, str], ...] = ()
            if outcome.min_expires is not None:
                headers = (("Min-Expires", str(outcome.min_expires)),)
            return Reply(outcome.status, outcome.reason, headers)
        if outcome.added or outcome.removed or outcome.refreshed:
            self.store.replace_bindings(
                identity, [b.to_row() for b in self.table.lookup(identity, now)]
            )
        # A browser's source is the edge's connection, the same for all: name its own.
        where = f"{source.host}:{source.port}/{source.transport}"
        if source.browser:
            where = f"{ip}/{source.transport}, {connection_id}"
        log.info(
            "registrar: %s now has %d registrations (from %s)",
            identity,
            len(outcome.bindings),
            where,
        )
        return self._ok(list(outcome.bindings), now)

    def drop_connection(self, connection_id: str) -> None:
        """A connection closed: the bindings reachable only over it go (RFC 5626
        section 6), from the table and the store."""
        dropped = self.table.drop_connection(connection_id)
        for identity in {b.identity for b in dropped}:
            self.store.replace_bindings(
                identity, [b.to_row() for b in self.table.lookup(identity, self.clock())]
            )
            log.info("registrar: %s's registration over %s removed", identity, connection_id)

    def _ok(self, bindings: list[Binding], now: float) -> Reply:
        headers = [("Contact", b.contact_header_value(now)) for b in bindings]
        headers.append(("Date", formatdate(now, usegmt=True)))
        return Reply(200, "OK", tuple(headers))
