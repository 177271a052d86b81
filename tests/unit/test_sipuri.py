"""<Sip> URIs: Request-URI, headers from the query, Twilio's warning codes."""

import pytest

from switch.sipuri import InvalidSipUri, parse_dial_uri


def test_plain_uri_passes_unchanged() -> None:
    parsed = parse_dial_uri("sip:bob@example.com:5070")
    assert parsed.uri == "sip:bob@example.com:5070"
    assert parsed.headers == ()
    assert parsed.notices == ()


def test_headers_come_from_the_query_and_leave_the_uri() -> None:
    parsed = parse_dial_uri("sip:bob@example.com?X-Foo=1&X-Bar=two%20words")
    assert parsed.uri == "sip:bob@example.com"
    assert parsed.headers == (("X-Foo", "1"), ("X-Bar", "two words"))


def test_allowed_standard_headers() -> None:
    parsed = parse_dial_uri("sip:b@h?User-to-User=0A1B%3Bencoding%3Dhex&P-Called-Party-ID=x")
    assert parsed.headers == (("User-to-User", "0A1B;encoding=hex"), ("P-Called-Party-ID", "x"))


def test_disallowed_header_is_dropped_with_13252() -> None:
    parsed = parse_dial_uri("sip:b@h?Subject=hi&X-Ok=1")
    assert parsed.headers == (("X-Ok", "1"),)
    assert [n.code for n in parsed.notices] == [13252]


def test_control_characters_in_value_are_21229() -> None:
    parsed = parse_dial_uri("sip:b@h?X-A=a%0Db")
    assert parsed.headers == ()
    assert [n.code for n in parsed.notices] == [21229]


def test_headers_over_1024_characters_are_13253() -> None:
    parsed = parse_dial_uri("sip:b@h?X-A=" + "a" * 600 + "&X-B=" + "b" * 600)
    assert [name for name, _ in parsed.headers] == ["X-A"]
    assert [n.code for n in parsed.notices] == [13253]


def test_transport_parameter() -> None:
    assert parse_dial_uri("sip:b@h;transport=TCP").transport == "tcp"
    assert parse_dial_uri("sips:b@h").uri == "sips:b@h"


@pytest.mark.parametrize(
    "text",
    [
        "bob@example.com",
        "http://x",
        "sip:",
        "sip:bob@",
        "sip:bob@ex ample.com",
        "sip:b@h;transport=ws",
    ],
)
def test_malformed_uris_are_13243(text: str) -> None:
    with pytest.raises(InvalidSipUri) as info:
        parse_dial_uri(text)
    assert info.value.code == 13243


def test_header_name_ending_in_a_line_break_is_refused() -> None:
    """A trailing %0A must not slip past the name check into the INVITE (header injection)."""
    parsed = parse_dial_uri("sip:b@h?X-A%0A=1&X-B=2")
    assert parsed.headers == (("X-B", "2"),)
    assert [n.code for n in parsed.notices] == [13252]
