"""SIP over WebSocket framing: frames from browsers in, the engine's TCP stream out."""

from __future__ import annotations

import pytest

from switch.sipws.framing import (
    MAX_MESSAGE,
    FrameRefused,
    StreamSplitter,
    browser_to_engine,
    is_keepalive,
)

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf\r\n"
    "From: <sip:alice@example.com>;tag=65bnmj\r\n"
    "To: <sip:alice@example.com>\r\n"
    "Call-ID: aiuy7k9njasd\r\n"
    "CSeq: 1 REGISTER\r\n"
    'Contact: "Alice" <sip:ab12cd@df7jal23ls0d.invalid;transport=ws;ob>'
    ';+sip.instance="<urn:uuid:1>";expires=600\r\n'
    "\r\n"
)


def test_contact_is_rewritten_to_the_relay_connection() -> None:
    out = browser_to_engine(REGISTER, "127.0.0.1", 40000).decode()
    assert (
        'Contact: "Alice" <sip:ab12cd@127.0.0.1:40000;ob;transport=tcp>'
        ';+sip.instance="<urn:uuid:1>";expires=600\r\n'
    ) in out
    assert "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf\r\n" in out
    assert out.endswith("Content-Length: 0\r\n\r\n")


def test_compact_and_bare_contacts_and_the_wildcard() -> None:
    bare = REGISTER.replace(
        'Contact: "Alice" <sip:ab12cd@df7jal23ls0d.invalid;transport=ws;ob>',
        "m: sips:ab12cd@x.invalid",
    )
    assert "m: sip:ab12cd@127.0.0.1:5;transport=tcp;+sip.instance" in (
        browser_to_engine(bare, "127.0.0.1", 5).decode()
    )
    star = REGISTER.split("Contact:")[0] + "Contact: *\r\nExpires: 0\r\n\r\n"
    assert "Contact: *\r\n" in browser_to_engine(star, "127.0.0.1", 5).decode()


def test_content_length_is_the_body_size() -> None:
    body = "v=0\r\né\r\n"
    frame = REGISTER.replace("\r\n\r\n", "\r\nContent-Length: 999\r\nl: 3\r\n\r\n") + body
    out = browser_to_engine(frame.encode(), "127.0.0.1", 5)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert rest == body.encode()
    assert head.count(b"Content-Length") == 1
    assert head.endswith(f"Content-Length: {len(body.encode())}".encode())


@pytest.mark.parametrize(
    ("frame", "reason", "close_code"),
    [
        (b"\xff\xfe REGISTER", "not UTF-8 at byte 0", 1007),
        (b"hello\r\n\r\n", "not a SIP message", 1007),
        (b"REGISTER sip:x SIP/2.0\r\nVia: x", "not a SIP message", 1007),
        (REGISTER.encode() + b"x" * MAX_MESSAGE, "limit 65535", 1009),
    ],
)
def test_bad_frames_are_refused(frame: bytes, reason: str, close_code: int) -> None:
    with pytest.raises(FrameRefused, match=reason) as refused:
        browser_to_engine(frame, "127.0.0.1", 5)
    assert refused.value.close_code == close_code


def test_crlf_keepalives_are_recognised() -> None:
    assert is_keepalive("\r\n\r\n") and is_keepalive(b"\r\n\r\n")
    assert not is_keepalive("\r\n") and not is_keepalive(REGISTER)


def test_responses_pass() -> None:
    response = "SIP/2.0 180 Ringing\r\nContact: <sip:u@h.invalid;transport=ws>\r\n\r\n"
    out = browser_to_engine(response, "127.0.0.1", 7).decode()
    assert "Contact: <sip:u@127.0.0.1:7;transport=tcp>" in out


def test_stream_splitter_cuts_messages_and_drops_keepalives() -> None:
    one = b"SIP/2.0 200 OK\r\nContent-Length: 4\r\n\r\nbody"
    two = b"BYE sip:a SIP/2.0\r\nl: 0\r\n\r\n"
    splitter = StreamSplitter()
    stream = b"\r\n\r\n" + one + b"\r\n" + two
    got = []
    for i in range(0, len(stream), 7):  # any chunking
        got += splitter.feed(stream[i : i + 7])
    assert got == [one, two]


def test_stream_splitter_refuses_oversized_messages() -> None:
    with pytest.raises(FrameRefused):
        StreamSplitter().feed(b"SIP/2.0 200 OK\r\nContent-Length: 70000\r\n\r\n")
    with pytest.raises(FrameRefused):
        StreamSplitter().feed(b"x" * (MAX_MESSAGE + 1))
