"""HTTP Digest authentication for SIP requests (RFC 3261 section 22).

Hashing follows RFC 7616 (which obsoletes RFC 2617) with the algorithms SIP allows
since RFC 8760: MD5, SHA-256 and their ``-sess`` forms. dialswitch always challenges
with ``qop="auth"``, offering SHA-256 first and MD5 second, so phones that know
SHA-256 pick it and older ones still register.

Nonces carry their own proof: base64url(issue time in ms | 8 random bytes | HMAC
over both), so issuing one stores nothing and any dialswitch node sharing the
secret can check it. A nonce older than ``nonce_ttl`` is stale: correct credentials
with it earn a fresh challenge with ``stale=true`` (RFC 7616 section 3.3), which
phones follow without asking the user. So does a nonce that fails its HMAC (one
issued under an earlier secret, say): the credentials decide, never the nonce
alone. Against replay the challenger remembers, per
nonce it has accepted, the highest nonce-count seen, in a bounded table.

The transaction layer must absorb retransmissions of a REGISTER before they get
here: a retransmission repeats its nonce-count and would be refused as a replay.

Pure code: the caller passes ``now`` and the password lookup; nothing reads a clock
or a socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Algorithm",
    "AuthFailure",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestChallenger",
    "DigestError",
    "authorize",
    "response_for",
]

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_HEX = frozenset("0123456789abcdef")
_WHITESPACE = " \t\r\n"
_NONCE_LAYOUT = struct.Struct(">q8s")
_NONCE_MAC_BYTES = 16
_SAME_ANSWER = "unknown user or bad password"


class DigestError(ValueError):
    """A Digest header that cannot be read; a request carrying it gets a 400."""

    status_code = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Algorithm(Enum):
    """Digest algorithms SIP may use (RFC 8760 section 2.1), by their wire name."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, name: str) -> Algorithm:
        """Algorithm names are case-insensitive (RFC 7616 section 3.3)."""
        for algorithm in cls:
            if algorithm.value.lower() == name.lower():
                return algorithm
        raise DigestError(f"unsupported algorithm {name!r}")

    @property
    def session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def hex_length(self) -> int:
        return 64 if self in (Algorithm.SHA256, Algorithm.SHA256_SESS) else 32

    def hash(self, text: str) -> str:
        name = "sha256" if self.hex_length == 64 else "md5"
        return hashlib.new(name, text.encode("utf-8")).hexdigest()


class AuthFailure(Enum):
    """Why `DigestChallenger.verify` refused a request."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_USER_OR_BAD_PASSWORD = "unknown_user_or_bad_password"
    STALE = "stale"
    REPLAY = "replay"


_FAILURE_STATUS = {
    AuthFailure.MISSING: 401,
    AuthFailure.MALFORMED: 400,
    AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD: 403,
    AuthFailure.STALE: 401,
    AuthFailure.REPLAY: 401,
}


@dataclass(frozen=True)
class AuthResult:
    """The verdict on one request's credentials.

    ``username`` is set only when the credentials were accepted. ``claimed_username``
    is whatever the request said, for logs and throttling, and is not to be trusted.
    """

    failure: AuthFailure | None = None
    username: str | None = None
    claimed_username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def status_code(self) -> int:
        """The SIP status to answer with: 401 comes with a fresh challenge."""
        return 200 if self.failure is None else _FAILURE_STATUS[self.failure]

    @property
    def stale(self) -> bool:
        """True when the fresh challenge must say ``stale=true``."""
        return self.failure is AuthFailure.STALE


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate: Digest ...`` value (RFC 7616 section 3.3)."""

    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        params = _parse_digest(value)
        realm = params.get("realm")
        nonce = params.get("nonce")
        if realm is None or nonce is None:
            raise DigestError("challenge without realm or nonce")
        qop_text = params.get("qop")
        qop = (
            tuple(part.strip() for part in qop_text.split(",") if part.strip()) if qop_text else ()
        )
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=Algorithm.parse(params.get("algorithm", "MD5")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "false").lower() == "true",
        )

    def header_value(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class Credentials:
    """One ``Authorization: Digest ...`` value (RFC 7616 section 3.4).

    ``nc`` stays the 8 hex digits as sent, since the response hashes that text.
    `parse` accepts only what dialswitch can verify: qop absent or ``auth`` (never
    ``auth-int``), a known algorithm, and ``nc`` with ``cnonce`` whenever qop is set.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Credentials:
        params = _parse_digest(value)
        missing = [
            name for name in ("username", "realm", "nonce", "uri", "response") if name not in params
        ]
        if missing:
            raise DigestError(f"missing {', '.join(missing)}")
        if params.get("userhash", "false").lower() != "false":
            raise DigestError("userhash is not supported")
        algorithm = Algorithm.parse(params.get("algorithm", "MD5"))
        qop = params.get("qop")
        if qop is not None and qop.lower() != "auth":
            raise DigestError(f"unsupported qop {qop!r}")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None:
            if nc is None or cnonce is None:
                raise DigestError("qop=auth needs nc and cnonce")
            if len(nc) != 8 or not set(nc.lower()) <= _HEX or int(nc, 16) == 0:
                raise DigestError(f"bad nc {nc!r}")
        response = params["response"].lower()
        if len(response) != algorithm.hex_length or not set(response) <= _HEX:
            raise DigestError(f"bad response for {algorithm.value}")
        if algorithm.session and cnonce is None:
            raise DigestError(f"{algorithm.value} needs cnonce")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=response,
            algorithm=algorithm,
            qop=None if qop is None else "auth",
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
        )

    def header_value(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)


def response_for(
    *,
    algorithm: Algorithm,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = "auth",
    nc: str | None = "00000001",
    cnonce: str | None = None,
) -> str:
    """The request-digest (RFC 7616 section 3.4.1; RFC 2069 form when qop is None)."""
    ha1 = algorithm.hash(f"{username}:{realm}:{password}")
    if algorithm.session:
        ha1 = algorithm.hash(f"{ha1}:{nonce}:{cnonce}")
    ha2 = algorithm.hash(f"{method}:{uri}")
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorize(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> Credentials:
    """The client side: answer ``challenge`` (used for outbound digest and in tests)."""
    if challenge.qop and "auth" not in challenge.qop:
        raise DigestError(f"no supported qop in {challenge.qop!r}")
    qop = "auth" if challenge.qop else None
    nc_text = f"{nc:08x}" if qop else None
    response = response_for(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce if qop or challenge.algorithm.session else None,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce if qop or challenge.algorithm.session else None,
        opaque=challenge.opaque,
    )


class DigestChallenger:
    """Issues challenges for one realm and verifies the credentials that answer them.

    ``random_bytes`` makes nonces unique; tests may pass a deterministic source.
    ``max_tracked_nonces`` bounds the nonce-count table: when it is full, expired
    entries go first, then the oldest, and any nonce issued no later than an evicted
    live one is then treated as stale, so eviction can never let a replay through.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        *,
        max_tracked_nonces: int = 10_000,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        algorithms: tuple[Algorithm, ...] = (Algorithm.MD5, Algorithm.SHA256),
    ) -> None:
        if not algorithms:
            raise ValueError("offer at least one digest algorithm")
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if nonce_ttl <= 0 or max_tracked_nonces <= 0:
            raise ValueError("nonce_ttl and max_tracked_nonces must be positive")
        self.realm = realm
        self.algorithms = algorithms
        self.nonce_ttl = nonce_ttl
        self.max_tracked_nonces = max_tracked_nonces
        self._secret = secret
        self._random_bytes = random_bytes
        self._opaque = _b64(hmac.new(secret, b"opaque\0" + realm.encode(), "sha256").digest()[:12])
        self._counts: dict[str, tuple[int, float]] = {}  # nonce -> (highest nc, issued at)
        self._evicted_issued_at = float("-inf")

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate values for a 401, one per algorithm in preference order.

        One nonce serves every algorithm (RFC 8760 section 2.4).
        """
        nonce = self._new_nonce(now)
        return [
            Challenge(
                realm=self.realm,
                nonce=nonce,
                algorithm=algorithm,
                qop=("auth",),
                opaque=self._opaque,
                stale=stale,
            ).header_value()
            for algorithm in self.algorithms
        ]

    def verify(
        self,
        method: str,
        header_value: str | Iterable[str] | None,
        lookup_password: Callable[[str], str | None],
        now: float,
        *,
        request_uri: str | None = None,
        allowed: Callable[[str, Algorithm], bool] | None = None,
    ) -> AuthResult:
        """Check a request's Authorization header value(s) against this realm.

        Several values may be given (a request can carry credentials for several
        realms); the first Digest one for this realm counts. An unknown user and a
        wrong password give the same answer, after the same amount of hashing.
        ``request_uri``, when given, must equal the digest-uri (RFC 7616 section 3.4.6).
        ``allowed(username, algorithm)``, when given, may refuse an algorithm for a
        user: the answer is then the one a wrong password gets.
        """
        found = self._select(header_value)
        if isinstance(found, AuthResult):
            return found
        credentials = found
        claimed = credentials.username
        if credentials.qop is None:
            return _malformed("qop=auth is required", claimed)
        if credentials.opaque is not None and not hmac.compare_digest(
            credentials.opaque.encode(), self._opaque.encode()
        ):
            return _malformed("opaque does not match", claimed)
        if request_uri is not None and credentials.uri != request_uri:
            return _malformed("digest uri does not match the Request-URI", claimed)

        password = lookup_password(credentials.username)
        if allowed is not None and not allowed(credentials.username, credentials.algorithm):
            password = None
        expected = response_for(
            algorithm=credentials.algorithm,
            username=credentials.username,
            realm=credentials.realm,
            password=password if password is not None else "\0unknown-user",
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        matches = hmac.compare_digest(expected.encode(), credentials.response.encode())
        if password is None or not matches:
            return AuthResult(
                AuthFailure.UNKNOWN_USER_OR_BAD_PASSWORD,
                claimed_username=claimed,
                reason=_SAME_ANSWER,
            )

        issued_at = self._nonce_issued_at(credentials.nonce)
        if issued_at is None or not -self.nonce_ttl <= now - issued_at <= self.nonce_ttl:
            return AuthResult(AuthFailure.STALE, claimed_username=claimed, reason="nonce expired")
        nc = int(credentials.nc or "0", 16)
        last = self._counts.get(credentials.nonce)
        if last is None and issued_at <= self._evicted_issued_at:
            return AuthResult(AuthFailure.STALE, claimed_username=claimed, reason="nonce forgotten")
        if last is not None and nc <= last[0]:
            return AuthResult(
                AuthFailure.REPLAY, claimed_username=claimed, reason="nonce-count not increasing"
            )
        self._remember(credentials.nonce, nc, issued_at, now)
        return AuthResult(username=credentials.username, claimed_username=claimed)

    def purge(self, now: float) -> int:
        """Forget nonce-counts of expired nonces; returns how many were dropped."""
        dead = [
            nonce
            for nonce, (_, issued_at) in self._counts.items()
            if now - issued_at > self.nonce_ttl
        ]
        for nonce in dead:
            del self._counts[nonce]
        return len(dead)

    @property
    def tracked_nonces(self) -> int:
        return len(self._counts)

    def _select(self, header_value: str | Iterable[str] | None) -> Credentials | AuthResult:
        values = [header_value] if isinstance(header_value, str) else list(header_value or ())
        error: DigestError | None = None
        for value in values:
            words = value.split(None, 1)
            if not words or words[0].lower() != "digest":
                continue
            try:
                credentials = Credentials.parse(value)
            except DigestError as exc:
                error = error or exc
                continue
            if credentials.realm == self.realm:
                return credentials
        if error is not None:
            return _malformed(error.reason, None)
        return AuthResult(AuthFailure.MISSING, reason="no credentials for this realm")

    def _new_nonce(self, now: float) -> str:
        body = _NONCE_LAYOUT.pack(int(now * 1000), self._random_bytes(8))
        return _b64(body + self._mac(body))

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """When we issued ``nonce``, or None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_LAYOUT.size + _NONCE_MAC_BYTES:
            return None
        body, mac = raw[: _NONCE_LAYOUT.size], raw[_NONCE_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        millis, _ = _NONCE_LAYOUT.unpack(body)
        return float(millis) / 1000

    def _mac(self, body: bytes) -> bytes:
        message = b"nonce\0" + self.realm.encode() + b"\0" + body
        return hmac.new(self._secret, message, "sha256").digest()[:_NONCE_MAC_BYTES]

    def _remember(self, nonce: str, nc: int, issued_at: float, now: float) -> None:
        if nonce not in self._counts and len(self._counts) >= self.max_tracked_nonces:
            self.purge(now)
            while len(self._counts) >= self.max_tracked_nonces:
                oldest = next(iter(self._counts))
                evicted_at = self._counts.pop(oldest)[1]
                self._evicted_issued_at = max(self._evicted_issued_at, evicted_at)
        self._counts[nonce] = (nc, issued_at)


def _malformed(reason: str, claimed: str | None) -> AuthResult:
    return AuthResult(AuthFailure.MALFORMED, claimed_username=claimed, reason=reason)


def _parse_digest(value: str) -> dict[str, str]:
    """Split ``Digest name=value, name="quoted", ...`` into lower-cased names.

    Values are tokens or quoted strings with backslash escapes; commas inside quotes
    are data. Empty list elements are tolerated (RFC 7230 section 7), duplicates
    and unknown syntax are not; unknown param names are kept and later ignored.
    """
    text = value.strip()
    scheme_end = 0
    while scheme_end < len(text) and text[scheme_end] in _TOKEN_CHARS:
        scheme_end += 1
    if text[:scheme_end].lower() != "digest":
        raise DigestError("not a Digest header")
    if scheme_end < len(text) and text[scheme_end] not in _WHITESPACE:
        raise DigestError("no space after Digest")
    params: dict[str, str] = {}
    index = scheme_end
    while True:
        index = _skip(text, index, _WHITESPACE + ",")
        if index >= len(text):
            break
        start = index
        while index < len(text) and text[index] in _TOKEN_CHARS:
            index += 1
        name = text[start:index].lower()
        if not name:
            raise DigestError(f"expected a param name at {text[start : start + 10]!r}")
        index = _skip(text, index, _WHITESPACE)
        if index >= len(text) or text[index] != "=":
            raise DigestError(f"param {name!r} without '='")
        index = _skip(text, index + 1, _WHITESPACE)
        if index < len(text) and text[index] == '"':
            param, index = _read_quoted(text, index)
        else:
            start = index
            while index < len(text) and text[index] not in _WHITESPACE + ',"':
                index += 1
            param = text[start:index]
            if not param:
                raise DigestError(f"param {name!r} without a value")
        if name in params:
            raise DigestError(f"duplicate param {name!r}")
        params[name] = param
        index = _skip(text, index, _WHITESPACE)
        if index < len(text) and text[index] != ",":
            raise DigestError(f"expected ',' after param {name!r}")
    if not params:
        raise DigestError("Digest header without params")
    return params


def _skip(text: str, index: int, chars: str) -> int:
    while index < len(text) and text[index] in chars:
        index += 1
    return index


def _read_quoted(text: str, index: int) -> tuple[str, int]:
    """Read the quoted string opening at ``index``; returns its value and the end."""
    out: list[str] = []
    index += 1
    while index < len(text):
        ch = text[index]
        if ch == "\\":
            if index + 1 >= len(text):
                break
            out.append(text[index + 1])
            index += 2
            continue
        if ch == '"':
            return "".join(out), index + 1
        out.append(ch)
        index += 1
    raise DigestError("unterminated quoted string")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
