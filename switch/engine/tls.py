"""Why outgoing TLS connections failed, so a leg that could not be sent says so.

pjsip closes a TLS connection whose certificate does not verify and fails the
INVITE waiting for it with a bare transport error. The endpoint's transport
callback sees the verification result first; `TlsFailures` keeps it, keyed by
the far end's address, for the leg that ends on it a moment later.
"""

from __future__ import annotations

from dataclasses import dataclass

KEEP_SECONDS = 10.0
"""How long a failure explains legs that end after it."""


@dataclass(frozen=True)
class TlsFailure:
    remote: str  # "ip:port" (IPv6 in brackets), as pjsip reports it
    reason: str
    at: float


class TlsFailures:
    """The recent TLS verification failures, newest last."""

    def __init__(self) -> None:
        self._recent: list[TlsFailure] = []

    def record(self, remote: str, reason: str, now: float) -> None:
        self._forget(now)
        self._recent.append(TlsFailure(remote, reason, now))

    def explain(self, destination: str, now: float) -> str | None:
        """The failure of a connection to ``destination`` ("host:port"), if recent.

        A destination given by name matches no address: the newest failure is
        taken then, which is the right one unless two TLS far ends fail at once.
        """
        self._forget(now)
        for failure in reversed(self._recent):
            if failure.remote == destination:
                return failure.reason
        return self._recent[-1].reason if self._recent else None

    def _forget(self, now: float) -> None:
        self._recent = [f for f in self._recent if now - f.at <= KEEP_SECONDS]
