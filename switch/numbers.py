"""Telephone number normalisation to E.164.

Every number dialswitch routes, logs or sends to a webhook (`From`, `To`, a `<Number>`
body, a SIP Request-URI user) is normalised here to E.164 (`+14155551212`), using the
`phonenumbers` library for the per-country rules (national prefixes, international
dialling prefixes, lengths).

Choices, where Twilio's pages are silent:

* A number must be *possible* (the right length for its country), not *valid* (in an
  assigned range). Twilio's magic test numbers (`+15005550006`) and fictional 555
  numbers must route, and numbering plans change faster than the library's metadata.
* Numbers that are only dialable locally (`555-1212` in the US) are rejected: E.164
  cannot express them and guessing an area code would dial a stranger.
* Only digits, one leading `+` and visual separators (spaces, `-`, `.`, `(`, `)`, `/`)
  are accepted. Vanity letters (`1-800-FLOWERS`) and extensions (`x123`) are rejected:
  in a `<Dial>` body they are far more likely a mistake than an intent, and an
  extension has no place in a Request-URI.
* `00` is accepted as an international prefix in every region, besides the region's
  own (`011` in the US, `0011` in Australia), because it is what most of the world
  and most SIP trunks use.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import phonenumbers
from phonenumbers import (
    CountryCodeSource,
    NumberParseException,
    PhoneNumber,
    PhoneNumberFormat,
    ValidationResult,
)

__all__ = ["InvalidNumber", "caller_id", "request_uri_user_to_e164", "to_e164"]

# Visual separators people and RFC 3966 (section 5.1.1, visual-separator) put in
# numbers, plus the Unicode dashes and non-breaking spaces that copy-paste brings.
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0\u2010-\u2015\u2212]")
_DIALLABLE = re.compile(r"\+?[0-9]+")
# A From user part needs no escaping with these (RFC 3261 section 25.1, unreserved).
_FROM_USER = re.compile(r"[A-Za-z0-9._-]+")

_REJECTIONS = {
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "only dialable locally",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length",
}


class InvalidNumber(ValueError):
    """The text is not a telephone number dialswitch can express in E.164.

    A `ValueError` so that callers validating input (RCML attributes, REST
    parameters) can treat it like any other bad value; `number` keeps the input.
    """

    def __init__(self, number: str, reason: str) -> None:
        super().__init__(f"invalid number {number!r}: {reason}")
        self.number = number
        self.reason = reason


def to_e164(text: str, default_region: str = "US") -> str:
    """Normalise a human-written number to E.164.

    Accepts E.164 (`+14155551212`), national forms of `default_region`
    (`(415) 555-1212`, `415-555-1212`, `1 415 555 1212`), the region's international
    prefix (`011 44 20 7946 0958` in the US) and `00` as an international prefix.
    `default_region` is an ISO 3166 alpha-2 code; an unknown one is a configuration
    error and raises a plain `ValueError`.

    Raises `InvalidNumber` when the text is not a possible number (see the module
    docstring for what "possible" means here).
    """
    region = _check_region(default_region)
    number = _parse(text, _strip_separators(text), region)
    return _format_possible(text, number)


def request_uri_user_to_e164(user: str, default_region: str = "US") -> str:
    """Normalise the user part of a SIP Request-URI (or To/From URI) to E.164.

    Trunks send the dialled number in many shapes: `+14155551212`, `%2B14155551212`
    (an escaped `+`, RFC 3261 section 19.1.2), `14155551212`, `4155551212`, or with
    telephone-subscriber parameters (RFC 3966, RFC 4694) such as
    `+14155551212;npdi;rn=+14155550000`. Parameters are dropped: the number
    portability routing number tells the carrier where to deliver, not who was called.

    Digits without a `+` are first read as a national number of `default_region`;
    if that is not a possible number they are read as E.164 without its `+`, which is
    how many carriers send international numbers (`447911123456`).

    Raises `InvalidNumber` when neither reading is a possible number.
    """
    region = _check_region(default_region)
    number_part = unquote(user).split(";", 1)[0]
    digits = _strip_separators(number_part)
    try:
        return _format_possible(user, _parse(user, digits, region))
    except InvalidNumber as national_error:
        if digits.startswith("+") or not _DIALLABLE.fullmatch(digits):
            raise
        try:
            number = phonenumbers.parse("+" + digits, None)
        except NumberParseException:
            raise national_error from None
        try:
            return _format_possible(user, number)
        except InvalidNumber:
            raise national_error from None


def caller_id(value: str, region: str) -> str | None:
    """Normalise a `callerId` attribute value for the From header of a dialled leg.

    `client:name` is kept as written; a phone number in any form `to_e164` reads
    becomes E.164; other text of `[A-Za-z0-9._-]` (a SIP user such as `100` or
    `front-desk`) is kept. Surrounding whitespace is ignored. Anything else (inner
    spaces, quotes, `@`, `<`, nothing at all, `client:` without a plain name) is
    None: it cannot stand in a From URI's user part unescaped, so the caller keeps
    its default and reports 13214 (Twilio's invalid callerId). An unknown `region`
    raises `ValueError`, as in `to_e164`.
    """
    region = _check_region(region)
    text = value.strip()
    if text.startswith("client:"):
        return text if _FROM_USER.fullmatch(text.removeprefix("client:")) else None
    try:
        return to_e164(text, region)
    except InvalidNumber:
        pass
    return text if _FROM_USER.fullmatch(text) else None


def _check_region(region: str) -> str:
    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown default region {region!r}")
    return code


def _strip_separators(text: str) -> str:
    return _SEPARATORS.sub("", text)


def _parse(original: str, digits: str, region: str) -> PhoneNumber:
    """Parse separator-free `digits`, reading `00` as an international prefix."""
    if not digits:
        raise InvalidNumber(original, "empty")
    if not _DIALLABLE.fullmatch(digits):
        raise InvalidNumber(original, "only digits, a leading '+' and separators are allowed")
    try:
        number = phonenumbers.parse(digits, region, keep_raw_input=True)
        source = number.country_code_source
        if digits.startswith("00") and source != CountryCodeSource.FROM_NUMBER_WITH_IDD:
            number = phonenumbers.parse("+" + digits[2:], None)
    except NumberParseException as error:
        raise InvalidNumber(original, _parse_error_reason(error)) from None
    return number


def _parse_error_reason(error: NumberParseException) -> str:
    if error.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        return "unknown country code"
    if error.error_type in (
        NumberParseException.TOO_SHORT_NSN,
        NumberParseException.TOO_SHORT_AFTER_IDD,
    ):
        return "too short"
    if error.error_type == NumberParseException.TOO_LONG:
        return "too long"
    return "not a number"


def _format_possible(original: str, number: PhoneNumber) -> str:
    result = phonenumbers.is_possible_number_with_reason(number)
    if result != ValidationResult.IS_POSSIBLE:
        raise InvalidNumber(original, _REJECTIONS.get(result, "not a possible number"))
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
