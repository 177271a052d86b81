"""Number normalisation: the forms customers and trunks send, and what is refused."""

from __future__ import annotations

import pytest

from switch.numbers import InvalidNumber, caller_id, request_uri_user_to_e164, to_e164


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("+14155551212", "US", "+14155551212"),
        ("(415) 555-1212", "US", "+14155551212"),
        ("415-555-1212", "US", "+14155551212"),
        ("415.555.1212", "US", "+14155551212"),
        ("1 415 555 1212", "US", "+14155551212"),
        ("+1 (415) 555-1212", "US", "+14155551212"),
        ("  4155551212 ", "US", "+14155551212"),
        ("415\u2011555\u20111212", "US", "+14155551212"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("0011 44 20 7946 0958", "AU", "+442079460958"),
        ("0044 20 7946 0958", "AU", "+442079460958"),
        ("00 1 415 555 1212", "DE", "+14155551212"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("020 7946 0958", "gb", "+442079460958"),
        ("+15005550006", "US", "+15005550006"),
        ("+1 415 555 0100", "US", "+14155550100"),
        ("(555) 555-5555", "US", "+15555555555"),
    ],
)
def test_to_e164_accepts(text: str, region: str, expected: str) -> None:
    assert to_e164(text, region) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("alice", "only digits"),
        ("client:alice", "only digits"),
        ("1-800-FLOWERS", "only digits"),
        ("415 555 1212 x123", "only digits"),
        ("++14155551212", "only digits"),
        ("1+4155551212", "only digits"),
        ("+", "only digits"),
        ("555-1212", "only dialable locally"),
        ("+999 123 456", "unknown country code"),
        ("+1 415 555 12121", "too long"),
        ("911", "too short"),
        ("\u0664\u0661\u0665", "only digits"),
    ],
)
def test_to_e164_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidNumber, match="invalid number") as caught:
        to_e164(text)
    assert reason in caught.value.reason
    assert caught.value.number == text


def test_invalid_number_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        to_e164("nope")


def test_unknown_default_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown default region") as caught:
        to_e164("+14155551212", "XX")
    assert not isinstance(caught.value, InvalidNumber)


@pytest.mark.parametrize(
    ("user", "region", "expected"),
    [
        ("+14155551212", "US", "+14155551212"),
        ("%2B14155551212", "US", "+14155551212"),
        ("%2b14155551212", "US", "+14155551212"),
        ("14155551212", "US", "+14155551212"),
        ("4155551212", "US", "+14155551212"),
        ("+1-415-555-1212", "US", "+14155551212"),
        ("+14155551212;npdi", "US", "+14155551212"),
        ("+14155551212;npdi;rn=+14155550000", "US", "+14155551212"),
        ("4155551212;rn=4155550000;npdi", "US", "+14155551212"),
        ("%2B14155551212%3Bnpdi", "US", "+14155551212"),
        ("447911123456", "US", "+447911123456"),
        ("00447911123456", "US", "+447911123456"),
        ("07911123456", "GB", "+447911123456"),
        ("14155551212", "GB", "+14155551212"),
        ("15005550006", "US", "+15005550006"),
    ],
)
def test_request_uri_user(user: str, region: str, expected: str) -> None:
    assert request_uri_user_to_e164(user, region) == expected


@pytest.mark.parametrize("user", ["alice", "", ";npdi", "1", "*67", "+", "9999999999999999"])
def test_request_uri_user_rejects(user: str) -> None:
    with pytest.raises(InvalidNumber):
        request_uri_user_to_e164(user)


def test_request_uri_user_reports_the_national_reading() -> None:
    # Neither "5551212" in the US nor "+5551212" (Brazil, too short) is possible;
    # the error describes the national reading, which is what the trunk most likely meant.
    with pytest.raises(InvalidNumber, match="only dialable locally"):
        request_uri_user_to_e164("5551212")


def test_request_uri_user_checks_the_region() -> None:
    with pytest.raises(ValueError, match="unknown default region"):
        request_uri_user_to_e164("+14155551212", "ZZ")


# callerId for a From header.


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("client:alice", "US", "client:alice"),
        ("client:user_jane.b-2", "US", "client:user_jane.b-2"),
        (" client:alice ", "US", "client:alice"),
        ("(415) 555-1212", "US", "+14155551212"),
        ("+1 415-555-1212", "US", "+14155551212"),
        ("4155551212", "US", "+14155551212"),
        ("+14155551212", "US", "+14155551212"),
        ("415.555.1212", "US", "+14155551212"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        # Not possible numbers, but usable SIP users: kept as written.
        ("100", "US", "100"),
        ("front-desk", "US", "front-desk"),
        ("agent_7.b-2", "US", "agent_7.b-2"),
        ("Alice", "US", "Alice"),
    ],
)
def test_caller_id_accepts(value: str, region: str, expected: str) -> None:
    assert caller_id(value, region) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "client:",
        "client:two words",
        "client:a@b",
        'client:"x"',
        "Client:alice",
        "two words",
        '"Alice"',
        "'alice'",
        "alice@example.com",
        "<sip:alice@example.com>",
        "sip:alice",
        "+1555;drop",
        "+1555",
        "(415) 555",
        "alice\r\nVia: x",
    ],
)
def test_caller_id_refuses(value: str) -> None:
    assert caller_id(value, "US") is None


def test_caller_id_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown default region"):
        caller_id("client:alice", "XX")
