"""Which WebSocket URLs /phone/config.json gives a page (switch.phone.websocket_urls)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from switch.phone import IceServer, PhoneConfig, WsListener, is_loopback, websocket_urls

WS_LOOPBACK = WsListener("ws", "127.0.0.1", 5066)
WSS_LOOPBACK = WsListener("wss", "127.0.0.1", 5067)
WS_ANY = WsListener("ws", "0.0.0.0", 5066)
WSS_ANY = WsListener("wss", "0.0.0.0", 5067)
WSS_ANY6 = WsListener("wss", "::", 5067)
WSS_PUBLIC = WsListener("wss", "203.0.113.7", 443)


def test_http_page_on_loopback_prefers_ws() -> None:
    urls = websocket_urls([WSS_LOOPBACK, WS_LOOPBACK], "http", "127.0.0.1")
    assert urls == ["ws://127.0.0.1:5066", "wss://127.0.0.1:5067"]


def test_https_page_gets_wss_only() -> None:
    """ws: from an https page is mixed content: the browser would block it."""
    urls = websocket_urls([WS_ANY, WSS_ANY], "https", "sip.example.com")
    assert urls == ["wss://sip.example.com:5067"]
    assert websocket_urls([WS_ANY], "https", "sip.example.com") == []


def test_wildcard_listener_uses_the_page_host() -> None:
    assert websocket_urls([WS_ANY], "http", "localhost") == ["ws://localhost:5066"]
    assert websocket_urls([WSS_ANY], "https", "phone.example.org") == [
        "wss://phone.example.org:5067"
    ]


def test_wildcard_ipv6_listener_and_ipv6_page_host_are_bracketed() -> None:
    assert websocket_urls([WSS_ANY6], "https", "2001:db8::5") == ["wss://[2001:db8::5]:5067"]
    assert websocket_urls([WsListener("ws", "::1", 5066)], "http", "::1") == ["ws://[::1]:5066"]


def test_http_page_elsewhere_prefers_wss() -> None:
    urls = websocket_urls([WS_ANY, WSS_ANY], "http", "pbx.example.com")
    assert urls == ["wss://pbx.example.com:5067", "ws://pbx.example.com:5066"]


def test_loopback_listener_is_not_offered_to_a_remote_page() -> None:
    """127.0.0.1 in a remote browser is the browser's own machine."""
    assert websocket_urls([WSS_LOOPBACK, WSS_PUBLIC], "https", "sip.example.com") == [
        "wss://203.0.113.7:443"
    ]


def test_specific_listener_keeps_its_own_address() -> None:
    assert websocket_urls([WSS_PUBLIC], "https", "127.0.0.1") == ["wss://203.0.113.7:443"]


def test_configured_order_is_kept_within_a_scheme_and_duplicates_dropped() -> None:
    listeners = [WsListener("ws", "0.0.0.0", 6000), WsListener("ws", "127.0.0.1", 5066)]
    assert websocket_urls(listeners, "http", "127.0.0.1") == [
        "ws://127.0.0.1:6000",
        "ws://127.0.0.1:5066",
    ]
    twice = [WsListener("ws", "0.0.0.0", 5066), WsListener("ws", "127.0.0.1", 5066)]
    assert websocket_urls(twice, "http", "127.0.0.1") == ["ws://127.0.0.1:5066"]


def test_no_listener_no_url() -> None:
    assert websocket_urls([], "http", "127.0.0.1") == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("phone.localhost", True),
        ("10.0.0.1", False),
        ("sip.example.com", False),
        ("::", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listener_scheme_is_checked() -> None:
    with pytest.raises(ValueError, match="ws or wss"):
        WsListener("tcp", "127.0.0.1", 5060)


@dataclass(frozen=True)
class _Listen:
    transport: str
    host: str
    port: int


def test_from_sip_keeps_the_websocket_listeners() -> None:
    listen = [
        _Listen("udp", "127.0.0.1", 5060),
        _Listen("ws", "127.0.0.1", 5066),
        _Listen("tls", "0.0.0.0", 5061),
        _Listen("WSS", "::", 5067),
    ]
    config = PhoneConfig.from_sip(listen, "example.com")
    assert config.listeners == (WS_LOOPBACK, WsListener("wss", "::", 5067))
    assert config.domain == "example.com"
    assert config.ice_servers == ()


def test_ice_server_json_leaves_out_empty_credentials() -> None:
    assert IceServer(("stun:stun.example.com",)).as_json() == {"urls": ["stun:stun.example.com"]}
    turn = IceServer(("turn:turn.example.com?transport=tcp",), "u", "p").as_json()
    assert turn == {
        "urls": ["turn:turn.example.com?transport=tcp"],
        "username": "u",
        "credential": "p",
    }
