"""Request signing for webhooks: the `X-Twilio-Signature` header.

The signature is base64(HMAC-SHA1(auth_token, url + params)) where ``params`` is every
POST parameter name followed by its value, names sorted in code-point order (Twilio's
"Unix-style case-sensitive" sort). A name sent several times contributes each of its
distinct values in sorted order, which is how Twilio's helper libraries validate it.
GET requests carry their parameters in the query string, so they sign the URL alone.

The URL must be the one put on the wire, fragment removed: the customer's validator
rebuilds it from the request it received. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import SplitResult, urlsplit

__all__ = ["SIGNATURE_HEADER", "Params", "compute_signature", "param_pairs", "validate"]

SIGNATURE_HEADER = "X-Twilio-Signature"


Params = Mapping[str, str] | Sequence[tuple[str, str]]
"""Request parameters: a mapping (a `multidict.MultiDict` keeps repeated names) or
a sequence of ``(name, value)`` pairs when a name repeats."""


def param_pairs(params: Params | None) -> list[tuple[str, str]]:
    """Flatten ``params`` into ``(name, value)`` pairs, keeping repeats and order."""
    if params is None:
        return []
    if isinstance(params, Mapping):
        return [(str(name), str(value)) for name, value in params.items()]
    return [(str(name), str(value)) for name, value in params]


def _signed_payload(url: str, pairs: Iterable[tuple[str, str]]) -> str:
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(values):
        for value in sorted(values[name]):
            parts.append(name)
            parts.append(value)
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: Params | None) -> str:
    """Return the `X-Twilio-Signature` value for a request to ``url``.

    ``params`` are the POST form parameters; pass ``None`` (or nothing) for GET, whose
    parameters are already part of ``url``.
    """
    payload = _signed_payload(url, param_pairs(params))
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """``url`` as given, without its port and with the scheme's default port.

    Twilio's validators accept either form because proxies in front of the customer's
    app often drop or add the port when the URL is rebuilt.
    """
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return variants
    hostport = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc[: len(parts.netloc) - len(hostport)]
    if port is not None:
        bare = hostport[: hostport.rfind(":")]
        variants.append(_with_netloc(parts, userinfo + bare))
    elif parts.hostname:
        default = 443 if parts.scheme.lower() == "https" else 80
        variants.append(_with_netloc(parts, f"{userinfo}{hostport}:{default}"))
    return variants


def _with_netloc(parts: SplitResult, netloc: str) -> str:
    return parts._replace(netloc=netloc).geturl()


def validate(auth_token: str, url: str, params: Params | None, signature: str) -> bool:
    """Check ``signature`` against a request for ``url`` with POST ``params``.

    Accepts the URL with or without its port, as Twilio's own validators do. The
    comparison is constant-time.
    """
    expected = signature.encode("utf-8")
    return any(
        hmac.compare_digest(compute_signature(auth_token, variant, params).encode(), expected)
        for variant in _port_variants(url)
    )
