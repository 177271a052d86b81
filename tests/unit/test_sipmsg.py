"""SIP message views: start line, headers (RFC 3261 7.3), URI user and display name."""

from __future__ import annotations

import pytest

from switch.sipmsg import SipMessage, display_name, uri_user

INVITE = "\r\n".join(
    [
        "INVITE sip:+14155550100@switch.example.com;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        'From: "Alice Smith" <sip:alice@atlanta.example.com>;tag=1928301774',
        "To: <sip:+14155550100@switch.example.com>",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@192.0.2.10:5060>",
        "X-Customer-Id: 42",
        "Subject: lunch",
        "  plans for",
        "\tfriday",
        "x-trace: abc",
        "X-Customer-Id: 43",
        "Content-Type: application/sdp",
        "Content-Length: 142",
        "",
        "v=0",
        "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "X-Not-A-Header: in the body",
    ]
)

COMPACT = "\r\n".join(
    [
        "BYE sip:alice@192.0.2.10 SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKnashds7",
        "f: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        "t: <sip:alice@atlanta.example.com>;tag=1928301774",
        "i: a84b4c76e66710",
        "l: 0",
        "",
        "",
    ]
)

RESPONSE = "\r\n".join(
    [
        "SIP/2.0 486 Busy Here",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds",
        "To: <sip:bob@biloxi.example.com>;tag=8321234356",
        "X-Reason: in a meeting",
        "",
        "",
    ]
)


def test_parse_invite_start_line_and_headers() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.start_line == "INVITE sip:+14155550100@switch.example.com;user=phone SIP/2.0"
    assert msg.request_uri == "sip:+14155550100@switch.example.com;user=phone"
    assert msg.status_code == 0
    assert msg.headers[0] == ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport")
    assert msg.header("Call-ID") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.header("cseq") == "314159 INVITE"
    assert msg.header("CONTENT-LENGTH") == "142"
    assert msg.header("Record-Route") is None


def test_body_is_not_read_as_headers() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.header("X-Not-A-Header") is None
    assert msg.header("o") is None
    assert msg.headers[-1] == ("Content-Length", "142")


def test_folded_header_is_joined_with_one_space() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.header("Subject") == "lunch plans for friday"
    assert msg.header("s") == "lunch plans for friday"


def test_bare_lf_line_endings_are_accepted() -> None:
    msg = SipMessage.parse(INVITE.replace("\r\n", "\n"))
    assert msg.request_uri == "sip:+14155550100@switch.example.com;user=phone"
    assert msg.header("Subject") == "lunch plans for friday"
    assert msg.header("X-Not-A-Header") is None


def test_compact_forms_match_long_names_both_ways() -> None:
    msg = SipMessage.parse(COMPACT)
    assert msg.header("From") == "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"
    assert msg.header("to") == "<sip:alice@atlanta.example.com>;tag=1928301774"
    assert msg.header("Call-ID") == "a84b4c76e66710"
    assert msg.header("Via") == "SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKnashds7"
    assert msg.header("Content-Length") == "0"
    full = SipMessage.parse(INVITE)
    assert full.header("f") == '"Alice Smith" <sip:alice@atlanta.example.com>;tag=1928301774'
    assert full.header("i") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert full.header("T") == "<sip:+14155550100@switch.example.com>"


def test_header_returns_the_first_occurrence() -> None:
    msg = SipMessage.parse(INVITE)
    assert msg.header("x-customer-id") == "42"


def test_x_headers_keep_order_and_first_wins() -> None:
    msg = SipMessage.parse(INVITE)
    headers = msg.x_headers()
    assert headers == {"X-Customer-Id": "42", "x-trace": "abc"}
    assert list(headers) == ["X-Customer-Id", "x-trace"]
    assert SipMessage.parse(COMPACT).x_headers() == {}


def test_response_status_code() -> None:
    msg = SipMessage.parse(RESPONSE)
    assert msg.status_code == 486
    assert msg.request_uri == ""
    assert msg.x_headers() == {"X-Reason": "in a meeting"}


@pytest.mark.parametrize(
    ("line", "code"),
    [("SIP/2.0 200 OK", 200), ("SIP/2.0 183 Session Progress", 183), ("SIP/2.0 OK", 0)],
)
def test_status_code_of_start_lines(line: str, code: int) -> None:
    assert SipMessage.parse(line + "\r\n\r\n").status_code == code


def test_empty_text() -> None:
    msg = SipMessage.parse("")
    assert msg.start_line == ""
    assert msg.headers == ()
    assert msg.request_uri == ""
    assert msg.status_code == 0


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:alice@atlanta.example.com", "alice"),
        ("SIP:Alice@atlanta.example.com", "Alice"),
        ("sips:bob@biloxi.example.com:5061;transport=tls", "bob"),
        ("sip:+14155550100@switch.example.com;user=phone", "+14155550100"),
        ("sip:%2B1415@host", "+1415"),
        ("sip:alice%20smith@host", "alice smith"),
        ("sip:switch.example.com", ""),
        ("sip:switch.example.com;transport=udp", ""),
        ("tel:+14155550100", "+14155550100"),
        ("tel:+1-415-555-0100;phone-context=example.com", "+1-415-555-0100"),
        ("tel:%2B14155550100", "+14155550100"),
        ("<sip:carol@chicago.example.com>;tag=1", "carol"),
        ('"Carol" <sip:carol@chicago.example.com>', "carol"),
        ("sip:dave@host?Subject=hi", "dave"),
        ("mailto:someone@example.com", ""),
        ("", ""),
    ],
)
def test_uri_user(uri: str, user: str) -> None:
    assert uri_user(uri) == user


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ('"Alice Smith" <sip:alice@atlanta.example.com>;tag=1', "Alice Smith"),
        ('"Bob \\"The Builder\\" Jones" <sip:bob@biloxi.example.com>', 'Bob "The Builder" Jones'),
        ("Carol <sip:carol@chicago.example.com>", "Carol"),
        ("  Carol Ann   <sip:carol@chicago.example.com>", "Carol Ann"),
        ('"" <sip:anon@anonymous.invalid>', ""),
        ("<sip:alice@atlanta.example.com>;tag=1", ""),
        ("sip:alice@atlanta.example.com;tag=1", ""),
        ("", ""),
    ],
)
def test_display_name(value: str, name: str) -> None:
    assert display_name(value) == name


def test_display_name_with_angle_bracket_inside_quotes() -> None:
    assert display_name('"a <b> c" <sip:x@example.com>') == "a <b> c"
