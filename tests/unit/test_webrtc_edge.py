"""Browsers as clients, the pure parts: their offers, their bindings, their config."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import ConfigError, load_config
from switch.dial import binding_target
from switch.engine.core import uri_hostport
from switch.registrar.bindings import Binding, BindingTable, Source
from switch.sipws.framing import flow_of_uri, prefer_codecs
from switch.srtp import audio_offer, refusal
from tests.unit.test_config import text, tls_keys

CHROME = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\na=rtcp-mux\r\na=setup:actpass\r\n"
    "a=fingerprint:sha-256 AA:BB\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:126 telephone-event/8000\r\n"
)


def test_a_browser_offer_reads_its_fingerprint_and_codecs() -> None:
    offer = audio_offer(CHROME)
    assert offer is not None and offer.fingerprint and offer.requires_srtp
    assert {"opus", "g722", "pcmu", "pcma", "red", "telephone-event"} <= offer.codecs


@pytest.mark.parametrize(
    ("sdp", "expected"),
    [
        (CHROME, None),
        (CHROME.replace("a=fingerprint:sha-256 AA:BB\r\n", ""), "DTLS Fingerprint Required"),
        (  # session-level fingerprint (RFC 8122 section 5)
            CHROME.replace("a=fingerprint:sha-256 AA:BB\r\n", "").replace(
                "t=0 0\r\n", "t=0 0\r\na=fingerprint:sha-256 AA:BB\r\n"
            ),
            None,
        ),
        (
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256 AA\r\n"
            "a=rtpmap:96 iLBC/8000\r\n",
            "No Common Codec (opus, PCMU, PCMA or G722)",
        ),
        ("", None),  # no offer: the switch offers
    ],
)
def test_browser_offers_need_dtls_and_a_common_codec(sdp: str, expected: str | None) -> None:
    assert refusal("dtls", sdp) == expected


def _binding(transport: str) -> Binding:
    return Binding(
        "alice",
        "sip:ab12@127.0.0.1:40000;transport=tcp",
        expires_at=1000.0,
        call_id="c",
        cseq=1,
        source=Source(transport, "127.0.0.1", 40000),
        connection_id="ws-3" if transport.startswith("ws") else None,
    )


def test_a_browser_is_reached_over_the_edges_connection_on_its_flow() -> None:
    target = binding_target(_binding("wss"))
    assert target == "sip:ab12@127.0.0.1:40000;transport=tcp;flow=ws-3"
    assert flow_of_uri(target) == "ws-3"
    assert binding_target(_binding("udp")) == "sip:ab12@127.0.0.1:40000"
    assert uri_hostport("sip:ab12@127.0.0.1:40000;transport=tcp") == "127.0.0.1:40000"
    assert uri_hostport("sip:a@[::1];transport=tcp") == "[::1]:5060"


def test_browser_bindings_do_not_outlive_the_process() -> None:
    rows = [_binding("ws").to_row(), _binding("udp").to_row()]
    table = BindingTable.from_rows(rows, now=10.0)
    assert [b.source.transport for b in table.lookup("alice", 10.0)] == ["udp"]


def test_websocket_listeners_parse(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    sip = 'listen = ["udp:127.0.0.1:5060", "ws:127.0.0.1:5066", "wss:[::1]:7443"]\n'
    path.write_text(text(sip=sip + tls_keys(tmp_path)))
    config = load_config(path)
    assert [str(x) for x in config.sip.websocket_listen] == ["ws:127.0.0.1:5066", "wss:[::1]:7443"]
    assert [str(x) for x in config.sip.engine_listen] == ["udp:127.0.0.1:5060"]
    assert config.sip.ws_per_source == 100


@pytest.mark.parametrize(
    ("sip", "problem"),
    [
        ('listen = ["ws:127.0.0.1:5066"]', "sip.listen: needs a udp, tcp or tls listener"),
        (
            'listen = ["udp:127.0.0.1:5060", "wss:127.0.0.1:5066"]',
            "sip.tls_certificate: required by the tls: listeners",
        ),
        (
            'listen = ["tcp:127.0.0.1:5060", "ws:127.0.0.1:5060"]',
            "shares its TCP port with sip.listen[0]",
        ),
        ('listen = ["udp:127.0.0.1:5060"]\nws_per_source = 0', "sip.ws_per_source"),
    ],
)
def test_websocket_listener_problems(tmp_path: Path, sip: str, problem: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text(sip=sip))
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_a_trunk_cannot_use_websocket(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    trunk = '[[trunks]]\nname = "t"\nuri = "sip:127.0.0.1:5080;transport=ws"\n'
    path.write_text(text(sip='listen = ["udp:127.0.0.1:5060"]', extra=trunk))
    with pytest.raises(ConfigError, match="unknown transport 'ws'"):
        load_config(path)


def test_ice_servers_parse(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    webrtc = (
        "[webrtc]\nice_servers = [\n"
        '  { urls = "stun:stun.example.com" },\n'
        '  { urls = ["turns:turn.example.com", "turn:[2001:db8::1]:3479?transport=tcp"],'
        ' username = "u", credential = "p" },\n]\n'
    )
    path.write_text(text(sip='listen = ["udp:127.0.0.1:5060"]', extra=webrtc))
    config = load_config(path).webrtc
    stun = config.stun
    assert stun is not None and (stun.hostport, stun.transport) == ("stun.example.com:3478", "udp")
    turn = config.turn
    assert turn is not None
    url, server = turn
    assert (url.hostport, url.transport, server.username) == ("turn.example.com:5349", "tls", "u")
    assert server.parsed()[1].hostport == "[2001:db8::1]:3479"
    assert server.parsed()[1].transport == "tcp"
    assert load_config(path).webrtc.ice_servers[0].as_json() == {"urls": ["stun:stun.example.com"]}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('{ urls = "http://x" }', "webrtc.ice_servers[0].urls: 'http://x' is not a stun:"),
        ('{ urls = "turn:t.example.com" }', "webrtc.ice_servers[0].username: a TURN server"),
        ("{ username = 'u' }", "webrtc.ice_servers[0].urls: required"),
        ('{ urls = "stun:s.example.com", secret = 1 }', "webrtc.ice_servers[0].secret"),
    ],
)
def test_ice_server_problems(tmp_path: Path, entry: str, problem: str) -> None:
    path = tmp_path / "c.toml"
    extra = f"[webrtc]\nice_servers = [{entry}]\n"
    path.write_text(text(sip='listen = ["udp:127.0.0.1:5060"]', extra=extra))
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_codec_preference_parses_and_defaults_to_g711_first(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text(sip='listen = ["udp:127.0.0.1:5060"]'))
    assert load_config(path).webrtc.codecs == ("PCMU", "PCMA", "opus")
    path.write_text(
        text(sip='listen = ["udp:127.0.0.1:5060"]', extra='[webrtc]\ncodecs = ["OPUS", "pcmu"]\n')
    )
    assert load_config(path).webrtc.codecs == ("opus", "PCMU")


@pytest.mark.parametrize("codecs", ['["PCMU", "GSM"]', "[]", '"PCMU"'])
def test_codec_preference_problems(tmp_path: Path, codecs: str) -> None:
    path = tmp_path / "c.toml"
    extra = f"[webrtc]\ncodecs = {codecs}\n"
    path.write_text(text(sip='listen = ["udp:127.0.0.1:5060"]', extra=extra))
    with pytest.raises(ConfigError, match="webrtc.codecs: expected"):
        load_config(path)


def test_a_browser_offer_is_put_in_the_preferred_order() -> None:
    ordered = prefer_codecs(CHROME, ("PCMU", "PCMA", "opus"))
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 0 8 111 63 9 13 110 126\r\n" in ordered
    assert ordered.replace("0 8 111 63 9 13", "111 63 9 0 8 13") == CHROME
    # Static payload types need no rtpmap (RFC 3551); other m-lines stay as they were.
    bare = "m=audio 4 RTP/AVP 8 0 101\r\nm=video 5 RTP/AVP 96\r\n"
    assert prefer_codecs(bare, ("PCMU",)) == "m=audio 4 RTP/AVP 0 8 101\r\nm=video 5 RTP/AVP 96\r\n"
