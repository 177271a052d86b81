"""RCML/TwiML document parser: bytes in, a validated :class:`Document` out. No I/O.

The XML parser never loads a DTD, resolves an entity or touches the network, and
any DOCTYPE is refused, so an entity-expansion ("billion laughs") document fails
at once with 12100. Problems a document survives become :class:`Notice` entries
with Twilio's codes: 12200 for unknown or unsupported verbs, attributes and bad
nesting, 13xxx for bad <Dial> values. Only documents that cannot run at all raise
:class:`RcmlError`.

A whisper document, run on a called party after it answers and before the
bridge (the ``url`` of a <Number>, <Client> or <Sip>), may only hold <Say>,
<Play>, <Pause>, <Gather>, <Hangup> and <Redirect>; a <Dial> there is 13201.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lxml import etree

from switch.rcml.attributes import (
    SCHEMA_WARNING,
    Converter,
    InvalidValue,
    NoticeLog,
    Warn,
    as_bool,
    as_choice,
    as_dtmf,
    as_event_set,
    as_int,
    as_method,
    read_attributes,
    tag_of,
)
from switch.rcml.dial import parse_dial
from switch.rcml.model import (
    MAX_DOCUMENT_BYTES,
    Document,
    Gather,
    GatherInput,
    GatherPrompt,
    Hangup,
    Pause,
    Play,
    RcmlError,
    Redirect,
    Reject,
    RejectReason,
    Say,
    Verb,
)

NOT_WELL_FORMED = 12100
BAD_XML_VERSION = 12101
BAD_ROOT = 12102
DOCUMENT_TOO_LARGE = 11750
DIAL_IN_WHISPER = 13201

UNSUPPORTED_VERBS = frozenset(
    {
        "Connect",
        "Echo",
        "Enqueue",
        "Leave",
        "Message",
        "Pay",
        "Prompt",
        "Queue",
        "Record",
        "Refer",
        "Sms",
        "Start",
        "Stop",
        "Stream",
        "Siprec",
        "Transcription",
    }
)
"""Twilio verbs dialswitch does not run yet: reported as 12200 and skipped."""

WHISPER_VERBS = frozenset({"Say", "Play", "Pause", "Gather", "Hangup", "Redirect"})

_SAY_CONVERTERS: dict[str, Converter] = {"loop": as_int(SCHEMA_WARNING, minimum=0)}
_PLAY_CONVERTERS: dict[str, Converter] = {
    "loop": as_int(SCHEMA_WARNING, minimum=0),
    "digits": as_dtmf(SCHEMA_WARNING),
}
_PAUSE_CONVERTERS: dict[str, Converter] = {"length": as_int(SCHEMA_WARNING, minimum=0)}
_REJECT_CONVERTERS: dict[str, Converter] = {
    "reason": as_choice(RejectReason, SCHEMA_WARNING),
}
_REDIRECT_CONVERTERS: dict[str, Converter] = {"method": as_method(SCHEMA_WARNING)}

_FINISH_KEY = re.compile(r"[0-9*#]?")


def _finish_on_key(raw: str, warn: Warn) -> str:
    key = raw.strip()
    if not _FINISH_KEY.fullmatch(key):
        raise InvalidValue(SCHEMA_WARNING, "must be one of 0-9, * or #, or empty")
    return key


_input_set = as_event_set(GatherInput, SCHEMA_WARNING)


def _gather_input(raw: str, warn: Warn) -> frozenset[GatherInput]:
    """``dtmf`` and/or ``speech``; speech is kept but reported, as nothing recognises it."""
    kinds: frozenset[GatherInput] = _input_set(raw, warn)
    if GatherInput.SPEECH in kinds:
        warn(SCHEMA_WARNING, "speech is not supported; ignored, only DTMF digits are gathered")
    return kinds


_GATHER_CONVERTERS: dict[str, Converter] = {
    "input": _gather_input,
    "method": as_method(SCHEMA_WARNING),
    "timeout": as_int(SCHEMA_WARNING, minimum=1),
    "finish_on_key": _finish_on_key,
    "num_digits": as_int(SCHEMA_WARNING, minimum=1),
    "action_on_empty_result": as_bool(SCHEMA_WARNING),
}
_GATHER_UNSUPPORTED = frozenset(
    {
        "speechTimeout",
        "maxSpeechTime",
        "profanityFilter",
        "partialResultCallback",
        "partialResultCallbackMethod",
        "language",
        "hints",
        "bargeIn",
        "debug",
        "speechModel",
        "enhanced",
    }
)

CONVERTERS: dict[type, dict[str, Converter]] = {
    Say: _SAY_CONVERTERS,
    Play: _PLAY_CONVERTERS,
    Pause: _PAUSE_CONVERTERS,
    Reject: _REJECT_CONVERTERS,
    Redirect: _REDIRECT_CONVERTERS,
    Gather: _GATHER_CONVERTERS,
}
"""Converters by class; fields without one are plain text (tests check coverage)."""


def parse(document: bytes | str, *, whisper: bool = False) -> Document:
    """Parse an RCML document.

    Raises :class:`RcmlError` with 11750 (over 64 kB), 12100 (not well-formed,
    empty, or with a DOCTYPE), 12101 (XML version other than 1.0), 12102 (root
    is not <Response>) and, with ``whisper``, 13201 (<Dial> present).
    """
    root = _load(document)
    log = NoticeLog()
    for key in root.attrib:
        log.warning(SCHEMA_WARNING, f"<Response> attribute {key!r} is not known; ignored", root)
    if _text_outside_children(root):
        log.warning(SCHEMA_WARNING, "text directly inside <Response> ignored", root)
    verbs: list[Verb] = []
    for el in root:
        verb = _parse_verb(el, log, whisper=whisper)
        if verb is not None:
            verbs.append(verb)
    return Document(verbs=tuple(verbs), notices=log.notices())


def parse_whisper(document: bytes | str) -> Document:
    """Parse a document to run on a called party before the bridge."""
    return parse(document, whisper=True)


def _load(document: bytes | str) -> etree._Element:
    data = document.encode("utf-8") if isinstance(document, str) else document
    if len(data) > MAX_DOCUMENT_BYTES:
        raise RcmlError(
            DOCUMENT_TOO_LARGE, f"document is {len(data)} bytes; the limit is {MAX_DOCUMENT_BYTES}"
        )
    # A str was encoded above, whatever its XML declaration says.
    parser = xml_parser(encoding="utf-8" if isinstance(document, str) else None)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise RcmlError(NOT_WELL_FORMED, f"document is not well-formed XML: {exc}") from None
    if root is None:
        raise RcmlError(NOT_WELL_FORMED, "document is empty")
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise RcmlError(NOT_WELL_FORMED, "a DOCTYPE is not allowed in RCML")
    if info.xml_version != "1.0":
        raise RcmlError(BAD_XML_VERSION, f"XML version {info.xml_version!r} is not 1.0")
    if tag_of(root) != "Response":
        raise RcmlError(BAD_ROOT, f"root element is <{tag_of(root)}>, not <Response>")
    return root


def xml_parser(encoding: str | None = None) -> etree.XMLParser:
    """An lxml parser that loads no DTD, resolves no entity, never uses the network.

    ``huge_tree`` stays off so libxml2 keeps its depth and size limits. A new parser
    per document: lxml parsers must not be shared between threads.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
        encoding=encoding,
    )


def _text_outside_children(el: etree._Element) -> bool:
    return any(t.strip() for t in [el.text or "", *(child.tail or "" for child in el)])


def _parse_verb(el: etree._Element, log: NoticeLog, *, whisper: bool) -> Verb | None:
    tag = tag_of(el)
    if whisper and tag == "Dial":
        raise RcmlError(
            DIAL_IN_WHISPER, "<Dial> is not allowed in a document run on a dialled party"
        )
    if whisper and tag not in WHISPER_VERBS and (tag in _VERBS or tag in UNSUPPORTED_VERBS):
        log.warning(SCHEMA_WARNING, f"<{tag}> is not allowed in a whisper document; ignored", el)
        return None
    if tag == "Dial":
        return parse_dial(el, log)
    builder = _VERBS.get(tag)
    if builder is not None:
        return builder(el, log)
    if tag in UNSUPPORTED_VERBS:
        log.warning(SCHEMA_WARNING, f"<{tag}> is not supported; ignored", el)
    else:
        log.warning(SCHEMA_WARNING, f"<{tag}> is not a known verb; ignored", el)
    return None


def _no_children(el: etree._Element, log: NoticeLog) -> None:
    for child in el:
        log.warning(SCHEMA_WARNING, f"<{tag_of(child)}> inside <{tag_of(el)}> ignored", child)


def _no_content(el: etree._Element, log: NoticeLog) -> None:
    _no_children(el, log)
    if _text_outside_children(el):
        log.warning(SCHEMA_WARNING, f"text inside <{tag_of(el)}> ignored", el)


def _body(el: etree._Element) -> str:
    return (el.text or "").strip()


def _parse_say(el: etree._Element, log: NoticeLog) -> Say:
    """Speak the text; SSML elements are not rendered but their text is kept."""
    values = read_attributes(el, Say, _SAY_CONVERTERS, log)
    if len(el):
        log.warning(SCHEMA_WARNING, "<Say> SSML is not supported; its text is spoken", el)
    text = " ".join("".join(el.itertext()).split())
    return Say(text=text, **values)


def _parse_play(el: etree._Element, log: NoticeLog) -> Play | None:
    values = read_attributes(el, Play, _PLAY_CONVERTERS, log)
    _no_children(el, log)
    url = _body(el)
    if not url and not values.get("digits"):
        log.error(SCHEMA_WARNING, "<Play> has neither a URL nor digits; dropped", el)
        return None
    return Play(url=url, **values)


def _parse_pause(el: etree._Element, log: NoticeLog) -> Pause:
    values = read_attributes(el, Pause, _PAUSE_CONVERTERS, log)
    _no_content(el, log)
    return Pause(**values)


def _parse_hangup(el: etree._Element, log: NoticeLog) -> Hangup:
    read_attributes(el, Hangup, {}, log)
    _no_content(el, log)
    return Hangup()


def _parse_reject(el: etree._Element, log: NoticeLog) -> Reject:
    values = read_attributes(el, Reject, _REJECT_CONVERTERS, log)
    _no_content(el, log)
    return Reject(**values)


def _parse_redirect(el: etree._Element, log: NoticeLog) -> Redirect | None:
    values = read_attributes(el, Redirect, _REDIRECT_CONVERTERS, log)
    _no_children(el, log)
    url = _body(el)
    if not url:
        log.error(SCHEMA_WARNING, "<Redirect> has no URL; dropped", el)
        return None
    return Redirect(url=url, **values)


_PROMPTS: dict[str, Callable[[etree._Element, NoticeLog], GatherPrompt | None]] = {
    "Say": _parse_say,
    "Play": _parse_play,
    "Pause": _parse_pause,
}


def _parse_gather(el: etree._Element, log: NoticeLog) -> Gather:
    values = read_attributes(
        el,
        Gather,
        _GATHER_CONVERTERS,
        log,
        unsupported=_GATHER_UNSUPPORTED,
        keep_empty=("finish_on_key",),
    )
    prompts: list[GatherPrompt] = []
    for child in el:
        builder = _PROMPTS.get(tag_of(child))
        if builder is None:
            log.warning(SCHEMA_WARNING, f"<{tag_of(child)}> is not allowed in <Gather>", child)
            continue
        prompt = builder(child, log)
        if prompt is not None:
            prompts.append(prompt)
    if _text_outside_children(el):
        log.warning(SCHEMA_WARNING, "text inside <Gather> ignored", el)
    return Gather(prompts=tuple(prompts), **values)


_VERBS: dict[str, Callable[[etree._Element, NoticeLog], Verb | None]] = {
    "Say": _parse_say,
    "Play": _parse_play,
    "Pause": _parse_pause,
    "Hangup": _parse_hangup,
    "Reject": _parse_reject,
    "Redirect": _parse_redirect,
    "Gather": _parse_gather,
}
