"""Document-level parsing: safety limits, fatal errors, verbs other than <Dial>."""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path

import pytest

from switch.rcml import (
    MAX_DOCUMENT_BYTES,
    RING_TONES,
    Dial,
    Gather,
    GatherInput,
    Hangup,
    Method,
    Notice,
    NoticeLevel,
    Number,
    Pause,
    Play,
    RcmlError,
    Redirect,
    Reject,
    RejectReason,
    Say,
    parse,
    parse_whisper,
    xml_attributes,
)
from switch.rcml import dial as dial_module
from switch.rcml import parser as parser_module
from switch.rcml.attributes import Converter

REPO = Path(__file__).resolve().parents[2]

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Say>&lol9;</Say></Response>"""


def _code(document: bytes | str, *, whisper: bool = False) -> int:
    with pytest.raises(RcmlError) as caught:
        parse(document, whisper=whisper)
    return caught.value.code


def _codes(document: str) -> list[int]:
    return parse(document).codes()


# Fatal errors.


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"   \n",
        b"Hello, world",
        b"<Response>",
        b"<Response><Say>hi</Dial></Response>",
        b"<Response></Response><Response></Response>",
        b"<Response><Say>&nbsp;</Say></Response>",
        b"\x00\xff\xfe garbage",
        b'{"json": true}',
    ],
)
def test_not_well_formed_is_12100(garbage: bytes) -> None:
    assert _code(garbage) == 12100


def test_billion_laughs_fails_fast_without_expanding() -> None:
    started = time.monotonic()
    assert _code(BILLION_LAUGHS) == 12100
    assert time.monotonic() - started < 1.0


def test_quadratic_blowup_with_entity_references_is_refused() -> None:
    entity = "x" * 20_000
    document = (
        f'<!DOCTYPE r [<!ENTITY a "{entity}">]><Response><Say>{"&a;" * 2000}</Say></Response>'
    )
    assert _code(document) == 12100


@pytest.mark.parametrize(
    "doctype",
    [
        "<!DOCTYPE Response>",
        '<!DOCTYPE Response SYSTEM "http://127.0.0.1:9/rcml.dtd">',
        "<!DOCTYPE Response [<!ELEMENT Response ANY>]>",
    ],
)
def test_any_doctype_is_refused(doctype: str) -> None:
    assert _code(f'<?xml version="1.0"?>{doctype}<Response><Hangup/></Response>') == 12100


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    document = (
        f'<!DOCTYPE r [<!ENTITY s SYSTEM "file://{secret}">]><Response><Say>&s;</Say></Response>'
    )
    with pytest.raises(RcmlError) as caught:
        parse(document)
    assert caught.value.code == 12100
    assert "TOP-SECRET" not in caught.value.message


def test_xml_parser_itself_expands_no_entity(tmp_path: Path) -> None:
    """Defence in depth below the DOCTYPE check: the lxml parser expands nothing."""
    from lxml import etree

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    document = (
        f'<!DOCTYPE r [<!ENTITY a "EXPANDED"><!ENTITY s SYSTEM "file://{secret}">]><r>&a;&s;</r>'
    ).encode()
    root = etree.fromstring(document, parser_module.xml_parser())
    assert root.text is None
    assert [node.text for node in root] == ["&a;", "&s;"]  # unexpanded references


def test_xml_version_other_than_1_0_is_12101() -> None:
    assert _code('<?xml version="1.1"?><Response/>') == 12101


@pytest.mark.parametrize(
    "document",
    ["<Dial>100</Dial>", "<response><Hangup/></response>", "<Twiml/>", "<html><body/></html>"],
)
def test_root_other_than_response_is_12102(document: str) -> None:
    assert _code(document) == 12102


def _padded(size: int) -> bytes:
    head, tail = b"<Response><Say>", b"</Say></Response>"
    return head + b"a" * (size - len(head) - len(tail)) + tail


def test_document_of_64_kb_is_accepted() -> None:
    document = _padded(MAX_DOCUMENT_BYTES)
    assert len(document) == 65536
    (say,) = parse(document).verbs
    assert isinstance(say, Say) and len(say.text) > 65000


def test_document_over_64_kb_is_11750() -> None:
    assert _code(_padded(MAX_DOCUMENT_BYTES + 1)) == 11750


def test_size_of_str_counts_utf8_bytes() -> None:
    head, tail = "<Response><Say>", "</Say></Response>"
    text = "\u00e9" * ((MAX_DOCUMENT_BYTES - len(head) - len(tail)) // 2 + 1)
    assert len(head + text + tail) < MAX_DOCUMENT_BYTES
    assert _code(head + text + tail) == 11750


def test_oversize_garbage_is_11750_before_parsing() -> None:
    assert _code(b"<" * (MAX_DOCUMENT_BYTES + 1)) == 11750


def test_rcml_error_carries_code_and_message() -> None:
    error = RcmlError(12102, "root element is <Foo>")
    assert (error.code, error.message) == (12102, "root element is <Foo>")
    assert str(error) == "12102: root element is <Foo>"


# Encodings and document shape.


def test_str_with_foreign_encoding_declaration() -> None:
    document = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Say>caf\u00e9</Say></Response>'
    )
    assert parse(document).verbs == (Say(text="caf\u00e9"),)


def test_bytes_in_declared_encoding() -> None:
    document = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><Response><Say>caf\u00e9</Say></Response>'
    )
    assert parse(document.encode("latin-1")).verbs == (Say(text="caf\u00e9"),)


def test_empty_response_has_no_verbs() -> None:
    document = parse(b'<?xml version="1.0" encoding="UTF-8"?><Response/>')
    assert document.verbs == () and document.notices == ()


def test_comments_and_processing_instructions_are_skipped() -> None:
    document = parse("<Response><!-- hi --><?php echo 1 ?><Say>a<!-- x -->b</Say></Response>")
    assert document.verbs == (Say(text="ab"),)
    assert document.notices == ()


def test_text_and_attributes_on_response_are_warned() -> None:
    document = parse('<Response id="1">stray<Hangup/></Response>')
    assert document.verbs == (Hangup(),)
    assert document.codes() == [12200, 12200]


def test_document_is_frozen() -> None:
    document = parse("<Response><Hangup/></Response>")
    with pytest.raises(dataclasses.FrozenInstanceError):
        document.verbs = ()  # type: ignore[misc]


# Unknown and unsupported verbs.


def test_unknown_verb_is_a_warning_and_skipped() -> None:
    document = parse("<Response><Dance/><Hangup/></Response>")
    assert document.verbs == (Hangup(),)
    assert document.notices == (
        Notice(12200, "line 1: <Dance> is not a known verb; ignored", NoticeLevel.WARNING),
    )
    assert document.notices[0].level == "warning"


def test_verb_names_are_case_sensitive() -> None:
    assert _codes("<Response><say>hi</say></Response>") == [12200]


@pytest.mark.parametrize("verb", sorted(parser_module.UNSUPPORTED_VERBS))
def test_known_twilio_verbs_not_run_yet_are_12200(verb: str) -> None:
    document = parse(f"<Response><{verb}/><Hangup/></Response>")
    assert document.verbs == (Hangup(),)
    assert document.codes() == [12200]
    assert "not supported" in document.notices[0].message


def test_notices_carry_the_line() -> None:
    document = parse("<Response>\n<Say/>\n<Record/>\n</Response>")
    assert document.notices[0].message.startswith("line 3: ")


def test_unknown_attribute_is_warned_and_ignored() -> None:
    document = parse('<Response><Say colour="red">hi</Say></Response>')
    assert document.verbs == (Say(text="hi"),)
    assert document.codes() == [12200]


# Say, Play, Pause, Hangup, Reject, Redirect.


def test_say_collapses_whitespace_and_speaks_ssml_text() -> None:
    document = parse("<Response><Say>\n  Hello <emphasis>big</emphasis>\n world </Say></Response>")
    assert document.verbs == (Say(text="Hello big world"),)
    assert document.codes() == [12200]


@pytest.mark.parametrize("loop", ["x", "-1", "1.5"])
def test_bad_loop_is_12200_and_default(loop: str) -> None:
    document = parse(
        f'<Response><Say loop="{loop}">a</Say><Play loop="{loop}">/a</Play></Response>'
    )
    assert document.verbs == (Say(text="a"), Play(url="/a"))
    assert document.codes() == [12200, 12200]


def test_play_needs_url_or_digits() -> None:
    document = parse("<Response><Play/><Play digits='12'/></Response>")
    assert document.verbs == (Play(digits="12"),)
    assert document.codes() == [12200]
    assert document.notices[0].level is NoticeLevel.ERROR


def test_play_bad_digits_dropped() -> None:
    document = parse("<Response><Play digits='12x'>/a.wav</Play></Response>")
    assert document.verbs == (Play(url="/a.wav"),)
    assert document.codes() == [12200]


def test_pause_length() -> None:
    document = parse("<Response><Pause/><Pause length='0'/><Pause length='x'/></Response>")
    assert document.verbs == (Pause(length=1), Pause(length=0), Pause(length=1))
    assert document.codes() == [12200]


def test_pause_and_hangup_take_no_content() -> None:
    document = parse("<Response><Pause>3</Pause><Hangup><Say/></Hangup></Response>")
    assert document.verbs == (Pause(), Hangup())
    assert document.codes() == [12200, 12200]


@pytest.mark.parametrize(
    ("attribute", "reason", "codes"),
    [
        ("", RejectReason.REJECTED, []),
        ("reason='busy'", RejectReason.BUSY, []),
        ("reason='BUSY'", RejectReason.BUSY, []),
        ("reason='rejected'", RejectReason.REJECTED, []),
        ("reason='later'", RejectReason.REJECTED, [12200]),
    ],
)
def test_reject_reason(attribute: str, reason: RejectReason, codes: list[int]) -> None:
    document = parse(f"<Response><Reject {attribute}/></Response>")
    assert document.verbs == (Reject(reason=reason),)
    assert document.codes() == codes


def test_redirect() -> None:
    document = parse(
        "<Response><Redirect method='get'> /next?a=1&amp;b=2 </Redirect>"
        "<Redirect method='PUT'>/x</Redirect><Redirect/></Response>"
    )
    assert document.verbs == (
        Redirect(url="/next?a=1&b=2", method=Method.GET),
        Redirect(url="/x", method=Method.POST),
    )
    assert document.codes() == [12200, 12200]
    assert document.notices[1].level is NoticeLevel.ERROR


def test_relative_urls_are_kept_as_written() -> None:
    document = parse(
        "<Response><Play>../beep.wav</Play><Redirect>next</Redirect>"
        "<Dial action='/after'>100</Dial></Response>"
    )
    play, redirect, dial = document.verbs
    assert isinstance(play, Play) and play.url == "../beep.wav"
    assert isinstance(redirect, Redirect) and redirect.url == "next"
    assert isinstance(dial, Dial) and dial.action == "/after"


# Gather.


def test_gather_nesting_and_values() -> None:
    document = parse(
        "<Response><Gather input='DTMF' numDigits='0' timeout='0' finishOnKey='##'"
        " actionOnEmptyResult='maybe' method='PATCH' speechTimeout='auto'>"
        "<Say>Press 1</Say><Dial>100</Dial>text<Pause/></Gather></Response>"
    )
    (gather,) = document.verbs
    assert gather == Gather(prompts=(Say(text="Press 1"), Pause()))
    # numDigits, timeout, finishOnKey, actionOnEmptyResult, method, speechTimeout,
    # <Dial> nested, stray text.
    assert document.codes() == [12200] * 8


def test_gather_input_partly_unknown() -> None:
    document = parse("<Response><Gather input='dtmf, fax'/></Response>")
    assert document.verbs == (Gather(),)
    assert document.codes() == [12200]


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        ("speech", {GatherInput.SPEECH}),
        ("dtmf speech", {GatherInput.DTMF, GatherInput.SPEECH}),
        ("Speech,DTMF", {GatherInput.DTMF, GatherInput.SPEECH}),
    ],
)
def test_gather_speech_is_kept_but_reported(value: str, kinds: set[GatherInput]) -> None:
    document = parse(f"<Response><Gather input='{value}'/></Response>")
    assert document.verbs == (Gather(input=frozenset(kinds)),)
    (notice,) = document.notices
    assert (notice.code, notice.level) == (12200, NoticeLevel.WARNING)
    assert notice.message == (
        "line 1: <Gather input>: speech is not supported; ignored, only DTMF digits are gathered"
    )


def test_gather_dtmf_alone_is_not_reported() -> None:
    document = parse("<Response><Gather input='dtmf'/></Response>")
    assert document.verbs == (Gather(),)
    assert document.notices == ()


# Whisper documents.


def test_whisper_allows_the_screening_verbs() -> None:
    document = parse_whisper(
        "<Response><Say>Call for you</Say><Play>/a.wav</Play><Pause/>"
        "<Gather numDigits='1'><Say>Press 1</Say></Gather><Redirect>/n</Redirect>"
        "<Hangup/></Response>"
    )
    assert [type(v) for v in document.verbs] == [Say, Play, Pause, Gather, Redirect, Hangup]
    assert document.notices == ()


def test_whisper_with_dial_is_13201() -> None:
    assert _code("<Response><Say>hi</Say><Dial>100</Dial></Response>", whisper=True) == 13201
    with pytest.raises(RcmlError) as caught:
        parse_whisper(b"<Response><Dial><Number>100</Number></Dial></Response>")
    assert caught.value.code == 13201


def test_whisper_ignores_other_verbs() -> None:
    document = parse_whisper("<Response><Reject/><Record/><Say>hi</Say></Response>")
    assert document.verbs == (Say(text="hi"),)
    assert document.codes() == [12200, 12200]
    assert all("whisper" in n.message for n in document.notices)


def test_dial_is_fine_outside_whisper() -> None:
    assert parse("<Response><Dial>100</Dial></Response>").verbs == (
        Dial(targets=(Number(number="100"),)),
    )


# Model bookkeeping.


def test_ring_tones_match_the_ringback_table() -> None:
    rows = (REPO / "media" / "ringback.tsv").read_text().splitlines()
    codes = {line.split("\t")[0] for line in rows if line and not line.startswith(("#", "code"))}
    assert codes == RING_TONES
    assert len(RING_TONES) == 40


CONVERTED: dict[type, dict[str, Converter]] = {
    **parser_module.CONVERTERS,
    **dial_module.CONVERTERS,
}


@pytest.mark.parametrize("cls", sorted(CONVERTED, key=repr))
def test_every_typed_attribute_has_a_converter(cls: type) -> None:
    converters = CONVERTED[cls]
    hints = typing.get_type_hints(cls)
    attribute_fields = set(xml_attributes(cls).values())
    assert set(converters) <= attribute_fields
    for name in attribute_fields - set(converters):
        assert hints[name] in (str, str | None), f"{cls.__name__}.{name} needs a converter"
