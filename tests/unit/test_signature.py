"""X-Twilio-Signature: ours must be what Twilio's own RequestValidator accepts."""

from __future__ import annotations

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from switch.signature import compute_signature, param_pairs, validate

TOKEN = "12345"

# The worked example of Twilio's security documentation.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_known_vector() -> None:
    assert compute_signature(TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE


def test_known_vector_is_order_independent() -> None:
    reordered = dict(reversed(list(DOC_PARAMS.items())))
    assert compute_signature(TOKEN, DOC_URL, reordered) == DOC_SIGNATURE


POST_CASES = [
    ("https://example.com/voice", {"CallSid": "CA1", "From": "+15551234567"}),
    ("http://example.com:8080/voice?tenant=7&x=", {"CallSid": "CA1", "To": "sip:a@b"}),
    ("https://example.com:443/voice", {"CallStatus": "ringing"}),
    ("https://example.com/v", {"CallerName": "Zoë Ådahl — 東京", "Digits": ""}),
    ("https://example.com/v", {"b": "1", "B": "2", "a": "3", "_": "4", "a1": ""}),
    ("https://example.com/v", {}),
]


@pytest.mark.parametrize(("url", "params"), POST_CASES)
def test_post_accepted_by_twilio_validator(url: str, params: dict[str, str]) -> None:
    signature = compute_signature(TOKEN, url, params)
    assert RequestValidator(TOKEN).validate(url, params, signature)
    assert validate(TOKEN, url, params, signature)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/voice?CallSid=CA1&From=%2B15551234567",
        "http://127.0.0.1:8080/voice?CallSid=CA1&Caller=Zo%C3%AB+%C3%85",
        "https://example.com/voice?a=1&a=2&empty=",
        "https://example.com/",
    ],
)
def test_get_signs_url_alone(url: str) -> None:
    signature = compute_signature(TOKEN, url, None)
    assert signature == compute_signature(TOKEN, url, {})
    assert RequestValidator(TOKEN).validate(url, {}, signature)
    assert validate(TOKEN, url, None, signature)


def test_repeated_names_accepted_by_twilio_validator() -> None:
    pairs = [("SipHeader_X-Tag", "b"), ("SipHeader_X-Tag", "a"), ("To", "x"), ("Empty", "")]
    signature = compute_signature(TOKEN, "https://example.com/v", pairs)
    server_side = MultiDict(pairs)
    assert RequestValidator(TOKEN).validate("https://example.com/v", server_side, signature)
    # A MultiDict on our side too gives the same result.
    assert compute_signature(TOKEN, "https://example.com/v", server_side) == signature


def test_repeated_identical_values_count_once() -> None:
    once = compute_signature(TOKEN, "https://e.com/", [("a", "1")])
    assert compute_signature(TOKEN, "https://e.com/", [("a", "1"), ("a", "1")]) == once


def test_port_variants_validate() -> None:
    signed_with_port = compute_signature(TOKEN, "https://example.com:443/v", {"a": "1"})
    assert validate(TOKEN, "https://example.com/v", {"a": "1"}, signed_with_port)
    signed_without = compute_signature(TOKEN, "http://example.com/v", {"a": "1"})
    assert validate(TOKEN, "http://example.com:80/v", {"a": "1"}, signed_without)
    ipv6 = compute_signature(TOKEN, "http://[::1]/v", None)
    assert validate(TOKEN, "http://[::1]:80/v", None, ipv6)


@pytest.mark.parametrize(
    ("url", "params", "signature_of"),
    [
        ("https://example.com/v", {"a": "1"}, ("https://example.com/v", {"a": "2"})),
        ("https://example.com/v", {"a": "1"}, ("https://example.com/w", {"a": "1"})),
        ("https://example.com/v?x=1", None, ("https://example.com/v?x=2", None)),
    ],
)
def test_tampering_rejected(
    url: str,
    params: dict[str, str] | None,
    signature_of: tuple[str, dict[str, str] | None],
) -> None:
    signature = compute_signature(TOKEN, *signature_of)
    assert not validate(TOKEN, url, params, signature)
    assert not RequestValidator(TOKEN).validate(url, params or {}, signature)


def test_wrong_token_rejected() -> None:
    signature = compute_signature("other", DOC_URL, DOC_PARAMS)
    assert not validate(TOKEN, DOC_URL, DOC_PARAMS, signature)


def test_param_pairs_keeps_repeats_and_order() -> None:
    assert param_pairs(None) == []
    assert param_pairs({"b": "1", "a": "2"}) == [("b", "1"), ("a", "2")]
    assert param_pairs(MultiDict([("a", "1"), ("a", "2")])) == [("a", "1"), ("a", "2")]
