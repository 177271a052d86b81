"""Documents built with twilio-python's VoiceResponse parse into the values set.

The builder names attributes in snake_case and camelCases them itself, so these
tests also pin our field-to-attribute mapping to Twilio's spelling.
"""

from __future__ import annotations

import dataclasses

import pytest
from twilio.twiml import lower_camel
from twilio.twiml.voice_response import VoiceResponse

from switch.rcml import (
    CallEvent,
    Client,
    Dial,
    Gather,
    GatherInput,
    Hangup,
    MachineDetection,
    Method,
    Number,
    Parameter,
    Pause,
    Play,
    RecordingEvent,
    RecordingTrack,
    RecordMode,
    Redirect,
    Reject,
    RejectReason,
    Say,
    Sip,
    Trim,
    Verb,
    parse,
    xml_attributes,
)


def _parse(response: VoiceResponse, *, not_supported: tuple[str, ...] = ()) -> tuple[Verb, ...]:
    """The verbs; the only notices are 12200, one for each attribute named.

    Those attributes are read and kept, but nothing carries them out yet. The
    builder orders attributes its own way, so the notices are matched in any order.
    """
    document = parse(str(response))
    assert document.codes() == [12200] * len(not_supported)
    assert all("is not supported; ignored" in n.message for n in document.notices)
    for name in not_supported:
        assert [n for n in document.notices if name in n.message], name
    return document.verbs


_AMD = (
    "'machineDetection'",
    "'amdStatusCallbackMethod'",
    "'amdStatusCallback'",
    "'machineDetectionTimeout'",
    "'machineDetectionSpeechThreshold'",
    "'machineDetectionSpeechEndThreshold'",
    "'machineDetectionSilenceTimeout'",
)


@pytest.mark.parametrize("cls", [Dial, Number, Client, Sip, Say, Play, Pause, Reject, Redirect])
def test_attribute_names_match_twilio_camel_case(cls: type) -> None:
    for xml_name, field_name in xml_attributes(cls).items():
        if (cls, field_name) == (Client, "identity"):
            assert xml_name == "name"  # RestComm's <Client name="...">
        else:
            assert lower_camel(field_name) == xml_name


def test_dial_with_every_attribute() -> None:
    response = VoiceResponse()
    response.dial(
        "+14155550100",
        action="https://example.com/after",
        method="GET",
        timeout=20,
        hangup_on_star=True,
        time_limit=600,
        caller_id="+14155550199",
        record="record-from-ringing-dual",
        trim="trim-silence",
        recording_status_callback="/recording",
        recording_status_callback_method="GET",
        recording_status_callback_event="in-progress completed absent",
        recording_track="inbound",
        answer_on_bridge=True,
        ring_tone="uk",
        refer_url="/refer",
        refer_method="GET",
        sequential=True,
        events="call-progress-events",
        call_reason="Delivery",
    )
    assert _parse(response, not_supported=("'sequential'", "'events'")) == (
        Dial(
            targets=(Number(number="+14155550100"),),
            action="https://example.com/after",
            method=Method.GET,
            timeout=20,
            hangup_on_star=True,
            time_limit=600,
            caller_id="+14155550199",
            record=RecordMode.RECORD_FROM_RINGING_DUAL,
            trim=Trim.TRIM_SILENCE,
            recording_status_callback="/recording",
            recording_status_callback_method=Method.GET,
            recording_status_callback_event=frozenset(RecordingEvent),
            recording_track=RecordingTrack.INBOUND,
            answer_on_bridge=True,
            ring_tone="uk",
            refer_url="/refer",
            refer_method=Method.GET,
            sequential=True,
            events="call-progress-events",
            call_reason="Delivery",
        ),
    )


def test_dial_defaults() -> None:
    response = VoiceResponse()
    response.dial("100")
    (dial,) = _parse(response)
    assert isinstance(dial, Dial)
    assert (dial.method, dial.timeout, dial.time_limit) == (Method.POST, 30, 14400)
    assert (dial.hangup_on_star, dial.answer_on_bridge, dial.sequential) == (False, False, False)
    assert dial.record is RecordMode.DO_NOT_RECORD and not dial.record.records
    assert dial.recording_status_callback_event == {RecordingEvent.COMPLETED}
    assert (dial.recording_track, dial.trim) == (RecordingTrack.BOTH, Trim.DO_NOT_TRIM)
    assert dial.caller_id is dial.ring_tone is dial.action is None


def test_number_with_every_attribute() -> None:
    response = VoiceResponse()
    dial = response.dial()
    dial.number(
        "+14155550100",
        send_digits="ww1928#",
        url="/whisper",
        method="GET",
        status_callback_event="initiated ringing answered completed",
        status_callback="/status",
        status_callback_method="GET",
        byoc="carrier-a",
        machine_detection="DetectMessageEnd",
        amd_status_callback_method="GET",
        amd_status_callback="/amd",
        machine_detection_timeout=45,
        machine_detection_speech_threshold=3000,
        machine_detection_speech_end_threshold=1500,
        machine_detection_silence_timeout=6000,
    )
    (parsed,) = _parse(response, not_supported=_AMD)
    assert isinstance(parsed, Dial)
    assert parsed.targets == (
        Number(
            number="+14155550100",
            send_digits="ww1928#",
            url="/whisper",
            method=Method.GET,
            status_callback_event=frozenset(CallEvent),
            status_callback="/status",
            status_callback_method=Method.GET,
            byoc="carrier-a",
            machine_detection=MachineDetection.DETECT_MESSAGE_END,
            amd_status_callback_method=Method.GET,
            amd_status_callback="/amd",
            machine_detection_timeout=45,
            machine_detection_speech_threshold=3000,
            machine_detection_speech_end_threshold=1500,
            machine_detection_silence_timeout=6000,
        ),
    )


def test_client_with_identity_parameters_and_attributes() -> None:
    response = VoiceResponse()
    dial = response.dial()
    client = dial.client(
        url="/whisper",
        method="GET",
        status_callback_event="ringing answered",
        status_callback="/status",
        status_callback_method="GET",
    )
    client.identity("user_jane")
    client.parameter(name="FirstName", value="Jane")
    client.parameter(name="Empty", value="")
    (parsed,) = _parse(response)
    assert isinstance(parsed, Dial)
    assert parsed.targets == (
        Client(
            identity="user_jane",
            parameters=(Parameter("FirstName", "Jane"), Parameter("Empty", "")),
            url="/whisper",
            method=Method.GET,
            status_callback_event=frozenset({CallEvent.RINGING, CallEvent.ANSWERED}),
            status_callback="/status",
            status_callback_method=Method.GET,
        ),
    )


def test_client_identity_as_body() -> None:
    response = VoiceResponse()
    response.dial().client("joey")
    (parsed,) = _parse(response)
    assert isinstance(parsed, Dial)
    assert parsed.targets == (Client(identity="joey"),)


def test_sip_with_every_attribute() -> None:
    response = VoiceResponse()
    dial = response.dial()
    dial.sip(
        "sips:alice@pbx.example.com;transport=tls?X-Account=42",
        username="alice",
        password="s3cret",
        url="/whisper",
        method="GET",
        status_callback_event="initiated completed",
        status_callback="/status",
        status_callback_method="GET",
        machine_detection="Enable",
        amd_status_callback_method="GET",
        amd_status_callback="/amd",
        machine_detection_timeout=10,
        machine_detection_speech_threshold=2000,
        machine_detection_speech_end_threshold=800,
        machine_detection_silence_timeout=3000,
    )
    (parsed,) = _parse(response, not_supported=_AMD)
    assert isinstance(parsed, Dial)
    assert parsed.targets == (
        Sip(
            uri="sips:alice@pbx.example.com;transport=tls?X-Account=42",
            username="alice",
            password="s3cret",
            url="/whisper",
            method=Method.GET,
            status_callback_event=frozenset({CallEvent.INITIATED, CallEvent.COMPLETED}),
            status_callback="/status",
            status_callback_method=Method.GET,
            machine_detection=MachineDetection.ENABLE,
            amd_status_callback_method=Method.GET,
            amd_status_callback="/amd",
            machine_detection_timeout=10,
            machine_detection_speech_threshold=2000,
            machine_detection_speech_end_threshold=800,
            machine_detection_silence_timeout=3000,
        ),
    )


def test_mixed_targets_in_order() -> None:
    response = VoiceResponse()
    dial = response.dial(caller_id="client:bob")
    dial.number("415-123-4567")
    dial.client("alice")
    dial.sip("sip:carol@example.com")
    (parsed,) = _parse(response)
    assert isinstance(parsed, Dial)
    assert parsed.caller_id == "client:bob"
    assert parsed.targets == (
        Number(number="415-123-4567"),
        Client(identity="alice"),
        Sip(uri="sip:carol@example.com"),
    )


def test_simple_verbs() -> None:
    response = VoiceResponse()
    response.say("Hello there", voice="Polly.Joanna", language="en-GB", loop=3)
    response.play("https://example.com/a.wav", loop=0)
    response.play(digits="ww123#")
    response.pause(length=4)
    response.redirect("/next", method="GET")
    response.reject(reason="busy")
    response.reject()
    response.hangup()
    assert _parse(response) == (
        Say(text="Hello there", voice="Polly.Joanna", language="en-GB", loop=3),
        Play(url="https://example.com/a.wav", loop=0),
        Play(digits="ww123#"),
        Pause(length=4),
        Redirect(url="/next", method=Method.GET),
        Reject(reason=RejectReason.BUSY),
        Reject(reason=RejectReason.REJECTED),
        Hangup(),
    )


def test_gather_with_prompts() -> None:
    response = VoiceResponse()
    gather = response.gather(
        input="dtmf speech",
        action="/gathered",
        method="GET",
        timeout=7,
        finish_on_key="*",
        num_digits=4,
        action_on_empty_result=True,
    )
    gather.say("Enter your PIN")
    gather.play("/beep.wav")
    gather.pause(length=2)
    assert _parse(response, not_supported=("<Gather input>: speech",)) == (
        Gather(
            prompts=(Say(text="Enter your PIN"), Play(url="/beep.wav"), Pause(length=2)),
            input=frozenset({GatherInput.DTMF, GatherInput.SPEECH}),
            action="/gathered",
            method=Method.GET,
            timeout=7,
            finish_on_key="*",
            num_digits=4,
            action_on_empty_result=True,
        ),
    )


def test_gather_defaults_and_empty_finish_key() -> None:
    response = VoiceResponse()
    response.gather()
    response.gather(finish_on_key="")
    first, second = _parse(response)
    assert first == Gather()
    assert (first.timeout, first.finish_on_key, first.num_digits) == (5, "#", None)
    assert first.input == {GatherInput.DTMF}
    # An empty finishOnKey is meaningful (no finish key), unlike other empty values.
    assert second == Gather(finish_on_key="")


def test_parsed_values_are_frozen() -> None:
    response = VoiceResponse()
    response.dial("100")
    (dial,) = _parse(response)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dial.timeout = 5  # type: ignore[misc,union-attr]
