"""What every REST resource shares: Basic auth, the account path, errors, paging.

Twilio's API lives under ``/2010-04-01/Accounts/{AccountSid}/``. Requests
authenticate with HTTP Basic, AccountSid and AuthToken (20003 with 401
otherwise); a path naming another account is 404 (20404). Errors use Twilio's
JSON shape (``code``, ``message``, ``more_info``, ``status``). Lists page as
Twilio's do: ``PageSize`` (default 50, at most 1000), ``Page`` and an opaque
``PageToken``, with ``next_page_uri`` and friends in the body, so Twilio's
helper libraries page through them unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import hdrs, web

from switch.recordings import API_VERSION

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
REALM = "dialswitch"
ERROR_AUTHENTICATE = 20003
ERROR_NOT_FOUND = 20404

ACCOUNT_PATH = f"/{API_VERSION}/Accounts/{{account_sid}}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestError(Exception):
    """A request the API refuses: Twilio's code, the HTTP status, a message naming the cause."""

    def __init__(
        self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> web.Response:
        return twilio_error(self.status, self.code, self.message, self.headers)


def twilio_error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error response in Twilio's JSON shape."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def not_found(request: web.Request) -> web.Response:
    return twilio_error(
        404, ERROR_NOT_FOUND, f"The requested resource {request.path} was not found"
    )


class AccountGuard:
    """Basic auth of the configured account, then the AccountSid of the path (if any)."""

    def __init__(self, account_sid: str, auth_token: str):
        self.account_sid = account_sid
        self.auth_token = auth_token

    def __call__(self, handler: Handler) -> Handler:
        async def guard(request: web.Request) -> web.StreamResponse:
            if not self._authenticated(request.headers.get(hdrs.AUTHORIZATION, "")):
                return twilio_error(
                    401,
                    ERROR_AUTHENTICATE,
                    "Authenticate",
                    {hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'},
                )
            if request.match_info.get("account_sid", self.account_sid) != self.account_sid:
                return not_found(request)
            try:
                return await handler(request)
            except RestError as error:
                return error.response()

        return guard

    def _authenticated(self, header: str) -> bool:
        credentials = basic_credentials(header)
        if credentials is None:
            return False
        sid_ok = hmac.compare_digest(credentials[0].encode(), self.account_sid.encode())
        token_ok = hmac.compare_digest(credentials[1].encode(), self.auth_token.encode())
        return sid_ok and token_ok


def basic_credentials(header: str) -> tuple[str, str] | None:
    """Login and password of an ``Authorization: Basic`` header (RFC 7617), or None."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def query_int(text: str | None, default: int, low: int, high: int) -> int:
    """A query integer clamped to ``[low, high]``; `default` when absent or not a number."""
    if text is None or not text.strip().isdigit():
        return default
    return max(low, min(high, int(text)))


@dataclass(frozen=True)
class PageRequest:
    """Which slice of a list a request asks for."""

    page: int
    size: int

    @property
    def offset(self) -> int:
        return self.page * self.size

    @classmethod
    def of(cls, query: Mapping[str, str]) -> PageRequest:
        size = query_int(query.get("PageSize"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        page = query_int(query.get("Page"), 0, 0, 1_000_000)
        token = query.get("PageToken", "")
        if token.startswith("PT") and token[2:].isdigit():
            # A token of the form PT<offset of the page's first row> (Twilio's own
            # tokens are opaque; ours are accepted in either form) wins over Page.
            page = int(token[2:]) // size
        return cls(page, size)


def page_body(
    key: str,
    items: list[dict[str, Any]],
    path: str,
    page: PageRequest,
    has_next: bool,
    filters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Twilio's list shape around ``items`` (one page, already cut to ``page.size``)."""

    def uri(number: int) -> str:
        query = {"PageSize": str(page.size), "Page": str(number), **(filters or {})}
        return f"{path}?{urlencode(query)}"

    return {
        key: items,
        "page": page.page,
        "page_size": page.size,
        "start": page.offset,
        "end": page.offset + max(len(items) - 1, 0),
        "uri": uri(page.page),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page.page + 1) if has_next else None,
        "previous_page_uri": uri(page.page - 1) if page.page > 0 else None,
    }
