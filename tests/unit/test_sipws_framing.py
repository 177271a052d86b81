"""SIP over WebSocket framing: frames from browsers in, the engine's TCP stream out."""

from __future__ import annotations

import pytest

from switch.sipws.framing import (
    MAX_MESSAGE,
    FrameRefused,
    StreamSplitter,
    browser_to_engine,
    engine_to_browser,
    flow_failed,
    flow_of_uri,
    flow_of_via,
    is_keepalive,
    trying,
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


def test_a_request_gets_the_edges_via_and_its_contact_the_flow() -> None:
    out = browser_to_engine(REGISTER, "ws-7", "127.0.0.1:40000").decode()
    lines = out.split("\r\n")
    assert lines[1] == "Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bK.ws-7.asudf"
    assert lines[2] == "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf"
    assert (
        'Contact: "Alice" <sip:ab12cd@127.0.0.1:40000;flow=ws-7;ob;transport=tcp>'
        ';+sip.instance="<urn:uuid:1>";expires=600\r\n'
    ) in out
    assert out.endswith("Content-Length: 0\r\n\r\n")
    assert flow_of_via(lines[1].partition(": ")[2]) == "ws-7"
    assert flow_of_via(lines[2].partition(": ")[2]) is None


def test_a_flow_a_browser_wrote_itself_is_replaced() -> None:
    spoofed = REGISTER.replace("transport=ws;ob>", "transport=ws;flow=ws-1;ob>")
    out = browser_to_engine(spoofed, "ws-7", "127.0.0.1:4").decode()
    assert "<sip:ab12cd@127.0.0.1:4;flow=ws-7;ob;transport=tcp>" in out
    assert "ws-1" not in out


def test_a_request_without_an_rfc3261_branch_is_refused() -> None:
    old = REGISTER.replace("branch=z9hG4bKasudf", "branch=1234")
    with pytest.raises(FrameRefused, match="Via branch"):
        browser_to_engine(old, "ws-7", "127.0.0.1:4")


def test_responses_from_the_engine_lose_the_edges_via() -> None:
    response = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:4;received=127.0.0.1;branch=z9hG4bK.ws-12.asudf\r\n"
        "Via: SIP/2.0/WSS x.invalid;branch=z9hG4bKasudf\r\n"
        "Content-Length: 2\r\n\r\nab"
    )
    flow, out = engine_to_browser(response.encode())
    assert flow == "ws-12"
    assert out.decode() == (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKasudf\r\n"
        "Content-Length: 2\r\n\r\nab"
    )
    folded = response.replace("asudf\r\nVia: ", "asudf, ")
    assert engine_to_browser(folded.encode()) == (flow, out)
    assert engine_to_browser(response.replace(".ws-12.", "").encode())[0] is None


def test_requests_from_the_engine_go_where_their_request_uri_says() -> None:
    bye = b"BYE sip:ab12cd@127.0.0.1:4;flow=ws-3;ob;transport=tcp SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n"
    assert engine_to_browser(bye) == ("ws-3", bye)
    assert engine_to_browser(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n")[0] is None
    assert flow_of_uri("sip:u@h;transport=tcp;flow=ws-9?X-A=1") == "ws-9"


def test_a_request_for_a_gone_browser_gets_430() -> None:
    invite = (
        b"INVITE sip:u@127.0.0.1:4;flow=ws-3 SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:u@c>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert flow_failed(invite) == (
        b"SIP/2.0 430 Flow Failed\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:u@c>;tag=flow-failed\r\nCall-ID: c1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert flow_failed(invite.replace(b"INVITE", b"ACK")) is None
    assert flow_failed(b"SIP/2.0 200 OK\r\n\r\n") is None
    # An INVITE handed to a browser is answered 100 Trying by the edge (no To tag).
    assert trying(invite) == (
        b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:u@c>\r\nCall-ID: c1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert trying(invite.replace(b"INVITE sip", b"BYE sip")) is None


def test_compact_and_bare_contacts_and_the_wildcard() -> None:
    bare = REGISTER.replace(
        'Contact: "Alice" <sip:ab12cd@df7jal23ls0d.invalid;transport=ws;ob>',
        "m: sips:ab12cd@x.invalid",
    )
    assert "m: <sip:ab12cd@127.0.0.1:5;flow=ws-1;transport=tcp>;+sip.instance" in (
        browser_to_engine(bare, "ws-1", "127.0.0.1:5").decode()
    )
    star = REGISTER.split("Contact:")[0] + "Contact: *\r\nExpires: 0\r\n\r\n"
    assert "Contact: *\r\n" in browser_to_engine(star, "ws-1", "127.0.0.1:5").decode()


def test_content_length_is_the_body_size() -> None:
    body = "v=0\r\né\r\n"
    frame = REGISTER.replace("\r\n\r\n", "\r\nContent-Length: 999\r\nl: 3\r\n\r\n") + body
    out = browser_to_engine(frame.encode(), "ws-1", "127.0.0.1:5")
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
        browser_to_engine(frame, "ws-1", "127.0.0.1:5")
    assert refused.value.close_code == close_code


def test_crlf_keepalives_are_recognised() -> None:
    assert is_keepalive("\r\n\r\n") and is_keepalive(b"\r\n\r\n")
    assert not is_keepalive("\r\n") and not is_keepalive(REGISTER)


def test_responses_pass() -> None:
    response = "SIP/2.0 180 Ringing\r\nContact: <sip:u@h.invalid;transport=ws>\r\n\r\n"
    out = browser_to_engine(response, "ws-2", "127.0.0.1:7").decode()
    assert out.startswith("SIP/2.0 180 Ringing\r\nContact: ")  # no Via of the edge's
    assert "Contact: <sip:u@127.0.0.1:7;flow=ws-2;transport=tcp>" in out


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


def test_an_offer_from_a_browser_is_reordered_and_its_length_kept_right() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
    invite = REGISTER.replace("REGISTER sip:example.com", "INVITE sip:+1555@example.com") + sdp
    out = browser_to_engine(invite, "ws-1", "127.0.0.1:5", ("PCMU",))
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"m=audio 9 UDP/TLS/RTP/SAVPF 0 111\r\n" in body
    assert head.endswith(f"Content-Length: {len(body)}".encode())
    assert browser_to_engine(invite, "ws-1", "127.0.0.1:5").endswith(sdp.encode())
