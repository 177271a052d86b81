"""The parameters of a REST call creation (POST ``Calls.json``), checked.

Pure: the form in, a ``CallRequest`` or a ``RequestError`` naming the
parameter out, with Twilio's codes:

- ``To`` (21201 when missing, 21211 when invalid): an E.164 number (any form
  phonenumbers reads) sent through the trunks, ``client:alice`` ringing every
  registration of a configured client, or a ``sip:``/``sips:`` URI (its
  ``?X-...`` headers go on the INVITE, ``SipAuthUsername``/``SipAuthPassword``
  answer its challenge).
- ``From`` (21213 when missing, 21210 when not allowed): one of our numbers;
  towards a client also ``client:x``; towards a SIP URI any caller ID of
  ``[A-Za-z0-9+-_.]`` (SEMANTICS.md, ``callerId``).
- ``Url`` (+``Method``) or ``Twiml``: exactly the document to run once
  answered; neither is 21205, a bad URL 21205, a bad method 21209.
- ``FallbackUrl``/``FallbackMethod``, ``StatusCallback`` (21609),
  ``StatusCallbackEvent`` (21626), ``StatusCallbackMethod`` (21209),
  ``Timeout`` (default 60, clamped to 1..600), ``TimeLimit`` (default and
  maximum 24 hours), ``SendDigits`` (``0-9*#ABCDw``), ``Record`` with
  ``RecordingChannels``,
  ``RecordingStatusCallback``, ``RecordingStatusCallbackEvent``,
  ``RecordingStatusCallbackMethod``, ``RecordingTrack``, ``Trim``, ``Byoc``
  (a trunk by name), ``CallReason`` (at most 50 characters, sent as
  ``X-Call-Reason``).
- Parameters Twilio knows that nothing here carries out (machine detection)
  are listed in ``ignored`` so the call's notifications can say so.

Parameters without a code of their own are 20001 (Twilio's invalid parameter).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from switch.numbers import InvalidNumber, to_e164
from switch.sipuri import InvalidSipUri, parse_dial_uri

ERROR_INVALID_PARAMETER = 20001
ERROR_NO_TO = 21201
ERROR_URL = 21205
ERROR_METHOD = 21209
ERROR_FROM_NOT_ALLOWED = 21210
ERROR_INVALID_TO = 21211
ERROR_NO_FROM = 21213
ERROR_STATUS_CALLBACK = 21609
ERROR_STATUS_CALLBACK_EVENT = 21626

DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 600
MAX_TIME_LIMIT = 86_400  # Twilio's 24 hours
METHODS = frozenset({"GET", "POST"})
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
RECORDING_EVENTS = frozenset({"in-progress", "completed", "absent"})
MAX_CALL_REASON = 50
_NOT_CARRIED_OUT = ("MachineDetection", "AsyncAmd")
_DIGITS = re.compile(r"[0-9*#ABCDw]+\Z")
_CALLER_ID = re.compile(r"[A-Za-z0-9+\-_.]+\Z")
_IDENTITY = re.compile(r"[A-Za-z0-9._\-]+\Z")


class RequestError(Exception):
    """A parameter the API refuses: Twilio's code and a message naming it."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CallRequest:
    to: str  # as Twilio reports it: E.164, client:alice or the SIP URI
    to_kind: str  # "number", "client" or "sip"
    from_: str
    url: str | None
    method: str
    twiml: str | None
    fallback_url: str | None = None
    fallback_method: str = "POST"
    status_callback: str | None = None
    status_callback_events: frozenset[str] = frozenset()
    status_callback_method: str = "POST"
    timeout: int = DEFAULT_TIMEOUT
    time_limit: int = MAX_TIME_LIMIT
    send_digits: str = ""
    sip_headers: tuple[tuple[str, str], ...] = ()
    sip_auth: tuple[str, str] | None = None
    sip_secure: bool = False  # a sip: To with Twilio's ;secure=true: TLS and SRTP
    record: bool = False
    recording_channels: str = "dual"
    recording_status_callback: str | None = None
    recording_status_callback_events: frozenset[str] = frozenset({"completed"})
    recording_status_callback_method: str = "POST"
    recording_track: str = "both"
    trim: bool = False
    byoc: str | None = None
    call_reason: str | None = None
    ignored: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        """The client identity of a ``client:`` To."""
        return self.to.removeprefix("client:")


def parse_call_request(
    form: Mapping[str, str],
    lists: Mapping[str, Sequence[str]],
    *,
    numbers: Collection[str],
    clients: Collection[str],
    trunks: Collection[str] = (),
    region: str = "US",
) -> CallRequest:
    """Check a creation form; ``lists`` holds the repeatable parameters' values."""
    to_text = form.get("To", "").strip()
    if not to_text:
        raise RequestError(ERROR_NO_TO, "Required parameter To is missing")
    to, kind, headers, secure = _to(to_text, clients, region)
    from_text = form.get("From", "").strip()
    if not from_text:
        raise RequestError(ERROR_NO_FROM, "Required parameter From is missing")
    from_ = _from(from_text, kind, numbers, clients, region)
    twiml = form.get("Twiml") or None
    url = url_param(form, "Url", ERROR_URL)
    if url is None and twiml is None:
        raise RequestError(ERROR_URL, "Either Url or Twiml is required")
    if url is not None and twiml is not None:
        raise RequestError(ERROR_URL, "Url and Twiml cannot both be given")
    sip_auth = None
    user, password = form.get("SipAuthUsername", ""), form.get("SipAuthPassword", "")
    if user or password:
        if kind != "sip" or not (user and password):
            raise RequestError(
                ERROR_INVALID_PARAMETER,
                "SipAuthUsername and SipAuthPassword go together, with a sip: To",
            )
        sip_auth = (user, password)
    byoc = form.get("Byoc", "").strip() or None
    if byoc is not None and (kind != "number" or byoc not in trunks):
        raise RequestError(ERROR_INVALID_PARAMETER, f"Byoc {byoc!r} names no trunk for this To")
    reason = form.get("CallReason", "").strip() or None
    if reason is not None and len(reason) > MAX_CALL_REASON:
        raise RequestError(
            ERROR_INVALID_PARAMETER, f"CallReason is over {MAX_CALL_REASON} characters"
        )
    if reason is not None:
        headers = (*headers, ("X-Call-Reason", reason))
    digits = form.get("SendDigits", "")
    if digits and not _DIGITS.match(digits):
        raise RequestError(ERROR_INVALID_PARAMETER, f"SendDigits {digits!r} is not 0-9*#ABCDw")
    return CallRequest(
        to=to,
        to_kind=kind,
        from_=from_,
        url=url,
        method=method_param(form, "Method"),
        twiml=twiml,
        fallback_url=url_param(form, "FallbackUrl", ERROR_URL),
        fallback_method=method_param(form, "FallbackMethod"),
        status_callback=url_param(form, "StatusCallback", ERROR_STATUS_CALLBACK),
        status_callback_events=_events(
            lists.get("StatusCallbackEvent", ()), CALL_EVENTS, "StatusCallbackEvent"
        ),
        status_callback_method=method_param(form, "StatusCallbackMethod"),
        timeout=_seconds(form, "Timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT),
        time_limit=_seconds(form, "TimeLimit", MAX_TIME_LIMIT, MAX_TIME_LIMIT),
        send_digits=digits,
        sip_headers=headers,
        sip_auth=sip_auth,
        sip_secure=secure,
        record=_boolean(form, "Record"),
        recording_channels=_choice(form, "RecordingChannels", ("dual", "mono")),
        recording_status_callback=url_param(form, "RecordingStatusCallback", ERROR_URL),
        recording_status_callback_events=_events(
            lists.get("RecordingStatusCallbackEvent", ()),
            RECORDING_EVENTS,
            "RecordingStatusCallbackEvent",
        )
        or frozenset({"completed"}),
        recording_status_callback_method=method_param(form, "RecordingStatusCallbackMethod"),
        recording_track=_choice(form, "RecordingTrack", ("both", "inbound", "outbound")),
        trim=_choice(form, "Trim", ("do-not-trim", "trim-silence")) == "trim-silence",
        byoc=byoc,
        call_reason=reason,
        ignored=tuple(sorted(name for name in form if name.startswith(_NOT_CARRIED_OUT))),
    )


def _to(
    text: str, clients: Collection[str], region: str
) -> tuple[str, str, tuple[tuple[str, str], ...], bool]:
    """(To, kind, SIP headers from the URI, ;secure=true)."""
    if text.startswith("client:"):
        identity = text.removeprefix("client:")
        if identity not in clients:
            raise RequestError(ERROR_INVALID_TO, f"Invalid 'To': no client {identity!r}")
        return text, "client", (), False
    if text.lower().startswith(("sip:", "sips:")):
        try:
            uri = parse_dial_uri(text)
        except InvalidSipUri as error:
            raise RequestError(ERROR_INVALID_TO, f"Invalid 'To': {error}") from None
        return uri.uri, "sip", uri.headers, uri.secure
    try:
        return to_e164(text, region), "number", (), False
    except InvalidNumber as error:
        raise RequestError(ERROR_INVALID_TO, f"Invalid 'To' Phone Number: {error}") from None


def _from(
    text: str, kind: str, numbers: Collection[str], clients: Collection[str], region: str
) -> str:
    if text.startswith("client:"):
        if kind == "client" and _IDENTITY.match(text.removeprefix("client:")):
            return text
        raise RequestError(
            ERROR_FROM_NOT_ALLOWED, f"'From' {text} is only allowed towards a client"
        )
    try:
        number = to_e164(text, region)
    except InvalidNumber:
        number = None
    if number is not None and number in numbers:
        return number
    if kind == "sip" and _CALLER_ID.match(text):
        return text
    raise RequestError(ERROR_FROM_NOT_ALLOWED, f"'From' {text} is not one of this switch's numbers")


def url_param(form: Mapping[str, str], name: str, code: int) -> str | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(code, f"{name} {text!r} is not a valid http(s) URL")
    return text


def method_param(form: Mapping[str, str], name: str) -> str:
    text = form.get(name, "").strip().upper() or "POST"
    if text not in METHODS:
        raise RequestError(ERROR_METHOD, f"{name} must be GET or POST, not {text!r}")
    return text


def _events(values: Sequence[str], allowed: frozenset[str], name: str) -> frozenset[str]:
    events = {e.strip().lower() for v in values for e in v.replace(",", " ").split()}
    unknown = events - allowed
    if unknown:
        code = ERROR_STATUS_CALLBACK_EVENT
        raise RequestError(
            code, f"{name} {', '.join(sorted(unknown))} is not one of {sorted(allowed)}"
        )
    return frozenset(events)


def _seconds(form: Mapping[str, str], name: str, default: int, high: int) -> int:
    text = form.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise RequestError(ERROR_INVALID_PARAMETER, f"{name} must be a whole number of seconds")
    return min(int(text), high)


def _boolean(form: Mapping[str, str], name: str) -> bool:
    text = form.get(name, "").strip().lower()
    if text in ("", "false"):
        return False
    if text == "true":
        return True
    raise RequestError(ERROR_INVALID_PARAMETER, f"{name} must be true or false")


def _choice(form: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    text = form.get(name, "").strip().lower() or allowed[0]
    if text not in allowed:
        raise RequestError(ERROR_INVALID_PARAMETER, f"{name} must be one of {', '.join(allowed)}")
    return text
