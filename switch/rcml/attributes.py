"""Reading XML attributes into dataclass fields, and the value converters.

:func:`read_attributes` walks an element's attributes through the field mapping
declared on the target dataclass (see :mod:`switch.rcml.model`). A converter
turns one raw string into a field value, or raises :class:`InvalidValue` with the
Twilio error code to report; the field then keeps its default. An attribute
whose value is empty or blank counts as absent, except for the fields a caller
names in ``keep_empty`` (``finishOnKey=""`` means "no finish key"). A field named
in ``not_executed`` is read and kept, but nothing carries it out yet, so using it
is reported as 12200 (the customer must not believe it took effect).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar

from lxml import etree

from switch.rcml.model import (
    CallEvent,
    MachineDetection,
    Method,
    Notice,
    NoticeLevel,
    RecordMode,
    field_default,
    xml_attributes,
)

SCHEMA_WARNING = 12200

E = TypeVar("E", bound=Enum)

Warn = Callable[[int, str], None]
"""Report a notice about a value that was still accepted, e.g. in part."""

Converter = Callable[[str, Warn], Any]


class InvalidValue(Exception):
    """The value cannot be used; the field keeps its default."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def tag_of(el: etree._Element) -> str:
    """The element's local name; RCML has no namespaces, so any is ignored."""
    return str(etree.QName(el).localname)


class NoticeLog:
    """Collects notices, each prefixed with the source line of its element."""

    def __init__(self) -> None:
        self._notices: list[Notice] = []

    def warning(self, code: int, message: str, el: etree._Element | None = None) -> None:
        self._add(code, message, el, NoticeLevel.WARNING)

    def error(self, code: int, message: str, el: etree._Element | None = None) -> None:
        self._add(code, message, el, NoticeLevel.ERROR)

    def _add(self, code: int, message: str, el: etree._Element | None, level: NoticeLevel) -> None:
        if el is not None and el.sourceline is not None:
            message = f"line {el.sourceline}: {message}"
        self._notices.append(Notice(code, message, level))

    def notices(self) -> tuple[Notice, ...]:
        return tuple(self._notices)


def describe(value: object) -> str:
    """A default value as a customer would write it, for notice messages."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, frozenset):
        return " ".join(sorted(describe(v) for v in value)) or "none"
    return str(value)


def read_attributes(
    el: etree._Element,
    cls: type,
    converters: dict[str, Converter],
    log: NoticeLog,
    *,
    unsupported: Collection[str] = (),
    keep_empty: Collection[str] = (),
    not_executed: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Convert ``el``'s attributes into keyword arguments for ``cls``.

    Unknown attributes, and Twilio attributes listed in ``unsupported``, are
    reported as 12200 and ignored (Twilio's schema warning). ``not_executed``
    maps a field that is parsed but not acted on to what happens instead (or
    ""); a valid value of it other than ``false`` (a flag turned off asks for
    nothing) is kept in the model and reported as 12200 too.
    """
    mapping = xml_attributes(cls)
    tag = tag_of(el)
    inert = not_executed or {}
    values: dict[str, Any] = {}
    for key, raw in el.attrib.items():
        name = etree.QName(key).localname if key.startswith("{") else key
        field_name = mapping.get(name)
        if field_name is None:
            what = "is not supported" if name in unsupported else "is not a known attribute"
            log.warning(SCHEMA_WARNING, f"<{tag}> attribute {name!r} {what}; ignored", el)
            continue
        if not raw.strip() and field_name not in keep_empty:
            continue
        converter = converters.get(field_name, as_text)

        def warn(code: int, reason: str, _name: str = name) -> None:
            log.warning(code, f"<{tag} {_name}>: {reason}", el)

        try:
            values[field_name] = converter(raw, warn)
        except InvalidValue as exc:
            default = describe(field_default(cls, field_name))
            log.warning(exc.code, f"<{tag} {name}={raw!r}>: {exc.reason}; using {default}", el)
            continue
        instead = inert.get(field_name)
        if instead is not None and values[field_name] is not False:
            message = f"<{tag}> attribute {name!r} is not supported; ignored"
            log.warning(SCHEMA_WARNING, f"{message}, {instead}" if instead else message, el)
    return values


def as_text(raw: str, warn: Warn) -> str:
    """Any string, surrounding whitespace removed (URLs, voices, SIDs...)."""
    return raw.strip()


def as_method(code: int) -> Converter:
    """``GET`` or ``POST`` in any letter case."""

    def convert(raw: str, warn: Warn) -> Method:
        try:
            return Method(raw.strip().upper())
        except ValueError:
            raise InvalidValue(code, "method must be GET or POST") from None

    return convert


def as_bool(code: int) -> Converter:
    """``true`` or ``false`` in any letter case."""

    def convert(raw: str, warn: Warn) -> bool:
        value = raw.strip().lower()
        if value not in ("true", "false"):
            raise InvalidValue(code, "must be true or false")
        return value == "true"

    return convert


_DIGITS = re.compile(r"[0-9]+")


def as_int(
    code: int, *, minimum: int, maximum: int | None = None, clamp: bool = False
) -> Converter:
    """A decimal integer of ASCII digits.

    With ``clamp``, a value of at least 1 outside ``minimum..maximum`` is moved to
    the nearest bound, as Twilio does for <Dial timeout>; otherwise it is invalid.
    """

    def convert(raw: str, warn: Warn) -> int:
        text = raw.strip()
        if not _DIGITS.fullmatch(text):
            raise InvalidValue(code, "not a whole number")
        value = int(text)
        if clamp and value >= 1:
            value = max(value, minimum)
            return value if maximum is None else min(value, maximum)
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"{minimum}..{maximum}"
            raise InvalidValue(code, f"must be {bounds}")
        return value

    return convert


def as_choice(
    enum: type[E], code: int, aliases: dict[str, E] | None = None, *, fold: bool = True
) -> Converter:
    """One member of ``enum`` by value (letter case ignored unless ``fold`` is off)."""
    table: dict[str, E] = {(m.value.lower() if fold else m.value): m for m in enum}
    table.update(aliases or {})
    allowed = ", ".join(m.value for m in enum)

    def convert(raw: str, warn: Warn) -> E:
        key = raw.strip().lower() if fold else raw.strip()
        member = table.get(key)
        if member is None:
            raise InvalidValue(code, f"must be one of {allowed}")
        return member

    return convert


_SEPARATORS = re.compile(r"[\s,]+")


def as_event_set(enum: type[E], code: int) -> Converter:
    """A set of ``enum`` values separated by spaces (Twilio) or commas (RestComm).

    Unknown names are reported and skipped; when none is left the default holds.
    """
    table = {m.value: m for m in enum}

    def convert(raw: str, warn: Warn) -> frozenset[E]:
        found: set[E] = set()
        for word in _SEPARATORS.split(raw.strip().lower()):
            if word in table:
                found.add(table[word])
            elif word:
                warn(code, f"unknown event {word!r} ignored")
        if not found:
            raise InvalidValue(code, "no known event")
        return frozenset(found)

    return convert


RECORD_ALIASES = {"true": RecordMode.RECORD_FROM_ANSWER, "false": RecordMode.DO_NOT_RECORD}

MACHINE_DETECTION = as_choice(MachineDetection, SCHEMA_WARNING)

CALL_EVENTS = as_event_set(CallEvent, SCHEMA_WARNING)

_DTMF = re.compile(r"[0-9*#ABCDw]+")


def as_dtmf(code: int) -> Converter:
    """DTMF to send: ``0-9 * # A-D``, and ``w`` for a 0.5 s wait."""

    def convert(raw: str, warn: Warn) -> str:
        text = raw.strip()
        if not _DTMF.fullmatch(text):
            raise InvalidValue(code, "digits must be 0-9, *, #, A-D or w")
        return text

    return convert


_CALLER_ID = re.compile(r"client:[A-Za-z0-9_.+@-]+|[A-Za-z0-9+\-_.() ]+")


def as_caller_id(raw: str, warn: Warn) -> str:
    """A phone number, ``client:name``, or for <Sip> a token of ``[A-Za-z0-9+-_.]``."""
    text = raw.strip()
    if not _CALLER_ID.fullmatch(text):
        raise InvalidValue(13214, "callerId must be a number, client:name or an [A-Za-z0-9+-_.] id")
    return text


def as_ring_tone(codes: Iterable[str]) -> Converter:
    known = frozenset(codes)

    def convert(raw: str, warn: Warn) -> str:
        code = raw.strip().lower()
        if code not in known:
            raise InvalidValue(SCHEMA_WARNING, "not a known ringTone country code")
        return code

    return convert


def as_bounded_text(limit: int) -> Converter:
    """Text cut to ``limit`` characters, with a notice when it was longer."""

    def convert(raw: str, warn: Warn) -> str:
        text = raw.strip()
        if len(text) > limit:
            warn(SCHEMA_WARNING, f"longer than {limit} characters; truncated")
            text = text[:limit]
        return text

    return convert
