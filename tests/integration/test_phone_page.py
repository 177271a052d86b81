"""The browser phone at /phone of the real switch, in Debian's headless Chromium.

What needs no SIP WebSocket listener: the page renders under its Content Security
Policy, loads its config, maps what is typed in the dial box to SIP URIs, and says
clearly when the WebSocket server is unreachable or not configured. Screenshots of
each state go to the artefacts directory (tests/support/browser.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from switch.phone import JSSIP_BUNDLE, PHONE_ASSETS
from tests.integration.conftest import SwitchProcess, free_tcp_port
from tests.support.browser import Chromium, PhonePage, chromium

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chromium]:
    if not (PHONE_ASSETS / JSSIP_BUNDLE).is_file():
        raise AssertionError("JsSIP is not installed for the phone page: run `make install`")
    workdir = tmp_path_factory.mktemp("chromium")
    async with chromium(workdir, tone_hz=1000) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Chromium, switch: SwitchProcess) -> AsyncIterator[PhonePage]:
    page = await PhonePage.open(browser, switch.http, "phone")
    yield page
    await page.close()


async def test_page_renders_with_its_config(phone: PhonePage) -> None:
    page = phone.page
    assert await page.title() == "dialswitch phone"
    assert await page.is_visible("#login-form")
    assert await page.is_hidden("#phone")
    assert await phone.registration_state() == "logged-out"
    assert await phone.status_text() == "Not logged in"
    assert await phone.message_text() == ""
    assert await page.evaluate("typeof JsSIP.UA") == "function"
    config = await page.evaluate("window.dialswitchPhone.state.config")
    assert config == {"domain": "127.0.0.1", "websocket_urls": [], "ice_servers": []}
    for label in ("Identity", "Password"):
        assert await page.get_by_label(label, exact=True).is_visible()
    assert (await phone.screenshot("login")).is_file()
    phone.assert_no_page_errors()


async def test_unreachable_websocket_server_is_reported(phone: PhonePage) -> None:
    closed = f"ws://127.0.0.1:{free_tcp_port()}"
    await phone.login("alice", "tango-42", server=closed)
    text = await phone.wait_message("connection")
    assert text.startswith(f"Cannot reach the switch at {closed}")
    assert "refused or lost" in text
    await phone.wait_status("disconnected")
    assert await phone.page.is_visible("#phone")
    assert await phone.page.is_disabled("#call")
    assert (await phone.screenshot("connection-refused")).is_file()
    # Idle, the keypad types into the dial box.
    await phone.press("12#")
    assert await phone.page.input_value("#dial") == "12#"
    await phone.logout()
    assert await phone.page.is_visible("#login-form")
    assert await phone.page.input_value("#identity") == "alice"
    assert await phone.page.input_value("#password") == "tango-42"
    phone.assert_no_page_errors(allow=[f"WebSocket connection to '{closed}/' failed"])


async def test_switch_without_websocket_listener_is_reported(phone: PhonePage) -> None:
    await phone.login("alice", "tango-42")
    text = await phone.wait_message("config")
    assert "no WebSocket listener" in text and "[sip] listen" in text
    assert await phone.page.is_visible("#login-form")
    assert (await phone.screenshot("no-listener")).is_file()


async def test_login_form_checks_its_input(phone: PhonePage) -> None:
    await phone.login("alice smith", "tango-42")
    assert "1 to 64 letters" in await phone.wait_message("input")
    await phone.login("alice", "tango-42", server="http://127.0.0.1:1")
    assert "ws:// or wss://" in await phone.wait_message("input")


@pytest.mark.parametrize(
    ("typed", "uri"),
    [
        ("+15005550100", "sip:+15005550100@example.com"),
        (" +1 (500) 555-0100 ", "sip:+15005550100@example.com"),
        ("5551234", "sip:5551234@example.com"),
        ("client:bob", "sip:bob@example.com"),
        ("bob_2", "sip:bob_2@example.com"),
        ("sip:carol@other.example", "sip:carol@other.example"),
    ],
)
async def test_dial_box_targets(phone: PhonePage, typed: str, uri: str) -> None:
    got = await phone.page.evaluate(
        "([typed]) => window.dialswitchPhone.targetUri(typed, 'example.com')", [typed]
    )
    assert got == uri


@pytest.mark.parametrize("typed", ["", "client:", "client:bob smith", "bob@example.com"])
async def test_dial_box_refuses(phone: PhonePage, typed: str) -> None:
    error = await phone.page.evaluate(
        "([typed]) => { try { window.dialswitchPhone.targetUri(typed, 'example.com'); }"
        " catch (error) { return error.message; } return null; }",
        [typed],
    )
    assert error


async def test_https_page_never_uses_ws(phone: PhonePage) -> None:
    urls = await phone.page.evaluate(
        "window.dialswitchPhone.socketUrls("
        "{websocket_urls: ['ws://h:5066', 'wss://h:5067']}, '', 'https:')"
    )
    assert urls == ["wss://h:5067"]
