"""The webhook client: fetches RCML documents and delivers status callbacks.

Requests look like Twilio's so that customers' apps and their validators work unchanged:
GET carries the parameters in the query string, POST as a form body; every request is
signed (`X-Twilio-Signature`, see `switch.signature`) over the exact URL put on the
wire, and carries an `I-Twilio-Idempotency-Token` that stays the same across retries
and redirects of one logical request so the app can deduplicate them.

Failures raise `WebhookError` carrying Twilio's error code (11100, 11200, 11205, 11206,
11210, 11215, 11217, 11220, 11750, 12300; 15003 for callbacks) and are logged with it.

Choices where Twilio's pages leave room:

- Timeouts and retries follow Twilio's URL fragment overrides ``#ct=&rt=&tt=&rc=&rp=``
  (connect/read/total ms, retry count, retry policy ``4xx``, ``5xx``, ``ct``, ``rt``,
  ``all``, comma-separated). The fragment is removed before the request is made and
  signed. Values are clamped to Twilio's ranges (ct 100-10000, rt and tt 100-15000,
  rc 0-5); malformed ones are ignored. ``tt`` bounds the whole logical request,
  retries and redirects included. Every timeout is reported as 11205.
- Policy ``ct`` covers any failure to get a response on a connection: refused,
  connect timeout, or a connection closed before the status line.
- Redirects (301, 302, 303, 307, 308) are followed up to ``max_redirects`` (10), each
  hop signed for its own URL; one more is 11215. POST stays POST with its form on
  301/302/307/308; 303 becomes a GET of the Location. GET follows the Location as is.
- Accepted document types: ``text/xml``, ``application/xml`` and ``text/html`` as
  RCML (Twilio accepts all three; an HTML page then fails at parse with 12100), and
  ``text/plain``, which the interpreter reads out as Twilio does. Anything else,
  including a missing Content-Type, is 12300.
- User info in the URL (``https://user:pass@host/``) becomes HTTP Basic auth, sent
  only to that origin, redirects included; the signed URL is the one without it, as the app sees it.
- No cookies are kept: one session serves every account.
- ``AccountSid`` is added to the parameters when the caller did not set it.

Status callbacks never block or fail the call: `post_callback` writes them to the
callback journal and returns (switch/callback_delivery.py sends them, in order per
CallSid). One attempt is one logical request with the policy above (``#rc``, ``#rp``
...); a failure of a class ``#rp`` retries is tried again later with backoff, until
``callback_give_up_after``, then given up with 11200. At ``callback_max_pending``
undelivered callbacks a new one is refused: 11200 "callback queue full", logged and
counted (dropping an older one instead would leave a gap in some call's sequence).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver

from switch.callback_delivery import CallbackDelivery, Failure
from switch.callback_journal import CallbackJournal, JournalRow, RetrySchedule
from switch.signature import SIGNATURE_HEADER, Params, compute_signature, param_pairs
from switch.store import Store, StoreError

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ErrorHook",
    "FetchedDocument",
    "RequestPolicy",
    "WebhookClient",
    "WebhookError",
    "WebhookSettings",
    "parse_overrides",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
ACCEPT = "text/xml, application/xml, */*"
ACCEPTED_CONTENT_TYPES = frozenset({"text/xml", "application/xml", "text/html", "text/plain"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

ERROR_LABELS: Mapping[int, str] = {
    11100: "invalid URL",
    11200: "retrieval failure",
    11205: "connection failure",
    11206: "protocol violation",
    11210: "bad host",
    11215: "too many redirects",
    11217: "HTTP error response",
    11220: "TLS failure",
    11750: "response body too large",
    12300: "invalid Content-Type",
    15003: "callback got an HTTP error response",
}

ErrorHook = Callable[[int, str, str], object]
"""Called as ``hook(code, message, url)`` after each failure, e.g. to store a
notification for the account."""
Observer = Callable[[str, float, int | None], object]
"""Told of every request: kind (document, callback), seconds, error code or None."""
CallNotifier = Callable[[str, int, str, str], object]
"""Called as ``notify(call_sid, code, message, url)`` when a status callback is given up
or refused: a process-wide sink (the store's notifications), since a journal row must
be reported after a restart too, when no closure of the call that queued it is left."""

Target = tuple[str, str]
"""A webhook as configured: ``(url, method)``."""


class WebhookError(Exception):
    """A webhook failed with Twilio error ``code``.

    ``url`` is the URL as configured, fragment removed; ``status`` the HTTP status for
    11217 and 15003; ``fallback_error`` the fallback's own failure when the fallback
    URL failed too.
    """

    def __init__(
        self,
        code: int,
        message: str,
        url: str,
        *,
        method: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(code, message, url)
        self.code = code
        self.message = message
        self.url = url
        self.method = method
        self.status = status
        self.fallback_error: WebhookError | None = None
        self.retry_class: str | None = None
        """The ``#rp`` class of the failure (4xx, 5xx, ct, rt); None: never retried."""

    @property
    def label(self) -> str:
        return ERROR_LABELS.get(self.code, "webhook failure")

    def __str__(self) -> str:
        request = f"{self.method} {self.url}" if self.method else self.url
        return f"{self.code} {self.label}: {request} ({self.message})"


class ReportedError(Protocol):
    """Any failure the fallback URL is told about: a `WebhookError` or a parse error."""

    @property
    def code(self) -> int: ...

    @property
    def url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Defaults for every request; URL fragments override the timeouts and retries."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 15.0
    connect_retries: int = 1
    max_body: int = 65536
    user_agent: str = "dialswitch"
    max_redirects: int = 10
    pool_size: int = 100
    callback_workers: int = 4
    callback_retries: int = 2
    callback_backoff: float = 0.5
    callback_retry_interval: float = 5.0
    callback_retry_max_interval: float = 300.0
    callback_give_up_after: float = 3600.0
    callback_max_pending: int = 100_000

    @property
    def callback_schedule(self) -> RetrySchedule:
        return RetrySchedule(
            self.callback_retry_interval,
            self.callback_retry_max_interval,
            self.callback_give_up_after,
        )


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    """A webhook's answer: the body and its media type (lowercase, no parameters).

    ``url`` is the URL the body came from after redirects, fragment and added query
    parameters aside; relative URLs in the document resolve against it.
    """

    url: str
    body: bytes
    content_type: str
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """Timeouts (seconds) and retries of one logical request."""

    connect_timeout: float
    read_timeout: float
    total_timeout: float
    retries: int
    retry_on: frozenset[str]
    backoff: float = 0.0


RETRY_POLICIES = frozenset({"4xx", "5xx", "ct", "rt"})
_OVERRIDE_LIMITS = {"ct": (100, 10_000), "rt": (100, 15_000), "tt": (100, 15_000), "rc": (0, 5)}


def parse_overrides(fragment: str, defaults: RequestPolicy) -> RequestPolicy:
    """Apply Twilio's connection overrides from a URL fragment to ``defaults``.

    Unknown keys are ignored, numbers are clamped to Twilio's ranges, and a value
    that is not a number or a known policy leaves the default in place.
    """
    numbers: dict[str, int] = {}
    retry_on = defaults.retry_on
    for key, value in parse_qsl(fragment, keep_blank_values=True):
        if key in _OVERRIDE_LIMITS:
            try:
                number = int(value)
            except ValueError:
                logger.debug("ignoring webhook override %s=%r", key, value)
                continue
            low, high = _OVERRIDE_LIMITS[key]
            numbers[key] = min(max(number, low), high)
        elif key == "rp":
            names = {name.strip().lower() for name in value.split(",")}
            policies = RETRY_POLICIES if "all" in names else names & RETRY_POLICIES
            if policies:
                retry_on = frozenset(policies)
            else:
                logger.debug("ignoring webhook override rp=%r", value)

    def seconds(key: str, default: float) -> float:
        return numbers[key] / 1000 if key in numbers else default

    return RequestPolicy(
        connect_timeout=seconds("ct", defaults.connect_timeout),
        read_timeout=seconds("rt", defaults.read_timeout),
        total_timeout=seconds("tt", defaults.total_timeout),
        retries=numbers.get("rc", defaults.retries),
        retry_on=retry_on,
        backoff=defaults.backoff,
    )


@dataclass(frozen=True, slots=True)
class _Url:
    """A URL ready for the wire: ``wire`` is sent and signed, ``shown`` is logged."""

    wire: str
    shown: str
    fragment: str
    auth: str | None
    host: str

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: credentials are only resent to the same origin."""
        return "/".join(self.wire.split("/", 3)[:3])


_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


def _prepare_url(url: str, method: str) -> _Url:
    """Check ``url`` and percent-encode it as it will be requested (11100 if bad)."""
    shown, _, fragment = url.strip().partition("#")

    def bad(reason: str) -> WebhookError:
        return WebhookError(11100, reason, shown, method=method)

    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in shown):
        raise bad("control character or space in URL")
    try:
        parts = urlsplit(shown)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise bad(f"scheme {parts.scheme!r} is not http or https" if scheme else "no scheme")
    hostname = parts.hostname
    if not hostname:
        raise bad("no host")
    if ":" in hostname:
        host = f"[{hostname}]"
    else:
        try:
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise bad(f"host {hostname!r} is not a valid name") from None
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = aiohttp.encode_basic_auth(
            unquote(parts.username or ""), unquote(parts.password or "")
        )
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    netloc = host if port is None else f"{host}:{port}"
    path = quote(parts.path or "/", safe=_SAFE_PATH)
    query = quote(parts.query, safe=_SAFE_QUERY)
    wire = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    return _Url(wire=wire, shown=shown, fragment=fragment, auth=auth, host=host)


def _with_query(url: str, pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(pairs)


def _normalise_method(method: str) -> str:
    upper = method.upper()
    if upper not in ("GET", "POST"):
        raise ValueError(f"webhook method must be GET or POST, not {method!r}")
    return upper


@dataclass(slots=True)
class _Request:
    """One logical request: the same token across its retries and redirects."""

    url: _Url
    method: str
    pairs: list[tuple[str, str]]
    policy: RequestPolicy
    document: bool
    token: str = dataclasses.field(default_factory=lambda: new_token())


def new_token() -> str:
    """An ``I-Twilio-Idempotency-Token``."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str
    status: int


class _AttemptFailed(Exception):
    """An attempt failed; ``retry_class`` says which ``rp`` policy may retry it."""

    def __init__(self, error: WebhookError, retry_class: str | None) -> None:
        super().__init__(error)
        self.error = error
        self.retry_class = retry_class
        error.retry_class = retry_class


class WebhookClient:
    """Webhook requests over one pooled `aiohttp.ClientSession`; make one per process.

    The session starts on first use inside the running loop; the callback senders at
    `start` or at the first `post_callback`, delivering first what the journal kept from
    an earlier run. Without a ``journal`` the callbacks are kept in a database in
    memory, which a restart loses (tests and tools).
    """

    def __init__(
        self,
        settings: WebhookSettings,
        account_sid: str,
        auth_token: str,
        *,
        on_error: ErrorHook | None = None,
        resolver: AbstractResolver | None = None,
        observer: Observer | None = None,
        journal: CallbackJournal | None = None,
        notify: CallNotifier | None = None,
    ) -> None:
        self.settings = settings
        self._observer = observer
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._on_error = on_error
        self._notify = notify
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self.callbacks = CallbackDelivery(
            journal or CallbackJournal(Store.memory()),
            settings.callback_schedule,
            self._send_callback,
            self._callback_failed,
            workers=settings.callback_workers,
            max_pending=settings.callback_max_pending,
        )
        self._closed = False

    # -- documents ---------------------------------------------------------------

    async def fetch_document(
        self,
        url: str,
        method: str,
        params: Params | None,
        *,
        on_error: ErrorHook | None = None,
    ) -> FetchedDocument:
        """Fetch an RCML document; raise `WebhookError` on failure, already logged as an
        error with the method, URL, cause and CallSid (the caller need not log it again)."""
        method = _normalise_method(method)
        pairs = self._with_account(param_pairs(params))
        started = time.monotonic()
        try:
            request = self._request(url, method, pairs, document=True)
            result = await self._perform(request)
        except WebhookError as exc:
            self._observe("document", started, exc.code)
            self._report(exc, pairs, on_error, logging.ERROR)  # the call's own error line
            raise
        self._observe("document", started, None)
        assert isinstance(result, FetchedDocument)
        return result

    async def fetch_with_fallback(
        self,
        primary: Target,
        fallback: Target | None,
        params: Params | None,
        *,
        on_error: ErrorHook | None = None,
    ) -> FetchedDocument:
        """Fetch ``primary``; on failure fetch ``fallback`` with ErrorCode and ErrorUrl.

        When both fail the primary's error is raised with ``fallback_error`` set.
        """
        try:
            return await self.fetch_document(*primary, params, on_error=on_error)
        except WebhookError as primary_error:
            if fallback is None:
                raise
            try:
                return await self.fetch_fallback(fallback, params, primary_error, on_error=on_error)
            except WebhookError as fallback_error:
                primary_error.fallback_error = fallback_error
                raise primary_error from fallback_error

    async def fetch_fallback(
        self,
        fallback: Target,
        params: Params | None,
        error: ReportedError,
        *,
        on_error: ErrorHook | None = None,
    ) -> FetchedDocument:
        """Fetch the fallback URL after ``error``, which may also be a parse error.

        Adds ``ErrorCode`` and ``ErrorUrl`` to ``params``; raises the fallback's own
        `WebhookError` if it fails too.
        """
        pairs = [
            (name, value)
            for name, value in param_pairs(params)
            if name not in ("ErrorCode", "ErrorUrl")
        ]
        pairs += [("ErrorCode", str(error.code)), ("ErrorUrl", error.url)]
        return await self.fetch_document(*fallback, pairs, on_error=on_error)

    # -- status callbacks --------------------------------------------------------

    def post_callback(
        self,
        url: str,
        method: str,
        params: Params | None,
        *,
        key: str | None = None,
        recording_sid: str | None = None,
    ) -> None:
        """Journal a status callback for delivery; returns at once, never raises for
        delivery.

        Callbacks with the same ``key`` (default: the CallSid, else the URL) are
        delivered one at a time in submission order. ``recording_sid``: the callback is
        that recording's final one, whose ``callback_pending`` is cleared when it goes.
        After `close` the callback is still journalled, for the next start.
        """
        method = _normalise_method(method)
        pairs = self._with_account(param_pairs(params))
        if key is None:
            key = next((value for name, value in pairs if name == "CallSid"), url)
        try:
            if self.callbacks.post(key, url, method, pairs, new_token(), recording_sid):
                return
            reason = f"callback queue full ({self.callbacks.max_pending} undelivered)"
        except (sqlite3.Error, StoreError) as exc:
            reason = f"cannot journal the callback: {exc}"
        error = WebhookError(11200, f"{reason}: not sent", url.partition("#")[0], method=method)
        self._observe("callback", time.monotonic(), error.code)
        call_sid = next((value for name, value in pairs if name == "CallSid"), key)
        self._report(error, pairs, call_sid=call_sid)

    def start(self) -> None:
        """Start delivering callbacks, those an earlier run left first (inside the loop)."""
        self.callbacks.start()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no callback is being attempted or is due now; False on timeout."""
        return await self.callbacks.drain(timeout)

    async def close(self) -> None:
        """Stop delivering and close the session; undelivered callbacks stay in the
        journal for the next start. Call `drain` first to send what is due."""
        self._closed = True
        await self.callbacks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def queued(self) -> int:
        """Status callbacks not delivered yet (the journal's rows)."""
        return self.callbacks.pending

    async def _send_callback(self, row: JournalRow) -> Failure | None:
        """One attempt at a journalled callback: its request, the ``#rc`` retries and
        redirects included, with the row's idempotency token."""
        started = time.monotonic()
        retry_on: frozenset[str] = frozenset()
        try:
            request = self._request(row.url, row.method, list(row.pairs), document=False)
            request.token = row.token
            retry_on = request.policy.retry_on
            await self._perform(request)
        except WebhookError as exc:
            self._observe("callback", started, exc.code)
            retryable = exc.retry_class is not None and exc.retry_class in retry_on
            return Failure(exc.code, exc.message, exc.url, retryable)
        self._observe("callback", started, None)
        return None

    def _callback_failed(self, row: JournalRow, failure: Failure) -> None:
        error = WebhookError(failure.code, failure.message, failure.url, method=row.method)
        self._report(error, list(row.pairs), call_sid=row.call_sid)

    def _observe(self, kind: str, started: float, error_code: int | None) -> None:
        if self._observer is not None:
            self._observer(kind, time.monotonic() - started, error_code)

    # -- one logical request -----------------------------------------------------

    def _request(
        self, url: str, method: str, pairs: list[tuple[str, str]], *, document: bool
    ) -> _Request:
        if self._closed:
            raise RuntimeError("webhook client is closed")
        prepared = _prepare_url(url, method)
        settings = self.settings
        if document:
            defaults = RequestPolicy(
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                total_timeout=settings.total_timeout,
                retries=settings.connect_retries,
                retry_on=frozenset({"ct"}),
            )
        else:
            defaults = RequestPolicy(
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                total_timeout=settings.total_timeout,
                retries=settings.callback_retries,
                retry_on=frozenset({"ct", "5xx"}),
                backoff=settings.callback_backoff,
            )
        policy = parse_overrides(prepared.fragment, defaults)
        return _Request(prepared, method, pairs, policy, document)

    async def _perform(self, request: _Request) -> FetchedDocument | None:
        """Run ``request`` with its retries inside its total time budget."""
        policy = request.policy
        attempt = 0
        started = time.monotonic()
        last_class = "rt"  # a first attempt that runs out of time may have been received
        try:
            async with asyncio.timeout(policy.total_timeout):
                while True:
                    try:
                        return await self._follow(request)
                    except _AttemptFailed as failed:
                        last_class = failed.retry_class or "rt"
                        retryable = failed.retry_class in policy.retry_on
                        if attempt >= policy.retries or not retryable:
                            raise failed.error from None
                    attempt += 1
                    logger.debug(
                        "retrying %s %s (attempt %d)",
                        request.method,
                        request.url.shown,
                        attempt + 1,
                    )
                    if policy.backoff:
                        await asyncio.sleep(policy.backoff * 2 ** (attempt - 1))
        except TimeoutError:
            elapsed = int((time.monotonic() - started) * 1000)
            error = WebhookError(
                11205,
                f"timed out after {elapsed} ms (total {int(policy.total_timeout * 1000)} ms)",
                request.url.shown,
                method=request.method,
            )
            # Out of time while failing to connect: still unreachable, worth a retry.
            error.retry_class = last_class
            raise error from None

    async def _follow(self, request: _Request) -> FetchedDocument | None:
        """One attempt: the request and the redirects it leads to."""
        url = request.url
        method = request.method
        pairs = request.pairs
        auth = url.auth
        for _ in range(self.settings.max_redirects + 1):
            outcome = await self._exchange(request, url, method, pairs, auth)
            if not isinstance(outcome, _Redirect):
                return outcome
            try:
                target = _prepare_url(urljoin(url.wire, outcome.location), method)
            except WebhookError as exc:
                message = f"redirect {outcome.status} to a bad URL: {exc.message}"
                raise _AttemptFailed(
                    WebhookError(11100, message, request.url.shown, method=request.method),
                    None,
                ) from None
            if target.auth is None and target.origin == url.origin:
                target = dataclasses.replace(target, auth=auth)
            auth = target.auth
            url = target
            if outcome.status == 303 and method == "POST":
                method, pairs = "GET", []
            elif method == "GET":
                pairs = []
        error = WebhookError(
            11215,
            f"more than {self.settings.max_redirects} redirects",
            request.url.shown,
            method=request.method,
        )
        raise _AttemptFailed(error, None)

    async def _exchange(
        self,
        request: _Request,
        url: _Url,
        method: str,
        pairs: list[tuple[str, str]],
        auth: str | None,
    ) -> FetchedDocument | _Redirect | None:
        """One HTTP request/response; failures become `_AttemptFailed`."""
        policy = request.policy
        headers = {
            "Accept": ACCEPT,
            "User-Agent": self.settings.user_agent,
            IDEMPOTENCY_HEADER: request.token,
        }
        if auth is not None:
            headers["Authorization"] = auth
        body: bytes | None = None
        if method == "GET":
            wire = _with_query(url.wire, pairs)
            headers[SIGNATURE_HEADER] = compute_signature(self._auth_token, wire, None)
        else:
            wire = url.wire
            headers[SIGNATURE_HEADER] = compute_signature(self._auth_token, wire, pairs)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(pairs).encode("ascii")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=policy.connect_timeout,
            sock_connect=policy.connect_timeout,
            sock_read=policy.read_timeout,
        )

        def fail(code: int, message: str, retry_class: str | None = None) -> _AttemptFailed:
            error = WebhookError(code, message, request.url.shown, method=request.method)
            return _AttemptFailed(error, retry_class)

        session = self._get_session()
        try:
            async with session.request(
                method,
                yarl.URL(wire, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                return await self._read_response(request, url, response)
        except _AttemptFailed:
            raise
        except aiohttp.ClientConnectorDNSError as exc:
            raise fail(11210, f"cannot resolve {url.host}: {exc.os_error}") from None
        except aiohttp.ClientSSLError as exc:
            raise fail(11220, str(exc)) from None
        except aiohttp.ConnectionTimeoutError:
            message = f"connect timeout after {int(policy.connect_timeout * 1000)} ms"
            raise fail(11205, message, "ct") from None
        except aiohttp.SocketTimeoutError:
            message = f"read timeout after {int(policy.read_timeout * 1000)} ms"
            raise fail(11205, message, "rt") from None
        except aiohttp.ServerTimeoutError as exc:
            raise fail(11205, f"timeout: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            raise fail(11205, _describe_os_error(exc.os_error), "ct") from None
        except aiohttp.ServerDisconnectedError:
            raise fail(11205, "connection closed before a response", "ct") from None
        except aiohttp.ClientPayloadError as exc:
            raise fail(11206, f"bad response body: {exc}") from None
        except aiohttp.ClientResponseError as exc:
            raise fail(11206, exc.message.splitlines()[0] if exc.message else str(exc)) from None
        except aiohttp.InvalidURL as exc:
            raise fail(11100, f"invalid URL {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise fail(11200, f"{type(exc).__name__}: {exc}") from None

    async def _read_response(
        self, request: _Request, url: _Url, response: aiohttp.ClientResponse
    ) -> FetchedDocument | _Redirect | None:
        status = response.status

        def fail(code: int, message: str, retry_class: str | None = None) -> _AttemptFailed:
            response.close()
            error = WebhookError(
                code, message, request.url.shown, method=request.method, status=status
            )
            return _AttemptFailed(error, retry_class)

        if status in REDIRECT_STATUSES:
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise fail(11206, f"HTTP {status} without a Location")
            return _Redirect(location, status)
        if 400 <= status <= 599:
            code = 11217 if request.document else 15003
            raise fail(code, f"HTTP {status}", "4xx" if status < 500 else "5xx")
        if not 200 <= status <= 299:
            raise fail(11200, f"unexpected HTTP {status}")
        if not request.document:
            await self._read_body(response, discard=True)
            return None
        media_type = response.content_type.lower() if "Content-Type" in response.headers else ""
        if media_type not in ACCEPTED_CONTENT_TYPES:
            raise fail(12300, f"Content-Type {media_type or 'missing'}")
        max_body = self.settings.max_body
        if response.content_length is not None and response.content_length > max_body:
            raise fail(11750, f"Content-Length {response.content_length} over {max_body} bytes")
        body = await self._read_body(response, discard=False)
        if body is None:
            raise fail(11750, f"body over {max_body} bytes")
        return FetchedDocument(
            url=url.shown,
            body=body,
            content_type=media_type,
            charset=response.charset,
        )

    async def _read_body(self, response: aiohttp.ClientResponse, *, discard: bool) -> bytes | None:
        """Read at most ``max_body`` bytes; None (connection closed) if there is more."""
        limit = self.settings.max_body
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await response.content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if not discard:
                chunks.append(chunk)
        response.close()
        return None

    # -- helpers -----------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.pool_size,
                resolver=self._resolver,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    def _with_account(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if self.account_sid and not any(name == "AccountSid" for name, _ in pairs):
            return [*pairs, ("AccountSid", self.account_sid)]
        return pairs

    def _report(
        self,
        error: WebhookError,
        pairs: list[tuple[str, str]],
        on_error: ErrorHook | None = None,
        level: int = logging.WARNING,
        *,
        call_sid: str | None = None,
    ) -> None:
        """Log a failure and tell the hooks; ``call_sid`` (a status callback's) also goes
        to the process-wide notifier."""
        if call_sid is None:
            call_sid = next((value for name, value in pairs if name == "CallSid"), None)
            notify = None
        else:
            notify = self._notify
        logger.log(
            level,
            "%s",
            error,
            extra={"error_code": error.code, "webhook_url": error.url, "call_sid": call_sid},
        )
        hook = on_error or self._on_error
        try:
            if hook is not None:
                hook(error.code, error.message, error.url)
            if notify is not None and call_sid is not None:
                notify(call_sid, error.code, error.message, error.url)
        except Exception:
            logger.exception("webhook error hook failed")


def _describe_os_error(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    return error.strerror or type(error).__name__
