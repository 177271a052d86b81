"""The webhook client against a real aiohttp app on loopback.

The app records every request and checks its signature with Twilio's own
RequestValidator, rebuilding the URL from what it received, as a customer's app does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from multidict import MultiDict, MultiMapping
from twilio.request_validator import RequestValidator

from switch.webhook import (
    FetchedDocument,
    RequestPolicy,
    WebhookClient,
    WebhookError,
    WebhookSettings,
    parse_overrides,
)

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "test-auth-token"
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response><Say>hi</Say></Response>'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    url: str
    query: MultiMapping[str]
    form: MultiDict[str]
    headers: dict[str, str]
    signature_ok: bool
    at: float


@dataclass
class App:
    """A customer's app: records requests, answers by path (TwiML by default)."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = MultiDict[str]()
        if request.method == "POST":
            form.extend((name, str(value)) for name, value in (await request.post()).items())
        url = f"http://{request.host}{request.raw_path}"
        signature = request.headers.get("X-Twilio-Signature", "")
        self.seen.append(
            Seen(
                method=request.method,
                path=request.path,
                url=url,
                query=request.query,
                form=form,
                headers=dict(request.headers),
                signature_ok=RequestValidator(TOKEN).validate(url, form, signature),
                at=time.monotonic(),
            )
        )
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(body=TWIML, content_type="text/xml")
        return await handler(request)

    def at(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[App]:
    """An `App` listening on a free loopback port."""
    recorder = App()
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(application, host="127.0.0.1", port=0)
    await server.start_server()
    recorder.base = f"http://127.0.0.1:{server.port}"
    try:
        yield recorder
    finally:
        await server.close()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    async with serving() as recorder:
        yield recorder


@dataclass
class Notifications:
    items: list[tuple[int, str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, code: int, message: str, url: str) -> None:
        self.items.append((code, message, url))
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Until ``count`` notifications came; fail after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()

    @property
    def codes(self) -> list[int]:
        return [code for code, _, _ in self.items]


@pytest.fixture
def notes() -> Notifications:
    return Notifications()


@pytest.fixture
async def client(notes: Notifications) -> AsyncIterator[WebhookClient]:
    settings = WebhookSettings(callback_backoff=0.01)
    webhook = WebhookClient(settings, ACCOUNT, TOKEN, on_error=notes)
    yield webhook
    await webhook.close()


def status(code: int) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=code, text="nope")

    return handler


def answer(body: bytes, content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler


@contextlib.asynccontextmanager
async def raw_server(reply: bytes) -> AsyncIterator[str]:
    """A TCP server that answers any request with ``reply`` verbatim; yields its URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/voice"


def redirect(location: str, code: int = 302) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=code, headers={"Location": location})

    return handler


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def expect_error(awaitable: Awaitable[FetchedDocument], code: int) -> WebhookError:
    with pytest.raises(WebhookError) as caught:
        await awaitable
    assert caught.value.code == code, str(caught.value)
    return caught.value


# -- requests as the app sees them --------------------------------------------------


async def test_post_delivers_signed_form(app: App, client: WebhookClient) -> None:
    params = {"CallSid": "CA1", "From": "+15551234567", "CallerName": "Zoë Ådahl", "Digits": ""}
    document = await client.fetch_document(f"{app.base}/voice", "POST", params)
    assert document == FetchedDocument(f"{app.base}/voice", TWIML, "text/xml", None)
    [seen] = app.seen
    assert seen.method == "POST"
    assert dict(seen.form) == {**params, "AccountSid": ACCOUNT}
    assert seen.signature_ok
    assert seen.headers["User-Agent"] == "dialswitch"
    assert seen.headers["Accept"] == "text/xml, application/xml, */*"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert len(seen.headers["I-Twilio-Idempotency-Token"]) >= 16


async def test_get_appends_params_to_query(app: App, client: WebhookClient) -> None:
    params = [("CallSid", "CA1"), ("Caller", "Zoë +1 555"), ("SipHeader_X-Tag", "a&b=c")]
    await client.fetch_document(f"{app.base}/voice?tenant=7", "get", params)
    [seen] = app.seen
    assert seen.method == "GET"
    assert list(seen.query.items()) == [("tenant", "7"), *params, ("AccountSid", ACCOUNT)]
    assert seen.signature_ok
    assert "Content-Type" not in seen.headers


async def test_repeated_and_unicode_post_params_validate(app: App, client: WebhookClient) -> None:
    params = [("SipHeader_X-Tag", "b"), ("SipHeader_X-Tag", "a"), ("To", "東京")]
    await client.fetch_document(f"{app.base}/voice", "POST", params)
    [seen] = app.seen
    assert seen.form.getall("SipHeader_X-Tag") == ["b", "a"]
    assert seen.signature_ok


async def test_unicode_path_is_encoded_and_signed(app: App, client: WebhookClient) -> None:
    await client.fetch_document(f"{app.base}/voix/café", "POST", {"CallSid": "CA1"})
    [seen] = app.seen
    assert seen.path == "/voix/café"
    assert seen.url.endswith("/voix/caf%C3%A9")
    assert seen.signature_ok


async def test_fragment_overrides_are_not_sent_or_signed(app: App, client: WebhookClient) -> None:
    document = await client.fetch_document(f"{app.base}/voice?x=1#rc=0&tt=3000", "POST", {})
    [seen] = app.seen
    assert seen.url == f"{app.base}/voice?x=1"
    assert seen.signature_ok
    assert document.url == f"{app.base}/voice?x=1"


async def test_userinfo_becomes_basic_auth(app: App, client: WebhookClient) -> None:
    url = app.base.replace("http://", "http://alice:s%40cret@") + "/voice"
    document = await client.fetch_document(url, "POST", {"CallSid": "CA1"})
    [seen] = app.seen
    expected = base64.b64encode(b"alice:s@cret").decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert seen.signature_ok
    assert "alice" not in document.url


# -- errors and the fallback -----------------------------------------------------------


async def test_500_then_fallback_gets_error_code_and_url(
    app: App, client: WebhookClient, notes: Notifications
) -> None:
    app.routes["/voice"] = status(500)
    primary = (f"{app.base}/voice#rc=3", "POST")
    document = await client.fetch_with_fallback(
        primary, (f"{app.base}/fallback", "POST"), {"CallSid": "CA1"}
    )
    assert document.url == f"{app.base}/fallback"
    assert len(app.at("/voice")) == 1, "5xx is not retried under the default policy"
    [fallback] = app.at("/fallback")
    assert fallback.form["ErrorCode"] == "11217"
    assert fallback.form["ErrorUrl"] == f"{app.base}/voice"
    assert fallback.form["CallSid"] == "CA1"
    assert fallback.signature_ok
    assert notes.items == [(11217, "HTTP 500", f"{app.base}/voice")]
    tokens = {seen.headers["I-Twilio-Idempotency-Token"] for seen in app.seen}
    assert len(tokens) == 2, "the fallback is a new logical request"


async def test_both_failing_raise_primary_with_fallback_attached(
    app: App, client: WebhookClient, notes: Notifications
) -> None:
    app.routes["/voice"] = status(404)
    app.routes["/fallback"] = status(503)
    error = await expect_error(
        client.fetch_with_fallback(
            (f"{app.base}/voice", "POST"), (f"{app.base}/fallback", "GET"), {}
        ),
        11217,
    )
    assert error.status == 404
    assert error.fallback_error is not None
    assert error.fallback_error.status == 503
    assert notes.codes == [11217, 11217]


async def test_no_fallback_raises_primary(app: App, client: WebhookClient) -> None:
    app.routes["/voice"] = status(502)
    await expect_error(client.fetch_with_fallback((f"{app.base}/voice", "POST"), None, {}), 11217)


async def test_fetch_fallback_after_parse_error(app: App, client: WebhookClient) -> None:
    @dataclass(frozen=True)
    class ParseFailed:
        code: int
        url: str

    failure = ParseFailed(12100, f"{app.base}/voice")
    params = {"CallSid": "CA1", "ErrorCode": "stale"}
    await client.fetch_fallback((f"{app.base}/fallback", "GET"), params, failure)
    [seen] = app.seen
    assert seen.query.getall("ErrorCode") == ["12100"]
    assert seen.query["ErrorUrl"] == f"{app.base}/voice"
    assert seen.signature_ok


async def test_connection_refused_is_11205_quickly(
    client: WebhookClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/voice"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="switch.webhook"):
        error = await expect_error(client.fetch_document(url, "POST", {"CallSid": "CA9"}), 11205)
    assert time.monotonic() - started < 1.0
    assert error.message == "refused"
    [record] = caplog.records
    assert record.getMessage() == f"11205 connection failure: POST {url} (refused)"
    assert record.__dict__["error_code"] == 11205
    assert record.__dict__["call_sid"] == "CA9"


async def test_connect_timeout_tried_twice(client: WebhookClient) -> None:
    # A listener whose accept queue is full drops further SYNs: the connect hangs.
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        url = f"http://127.0.0.1:{port}/voice#ct=200&tt=3000"
        error = await expect_error(client.fetch_document(url, "POST", {}), 11205)
    elapsed = time.monotonic() - started
    assert 0.38 < elapsed < 1.0, "two 200 ms tries under the default retry policy"
    assert error.message == "connect timeout after 200 ms"


async def test_slow_app_hits_total_timeout(app: App, client: WebhookClient) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=TWIML, content_type="text/xml")

    app.routes["/voice"] = slow
    started = time.monotonic()
    error = await expect_error(client.fetch_document(f"{app.base}/voice#tt=500", "POST", {}), 11205)
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 1.5
    assert "timed out" in error.message


async def test_read_timeout_retried_with_same_token(app: App, client: WebhookClient) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=TWIML, content_type="text/xml")

    app.routes["/voice"] = slow
    url = f"{app.base}/voice#rt=200&rc=1&rp=rt&tt=5000"
    started = time.monotonic()
    error = await expect_error(client.fetch_document(url, "POST", {}), 11205)
    assert time.monotonic() - started < 1.0
    assert "read timeout" in error.message
    tokens = {seen.headers["I-Twilio-Idempotency-Token"] for seen in app.seen}
    assert len(app.seen) == 2 and len(tokens) == 1


async def test_5xx_retried_under_policy_with_stable_token(app: App, client: WebhookClient) -> None:
    failures = iter([500, 503])

    async def flaky(request: web.Request) -> web.Response:
        code = next(failures, 200)
        if code != 200:
            return web.Response(status=code)
        return web.Response(body=TWIML, content_type="application/xml")

    app.routes["/voice"] = flaky
    document = await client.fetch_document(f"{app.base}/voice#rp=5xx&rc=2", "POST", {})
    assert document.content_type == "application/xml"
    tokens = [seen.headers["I-Twilio-Idempotency-Token"] for seen in app.seen]
    assert len(tokens) == 3 and len(set(tokens)) == 1
    await client.fetch_document(f"{app.base}/voice", "POST", {})
    assert app.seen[-1].headers["I-Twilio-Idempotency-Token"] != tokens[0]


async def test_4xx_not_retried_unless_asked(app: App, client: WebhookClient) -> None:
    app.routes["/voice"] = status(404)
    await expect_error(client.fetch_document(f"{app.base}/voice#rc=2", "POST", {}), 11217)
    assert len(app.seen) == 1
    await expect_error(client.fetch_document(f"{app.base}/voice#rc=2&rp=all", "POST", {}), 11217)
    assert len(app.seen) == 4


async def test_body_over_limit_is_not_read_whole(app: App, client: WebhookClient) -> None:
    progress = {"sent": 0, "finished": False}

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/xml"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while progress["sent"] < 1 << 20:
                await response.write(b"<" * 8192)
                progress["sent"] += 8192
                await asyncio.sleep(0.01)
            progress["finished"] = True
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    app.routes["/voice"] = huge
    started = time.monotonic()
    error = await expect_error(client.fetch_document(f"{app.base}/voice", "POST", {}), 11750)
    assert time.monotonic() - started < 0.8, "a 1 MB body at 8 kB per 10 ms takes 1.3 s"
    assert not progress["finished"]
    assert progress["sent"] < 1 << 19
    assert "65536" in error.message


async def test_content_length_over_limit_rejected_up_front(app: App, client: WebhookClient) -> None:
    app.routes["/voice"] = answer(b"x" * (1 << 20), "text/xml")
    error = await expect_error(client.fetch_document(f"{app.base}/voice", "POST", {}), 11750)
    assert "Content-Length 1048576" in error.message


async def test_body_at_limit_accepted(app: App, client: WebhookClient) -> None:
    app.routes["/voice"] = answer(b"x" * 65536, "text/xml; charset=ISO-8859-1")
    document = await client.fetch_document(f"{app.base}/voice", "POST", {})
    assert len(document.body) == 65536
    assert (document.content_type, document.charset) == ("text/xml", "ISO-8859-1")


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "TEXT/XML", "text/plain"])
async def test_accepted_content_types(app: App, client: WebhookClient, content_type: str) -> None:
    app.routes["/voice"] = answer(b"<html><body>Hello</body></html>", content_type)
    document = await client.fetch_document(f"{app.base}/voice", "POST", {})
    assert document.content_type == content_type.split(";")[0].lower()


@pytest.mark.parametrize("content_type", ["application/json", "audio/mpeg"])
async def test_other_content_types_are_12300(
    app: App, client: WebhookClient, content_type: str
) -> None:
    app.routes["/voice"] = answer(b"{}", content_type)
    error = await expect_error(client.fetch_document(f"{app.base}/voice", "POST", {}), 12300)
    assert content_type in error.message


async def test_missing_content_type_is_12300(client: WebhookClient) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n<Response/>      "
    async with raw_server(reply) as url:
        error = await expect_error(client.fetch_document(url, "POST", {}), 12300)
    assert "missing" in error.message


async def test_redirect_keeps_post_and_signs_each_hop(app: App, client: WebhookClient) -> None:
    app.routes["/old"] = redirect("/voice?moved=1", 301)
    document = await client.fetch_document(f"{app.base}/old", "POST", {"CallSid": "CA1"})
    assert document.url == f"{app.base}/voice?moved=1"
    old, new = app.seen
    assert new.method == "POST" and new.form["CallSid"] == "CA1"
    assert old.signature_ok and new.signature_ok
    assert old.headers["X-Twilio-Signature"] != new.headers["X-Twilio-Signature"]
    assert old.headers["I-Twilio-Idempotency-Token"] == new.headers["I-Twilio-Idempotency-Token"]


async def test_basic_auth_follows_redirects_on_the_same_host_only(
    app: App, client: WebhookClient
) -> None:
    port = app.base.rpartition(":")[2]
    app.routes["/old"] = redirect("/middle")
    app.routes["/middle"] = redirect(f"http://localhost:{port}/voice")
    url = app.base.replace("http://", "http://alice:secret@") + "/old"
    await client.fetch_document(url, "POST", {"CallSid": "CA1"})
    old, middle, new = app.seen
    assert old.headers["Authorization"] == middle.headers["Authorization"]
    assert "Authorization" not in new.headers
    assert new.url == f"http://localhost:{port}/voice" and new.signature_ok


async def test_303_turns_post_into_get(app: App, client: WebhookClient) -> None:
    app.routes["/old"] = redirect(f"{app.base}/voice", 303)
    await client.fetch_document(f"{app.base}/old", "POST", {"CallSid": "CA1"})
    new = app.seen[-1]
    assert (new.method, new.path, dict(new.query)) == ("GET", "/voice", {})
    assert new.signature_ok


async def test_redirect_loop_is_11215(app: App, client: WebhookClient) -> None:
    app.routes["/loop"] = redirect("/loop")
    await expect_error(client.fetch_document(f"{app.base}/loop", "GET", {}), 11215)
    assert len(app.seen) == 11


async def test_redirect_without_location_is_11206(app: App, client: WebhookClient) -> None:
    app.routes["/voice"] = status(302)
    await expect_error(client.fetch_document(f"{app.base}/voice", "GET", {}), 11206)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/voice",
        "http://",
        "voice.xml",
        "http://[::1/voice",
        "http://example.com:99999/voice",
        "http://exa mple.com/voice",
        "",
    ],
)
async def test_bad_url_is_11100(client: WebhookClient, notes: Notifications, url: str) -> None:
    await expect_error(client.fetch_document(url, "POST", {}), 11100)
    assert notes.codes == [11100]


async def test_garbage_response_is_11206(client: WebhookClient) -> None:
    async with raw_server(b"HELLO THERE\r\n\r\n") as url:
        await expect_error(client.fetch_document(url, "GET", {}), 11206)


async def test_truncated_body_is_11206(client: WebhookClient) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n<Resp"
    async with raw_server(reply) as url:
        await expect_error(client.fetch_document(url, "GET", {}), 11206)


async def test_closed_without_response_is_11205(client: WebhookClient) -> None:
    async with raw_server(b"") as url:
        error = await expect_error(client.fetch_document(url, "GET", {}), 11205)
    assert "closed" in error.message


async def test_tls_to_plain_http_is_11220(app: App, client: WebhookClient) -> None:
    url = app.base.replace("http://", "https://") + "/voice"
    await expect_error(client.fetch_document(url, "POST", {}), 11220)


async def test_unresolvable_host_is_11210(notes: Notifications) -> None:
    class NoSuchHost(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            raise OSError(socket.EAI_NONAME, "Name or service not known")

        async def close(self) -> None:
            pass

    webhook = WebhookClient(WebhookSettings(), ACCOUNT, TOKEN, resolver=NoSuchHost())
    try:
        error = await expect_error(
            webhook.fetch_document("http://app.example.test/voice", "POST", {}), 11210
        )
        assert "app.example.test" in error.message
    finally:
        await webhook.close()


# -- status callbacks -----------------------------------------------------------------


async def test_callbacks_keep_order_per_call(app: App, client: WebhookClient) -> None:
    async def jittery(request: web.Request) -> web.Response:
        await asyncio.sleep(random.uniform(0, 0.01))
        return web.Response(status=204)

    app.routes["/status"] = jittery
    calls = [f"CA{n}" for n in range(6)]
    for seq in range(8):
        for call in calls:
            client.post_callback(
                f"{app.base}/status", "POST", {"CallSid": call, "SequenceNumber": str(seq)}
            )
    assert await client.drain(5)
    for call in calls:
        sequence = [s.form["SequenceNumber"] for s in app.seen if s.form["CallSid"] == call]
        assert sequence == [str(n) for n in range(8)], call
    assert all(seen.signature_ok for seen in app.seen)


async def test_callback_retried_on_503_then_delivered(
    app: App, client: WebhookClient, notes: Notifications
) -> None:
    failures = iter([503, 503])

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=next(failures, 200))

    app.routes["/status"] = flaky
    client.post_callback(f"{app.base}/status", "POST", {"CallSid": "CA1"})
    assert await client.drain(5)
    assert len(app.seen) == 3
    assert len({seen.headers["I-Twilio-Idempotency-Token"] for seen in app.seen}) == 1
    assert notes.items == []


async def test_callback_4xx_logged_as_15003_without_retry(
    app: App, client: WebhookClient, notes: Notifications, caplog: pytest.LogCaptureFixture
) -> None:
    app.routes["/status"] = status(404)
    with caplog.at_level(logging.WARNING, logger="switch.webhook"):
        client.post_callback(f"{app.base}/status", "GET", {"CallSid": "CA1"})
        assert await client.drain(5)
    assert len(app.seen) == 1
    assert notes.codes == [15003]
    assert caplog.records[0].getMessage().startswith("15003 ")


async def test_callback_failures_never_raise(notes: Notifications) -> None:
    settings = WebhookSettings(
        callback_retry_interval=0.05, callback_retry_max_interval=0.05, callback_give_up_after=0.3
    )
    client = WebhookClient(settings, ACCOUNT, TOKEN, on_error=notes)
    try:
        client.post_callback("not a url", "POST", {"CallSid": "CA1"})
        client.post_callback(f"http://127.0.0.1:{closed_port()}/s#rc=1", "POST", {"CallSid": "CA1"})
        await notes.wait_for(2)
        assert client.queued == 0
    finally:
        await client.close()
    assert notes.codes == [11100, 11200]  # not a URL at once; refused until given up
    assert "last: 11205 refused" in notes.items[1][1]


async def test_drain_times_out_on_stuck_callback(app: App, client: WebhookClient) -> None:
    async def stuck(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(status=204)

    app.routes["/status"] = stuck
    client.post_callback(f"{app.base}/status", "POST", {"CallSid": "CA1"})
    assert not await client.drain(0.1)


async def test_closed_client_keeps_callbacks_for_the_next_start(
    client: WebhookClient, notes: Notifications
) -> None:
    await client.close()
    client.post_callback("http://127.0.0.1:1/status", "POST", {"CallSid": "CA1"})
    assert client.queued == 1
    assert notes.codes == []


# -- fragment overrides (pure) --------------------------------------------------------

DEFAULTS = RequestPolicy(5.0, 15.0, 15.0, 1, frozenset({"ct"}))


def test_overrides_parsed_and_clamped() -> None:
    policy = parse_overrides("ct=1500&rt=99999&tt=10&rc=9&rp=4xx,5xx", DEFAULTS)
    assert policy == RequestPolicy(1.5, 15.0, 0.1, 5, frozenset({"4xx", "5xx"}))


def test_overrides_ignore_garbage() -> None:
    assert parse_overrides("ct=soon&rp=never&e=ie1&section-2", DEFAULTS) == DEFAULTS
    assert parse_overrides("rp=all", DEFAULTS).retry_on == {"4xx", "5xx", "ct", "rt"}
