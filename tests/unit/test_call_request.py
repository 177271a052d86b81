"""Checking a REST call creation: every parameter rule and its Twilio code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from switch.call_request import CallRequest, RequestError, parse_call_request

OURS = "+15005550100"
URL = "https://app.example.com/voice"


def parse(lists: Mapping[str, Sequence[str]] | None = None, **form: str) -> CallRequest:
    base = {"To": "+14155551212", "From": OURS, "Url": URL}
    base.update(form)
    return parse_call_request(
        {k: v for k, v in base.items() if v is not None},
        lists or {},
        numbers=[OURS],
        clients=["alice"],
        trunks=["carrier", "backup"],
    )


def code_of(lists: Mapping[str, Sequence[str]] | None = None, **form: str) -> int:
    with pytest.raises(RequestError) as raised:
        parse(lists, **form)
    assert raised.value.message
    return raised.value.code


def test_defaults() -> None:
    request = parse()
    assert (request.to, request.to_kind, request.from_) == ("+14155551212", "number", OURS)
    assert (request.url, request.method, request.twiml) == (URL, "POST", None)
    assert request.timeout == 60
    assert request.time_limit == 86_400
    assert request.status_callback_events == frozenset()
    assert not request.record and request.ignored == ()


@pytest.mark.parametrize(
    ("to", "kind", "normalised"),
    [
        ("(415) 555-1212", "number", "+14155551212"),
        ("client:alice", "client", "client:alice"),
        ("sip:bob@example.com", "sip", "sip:bob@example.com"),
        ("sips:bob@example.com:5061", "sip", "sips:bob@example.com:5061"),
    ],
)
def test_to_kinds(to: str, kind: str, normalised: str) -> None:
    request = parse(To=to, From="client:me" if kind == "client" else OURS)
    assert (request.to, request.to_kind) == (normalised, kind)


def test_sip_to_headers_and_credentials() -> None:
    request = parse(
        To="sip:bob@example.com?X-Team=blue&Subject=x",
        SipAuthUsername="u",
        SipAuthPassword="p",
    )
    assert request.to == "sip:bob@example.com"
    assert request.sip_headers == (("X-Team", "blue"),)
    assert request.sip_auth == ("u", "p")


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": ""}, 21201),
        ({"To": "not a number"}, 21211),
        ({"To": "+1"}, 21211),
        ({"To": "client:bob"}, 21211),
        ({"To": "sip:@@"}, 21211),
        ({"From": ""}, 21213),
        ({"From": "+14155550000"}, 21210),
        ({"From": "client:alice"}, 21210),
        ({"To": "client:alice", "From": "client:x y"}, 21210),
        ({"To": "sip:bob@example.com", "From": "no spaces please"}, 21210),
        ({"Url": ""}, 21205),
        ({"Url": "ftp://x/"}, 21205),
        ({"Url": "/relative"}, 21205),
        ({"Twiml": "<Response/>"}, 21205),  # with Url: one or the other
        ({"Method": "PUT"}, 21209),
        ({"FallbackMethod": "DELETE"}, 21209),
        ({"StatusCallbackMethod": "x"}, 21209),
        ({"StatusCallback": "nowhere"}, 21609),
        ({"Timeout": "soon"}, 20001),
        ({"Timeout": "0"}, 20001),
        ({"TimeLimit": "-5"}, 20001),
        ({"SendDigits": "12x"}, 20001),
        ({"SipAuthUsername": "u", "SipAuthPassword": "p"}, 20001),  # not a sip: To
        ({"Record": "maybe"}, 20001),
        ({"RecordingChannels": "stereo"}, 20001),
        ({"Byoc": "nope"}, 20001),
        ({"CallReason": "x" * 51}, 20001),
    ],
    ids=lambda v: str(v)[:40],
)
def test_refusals(form: dict[str, str], code: int) -> None:
    assert code_of(**form) == code


def test_unknown_status_callback_event_is_21626() -> None:
    assert code_of({"StatusCallbackEvent": ["initiated", "exploded"]}) == 21626


def test_events_repeated_or_space_separated() -> None:
    request = parse({"StatusCallbackEvent": ["initiated ringing", "answered,completed"]})
    assert request.status_callback_events == {"initiated", "ringing", "answered", "completed"}


def test_twiml_instead_of_url() -> None:
    request = parse(Url="", Twiml="<Response><Hangup/></Response>")
    assert request.url is None and request.twiml == "<Response><Hangup/></Response>"


def test_from_rules_per_to_kind() -> None:
    assert parse(From="(500) 555-0100").from_ == OURS
    assert parse(To="client:alice", From="client:boss").from_ == "client:boss"
    assert parse(To="sip:bob@example.com", From="front-desk").from_ == "front-desk"


def test_limits_are_clamped() -> None:
    request = parse(Timeout="9999", TimeLimit="999999")
    assert (request.timeout, request.time_limit) == (600, 86_400)


def test_byoc_and_call_reason() -> None:
    request = parse(Byoc="backup", CallReason="Your order")
    assert request.byoc == "backup"
    assert request.sip_headers == (("X-Call-Reason", "Your order"),)


def test_machine_detection_is_listed_as_ignored() -> None:
    request = parse(MachineDetection="Enable", MachineDetectionTimeout="10", AsyncAmd="true")
    assert request.ignored == ("AsyncAmd", "MachineDetection", "MachineDetectionTimeout")
