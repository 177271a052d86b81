"""Headers from a dial target's URI query: one rule for <Sip> and <Client>."""

from __future__ import annotations

import pytest

from switch import sipuri
from switch.rcml.headers import MAX_HEADER_CHARS, uri_headers
from switch.rcml.model import Notice


def test_x_headers_are_decoded_in_order() -> None:
    assert uri_headers("X-Foo=1&X-Bar=two%20words&X-Empty=&X-Flag", "Client") == (
        (("X-Foo", "1"), ("X-Bar", "two words"), ("X-Empty", ""), ("X-Flag", "")),
        (),
    )


def test_empty_query_has_no_headers() -> None:
    assert uri_headers("", "Client") == ((), ())
    assert uri_headers("&&", "Client") == ((), ())


def test_standard_headers_twilio_allows() -> None:
    headers, notices = uri_headers("user-to-user=0A1B%3Bencoding%3Dhex&P-Called-Party-ID=x", "Sip")
    assert headers == (("user-to-user", "0A1B;encoding=hex"), ("P-Called-Party-ID", "x"))
    assert notices == ()


@pytest.mark.parametrize("name", ["Subject", "Via", "X", "X-A%0A", "X-A%20B", "", "X-%22q%22"])
def test_other_names_are_13252(name: str) -> None:
    headers, notices = uri_headers(f"{name}=v&X-Ok=1", "Client")
    assert headers == (("X-Ok", "1"),)
    assert [n.code for n in notices] == [13252]
    assert notices[0].message.startswith("<Client> header ")
    assert notices[0].message.endswith(" is not allowed")


@pytest.mark.parametrize("value", ["a%0Db", "%00", "tab%09", "%7F"])
def test_control_characters_in_a_value_are_21229(value: str) -> None:
    headers, notices = uri_headers(f"X-A={value}&X-B=2", "Client")
    assert headers == (("X-B", "2"),)
    assert notices == (Notice(21229, "<Client> header 'X-A' has illegal characters"),)


def test_headers_stop_at_1024_characters_with_13253() -> None:
    query = "X-A=" + "a" * 600 + "&X-B=" + "b" * 600 + "&X-C=c"
    headers, notices = uri_headers(query, "Sip")
    assert [name for name, _ in headers] == ["X-A"]
    assert notices == (Notice(13253, "<Sip> headers over 1024 characters dropped"),)


def test_the_limit_counts_name_equals_and_value() -> None:
    under = "X-A=" + "a" * (MAX_HEADER_CHARS - len("X-A=") - 1)
    assert uri_headers(under, "Sip")[1] == ()
    assert [n.code for n in uri_headers(under + "a", "Sip")[1]] == [13253]


# <Sip> URIs go through switch.sipuri, which must apply exactly this rule.


@pytest.mark.parametrize(
    "query",
    [
        "X-Foo=1&X-Bar=two%20words",
        "Subject=hi&X-Ok=1",
        "User-to-User=0A1B%3Bencoding%3Dhex&P-Called-Party-ID=x",
        "X-A=a%0Db&X-B=2",
        "X-A=" + "a" * 600 + "&X-B=" + "b" * 600 + "&X-C=c",
        "X-Empty=&&X-Flag",
    ],
)
def test_same_headers_and_codes_as_sip_uris(query: str) -> None:
    parsed = sipuri.parse_dial_uri(f"sip:bob@example.com?{query}")
    headers, notices = uri_headers(query, "Sip")
    assert headers == parsed.headers
    assert [n.code for n in notices] == [n.code for n in parsed.notices]
