"""<Dial> and its nouns: value validation, error codes, target rules."""

from __future__ import annotations

import pytest

from switch.rcml import (
    CallEvent,
    Client,
    Dial,
    MachineDetection,
    Method,
    NoticeLevel,
    Number,
    RecordingEvent,
    RecordingTrack,
    RecordMode,
    Say,
    Sip,
    Trim,
    parse,
)
from switch.rcml.model import Document


def _dial(inner: str, attributes: str = "") -> tuple[Dial, Document]:
    document = parse(f"<Response><Dial {attributes}>{inner}</Dial></Response>")
    (dial,) = document.verbs
    assert isinstance(dial, Dial)
    return dial, document


def _one(attributes: str) -> tuple[Dial, list[int]]:
    dial, document = _dial("100", attributes)
    return dial, document.codes()


# Dial attributes.


@pytest.mark.parametrize(
    ("attribute", "field", "value", "codes"),
    [
        ("method='get'", "method", Method.GET, []),
        ("method='Post'", "method", Method.POST, []),
        ("method='PUT'", "method", Method.POST, [13210]),
        (
            "recordingStatusCallbackMethod='DELETE'",
            "recording_status_callback_method",
            Method.POST,
            [13210],
        ),
        ("referMethod='x'", "refer_method", Method.POST, [13210]),
        ("timeout='10'", "timeout", 10, []),
        ("timeout=' 45 '", "timeout", 45, []),
        ("timeout='2'", "timeout", 5, []),
        ("timeout='1000'", "timeout", 600, []),
        ("timeout='0'", "timeout", 30, [13212]),
        ("timeout='-5'", "timeout", 30, [13212]),
        ("timeout='ten'", "timeout", 30, [13212]),
        ("timeout='1.5'", "timeout", 30, [13212]),
        ("timeout=''", "timeout", 30, []),
        ("hangupOnStar='true'", "hangup_on_star", True, []),
        ("hangupOnStar='FALSE'", "hangup_on_star", False, []),
        ("hangupOnStar='yes'", "hangup_on_star", False, [13213]),
        ("timeLimit='120'", "time_limit", 120, []),
        ("timeLimit='0'", "time_limit", 14400, [13216]),
        ("timeLimit='two hours'", "time_limit", 14400, [13216]),
        ("timeLimit='86400'", "time_limit", 86400, []),
        ("timeLimit='86401'", "time_limit", 86400, [13216]),
        ("timeLimit='" + "9" * 30 + "'", "time_limit", 86400, [13216]),
        ("callerId='+15551112222'", "caller_id", "+15551112222", []),
        ("callerId='(415) 555-1212'", "caller_id", "(415) 555-1212", []),
        ("callerId='client:joey'", "caller_id", "client:joey", []),
        ("callerId='agent_7.b-2'", "caller_id", "agent_7.b-2", []),
        ("callerId='+1555;drop'", "caller_id", None, [13214]),
        ("callerId='&lt;script&gt;'", "caller_id", None, [13214]),
        ("callerId='client:'", "caller_id", None, [13214]),
        ("callerId='   '", "caller_id", None, []),
        ("record='true'", "record", RecordMode.RECORD_FROM_ANSWER, []),
        ("record='false'", "record", RecordMode.DO_NOT_RECORD, []),
        ("record='record-from-answer-dual'", "record", RecordMode.RECORD_FROM_ANSWER_DUAL, []),
        ("record='record-from-ringing'", "record", RecordMode.RECORD_FROM_RINGING, []),
        ("record='do-not-record'", "record", RecordMode.DO_NOT_RECORD, []),
        ("record='sometimes'", "record", RecordMode.DO_NOT_RECORD, [12200]),
        ("trim='trim-silence'", "trim", Trim.TRIM_SILENCE, []),
        ("trim='cut'", "trim", Trim.DO_NOT_TRIM, [12200]),
        ("recordingTrack='outbound'", "recording_track", RecordingTrack.OUTBOUND, []),
        ("recordingTrack='left'", "recording_track", RecordingTrack.BOTH, [12200]),
        (
            "recordingStatusCallbackEvent='in-progress,absent'",
            "recording_status_callback_event",
            frozenset({RecordingEvent.IN_PROGRESS, RecordingEvent.ABSENT}),
            [],
        ),
        (
            "recordingStatusCallbackEvent='done'",
            "recording_status_callback_event",
            frozenset({RecordingEvent.COMPLETED}),
            [12200, 12200],
        ),
        ("answerOnBridge='true'", "answer_on_bridge", True, []),
        ("answerOnBridge='1'", "answer_on_bridge", False, [12200]),
        ("ringTone='us-old'", "ring_tone", "us-old", []),
        ("ringTone='DE'", "ring_tone", "de", []),
        ("ringTone='gb'", "ring_tone", None, [12200]),
        ("ringTone='xx'", "ring_tone", None, [12200]),
        ("sequential='true'", "sequential", True, [12200]),
        ("sequential='false'", "sequential", False, []),
        ("sequential='on'", "sequential", False, [12200]),
        ("callReason='Your parcel'", "call_reason", "Your parcel", []),
        ("callReason='" + "x" * 60 + "'", "call_reason", "x" * 50, [12200]),
        ("referUrl='/refer'", "refer_url", "/refer", []),
        ("events='call-progress-events'", "events", "call-progress-events", [12200]),
        ("passports='abc'", "caller_id", None, [12200]),
        ("color='blue'", "caller_id", None, [12200]),
    ],
)
def test_dial_attribute(attribute: str, field: str, value: object, codes: list[int]) -> None:
    dial, found = _one(attribute)
    assert getattr(dial, field) == value
    assert found == codes
    assert dial.targets == (Number(number="100"),)


def test_record_mode_properties() -> None:
    assert RecordMode.RECORD_FROM_RINGING_DUAL.dual
    assert RecordMode.RECORD_FROM_RINGING_DUAL.from_ringing
    assert not RecordMode.RECORD_FROM_ANSWER.dual
    assert not RecordMode.RECORD_FROM_ANSWER.from_ringing
    assert RecordMode.RECORD_FROM_ANSWER.records
    assert not RecordMode.DO_NOT_RECORD.records


def test_value_notices_say_what_default_is_used() -> None:
    _, document = _dial("100", "timeout='ten'")
    (notice,) = document.notices
    assert notice.message == "line 1: <Dial timeout='ten'>: not a whole number; using 30"
    assert notice.level is NoticeLevel.WARNING


def test_time_limit_over_24_hours_is_capped_with_13216() -> None:
    dial, document = _dial("100", "timeLimit='90000'")
    assert dial.time_limit == 86400
    (notice,) = document.notices
    assert (notice.code, notice.level) == (13216, NoticeLevel.WARNING)
    assert notice.message == (
        "line 1: <Dial timeLimit>: 90000 s is over the 24-hour maximum; using 86400"
    )


def test_sequential_is_kept_but_reported_as_not_supported() -> None:
    dial, document = _dial("<Number>100</Number><Number>200</Number>", "sequential='TRUE'")
    assert dial.sequential
    (notice,) = document.notices
    assert (notice.code, notice.level) == (12200, NoticeLevel.WARNING)
    assert notice.message == (
        "line 1: <Dial> attribute 'sequential' is not supported; ignored, all targets ring at once"
    )


def test_events_is_kept_but_reported_as_not_supported() -> None:
    _, document = _dial("100", "events='call-progress-events'")
    (notice,) = document.notices
    assert notice.message == "line 1: <Dial> attribute 'events' is not supported; ignored"


def test_refer_url_is_carried_out_so_it_is_not_reported() -> None:
    dial, document = _dial("100", "referUrl='/refer' referMethod='GET'")
    assert (dial.refer_url, dial.refer_method) == ("/refer", Method.GET)
    assert document.notices == ()


# Targets from the body text.


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ("415-123-4567", Number(number="415-123-4567")),
        ("(415) 555-1212", Number(number="(415) 555-1212")),
        ("  +14155551212\n", Number(number="+14155551212")),
        ("client:alice", Client(identity="alice")),
        ("Client:alice", Client(identity="alice")),
        ("sip:bob@example.com", Sip(uri="sip:bob@example.com")),
        ("sips:bob@example.com:5061", Sip(uri="sips:bob@example.com:5061")),
        ("bob@example.com", Sip(uri="sip:bob@example.com")),
        ("sip:pbx.example.com", Sip(uri="sip:pbx.example.com")),
    ],
)
def test_body_text_target(body: str, target: object) -> None:
    dial, document = _dial(body)
    assert dial.targets == (target,)
    assert document.notices == ()


def test_body_text_beside_nouns_is_ignored() -> None:
    dial, document = _dial("100<Number>200</Number>300")
    assert dial.targets == (Number(number="200"),)
    assert document.codes() == [12200]


def test_body_text_beside_unsupported_noun_is_ignored() -> None:
    dial, document = _dial("100<Conference>room</Conference>")
    assert dial.targets == ()
    # Conference unsupported, text ignored, nothing to dial.
    assert document.codes() == [12200, 12200, 12200]


def test_empty_dial_runs_with_no_targets() -> None:
    dial, document = _dial("   ")
    assert dial.targets == ()
    (notice,) = document.notices
    assert (notice.code, notice.level) == (12200, NoticeLevel.ERROR)


# Nouns and nesting.


@pytest.mark.parametrize("noun", ["Conference", "Queue", "Sim", "Application"])
def test_unsupported_nouns_are_12200(noun: str) -> None:
    dial, document = _dial(f"<{noun}>x</{noun}><Number>100</Number>")
    assert dial.targets == (Number(number="100"),)
    assert document.codes() == [12200]
    assert "not supported" in document.notices[0].message


def test_verb_nested_in_dial_is_13215() -> None:
    dial, document = _dial("<Say>hi</Say><Foo/>100")
    assert dial.targets == (Number(number="100"),)
    assert document.codes() == [13215, 13215]


def test_dial_nested_in_gather_is_ignored() -> None:
    document = parse("<Response><Gather><Dial>100</Dial></Gather></Response>")
    assert document.codes() == [12200]


def test_more_than_ten_targets_keeps_the_first_ten() -> None:
    nouns = "".join(f"<Number>+1415555{i:04d}</Number>" for i in range(12))
    dial, document = _dial(nouns)
    assert [t.number for t in dial.targets if isinstance(t, Number)] == [
        f"+1415555{i:04d}" for i in range(10)
    ]
    assert document.codes() == [12200]


def test_exact_duplicates_are_dropped_before_the_cap() -> None:
    nouns = "<Client>a</Client>" * 3 + "".join(f"<Number>{i}</Number>" for i in range(9))
    dial, document = _dial(nouns)
    assert len(dial.targets) == 10
    assert dial.targets[0] == Client(identity="a")
    assert document.codes() == [12200, 12200]


def test_targets_differing_in_attributes_are_not_duplicates() -> None:
    dial, document = _dial("<Number>100</Number><Number sendDigits='1'>100</Number>")
    assert len(dial.targets) == 2
    assert document.notices == ()


# <Number>.


def test_number_keeps_raw_text() -> None:
    dial, _ = _dial("<Number> (415) 555-1212 </Number>")
    assert dial.targets == (Number(number="(415) 555-1212"),)


def test_empty_number_is_13223_and_dropped() -> None:
    dial, document = _dial("<Number> </Number><Number>100</Number>")
    assert dial.targets == (Number(number="100"),)
    assert [(n.code, n.level) for n in document.notices] == [(13223, NoticeLevel.ERROR)]


@pytest.mark.parametrize(
    ("attribute", "field", "value", "codes"),
    [
        ("method='PUT'", "method", Method.POST, [13221]),
        ("method='get'", "method", Method.GET, []),
        ("statusCallbackMethod='x'", "status_callback_method", Method.POST, [13221]),
        ("amdStatusCallbackMethod='x'", "amd_status_callback_method", Method.POST, [13221]),
        ("sendDigits='wwww1928'", "send_digits", "wwww1928", []),
        ("sendDigits='*0#ABCD9'", "send_digits", "*0#ABCD9", []),
        ("sendDigits='12x4'", "send_digits", None, [13222]),
        ("sendDigits='1 2'", "send_digits", None, [13222]),
        ("sendDigits='W'", "send_digits", None, [13222]),
        ("byoc='trunk-eu'", "byoc", "trunk-eu", []),
        # Machine detection is read and kept, but not run: each attribute is 12200.
        ("machineDetection='enable'", "machine_detection", MachineDetection.ENABLE, [12200]),
        (
            "machineDetection='DetectMessageEnd'",
            "machine_detection",
            MachineDetection.DETECT_MESSAGE_END,
            [12200],
        ),
        ("machineDetection='Always'", "machine_detection", None, [12200]),
        ("machineDetectionTimeout='1'", "machine_detection_timeout", 3, [12200]),
        ("machineDetectionTimeout='99'", "machine_detection_timeout", 60, [12200]),
        ("machineDetectionTimeout='x'", "machine_detection_timeout", 30, [12200]),
        (
            "machineDetectionSpeechThreshold='100'",
            "machine_detection_speech_threshold",
            1000,
            [12200],
        ),
        (
            "machineDetectionSpeechEndThreshold='9000'",
            "machine_detection_speech_end_threshold",
            5000,
            [12200],
        ),
        (
            "machineDetectionSilenceTimeout='20000'",
            "machine_detection_silence_timeout",
            10000,
            [12200],
        ),
        ("amdStatusCallback='/amd'", "amd_status_callback", "/amd", [12200]),
        ("amdStatusCallbackMethod='GET'", "amd_status_callback_method", Method.GET, [12200]),
        ("url='/whisper'", "url", "/whisper", []),
        ("fax='1'", "url", None, [12200]),
    ],
)
def test_number_attribute(attribute: str, field: str, value: object, codes: list[int]) -> None:
    dial, document = _dial(f"<Number {attribute}>100</Number>")
    (number,) = dial.targets
    assert getattr(number, field) == value
    assert document.codes() == codes


@pytest.mark.parametrize("noun", ["Number", "Sip", "Client"])
@pytest.mark.parametrize(
    ("attributes", "events", "codes"),
    [
        ("", frozenset(), []),
        ("statusCallback='/s'", frozenset({CallEvent.COMPLETED}), []),
        ("statusCallback='/s' statusCallbackEvent='ringing'", frozenset({CallEvent.RINGING}), []),
        (
            "statusCallback='/s' statusCallbackEvent='initiated,ringing, answered'",
            frozenset({CallEvent.INITIATED, CallEvent.RINGING, CallEvent.ANSWERED}),
            [],
        ),
        (
            "statusCallback='/s' statusCallbackEvent='ANSWERED queued'",
            frozenset({CallEvent.ANSWERED}),
            [12200],
        ),
        (
            "statusCallback='/s' statusCallbackEvent='busy'",
            frozenset({CallEvent.COMPLETED}),
            [12200, 12200],
        ),
        ("statusCallbackEvent='ringing'", frozenset({CallEvent.RINGING}), []),
    ],
)
def test_status_callback_events(
    noun: str, attributes: str, events: frozenset[CallEvent], codes: list[int]
) -> None:
    body = "sip:a@b" if noun == "Sip" else "alice"
    dial, document = _dial(f"<{noun} {attributes}>{body}</{noun}>")
    (target,) = dial.targets
    assert target.status_callback_event == events
    assert document.codes() == codes


def test_client_and_sip_bad_methods_are_12200() -> None:
    dial, document = _dial(
        "<Client method='x' statusCallbackMethod='y'>a</Client>"
        "<Sip method='x' amdStatusCallbackMethod='z'>sip:a@b</Sip>"
    )
    assert dial.targets == (Client(identity="a"), Sip(uri="sip:a@b"))
    assert document.codes() == [12200] * 4


@pytest.mark.parametrize(("noun", "body"), [("Number", "100"), ("Sip", "sip:a@b")])
def test_machine_detection_is_kept_but_each_attribute_is_reported(noun: str, body: str) -> None:
    dial, document = _dial(
        f"<{noun} machineDetection='Enable' machineDetectionTimeout='10'"
        f" amdStatusCallback='/amd'>{body}</{noun}>"
    )
    (target,) = dial.targets
    assert isinstance(target, Number | Sip)
    assert target.machine_detection is MachineDetection.ENABLE
    assert (target.machine_detection_timeout, target.amd_status_callback) == (10, "/amd")
    assert [(n.code, n.level) for n in document.notices] == [(12200, NoticeLevel.WARNING)] * 3
    assert [n.message for n in document.notices] == [
        f"line 1: <{noun}> attribute {name!r} is not supported; ignored,"
        " no answering machine detection runs"
        for name in ("machineDetection", "machineDetectionTimeout", "amdStatusCallback")
    ]


def test_dial_does_not_take_machine_detection() -> None:
    dial, document = _dial("100", "machineDetection='Enable'")
    assert dial.targets == (Number(number="100"),)
    (notice,) = document.notices
    assert notice.message == (
        "line 1: <Dial> attribute 'machineDetection' is not a known attribute; ignored"
    )


def test_number_children_are_ignored() -> None:
    dial, document = _dial("<Number>100<Say>x</Say></Number>")
    assert dial.targets == (Number(number="100"),)
    assert document.codes() == [12200]


# <Client>.


def test_client_identity_sources() -> None:
    dial, document = _dial(
        "<Client><Identity> jane </Identity></Client>"
        "<Client name='bob'/>"
        "<Client name='video-name'>body-wins</Client>"
    )
    assert dial.targets == (
        Client(identity="jane"),
        Client(identity="bob"),
        Client(identity="body-wins"),
    )
    assert document.codes() == [12200]  # the second identity of the third client


@pytest.mark.parametrize("identity", ["", "two words", "a<b", "bad|pipe", "tab\there"])
def test_bad_client_identity_is_dropped(identity: str) -> None:
    dial, document = _dial(f"<Client>{identity.replace('<', '&lt;')}</Client><Number>1</Number>")
    assert dial.targets == (Number(number="1"),)
    assert [(n.code, n.level) for n in document.notices] == [(12200, NoticeLevel.ERROR)]


def test_client_parameters_need_a_name() -> None:
    dial, document = _dial(
        "<Client>a<Parameter value='v'/><Parameter name='n' value='v' extra='1'/>"
        "<Parameter name='only'/></Client>"
    )
    (client,) = dial.targets
    assert isinstance(client, Client)
    assert [(p.name, p.value) for p in client.parameters] == [("n", "v"), ("only", "")]
    assert document.codes() == [12200, 12200]


def test_client_sip_headers_are_decoded() -> None:
    dial, _ = _dial("<Client>alice?X-Note=a%20b&amp;X-Empty=</Client>")
    assert dial.targets == (
        Client(identity="alice", sip_headers=(("X-Note", "a b"), ("X-Empty", ""))),
    )


def test_client_body_text_with_headers() -> None:
    dial, _ = _dial("client:alice?X-Team=blue")
    assert dial.targets == (Client(identity="alice", sip_headers=(("X-Team", "blue"),)),)


def test_client_headers_follow_the_sip_rule() -> None:
    dial, document = _dial(
        "<Client>alice?Subject=hi&amp;X-Ok=1&amp;User-to-User=0A1B&amp;Contact=x</Client>"
    )
    assert dial.targets == (
        Client(identity="alice", sip_headers=(("X-Ok", "1"), ("User-to-User", "0A1B"))),
    )
    assert [(n.code, n.level) for n in document.notices] == [(13252, NoticeLevel.WARNING)] * 2
    assert document.notices[0].message == "line 1: <Client> header 'Subject' is not allowed"


def test_client_body_text_headers_follow_the_sip_rule() -> None:
    dial, document = _dial("client:alice?X-Team=blue&amp;Max-Forwards=1")
    assert dial.targets == (Client(identity="alice", sip_headers=(("X-Team", "blue"),)),)
    assert document.codes() == [13252]


def test_client_header_with_control_characters_is_21229() -> None:
    dial, document = _dial("<Client>alice?X-A=a%0D%0AVia:%20x&amp;X-B=2</Client>")
    assert dial.targets == (Client(identity="alice", sip_headers=(("X-B", "2"),)),)
    assert document.codes() == [21229]


def test_client_header_name_with_a_line_break_is_13252() -> None:
    dial, document = _dial("<Client>alice?X-A%0A=1</Client>")
    assert dial.targets == (Client(identity="alice"),)
    assert document.codes() == [13252]


def test_client_headers_over_1024_characters_are_13253() -> None:
    query = "X-A=" + "a" * 600 + "&amp;X-B=" + "b" * 600 + "&amp;X-C=c"
    dial, document = _dial(f"<Client>alice?{query}</Client>")
    (client,) = dial.targets
    assert isinstance(client, Client)
    assert [name for name, _ in client.sip_headers] == ["X-A"]
    (notice,) = document.notices
    assert (notice.code, notice.message) == (
        13253,
        "line 1: <Client> headers over 1024 characters dropped",
    )


# <Sip>.


def test_sip_noun() -> None:
    dial, document = _dial(
        "<Sip username='u' password='p'> sip:bob@example.com;transport=tcp </Sip>"
        "<Sip>carol@example.com</Sip><Sip>not a uri</Sip><Sip>pbx</Sip><Sip/>"
    )
    assert dial.targets == (
        Sip(uri="sip:bob@example.com;transport=tcp", username="u", password="p"),
        Sip(uri="sip:carol@example.com"),
    )
    assert [(n.code, n.level) for n in document.notices] == [(12200, NoticeLevel.ERROR)] * 3


def test_sip_has_no_send_digits() -> None:
    dial, document = _dial("<Sip sendDigits='1'>sip:a@b</Sip>")
    assert dial.targets == (Sip(uri="sip:a@b"),)
    assert document.codes() == [12200]


def test_dial_then_more_verbs() -> None:
    document = parse("<Response><Dial>100</Dial><Say>after</Say></Response>")
    assert document.verbs == (Dial(targets=(Number(number="100"),)), Say(text="after"))
