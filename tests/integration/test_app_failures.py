"""Bad app input, end to end: the real switch, a SIPp caller, a real aiohttp app.

Each test makes the app misbehave (HTTP errors, non-RCML bodies, oversized or
hostile XML, a slow answer, unknown verbs) and checks what the documented answer
looked like to the peers: the fallback request the app received, the SIP messages
and audio the caller got, the notification rows the switch stored for the call,
and the signatures on the webhook requests. The ``switch`` fixture checks after
every test that no call or player was left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from media.analysis import rms_dbfs
from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FALLBACK_NUMBER,
    NUMBER,
    AppServer,
    SwitchProcess,
    bounded,
    free_tcp_port,
)
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_more import caller_any_end

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SID = re.compile(r"^CA[0-9a-f]{32}$")
TEST_BUDGET = 45.0  # seconds; no test here may run longer
VOICE_PARAMS = ("CallSid", "AccountSid", "From", "To", "CallStatus", "ApiVersion", "Direction")
FRAME = 160  # 20 ms at 8 kHz

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Say>&lol9;</Say></Response>
"""

HTML_ERROR_PAGE = """<!DOCTYPE html>
<html><head><title>Internal error</title></head>
<body><h1>Oops</h1><p>Something went wrong.<br>Please try again later.</p></body></html>
"""


# ---- helpers -------------------------------------------------------------------------


def loud_seconds(samples: np.ndarray, threshold_dbfs: float = -40.0) -> float:
    """Seconds of 20 ms frames louder than ``threshold_dbfs`` (speech, not silence)."""
    frames = len(samples) // FRAME
    loud = sum(
        1 for i in range(frames) if rms_dbfs(samples[i * FRAME : (i + 1) * FRAME]) > threshold_dbfs
    )
    return loud * FRAME / 8000


def assert_voice_params(params: dict[str, str], to: str) -> None:
    for name in VOICE_PARAMS:
        assert name in params, f"{name} missing from {params}"
    assert SID.match(params["CallSid"])
    assert params["AccountSid"] == ACCOUNT_SID
    assert params["From"] == "+14155550100"
    assert params["To"] == to
    assert params["ApiVersion"] == "2010-04-01"
    assert params["Direction"] == "inbound"
    assert params["CallerName"] == "Test Caller"


def assert_application_error_heard(caller: sipp.Sipp, peer: RtpPeer) -> None:
    """The caller was answered, heard a spoken message, and the switch sent the BYE."""
    starts = caller.messages().received_starts()
    assert any(s.startswith("SIP/2.0 200") for s in starts), starts
    assert any(s.startswith("BYE ") for s in starts), starts
    heard = peer.audio()
    # "An application error has occurred. Goodbye." is about two seconds of speech.
    assert loud_seconds(heard) >= 0.7, (
        f"caller heard {len(heard) / 8000:.1f} s of audio, {loud_seconds(heard):.2f} s of it"
        f" loud; overall {rms_dbfs(heard):.1f} dBFS"
    )


def _status_500(request: web.Request) -> web.Response:
    return web.Response(status=500, text="Internal Server Error")


def _html_page(request: web.Request) -> web.Response:
    return web.Response(text=HTML_ERROR_PAGE, content_type="text/html")


def _one_megabyte(request: web.Request) -> web.Response:
    body = "<Response>" + "<Pause/>" * (1024 * 1024 // 8) + "</Response>"
    return web.Response(text=body, content_type="text/xml")


async def _one_megabyte_chunked(request: web.Request) -> web.StreamResponse:
    """1 MB without a Content-Length: the switch must stop reading at its limit."""
    response = web.StreamResponse(headers={"Content-Type": "text/xml"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(b"<Response>")
        for _ in range(16):
            await response.write(b"<Pause/>" * 8192)
        await response.write(b"</Response>")
        await response.write_eof()
    except ConnectionError:
        pass  # the switch hung up on us, as it should
    return response


def _xml_bomb(request: web.Request) -> web.Response:
    return web.Response(text=BILLION_LAUGHS, content_type="text/xml")


def _wrong_root(request: web.Request) -> web.Response:
    return web.Response(text="<Foo><Say>hello</Say></Foo>", content_type="application/xml")


def _empty_body(request: web.Request) -> web.Response:
    return web.Response(text="", content_type="text/xml")


def _json_body(request: web.Request) -> web.Response:
    return web.json_response({"say": "hello"})


def _redirect_loop(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/loop"})


# ---- 1. fallback URL -----------------------------------------------------------------


@pytest.mark.parametrize(
    "broken,error_code,fallback_document,expect",
    [
        # A <Reject> only the fallback document can produce: the caller sees 486.
        (_status_500, 11217, '<Response><Reject reason="busy"/></Response>', "486"),
        # <Hangup/> before answer: the switch refuses or answers and BYEs; either ends it.
        (_status_500, 11217, "<Response><Hangup/></Response>", "ended"),
        # A parse failure of the voice URL's document also goes to the fallback.
        (_html_page, 12100, '<Response><Reject reason="busy"/></Response>', "486"),
    ],
    ids=["500-reject", "500-hangup", "html-reject"],
)
@bounded(TEST_BUDGET)
async def test_failed_voice_url_goes_to_fallback_with_error_code(
    switch: SwitchProcess,
    app_server: AppServer,
    workdir: Path,
    broken,
    error_code: int,
    fallback_document: str,
    expect: str,
):
    app_server.routes["/broken"] = broken
    app_server.routes["/fallback"] = fallback_document
    peer = RtpPeer(None)
    await peer.start()
    try:
        if expect == "486":
            scenario = sipp.caller(FALLBACK_NUMBER, peer.port, expect_final=486)
        else:
            scenario = caller_any_end(FALLBACK_NUMBER, peer.port)
        caller, _ = await sipp.run_call(switch, workdir, scenario)
    finally:
        peer.close()

    (broken_request,) = app_server.hits("/broken")
    (fallback,) = app_server.hits("/fallback")
    assert_voice_params(fallback.params, FALLBACK_NUMBER)
    assert fallback.params["ErrorCode"] == str(error_code)
    assert fallback.params["ErrorUrl"] == app_server.url("/broken")
    # Apart from the error the fallback got the same request the voice URL got.
    assert {k: v for k, v in fallback.params.items() if not k.startswith("Error")} == (
        broken_request.params
    )
    starts = caller.messages().received_starts()
    if expect == "486":
        assert "SIP/2.0 486 Busy Here" in starts, starts
        assert not any(s.startswith("SIP/2.0 200") for s in starts), starts
    else:
        ended = [s for s in starts if s.startswith("BYE ") or re.match(r"SIP/2.0 [3-6]", s)]
        assert ended, starts
    # The fallback's document ran instead of the "application error" message: the
    # caller heard nothing.
    assert peer.audio().size == 0 or rms_dbfs(peer.audio()) < -50
    rows = switch.notifications(broken_request.params["CallSid"])
    assert [(r["code"], r["level"], r["url"]) for r in rows] == [
        (error_code, "error", app_server.url("/broken"))
    ]


@bounded(TEST_BUDGET)
async def test_failed_fallback_too_speaks_application_error(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    app_server.routes["/broken"] = _status_500
    app_server.routes["/fallback"] = _status_500
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, _ = await sipp.run_call(switch, workdir, sipp.caller(FALLBACK_NUMBER, peer.port))
    finally:
        peer.close()
    (broken_request,) = app_server.hits("/broken")
    (fallback,) = app_server.hits("/fallback")
    assert fallback.params["ErrorCode"] == "11217"
    assert_application_error_heard(caller, peer)
    rows = switch.notifications(broken_request.params["CallSid"])
    assert [(r["code"], r["level"], r["url"]) for r in rows] == [
        (11217, "error", app_server.url("/broken")),
        (11217, "error", app_server.url("/fallback")),
    ]


# ---- 2. no fallback: the caller hears "application error" ----------------------------


async def call_with_application_error(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Call NUMBER, whose app fails: the caller must be answered, hear the message and
    get the switch's BYE. Returns the voice request's params and the stored notifications."""
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, _ = await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (voice,) = app_server.hits("/voice")
    assert_voice_params(voice.params, NUMBER)
    assert_application_error_heard(caller, peer)
    return voice.params, switch.notifications(voice.params["CallSid"])


@pytest.mark.parametrize(
    "handler,code",
    [
        (_status_500, 11217),
        (_html_page, 12100),
        (_one_megabyte, 11750),
        (_one_megabyte_chunked, 11750),
        (_xml_bomb, 12100),
        (_wrong_root, 12102),
        (_empty_body, 12100),
        (_json_body, 12300),
        (_redirect_loop, 11215),
    ],
    ids=[
        "http-500",
        "html-page",
        "one-megabyte",
        "one-megabyte-chunked",
        "billion-laughs",
        "wrong-root",
        "empty-body",
        "json-content-type",
        "redirect-loop",
    ],
)
@bounded(TEST_BUDGET)
async def test_bad_document_without_fallback_speaks_application_error(
    switch: SwitchProcess, app_server: AppServer, workdir: Path, handler, code: int
):
    app_server.routes["/voice"] = handler
    app_server.routes["/loop"] = _redirect_loop
    _, rows = await call_with_application_error(switch, app_server, workdir)
    assert [(r["code"], r["level"], r["url"]) for r in rows] == [
        (code, "error", app_server.url("/voice"))
    ]
    if handler is _redirect_loop:
        # 10 redirects were followed, the 11th was refused.
        assert len(app_server.hits("/loop")) == 10


@bounded(TEST_BUDGET)
async def test_slow_app_times_out_and_call_still_ends(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        # Longer than the switch's total webhook timeout (3 s in the test config).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 5.0)
        return web.Response(text="<Response><Hangup/></Response>", content_type="text/xml")

    app_server.routes["/voice"] = slow
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        _, rows = await call_with_application_error(switch, app_server, workdir)
    finally:
        release.set()
    elapsed = loop.time() - started
    # The 3 s budget, then about 3 s of speech, then BYE: bounded, and nowhere near
    # SIPp's own 30 s timeout.
    assert 3.0 < elapsed < 12, elapsed
    assert [(r["code"], r["level"], r["url"]) for r in rows] == [
        (11205, "error", app_server.url("/voice"))
    ]


@bounded(TEST_BUDGET)
async def test_unreachable_redirect_target_speaks_application_error(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    gone = f"http://127.0.0.1:{free_tcp_port()}/gone"  # nothing listens there
    app_server.routes["/voice"] = f"<Response><Redirect>{gone}</Redirect></Response>"
    voice, rows = await call_with_application_error(switch, app_server, workdir)
    assert [(r["code"], r["level"], r["url"]) for r in rows] == [(11205, "error", gone)]
    # One error line in the switch's log for the one failure, with the call's SID.
    lines = [x for x in switch.log().splitlines() if voice["CallSid"] in x and "11205" in x]
    assert len(lines) == 1, lines
    assert " ERROR " in lines[0], lines


@bounded(TEST_BUDGET)
async def test_plain_text_answer_is_read_out(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    app_server.routes["/voice"] = lambda request: web.Response(
        text="Thank you for calling. Goodbye.", content_type="text/plain"
    )
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, _ = await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (voice,) = app_server.hits("/voice")
    starts = caller.messages().received_starts()
    assert any(s.startswith("BYE ") for s in starts), starts
    assert loud_seconds(peer.audio()) >= 0.7
    assert switch.notifications(voice.params["CallSid"]) == []


# ---- 3. signatures -------------------------------------------------------------------


@bounded(TEST_BUDGET)
async def test_post_and_get_voice_requests_are_signed(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    app_server.routes["/voice"] = '<Response><Redirect method="GET">/next?x=1</Redirect></Response>'
    app_server.routes["/next"] = '<Response><Reject reason="busy"/></Response>'
    peer = RtpPeer(None)
    await peer.start()
    try:
        await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port, expect_final=486))
    finally:
        peer.close()
    validator = RequestValidator(AUTH_TOKEN)

    (post,) = app_server.hits("/voice")
    assert post.method == "POST"
    assert post.url == app_server.url("/voice")
    signature = post.headers["X-Twilio-Signature"]
    assert validator.validate(post.url, post.params, signature)
    # A forged parameter or another token does not validate: the check is real.
    assert not validator.validate(post.url, {**post.params, "From": "+1666"}, signature)
    assert not RequestValidator("other-token").validate(post.url, post.params, signature)

    (get,) = app_server.hits("/next")
    assert get.method == "GET"
    query = urlsplit(get.url).query
    assert query.startswith("x=1&"), get.url
    assert get.params["x"] == "1"
    assert get.params["CallSid"] == post.params["CallSid"]
    assert_voice_params(get.params, NUMBER)
    signature = get.headers["X-Twilio-Signature"]
    assert validator.validate(get.url, {}, signature)
    assert not validator.validate(get.url.replace("x=1", "x=2"), {}, signature)
    # One logical request each: both carry an idempotency token, and they differ.
    tokens = {r.headers.get("I-Twilio-Idempotency-Token") for r in (post, get)}
    assert None not in tokens and len(tokens) == 2


# ---- 4. unknown verbs and attributes -------------------------------------------------


@bounded(TEST_BUDGET)
async def test_unknown_verb_and_attribute_warn_and_document_still_runs(
    switch: SwitchProcess, app_server: AppServer, workdir: Path
):
    app_server.routes["/voice"] = (
        '<Response><Foo/><Say bogus="1">Hello there, this still runs.</Say><Hangup/></Response>'
    )
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, _ = await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (voice,) = app_server.hits("/voice")
    # The <Say> was spoken, then <Hangup/> sent the BYE.
    starts = caller.messages().received_starts()
    assert any(s.startswith("SIP/2.0 200") for s in starts), starts
    assert any(s.startswith("BYE ") for s in starts), starts
    assert loud_seconds(peer.audio()) >= 0.5
    rows = switch.notifications(voice.params["CallSid"])
    assert rows, "no notification stored"
    assert {(r["code"], r["level"], r["url"]) for r in rows} == {
        (12200, "warning", app_server.url("/voice"))
    }
    messages = " ".join(r["message"] for r in rows)
    assert "Foo" in messages and "bogus" in messages, rows
