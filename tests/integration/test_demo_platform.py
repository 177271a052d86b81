"""The shipped configuration is a small working platform: what README's first screen
promises a newcomer, checked in two Chromium tabs on config/dialswitch.toml as it is
(only its ports and storage moved, so the test runs beside anything else).

bob dials the demo number from the browser phone; the demo app greets him and rings
alice with ringback; alice answers in her tab and each hears the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import (
    AppServer,
    SwitchProcess,
    free_port_pair,
    free_tcp_port,
    running,
)
from tests.support.browser import PhonePage, chromium, require_chromium

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "dialswitch.toml"


def shipped_config(workdir: Path) -> SwitchProcess:
    """config/dialswitch.toml with free ports and a storage path of the test's own."""
    handle = SwitchProcess(workdir, free_port_pair(), free_tcp_port(), 0)
    ws_port = free_tcp_port()
    text = SHIPPED.read_text()
    for old, new in (
        ("udp:127.0.0.1:5060", f"udp:127.0.0.1:{handle.sip_port}"),
        ("tcp:127.0.0.1:5060", f"tcp:127.0.0.1:{handle.sip_port}"),
        ("ws:127.0.0.1:5066", f"ws:127.0.0.1:{ws_port}"),
        ('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{handle.http_port}"'),
        ('path = "var"', f'path = "{workdir / "var"}"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    handle.config = workdir / "dialswitch.toml"
    handle.config.write_text(text)
    handle.log_path = workdir / "switch.log"
    return handle


async def test_two_tabs_call_through_the_demo_number(app_server: AppServer, tmp_path: Path) -> None:
    require_chromium()
    async with (
        running(shipped_config(tmp_path)) as switch,
        chromium(tmp_path / "alice", tone_hz=1000) as alice_browser,
        chromium(tmp_path / "bob", tone_hz=600) as bob_browser,
    ):
        alice = await PhonePage.open(alice_browser, switch.http, "alice")
        bob = await PhonePage.open(bob_browser, switch.http, "bob")
        await alice.login("alice", "alice-dev-password")
        await bob.login("bob", "bob-dev-password")
        await alice.wait_registered()
        await bob.wait_registered()
        await bob.dial("+15005550100")
        shown = await alice.wait_incoming(20)  # after the greeting
        assert "bob" in shown
        await alice.screenshot("demo-incoming")
        await alice.answer()
        await alice.wait_call_state("in-call")
        await alice.wait_tone(600, timeout=15)
        await bob.wait_tone(1000, timeout=15)
        await bob.screenshot("demo-in-call")
        await bob.hangup()
        await alice.wait_call_state("ended", 10)
        await bob.wait_call_state("ended", 10)
        alice.assert_no_page_errors()
        bob.assert_no_page_errors()
        await alice.close()
        await bob.close()
        await switch.wait_idle()
