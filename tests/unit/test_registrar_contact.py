"""Contact header values: name-addr, addr-spec, lists, params, wildcard, schemes."""

from __future__ import annotations

import pytest

from switch.registrar.contact import (
    MAX_DELTA_SECONDS,
    WILDCARD,
    BadContact,
    ContactSpec,
    UnsupportedUriScheme,
    parse_contacts,
    parse_params,
    uri_key,
)

# As a Yealink-style phone behind NAT sends it (RFC 5626 outbound params).
OUTBOUND = (
    '"Front Desk" <sip:1001@192.168.1.20:5060;transport=udp;ob>'
    ';reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";expires=600'
)


def test_name_addr_with_outbound_params() -> None:
    (contact,) = parse_contacts(OUTBOUND)
    assert contact.display_name == "Front Desk"
    assert contact.uri == "sip:1001@192.168.1.20:5060;transport=udp;ob"
    assert contact.expires == 600
    assert contact.reg_id == 1
    assert contact.instance_id == "urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF"
    assert contact.q is None
    assert contact.params == ()
    assert not contact.wildcard


def test_addr_spec_params_belong_to_the_header() -> None:
    (contact,) = parse_contacts("sip:alice@198.51.100.7:5062;expires=60;q=0.7;+sip.ice")
    assert contact.uri == "sip:alice@198.51.100.7:5062"
    assert contact.display_name is None
    assert (contact.expires, contact.q) == (60, 0.7)
    assert contact.params == (("+sip.ice", None),)


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    value = (
        '"Smith, John" <sip:john@192.0.2.1;x=a,b>;q=1, '
        "<sips:john@192.0.2.2>;expires=0, sip:john@192.0.2.3"
    )
    contacts = parse_contacts(value)
    assert [c.uri for c in contacts] == [
        "sip:john@192.0.2.1;x=a,b",
        "sips:john@192.0.2.2",
        "sip:john@192.0.2.3",
    ]
    assert contacts[0].display_name == "Smith, John"
    assert contacts[0].q == 1.0
    assert contacts[1].expires == 0


def test_several_header_values_are_one_list() -> None:
    contacts = parse_contacts(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>, <sip:c@192.0.2.3>"])
    assert [c.uri for c in contacts] == ["sip:a@192.0.2.1", "sip:b@192.0.2.2", "sip:c@192.0.2.3"]


def test_escaped_quote_in_display_name_and_token_display_name() -> None:
    (quoted,) = parse_contacts('"say \\"hi\\" <now>" <sip:a@h>')
    assert quoted.display_name == 'say "hi" <now>'
    assert quoted.uri == "sip:a@h"
    (tokens,) = parse_contacts("Front  Desk <sip:a@h>")
    assert tokens.display_name == "Front Desk"


def test_wildcard() -> None:
    assert parse_contacts("*") == [WILDCARD]
    assert parse_contacts(" * ")[0].wildcard


@pytest.mark.parametrize("values", ["*, <sip:a@h>", ["*", "<sip:a@h>"], "*,*"])
def test_wildcard_must_stand_alone(values: str | list[str]) -> None:
    with pytest.raises(BadContact, match="only contact") as caught:
        parse_contacts(values)
    assert caught.value.status_code == 400


def test_param_names_are_case_insensitive_and_quoted_values_kept() -> None:
    (contact,) = parse_contacts('<sip:a@h>;EXPIRES=30;Q=0.5;Foo="a;b,c"')
    assert (contact.expires, contact.q) == (30, 0.5)
    assert contact.params == (("foo", '"a;b,c"'),)


def test_unquoted_instance_and_huge_expires() -> None:
    (contact,) = parse_contacts("<sip:a@h>;+sip.instance=urn:uuid:1;expires=99999999999")
    assert contact.instance_id == "urn:uuid:1"
    assert contact.expires == MAX_DELTA_SECONDS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("<sip:a@h>,", "empty contact"),
        ("<sip:a@h", "missing '>'"),
        ('"unterminated <sip:a@h>', "unterminated"),
        ('"name" sip:a@h', "without <uri>"),
        ("caf\u00e9 <sip:a@h>", "display name"),
        ("<sip:a@h> junk", "unexpected text"),
        ("<sip:a@h>;expires=soon", "bad expires"),
        ("<sip:a@h>;expires=-1", "bad expires"),
        ("<sip:a@h>;expires", "without a value"),
        ("<sip:a@h>;expires=1;expires=2", "duplicate expires"),
        ("<sip:a@h>;q=1.5", "bad q"),
        ("<sip:a@h>;q=0.1234", "bad q"),
        ("<sip:a@h>;reg-id=0", "bad reg-id"),
        ("<sip:a@h>;reg-id=x", "bad reg-id"),
        ('<sip:a@h>;+sip.instance="<>"', "bad \\+sip.instance"),
        ("<sip:a@h>;;q=1", "empty contact param"),
        ("<sip:a@h>;bad name=1", "bad contact param name"),
        ("<sip:a@h>;x=a b", "bad value"),
        ("<sip:a@h>;+sip.instance=<urn:uuid:1>", "bad value"),
        ("<sip:>", "without a host"),
        ("<sip:a@h:99999>", "without a host"),
        ("<sip:a@[::1>", "without a host"),
        ("<a@h>", "bad Contact URI"),
        ("<sip:a b@h>", "bad character"),
    ],
)
def test_bad_contacts(value: str, reason: str) -> None:
    with pytest.raises(BadContact, match=reason) as caught:
        parse_contacts(value)
    assert caught.value.status_code == 400
    assert caught.value.reason


@pytest.mark.parametrize("value", ["<tel:+14155551212>", "mailto:a@h", "<HTTP://h/x>"])
def test_unsupported_scheme_is_416(value: str) -> None:
    with pytest.raises(UnsupportedUriScheme) as caught:
        parse_contacts(value)
    assert caught.value.status_code == 416


def test_schemes_are_case_insensitive_and_ipv6_hosts_parse() -> None:
    contacts = parse_contacts("<SIP:a@[2001:db8::1]:5060>, SIPS:b@[2001:db8::2]")
    assert [c.uri for c in contacts] == ["SIP:a@[2001:db8::1]:5060", "SIPS:b@[2001:db8::2]"]


@pytest.mark.parametrize(
    "spec",
    [
        ContactSpec("sip:a@h"),
        ContactSpec(
            "sip:a@h:5070;transport=tcp",
            display_name='Quote " and \\ back',
            expires=120,
            q=0.125,
            instance_id="urn:uuid:abc",
            reg_id=2,
            params=(("+sip.ice", None), ("x", '"y,z"')),
        ),
        WILDCARD,
    ],
)
def test_round_trip(spec: ContactSpec) -> None:
    assert ContactSpec.parse(spec.header_value()) == spec


def test_parse_one_refuses_lists() -> None:
    with pytest.raises(BadContact, match="exactly one"):
        ContactSpec.parse("<sip:a@h>, <sip:b@h>")


def test_q_is_written_without_trailing_zeros() -> None:
    assert ContactSpec("sip:a@h", q=1.0).header_value() == "<sip:a@h>;q=1"
    assert ContactSpec("sip:a@h", q=0.5).header_value() == "<sip:a@h>;q=0.5"


def test_parse_params_requires_a_leading_semicolon() -> None:
    assert parse_params("") == ()
    assert parse_params(";a=1;b") == (("a", "1"), ("b", None))
    with pytest.raises(BadContact):
        parse_params("a=1")


def test_uri_key_follows_sip_uri_equality() -> None:
    assert uri_key("sip:alice@Example.COM") == uri_key("SIP:alice@example.com")
    assert uri_key("sip:%61lice@h") == uri_key("sip:alice@h")
    assert uri_key("sip:Alice@h") != uri_key("sip:alice@h")
    assert uri_key("sip:a@h") != uri_key("sip:a@h:5060")
    assert uri_key("sip:a@h") != uri_key("sips:a@h")
    assert uri_key("sip:a@h;transport=TCP") == uri_key("sip:a@h;transport=tcp")
    assert uri_key("sip:a@h;transport=tcp") != uri_key("sip:a@h")
    assert uri_key("sip:a@h;ob;foo=1") == uri_key("sip:a@h")
    assert uri_key("sip:a@h?subject=x") == uri_key("sip:a@h")
    assert uri_key("sip:a@[2001:DB8::1]:5060") == uri_key("sip:a@[2001:db8::1]:5060")


def test_angle_bracket_inside_a_quoted_param_of_an_addr_spec() -> None:
    (contact,) = parse_contacts('sip:a@h;x="<b>, c"')
    assert contact.uri == "sip:a@h"
    assert contact.params == (("x", '"<b>, c"'),)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('<sip:a@h>;x="a"b', "bad quoted value"),
        ("<sip:a@[::1]x>", "without a host"),
    ],
)
def test_more_bad_contacts(value: str, reason: str) -> None:
    with pytest.raises(BadContact, match=reason):
        parse_contacts(value)


def test_uri_key_without_userinfo() -> None:
    assert uri_key("sip:Host.Example;transport=udp") == uri_key("sip:host.example;transport=UDP")
    assert uri_key("sip:host.example") != uri_key("sip:user@host.example")
