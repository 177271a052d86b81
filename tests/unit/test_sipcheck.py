"""switch/sipcheck.py: what a request is refused with, before the SIP stack acts on it."""

from __future__ import annotations

import pytest

from switch.sipcheck import ALLOW, Answer, screen, stateless_response
from tests.support.torture import CASES, load, to_wire


def request(
    method: str = "OPTIONS",
    uri: str = "sip:user@example.com",
    *,
    version: str = "SIP/2.0",
    headers: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
    body: str = "",
) -> bytes:
    fields = {
        "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "From": "<sip:a@example.com>;tag=1",
        "To": "<sip:user@example.com>",
        "Call-ID": "c1@example.com",
        "CSeq": f"1 {method}",
        "Max-Forwards": "70",
        "Content-Length": str(len(body)),
    }
    fields.update(headers or {})
    lines = [f"{method} {uri} {version}"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def status(raw: bytes, datagram: bool = True) -> int | None:
    answer = screen(raw, datagram=datagram)
    return answer.status if answer is not None else None


def test_a_plain_request_goes_on() -> None:
    assert screen(request(), datagram=True) is None


def test_responses_are_never_answered() -> None:
    assert screen(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", datagram=True) is None
    assert screen(b"SIP/2.0 4294967301 big\r\n\r\n", datagram=True) is None


@pytest.mark.parametrize(
    ("raw", "code", "why"),
    [
        (request(version="SIP/7.0"), 505, "Version"),
        (request(uri="mailto:a@example.com"), 416, "Scheme"),
        (request(uri="<sip:user@example.com>"), 400, "Request-Line"),
        (b"OPTIONS  sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", 400, "Line"),
        (request(uri="sip:user@example.com?Route=x"), 400, "Request-URI"),
        (request(uri="sip:2001:db8::10"), 400, "host"),
        (request(headers={"CSeq": "1 INVITE"}), 400, "CSeq method"),
        (request(headers={"CSeq": "2147483648 OPTIONS"}), 400, "CSeq"),
        (request(headers={"Max-Forwards": "256"}), 400, "Max-Forwards"),
        (request(extra=("Expires: 4294967296",)), 400, "Expires"),
        (request(headers={"Content-Length": "-1"}), 400, "Content-Length"),
        (request(headers={"Content-Length": "10"}), 400, "larger"),
        (request(extra=("l: 0",)), 400, "more than one Content-Length"),
        (request(extra=("t: <sip:b@example.com>",)), 400, "more than one To"),
        (request(headers={"Call-ID": None}), 400, "no Call-Id"),  # type: ignore[dict-item]
        (request(headers={"To": '"Unclosed <sip:user@example.com>'}), 400, "quoted"),
        (request(headers={"To": "Bell, Alexander <sip:a@example.com>"}), 400, "display"),
        (request(headers={"To": "< sip:a@example.com >"}), 400, "spaces inside"),
        (request(headers={"To": "<sip:a@example.com"}), 400, "unclosed"),
        (request(extra=("Contact: sip:a@example.com?Route=x",)), 400, "must be in <>"),
        (request(headers={"Via": "SIP/2.0/UDP 192.0.2.15;;,;,,"}), 400, "Via"),
        (request("INVITE", headers={"From": "<sip:a@example.com>"}), 400, "From tag"),
        (request(extra=("Record-Route: <tel:+15551234567>",)), 400, "Record-Route"),
        (request(extra=("Record-Route: <sip:p1;lr>, <mailto:x@y>",)), 400, "Record-Route"),
    ],
)
def test_malformed_requests(raw: bytes, code: int, why: str) -> None:
    answer = screen(raw, datagram=True)
    assert answer is not None
    assert answer.status == code
    assert why.lower() in answer.reason.lower()


def test_content_length_beyond_the_body_is_only_an_error_in_a_datagram() -> None:
    raw = request(headers={"Content-Length": "10"})
    assert status(raw, datagram=True) == 400
    assert status(raw, datagram=False) is None


@pytest.mark.parametrize(
    ("method", "to_tag", "code"),
    [
        ("NEWMETHOD", "", 501),
        ("MESSAGE", "", 405),
        ("SUBSCRIBE", "", 405),
        ("BYE", "", 481),
        ("INFO", "", 481),
        ("NOTIFY", "", 481),
        ("NOTIFY", ";tag=x", 481),
        ("REFER", "", 403),
        ("BYE", ";tag=x", None),  # in a dialog: the dialog layer decides
        ("REFER", ";tag=x", None),
        ("OPTIONS", ";tag=x", 481),  # no such dialog
        ("NEWMETHOD", ";tag=x", 501),
        ("SUBSCRIBE", ";tag=x", 405),
        ("MESSAGE", ";tag=x", 405),
        ("REGISTER", "", None),
        ("CANCEL", "", None),
    ],
)
def test_methods(method: str, to_tag: str, code: int | None) -> None:
    raw = request(method, headers={"To": f"<sip:user@example.com>{to_tag}"})
    answer = screen(raw, datagram=True)
    assert (answer.status if answer else None) == code
    if code in (405, 501):
        assert answer is not None and ("Allow", ALLOW) in answer.headers


def test_options_in_a_dialog_gets_the_capabilities() -> None:
    raw = request(headers={"To": "<sip:user@example.com>;tag=x"})
    assert screen(raw, datagram=True, dialog_exists=True) == Answer(
        200, "OK", (("Allow", ALLOW), ("Accept", "application/sdp"))
    )


def test_unsupported_require_gets_420_with_unsupported() -> None:
    raw = request(extra=("Require: timer, foo", "Proxy-Require: bar"))
    assert screen(raw, datagram=True) == Answer(420, "Bad Extension", (("Unsupported", "foo"),))


def test_invite_replacing_a_call_is_forbidden() -> None:
    invite = {"From": "<sip:a@example.com>;tag=1"}
    raw = request("INVITE", headers=invite, extra=("Replaces: abc@h;to-tag=1;from-tag=2",))
    assert status(raw) == 403
    assert status(request("INVITE", headers=invite, extra=("Require: replaces",))) == 420


def test_invite_bodies_and_accept() -> None:
    sdp = "v=0\r\n"
    invite = {"From": "<sip:a@example.com>;tag=1", "Content-Type": "text/plain"}
    assert status(request("INVITE", headers=invite, body=sdp)) == 415
    invite = {"From": "<sip:a@example.com>;tag=1", "Content-Type": "application/sdp"}
    assert status(request("INVITE", headers=invite, body=sdp)) is None
    assert status(request("INVITE", headers=invite, body=sdp, extra=("Accept: text/x",))) == 406


def test_register_to_must_be_a_sip_uri() -> None:
    raw = request("REGISTER", "sip:example.com", headers={"To": "<name:John_Smith>"})
    assert status(raw) == 400


def test_stateless_response_copies_the_headers_and_tags_the_to() -> None:
    raw = request(headers={"CSeq": "1 INVITE"})
    response = stateless_response(raw, Answer(400, "Bad Request (x)"), to_tag="abc")
    assert response is not None
    text = response.decode()
    assert text.startswith("SIP/2.0 400 Bad Request (x)\r\n")
    assert "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n" in text
    assert "To: <sip:user@example.com>;tag=abc\r\n" in text
    assert "CSeq: 1 INVITE\r\n" in text
    assert text.endswith("Content-Length: 0\r\n\r\n")


def test_stateless_response_keeps_a_folded_header_to_itself() -> None:
    raw = request(extra=("Subject: first", " second line"))
    response = stateless_response(raw, Answer(400, "x"), to_tag="t")
    assert response is not None
    assert b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n" in response
    assert b"second" not in response


def test_stateless_response_needs_via_and_cseq() -> None:
    assert stateless_response(b"garbage", Answer(400, "x"), to_tag="t") is None
    raw = request(headers={"Via": None})  # type: ignore[dict-item]
    assert stateless_response(raw, Answer(400, "x"), to_tag="t") is None
    assert stateless_response(b"SIP/2.0 200 OK\r\n\r\n", Answer(400, "x"), to_tag="t") is None


def test_stateless_response_is_text_whatever_the_request_held() -> None:
    raw = request(headers={"From": "<sip:ZZ@example.com>;tag=1"}).replace(b"ZZ", b"\xff\x00")
    response = stateless_response(raw, Answer(400, "x"), to_tag="t")
    assert response is not None
    response.decode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_no_torture_message_breaks_the_screen(case) -> None:  # type: ignore[no-untyped-def]
    raw = load(case)
    raw = to_wire(raw) if case.rfc == 5118 else raw
    for datagram in (True, False):
        answer = screen(raw, datagram=datagram)
        assert answer is None or 400 <= answer.status <= 699
        if answer is not None:
            stateless_response(raw, answer, to_tag="t")
