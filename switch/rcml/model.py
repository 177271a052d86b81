"""Typed RCML documents: one frozen dataclass per verb and noun.

Fields are snake_case. Each field that comes from an XML attribute carries the
attribute's camelCase name in its metadata under ``XML_ATTRIBUTE``; that is the
single mapping between the two spellings, read by the parser and by
:func:`xml_attributes`. Values are already validated and defaulted: enums for
closed sets, ``bool`` for flags, ``int`` seconds (or milliseconds where Twilio
counts in milliseconds) for durations. URLs stay as written; a relative URL is
resolved later by the interpreter against the URL the document came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

XML_ATTRIBUTE = "xml"
"""Metadata key holding a field's camelCase XML attribute name."""

MAX_DOCUMENT_BYTES = 64 * 1024
"""Largest document accepted; Twilio answers error 11750 above this."""

MAX_DIAL_TARGETS = 10
"""At most ten <Number>, <Client> and <Sip> targets ring at once."""

RING_TONES = frozenset(
    {
        "at",
        "au",
        "bg",
        "br",
        "be",
        "ch",
        "cl",
        "cn",
        "cz",
        "de",
        "dk",
        "ee",
        "es",
        "fi",
        "fr",
        "gr",
        "hu",
        "il",
        "in",
        "it",
        "lt",
        "jp",
        "mx",
        "my",
        "nl",
        "no",
        "nz",
        "ph",
        "pl",
        "pt",
        "ru",
        "se",
        "sg",
        "th",
        "uk",
        "us",
        "us-old",
        "tw",
        "ve",
        "za",
    }
)
"""The 40 ``ringTone`` country codes of <Dial> (the rows of media/ringback.tsv)."""


def _xml(name: str) -> Mapping[str, str]:
    return {XML_ATTRIBUTE: name}


def xml_attributes(cls: type) -> dict[str, str]:
    """Map each XML attribute name of ``cls`` to its field name."""
    return {
        f.metadata[XML_ATTRIBUTE]: f.name
        for f in dataclasses.fields(cls)
        if XML_ATTRIBUTE in f.metadata
    }


class RcmlError(Exception):
    """A document that cannot run at all, with the Twilio error code to report.

    12100 not well-formed (also any DOCTYPE), 12101 bad XML version, 12102 root is
    not <Response>, 11750 larger than 64 kB, 13201 <Dial> in a whisper document.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NoticeLevel(StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Notice:
    """A problem the document survives, reported to the debugger log.

    ``warning``: something was ignored or defaulted. ``error``: a dial target or a
    verb was dropped because it cannot be carried out as written.
    """

    code: int
    message: str
    level: NoticeLevel = NoticeLevel.WARNING


class Method(StrEnum):
    GET = "GET"
    POST = "POST"


class CallEvent(StrEnum):
    """Call progress events of a dialled leg (``statusCallbackEvent``)."""

    INITIATED = "initiated"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"


class RecordingEvent(StrEnum):
    """Recording status changes (``recordingStatusCallbackEvent``)."""

    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    ABSENT = "absent"


class RecordMode(StrEnum):
    """<Dial record>; ``true``/``false`` are aliases of answer/do-not-record."""

    DO_NOT_RECORD = "do-not-record"
    RECORD_FROM_ANSWER = "record-from-answer"
    RECORD_FROM_RINGING = "record-from-ringing"
    RECORD_FROM_ANSWER_DUAL = "record-from-answer-dual"
    RECORD_FROM_RINGING_DUAL = "record-from-ringing-dual"

    @property
    def records(self) -> bool:
        return self is not RecordMode.DO_NOT_RECORD

    @property
    def from_ringing(self) -> bool:
        return self in (RecordMode.RECORD_FROM_RINGING, RecordMode.RECORD_FROM_RINGING_DUAL)

    @property
    def dual(self) -> bool:
        """Parent leg on channel 1, child leg on channel 2."""
        return self.value.endswith("-dual")


class RecordingTrack(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"


class Trim(StrEnum):
    TRIM_SILENCE = "trim-silence"
    DO_NOT_TRIM = "do-not-trim"


class RejectReason(StrEnum):
    REJECTED = "rejected"
    BUSY = "busy"


class MachineDetection(StrEnum):
    ENABLE = "Enable"
    DETECT_MESSAGE_END = "DetectMessageEnd"


class GatherInput(StrEnum):
    DTMF = "dtmf"
    SPEECH = "speech"


# Verbs other than <Dial>.


@dataclass(frozen=True)
class Say:
    """Speak ``text``; ``loop`` 0 means repeat until the call moves on."""

    text: str = ""
    voice: str | None = field(default=None, metadata=_xml("voice"))
    language: str | None = field(default=None, metadata=_xml("language"))
    loop: int = field(default=1, metadata=_xml("loop"))


@dataclass(frozen=True)
class Play:
    """Play the audio at ``url``, or send ``digits`` as DTMF when it is given."""

    url: str = ""
    loop: int = field(default=1, metadata=_xml("loop"))
    digits: str | None = field(default=None, metadata=_xml("digits"))


@dataclass(frozen=True)
class Pause:
    length: int = field(default=1, metadata=_xml("length"))


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Reject:
    """Refuse an unanswered call: ``busy`` signals busy, ``rejected`` declines."""

    reason: RejectReason = field(default=RejectReason.REJECTED, metadata=_xml("reason"))


@dataclass(frozen=True)
class Redirect:
    url: str
    method: Method = field(default=Method.POST, metadata=_xml("method"))


GatherPrompt: TypeAlias = Say | Play | Pause


@dataclass(frozen=True)
class Gather:
    """Collect digits while playing ``prompts``; ``finish_on_key`` "" means none.

    ``input`` may hold ``speech``, but only DTMF is gathered.
    """

    prompts: tuple[GatherPrompt, ...] = ()
    input: frozenset[GatherInput] = field(
        default=frozenset({GatherInput.DTMF}), metadata=_xml("input")
    )
    action: str | None = field(default=None, metadata=_xml("action"))
    method: Method = field(default=Method.POST, metadata=_xml("method"))
    timeout: int = field(default=5, metadata=_xml("timeout"))
    finish_on_key: str = field(default="#", metadata=_xml("finishOnKey"))
    num_digits: int | None = field(default=None, metadata=_xml("numDigits"))
    action_on_empty_result: bool = field(default=False, metadata=_xml("actionOnEmptyResult"))


# <Dial> and its nouns.


@dataclass(frozen=True)
class Parameter:
    """A <Client><Parameter name value/> pair delivered to the client."""

    name: str
    value: str


@dataclass(frozen=True)
class Number:
    """A phone number to ring, kept exactly as written (normalised elsewhere).

    ``url``/``method`` name a whisper document run on the called party after it
    answers; ``send_digits`` are sent as DTMF (``w`` waits 0.5 s) on answer.
    Machine detection durations are seconds for the timeout, milliseconds for
    the thresholds, as in Twilio; they are kept, but no detection runs yet.
    """

    number: str
    send_digits: str | None = field(default=None, metadata=_xml("sendDigits"))
    url: str | None = field(default=None, metadata=_xml("url"))
    method: Method = field(default=Method.POST, metadata=_xml("method"))
    byoc: str | None = field(default=None, metadata=_xml("byoc"))
    status_callback: str | None = field(default=None, metadata=_xml("statusCallback"))
    status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("statusCallbackMethod")
    )
    status_callback_event: frozenset[CallEvent] = field(
        default=frozenset(), metadata=_xml("statusCallbackEvent")
    )
    machine_detection: MachineDetection | None = field(
        default=None, metadata=_xml("machineDetection")
    )
    machine_detection_timeout: int = field(default=30, metadata=_xml("machineDetectionTimeout"))
    machine_detection_speech_threshold: int = field(
        default=2400, metadata=_xml("machineDetectionSpeechThreshold")
    )
    machine_detection_speech_end_threshold: int = field(
        default=1200, metadata=_xml("machineDetectionSpeechEndThreshold")
    )
    machine_detection_silence_timeout: int = field(
        default=5000, metadata=_xml("machineDetectionSilenceTimeout")
    )
    amd_status_callback: str | None = field(default=None, metadata=_xml("amdStatusCallback"))
    amd_status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("amdStatusCallbackMethod")
    )


@dataclass(frozen=True)
class Client:
    """A registered client identity; every registration of it rings.

    The identity comes from the body text, an <Identity> child or RestComm's
    ``name`` attribute. RestComm's ``alice?X-Foo=1&X-Bar=2`` form puts the query
    pairs in ``sip_headers`` for the outgoing INVITE, filtered as <Sip>'s are.
    """

    identity: str = field(metadata=_xml("name"))
    parameters: tuple[Parameter, ...] = ()
    sip_headers: tuple[tuple[str, str], ...] = ()
    url: str | None = field(default=None, metadata=_xml("url"))
    method: Method = field(default=Method.POST, metadata=_xml("method"))
    status_callback: str | None = field(default=None, metadata=_xml("statusCallback"))
    status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("statusCallbackMethod")
    )
    status_callback_event: frozenset[CallEvent] = field(
        default=frozenset(), metadata=_xml("statusCallbackEvent")
    )


@dataclass(frozen=True)
class Sip:
    """A SIP URI (always with a ``sip:`` or ``sips:`` scheme), kept as written.

    Headers in the URI query and ``;transport=`` are interpreted when the INVITE
    is built. ``username``/``password`` answer a digest challenge from the target.
    """

    uri: str
    username: str | None = field(default=None, metadata=_xml("username"))
    password: str | None = field(default=None, metadata=_xml("password"))
    url: str | None = field(default=None, metadata=_xml("url"))
    method: Method = field(default=Method.POST, metadata=_xml("method"))
    status_callback: str | None = field(default=None, metadata=_xml("statusCallback"))
    status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("statusCallbackMethod")
    )
    status_callback_event: frozenset[CallEvent] = field(
        default=frozenset(), metadata=_xml("statusCallbackEvent")
    )
    machine_detection: MachineDetection | None = field(
        default=None, metadata=_xml("machineDetection")
    )
    machine_detection_timeout: int = field(default=30, metadata=_xml("machineDetectionTimeout"))
    machine_detection_speech_threshold: int = field(
        default=2400, metadata=_xml("machineDetectionSpeechThreshold")
    )
    machine_detection_speech_end_threshold: int = field(
        default=1200, metadata=_xml("machineDetectionSpeechEndThreshold")
    )
    machine_detection_silence_timeout: int = field(
        default=5000, metadata=_xml("machineDetectionSilenceTimeout")
    )
    amd_status_callback: str | None = field(default=None, metadata=_xml("amdStatusCallback"))
    amd_status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("amdStatusCallbackMethod")
    )


Target: TypeAlias = Number | Client | Sip


@dataclass(frozen=True)
class Dial:
    """Ring ``targets`` at once; first answer wins.

    ``timeout`` is clamped to 5..600 s; ``time_limit`` caps the bridged call and
    is capped at 86400 s (24 hours). ``caller_id`` None means the caller's own
    number. ``ring_tone`` is one of :data:`RING_TONES` or None (relay early
    media, else the default country). ``sequential`` and ``events`` are kept as
    written; nothing acts on them yet, and the parser says so (12200).
    """

    targets: tuple[Target, ...] = ()
    action: str | None = field(default=None, metadata=_xml("action"))
    method: Method = field(default=Method.POST, metadata=_xml("method"))
    timeout: int = field(default=30, metadata=_xml("timeout"))
    hangup_on_star: bool = field(default=False, metadata=_xml("hangupOnStar"))
    time_limit: int = field(default=14400, metadata=_xml("timeLimit"))
    caller_id: str | None = field(default=None, metadata=_xml("callerId"))
    record: RecordMode = field(default=RecordMode.DO_NOT_RECORD, metadata=_xml("record"))
    trim: Trim = field(default=Trim.DO_NOT_TRIM, metadata=_xml("trim"))
    recording_status_callback: str | None = field(
        default=None, metadata=_xml("recordingStatusCallback")
    )
    recording_status_callback_method: Method = field(
        default=Method.POST, metadata=_xml("recordingStatusCallbackMethod")
    )
    recording_status_callback_event: frozenset[RecordingEvent] = field(
        default=frozenset({RecordingEvent.COMPLETED}),
        metadata=_xml("recordingStatusCallbackEvent"),
    )
    recording_track: RecordingTrack = field(
        default=RecordingTrack.BOTH, metadata=_xml("recordingTrack")
    )
    answer_on_bridge: bool = field(default=False, metadata=_xml("answerOnBridge"))
    ring_tone: str | None = field(default=None, metadata=_xml("ringTone"))
    refer_url: str | None = field(default=None, metadata=_xml("referUrl"))
    refer_method: Method = field(default=Method.POST, metadata=_xml("referMethod"))
    call_reason: str | None = field(default=None, metadata=_xml("callReason"))
    sequential: bool = field(default=False, metadata=_xml("sequential"))
    events: str | None = field(default=None, metadata=_xml("events"))


Verb: TypeAlias = Say | Play | Pause | Hangup | Reject | Redirect | Gather | Dial


@dataclass(frozen=True)
class Document:
    """A parsed document: the verbs to run in order and what was wrong with it."""

    verbs: tuple[Verb, ...] = ()
    notices: tuple[Notice, ...] = ()

    def codes(self) -> list[int]:
        """The notice codes in order, handy for logs and tests."""
        return [n.code for n in self.notices]


def field_default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None
    raise KeyError(name)
