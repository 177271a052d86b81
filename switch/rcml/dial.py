"""Parsing <Dial> and its nouns <Number>, <Client> and <Sip>.

Targets come from nested nouns or, when there are none, from the body text:
a number, ``client:name`` (a <Client>), or a text containing ``@`` or starting
with ``sip:``/``sips:`` (a <Sip>), as RestComm accepts. Exact duplicate targets
are dropped and at most :data:`MAX_DIAL_TARGETS` ring.

Attributes that are read but that nothing carries out yet (``sequential``,
``events``, answering machine detection) are kept in the model and reported as
12200; ``referUrl`` is carried out and is not among them.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from switch.rcml.attributes import (
    CALL_EVENTS,
    MACHINE_DETECTION,
    RECORD_ALIASES,
    SCHEMA_WARNING,
    Converter,
    NoticeLog,
    Warn,
    as_bool,
    as_bounded_text,
    as_caller_id,
    as_choice,
    as_dtmf,
    as_event_set,
    as_int,
    as_method,
    as_ring_tone,
    read_attributes,
    tag_of,
)
from switch.rcml.headers import uri_headers
from switch.rcml.model import (
    MAX_DIAL_TARGETS,
    RING_TONES,
    CallEvent,
    Client,
    Dial,
    Number,
    Parameter,
    RecordingEvent,
    RecordingTrack,
    RecordMode,
    Sip,
    Target,
    Trim,
)

DIAL_METHOD = 13210
DIAL_TIMEOUT = 13212
DIAL_HANGUP_ON_STAR = 13213
DIAL_TIME_LIMIT = 13216
DIAL_NESTED_ELEMENT = 13215
NUMBER_METHOD = 13221
NUMBER_SEND_DIGITS = 13222
NUMBER_FORMAT = 13223

MAX_TIME_LIMIT = 24 * 60 * 60
"""Longest <Dial timeLimit>: Twilio's call length with its 24-hour setting on."""

UNSUPPORTED_NOUNS = frozenset({"Conference", "Queue", "Sim", "Application", "WhatsApp"})
"""Twilio nouns of <Dial> that dialswitch does not ring."""

_whole_seconds = as_int(DIAL_TIME_LIMIT, minimum=1)


def _time_limit(raw: str, warn: Warn) -> int:
    """Seconds, at least 1; more than :data:`MAX_TIME_LIMIT` is capped with 13216.

    13216 is Twilio's code for an invalid timeLimit; the value still applies,
    capped, the way an over-long callReason is cut with a notice.
    """
    seconds = _whole_seconds(raw, warn)
    if seconds > MAX_TIME_LIMIT:
        warn(DIAL_TIME_LIMIT, f"{seconds} s is over the 24-hour maximum; using {MAX_TIME_LIMIT}")
        return MAX_TIME_LIMIT
    return seconds


_DIAL_CONVERTERS: dict[str, Converter] = {
    "method": as_method(DIAL_METHOD),
    "timeout": as_int(DIAL_TIMEOUT, minimum=5, maximum=600, clamp=True),
    "hangup_on_star": as_bool(DIAL_HANGUP_ON_STAR),
    "time_limit": _time_limit,
    "caller_id": as_caller_id,
    "record": as_choice(RecordMode, SCHEMA_WARNING, RECORD_ALIASES),
    "trim": as_choice(Trim, SCHEMA_WARNING),
    "recording_status_callback_method": as_method(DIAL_METHOD),
    "recording_status_callback_event": as_event_set(RecordingEvent, SCHEMA_WARNING),
    "recording_track": as_choice(RecordingTrack, SCHEMA_WARNING),
    "answer_on_bridge": as_bool(SCHEMA_WARNING),
    "ring_tone": as_ring_tone(RING_TONES),
    "refer_method": as_method(DIAL_METHOD),
    "call_reason": as_bounded_text(50),
    "sequential": as_bool(SCHEMA_WARNING),
}

_DIAL_UNSUPPORTED = frozenset({"recordingConfigurationId", "passports"})
_DIAL_NOT_EXECUTED = {
    "sequential": "all targets ring at once",
    "events": "",
}


def _amd_converters(method_code: int) -> dict[str, Converter]:
    """Answering machine detection; ranges as Twilio's, clamped, durations in ms."""
    return {
        "machine_detection": MACHINE_DETECTION,
        "machine_detection_timeout": as_int(SCHEMA_WARNING, minimum=3, maximum=60, clamp=True),
        "machine_detection_speech_threshold": as_int(
            SCHEMA_WARNING, minimum=1000, maximum=6000, clamp=True
        ),
        "machine_detection_speech_end_threshold": as_int(
            SCHEMA_WARNING, minimum=500, maximum=5000, clamp=True
        ),
        "machine_detection_silence_timeout": as_int(
            SCHEMA_WARNING, minimum=2000, maximum=10000, clamp=True
        ),
        "amd_status_callback_method": as_method(method_code),
    }


_NO_AMD = "no answering machine detection runs"
_AMD_NOT_EXECUTED = {
    name: _NO_AMD
    for name in (
        "machine_detection",
        "machine_detection_timeout",
        "machine_detection_speech_threshold",
        "machine_detection_speech_end_threshold",
        "machine_detection_silence_timeout",
        "amd_status_callback",
        "amd_status_callback_method",
    )
}
"""<Number> and <Sip> read every AMD attribute, but no dialled leg runs detection."""


def _callback_converters(method_code: int) -> dict[str, Converter]:
    return {
        "method": as_method(method_code),
        "status_callback_method": as_method(method_code),
        "status_callback_event": CALL_EVENTS,
    }


_NUMBER_CONVERTERS: dict[str, Converter] = {
    **_callback_converters(NUMBER_METHOD),
    **_amd_converters(NUMBER_METHOD),
    "send_digits": as_dtmf(NUMBER_SEND_DIGITS),
}
_CLIENT_CONVERTERS: dict[str, Converter] = _callback_converters(SCHEMA_WARNING)
_SIP_CONVERTERS: dict[str, Converter] = {
    **_callback_converters(SCHEMA_WARNING),
    **_amd_converters(SCHEMA_WARNING),
}

CONVERTERS: dict[type, dict[str, Converter]] = {
    Dial: _DIAL_CONVERTERS,
    Number: _NUMBER_CONVERTERS,
    Client: _CLIENT_CONVERTERS,
    Sip: _SIP_CONVERTERS,
}
"""Converters by class; fields without one are plain text (tests check coverage)."""


def parse_dial(el: etree._Element, log: NoticeLog) -> Dial:
    """Build a <Dial>; a Dial left with no target still runs and fails at once."""
    values = read_attributes(
        el,
        Dial,
        _DIAL_CONVERTERS,
        log,
        unsupported=_DIAL_UNSUPPORTED,
        not_executed=_DIAL_NOT_EXECUTED,
    )
    targets: list[Target] = []
    has_nouns = False
    for child in el:
        tag = tag_of(child)
        target: Target | None = None
        if tag == "Number":
            target = _parse_number(child, log)
        elif tag == "Client":
            target = _parse_client(child, log)
        elif tag == "Sip":
            target = _parse_sip(child, log)
        elif tag in UNSUPPORTED_NOUNS:
            log.warning(SCHEMA_WARNING, f"<Dial><{tag}> is not supported; ignored", child)
        else:
            log.warning(DIAL_NESTED_ELEMENT, f"<{tag}> is not a noun of <Dial>; ignored", child)
            continue
        has_nouns = True
        if target is not None:
            targets.append(target)

    text = _loose_text(el)
    if text and has_nouns:
        log.warning(SCHEMA_WARNING, f"<Dial> text {text!r} beside nouns; ignored", el)
    elif text:
        target = _target_from_text(text, el, log)
        if target is not None:
            targets.append(target)

    unique = _without_duplicates(targets, el, log)
    if len(unique) > MAX_DIAL_TARGETS:
        log.warning(
            SCHEMA_WARNING,
            f"<Dial> has {len(unique)} targets; only the first {MAX_DIAL_TARGETS} ring",
            el,
        )
        unique = unique[:MAX_DIAL_TARGETS]
    if not unique:
        log.error(SCHEMA_WARNING, "<Dial> has nothing to dial", el)
    return Dial(targets=tuple(unique), **values)


def _loose_text(el: etree._Element) -> str:
    """Text directly inside ``el``, outside its children, stripped."""
    parts = [el.text or ""] + [child.tail or "" for child in el]
    return "".join(parts).strip()


def _without_duplicates(targets: list[Target], el: etree._Element, log: NoticeLog) -> list[Target]:
    unique: list[Target] = []
    for target in targets:
        if target in unique:
            log.warning(SCHEMA_WARNING, f"<Dial> duplicate target {target!r} dropped", el)
        else:
            unique.append(target)
    return unique


def _target_from_text(text: str, el: etree._Element, log: NoticeLog) -> Target | None:
    lowered = text.lower()
    if lowered.startswith("client:"):
        return _client_from(text[len("client:") :], {}, el, log)
    if lowered.startswith(("sip:", "sips:")) or "@" in text:
        return _sip_from(text, {}, el, log)
    return Number(number=text)


def _with_event_default(values: dict[str, Any]) -> dict[str, Any]:
    """With a statusCallback and no statusCallbackEvent only ``completed`` fires."""
    if values.get("status_callback") and "status_callback_event" not in values:
        values["status_callback_event"] = frozenset({CallEvent.COMPLETED})
    return values


def _no_children(el: etree._Element, log: NoticeLog) -> None:
    for child in el:
        log.warning(SCHEMA_WARNING, f"<{tag_of(child)}> inside <{tag_of(el)}> ignored", child)


def _parse_number(el: etree._Element, log: NoticeLog) -> Number | None:
    values = read_attributes(el, Number, _NUMBER_CONVERTERS, log, not_executed=_AMD_NOT_EXECUTED)
    values = _with_event_default(values)
    _no_children(el, log)
    number = _loose_text(el)
    if not number:
        log.error(NUMBER_FORMAT, "<Number> is empty; dropped", el)
        return None
    return Number(number=number, **values)


def _parse_sip(el: etree._Element, log: NoticeLog) -> Sip | None:
    values = read_attributes(el, Sip, _SIP_CONVERTERS, log, not_executed=_AMD_NOT_EXECUTED)
    values = _with_event_default(values)
    _no_children(el, log)
    return _sip_from(_loose_text(el), values, el, log)


def _sip_from(text: str, values: dict[str, Any], el: etree._Element, log: NoticeLog) -> Sip | None:
    """A SIP URI; ``user@host`` without a scheme gets ``sip:`` (RestComm's form)."""
    uri = text.strip()
    if not uri.lower().startswith(("sip:", "sips:")):
        if "@" not in uri:
            log.error(SCHEMA_WARNING, f"<Sip> {uri!r} is not a sip: or sips: URI; dropped", el)
            return None
        uri = "sip:" + uri
    if re.search(r"\s", uri) or len(uri) <= len("sip:"):
        log.error(SCHEMA_WARNING, f"<Sip> {uri!r} is not a valid SIP URI; dropped", el)
        return None
    return Sip(uri=uri, **values)


def _parse_client(el: etree._Element, log: NoticeLog) -> Client | None:
    values = _with_event_default(read_attributes(el, Client, _CLIENT_CONVERTERS, log))
    name_attribute = values.pop("identity", "")
    identities: list[str] = []
    parameters: list[Parameter] = []
    for child in el:
        tag = tag_of(child)
        if tag == "Identity":
            identities.append((child.text or "").strip())
            _no_children(child, log)
        elif tag == "Parameter":
            parameter = _parse_parameter(child, log)
            if parameter is not None:
                parameters.append(parameter)
        else:
            log.warning(SCHEMA_WARNING, f"<Client><{tag}> is not supported; ignored", child)
    body = _loose_text(el)
    candidates = [c for c in (*identities, body, name_attribute) if c]
    if not candidates:
        log.error(SCHEMA_WARNING, "<Client> has no identity; dropped", el)
        return None
    for other in candidates[1:]:
        if other != candidates[0]:
            log.warning(SCHEMA_WARNING, f"<Client> second identity {other!r} ignored", el)
    values["parameters"] = tuple(parameters)
    return _client_from(candidates[0], values, el, log)


# RFC 3986 excludes these from a URI user part; Twilio forbids control characters,
# spaces, delimiters and "unwise" characters in a client identity.
_BAD_IDENTITY = re.compile(r"[\x00-\x20\x7f<>\"#%{}|\\^`\[\]/]")


def _client_from(
    text: str, values: dict[str, Any], el: etree._Element, log: NoticeLog
) -> Client | None:
    """Split RestComm's ``alice?X-H1=1&X-H2=2`` into identity and SIP headers.

    The headers follow <Sip>'s rule (:func:`switch.rcml.headers.uri_headers`).
    """
    identity, _, query = text.strip().partition("?")
    if not identity or _BAD_IDENTITY.search(identity):
        log.error(SCHEMA_WARNING, f"<Client> identity {identity!r} is not valid; dropped", el)
        return None
    headers, notices = uri_headers(query, "Client")
    for notice in notices:
        log.warning(notice.code, notice.message, el)
    return Client(identity=identity, sip_headers=headers, **values)


def _parse_parameter(el: etree._Element, log: NoticeLog) -> Parameter | None:
    name = el.get("name", "").strip()
    for key in el.attrib:
        if key not in ("name", "value"):
            log.warning(SCHEMA_WARNING, f"<Parameter> attribute {key!r} is not known; ignored", el)
    if not name:
        log.warning(SCHEMA_WARNING, "<Parameter> without a name; ignored", el)
        return None
    return Parameter(name=name, value=el.get("value", ""))
