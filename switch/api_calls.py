"""Twilio's Calls resource: create, fetch, list, update and delete calls.

- ``POST Calls.json``: start a call (switch/call_request.py checks the form,
  switch/outbound_call.py runs it); 201 with the call, ``queued``.
- ``GET Calls.json``: every call, live ones (from the registry) first, then
  ended ones (from the store), newest first; filters ``To``, ``From``,
  ``Status``, ``ParentCallSid``, ``StartTime`` and its ``<``/``>`` forms.
- ``GET Calls/{CallSid}.json``: one call, live or ended.
- ``POST Calls/{CallSid}.json``: ``Url``(+``Method``) or ``Twiml`` redirect a
  live call, ``Status=completed`` hangs it up, ``Status=canceled`` withdraws it
  while queued or ringing; a call that has ended is 21220.
- ``DELETE Calls/{CallSid}.json``: 204, an ended call's record gone; a live
  call cannot be deleted (409, 20409).
- ``GET Calls/{CallSid}/Notifications.json``: the errors and warnings the call
  hit (each with its Twilio code and the URL involved), oldest first.

Dates are RFC 2822, as Twilio's. Twiml given to create or update is parsed
here, so a broken document is a 400 naming the parameter, not a failed call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import phonenumbers
from aiohttp import web

from switch.call.capacity import ERROR_CAPACITY
from switch.call.commands import CancelCall, Command, HangUpCall, Redirect, RunTwiml
from switch.call.pacing import Pacer
from switch.call.registry import CallView, Refused
from switch.call.status import CallStatus
from switch.call_request import (
    ERROR_INVALID_PARAMETER,
    ERROR_URL,
    RequestError,
    method_param,
    parse_call_request,
    url_param,
)
from switch.outbound_call import ApiCall
from switch.rcml import model as rcml
from switch.rcml.parser import parse
from switch.recordings import API_VERSION
from switch.rest import ACCOUNT_PATH, AccountGuard, PageRequest, RestError, page_body
from switch.store import LegRecord, Notification
from switch.timestamps import rfc2822

log = logging.getLogger(__name__)

ERROR_NOT_FOUND = 20404
ERROR_CONFLICT = 20409
_UPDATE_STATUSES: dict[str, Command] = {"completed": HangUpCall(), "canceled": CancelCall()}

if TYPE_CHECKING:
    from switch.services import Services


def call_json(view: CallView, account_sid: str) -> dict[str, Any]:
    """Twilio's Call resource."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{view.sid}"
    duration = view.duration()
    return {
        "sid": view.sid,
        "account_sid": account_sid,
        "parent_call_sid": view.parent_call_sid,
        "to": view.to,
        "to_formatted": formatted(view.to),
        "from": view.from_,
        "from_formatted": formatted(view.from_),
        "status": str(view.status),
        "start_time": _date(view.start_time),
        "end_time": _date(view.end_time),
        "duration": None if duration is None else str(duration),
        "direction": view.direction,
        "answered_by": None,
        "caller_name": view.caller_name or None,
        "forwarded_from": None,
        "group_sid": None,
        "phone_number_sid": None,
        "trunk_sid": None,
        "annotation": None,
        "price": None,
        "price_unit": "USD",
        "queue_time": "0",
        "date_created": _date(view.date_created or view.start_time),
        "date_updated": _date(view.end_time or view.start_time or view.date_created),
        "api_version": API_VERSION,
        "uri": f"{uri}.json",
        "subresource_uris": {
            "recordings": f"{uri}/Recordings.json",
            "notifications": f"{uri}/Notifications.json",
        },
    }


def notification_json(notification: Notification, account_sid: str) -> dict[str, Any]:
    """Twilio's Notification resource of a call (``log`` 0 is an error, 1 a warning)."""
    sid = f"NO{notification.id:032x}"
    call = f"/{API_VERSION}/Accounts/{account_sid}/Calls/{notification.call_sid}"
    moment = rfc2822(notification.time)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "call_sid": notification.call_sid,
        "api_version": API_VERSION,
        "error_code": str(notification.code),
        "log": "0" if notification.level == "error" else "1",
        "message_text": notification.message,
        "message_date": moment,
        "more_info": f"https://www.twilio.com/docs/errors/{notification.code}",
        "request_url": notification.url or "",
        "request_method": None,
        "request_variables": None,
        "response_headers": None,
        "response_body": None,
        "date_created": moment,
        "date_updated": moment,
        "uri": f"{call}/Notifications/{sid}.json",
    }


def formatted(address: str) -> str:
    """A number as people write it in its country (Twilio's ``*_formatted``)."""
    if not address.startswith("+"):
        return address
    try:
        number = phonenumbers.parse(address, None)
    except phonenumbers.NumberParseException:
        return address
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def view_of(record: LegRecord) -> CallView:
    return CallView(
        sid=record.call_sid,
        parent_call_sid=record.parent_call_sid,
        to=record.to,
        from_=record.from_,
        status=CallStatus(record.status),
        direction=record.direction,
        start_time=record.start_time,
        end_time=record.end_time,
        answer_time=record.answer_time,
        caller_name=record.caller_name,
        date_created=record.start_time,
    )


def _date(moment: datetime | None) -> str | None:
    return None if moment is None else rfc2822(moment)


class CallsResource:
    def __init__(self, services: Services):
        self.services = services
        self.account_sid = services.account_sid
        self.pacer = Pacer(services.config.api.calls_per_second)
        self.tasks: set[asyncio.Task[None]] = set()

    # --- create

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        config = self.services.config
        try:
            call = parse_call_request(
                {k: v for k, v in form.items() if isinstance(v, str)},
                {k: [v for v in form.getall(k) if isinstance(v, str)] for k in form},
                numbers=[n.number for n in config.numbers],
                clients=[c.identity for c in config.clients],
                trunks=[t.name for t in config.trunks],
                region=self.services.default_region,
            )
        except RequestError as error:
            raise RestError(400, error.code, error.message) from None
        document = _twiml(call.twiml) if call.twiml is not None else None
        calls = self.services.calls
        if not self.services.admit_leg("api"):
            raise RestError(503, ERROR_CAPACITY, "The switch is at max_calls", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        actor = ApiCall(
            self.services,
            call,
            document,
            self.services.new_call_sid(),
            self.pacer.slot(loop.time()),
        )
        calls.add(actor, unplaced=True)
        for name in call.ignored:
            actor.notify(12200, f"{name} is not supported; ignored", error=False)
        task = loop.create_task(actor.run(), name=actor.call_sid)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        log.info("%s: created by the REST API, to %s", actor.call_sid, call.to)
        return web.json_response(call_json(actor.view(), self.account_sid), status=201)

    # --- one call

    def _view(self, call_sid: str) -> CallView | None:
        live = self.services.calls.get(call_sid)
        if live is not None:
            return live.view()
        record = self.services.store.leg(call_sid)
        if record is None or record.account_sid != self.account_sid:
            return None
        return view_of(record)

    def _found(self, request: web.Request) -> CallView:
        view = self._view(request.match_info["call_sid"])
        if view is None:
            raise RestError(
                404, ERROR_NOT_FOUND, f"The requested resource {request.path} was not found"
            )
        return view

    async def fetch(self, request: web.Request) -> web.Response:
        return web.json_response(call_json(self._found(request), self.account_sid))

    async def update(self, request: web.Request) -> web.Response:
        view = self._found(request)
        form = await request.post()
        command = _command({k: v for k, v in form.items() if isinstance(v, str)})
        live = self.services.calls.get(view.sid)
        try:
            if live is None:
                raise Refused.call_ended()
            live.deliver(command)
        except Refused as refused:
            raise RestError(400, refused.code, refused.message) from None
        await asyncio.sleep(0)  # let a hang-up or cancel reach the legs first
        return web.json_response(call_json(self._view(view.sid) or view, self.account_sid))

    async def delete(self, request: web.Request) -> web.Response:
        view = self._found(request)
        if self.services.calls.get(view.sid) is not None:
            raise RestError(409, ERROR_CONFLICT, f"Call {view.sid} is in progress")
        self.services.store.delete_leg(view.sid)
        return web.Response(status=204)

    # --- the list

    async def list(self, request: web.Request) -> web.Response:
        query = request.query
        page = PageRequest.of(query)
        match = _filter(query, self.services.default_region)
        live = sorted(
            (v for call in self.services.calls if match.accepts(v := call.view())),
            key=lambda v: v.date_created or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        items = live[page.offset : page.offset + page.size + 1]
        wanted = page.size + 1 - len(items)
        if wanted > 0:
            skip = max(0, page.offset - len(live))
            records = self.services.store.find_legs(
                wanted,
                skip,
                to=match.to,
                from_=match.from_,
                status=match.status,
                parent_call_sid=match.parent,
                started_after=match.after,
                started_before=match.before,
            )
            live_sids = {v.sid for v in live}
            items += [view_of(r) for r in records if r.call_sid not in live_sids]
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}
        body = page_body(
            "calls",
            [call_json(v, self.account_sid) for v in items[: page.size]],
            request.path,
            page,
            len(items) > page.size,
            filters,
        )
        return web.json_response(body)

    async def notifications(self, request: web.Request) -> web.Response:
        view = self._found(request)
        page = PageRequest.of(request.query)
        found = self.services.store.notifications(view.sid)
        items = [
            notification_json(n, self.account_sid)
            for n in found[page.offset : page.offset + page.size]
        ]
        has_next = len(found) > page.offset + page.size
        return web.json_response(page_body("notifications", items, request.path, page, has_next))

    async def close(self) -> None:
        """Wait for the API calls' actors (their legs were hung up by the engine)."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)


def _twiml(text: str) -> rcml.Document:
    try:
        return parse(text)
    except rcml.RcmlError as error:
        raise RestError(400, error.code, f"Twiml: {error.message}") from None


def _command(form: dict[str, str]) -> Command:
    """The update a form asks for: a new document, or a status."""
    status = form.get("Status", "").strip().lower()
    url, twiml = form.get("Url", "").strip(), form.get("Twiml")
    if status:
        if status not in _UPDATE_STATUSES:
            raise RestError(
                400,
                ERROR_INVALID_PARAMETER,
                f"Status must be completed or canceled, not {status!r}",
            )
        return _UPDATE_STATUSES[status]
    if twiml:
        return RunTwiml(_twiml(twiml))
    if url:
        try:  # the same checks as at creation
            checked, method = url_param(form, "Url", ERROR_URL), method_param(form, "Method")
        except RequestError as error:
            raise RestError(400, error.code, error.message) from None
        assert checked is not None
        return Redirect(checked, method)
    raise RestError(400, ERROR_INVALID_PARAMETER, "Give Url, Twiml or Status")


class _Filter:
    def __init__(self) -> None:
        self.to: str | None = None
        self.from_: str | None = None
        self.status: str | None = None
        self.parent: str | None = None
        self.after: datetime | None = None
        self.before: datetime | None = None

    def accepts(self, view: CallView) -> bool:
        checks: list[Callable[[], bool]] = [
            lambda: self.to is None or view.to == self.to,
            lambda: self.from_ is None or view.from_ == self.from_,
            lambda: self.status is None or str(view.status) == self.status,
            lambda: self.parent is None or view.parent_call_sid == self.parent,
        ]
        started = view.start_time or view.date_created
        if self.after is not None:
            checks.append(lambda: started is not None and started >= self.after)  # type: ignore[operator]
        if self.before is not None:
            checks.append(lambda: started is not None and started < self.before)  # type: ignore[operator]
        return all(check() for check in checks)


def _filter(query: Any, region: str) -> _Filter:
    from switch.numbers import InvalidNumber, to_e164

    match = _Filter()

    def address(value: str) -> str:
        if value.startswith(("client:", "sip:", "sips:")):
            return value
        try:
            return to_e164(value, region)
        except InvalidNumber:
            return value

    if query.get("To"):
        match.to = address(query["To"])
    if query.get("From"):
        match.from_ = address(query["From"])
    if query.get("Status"):
        status = query["Status"].strip().lower()
        if status not in set(CallStatus):
            raise RestError(400, ERROR_INVALID_PARAMETER, f"Status {status!r} is not a call status")
        match.status = status
    if query.get("ParentCallSid"):
        match.parent = query["ParentCallSid"]
    for name in ("StartTime", "StartTime>", "StartTime<", "StartTime>=", "StartTime<="):
        if name in query:
            start, end = _moment(name, query[name])
            if not name.endswith(("<", "<=")):
                match.after = start
            if not name.endswith((">", ">=")):
                match.before = end
    return match


def _moment(name: str, text: str) -> tuple[datetime, datetime]:
    """The span a ``StartTime`` value names: a whole UTC day, or one instant."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, start + timedelta(days=1)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestError(
            400, ERROR_INVALID_PARAMETER, f"{name} {text!r} is not a date (YYYY-MM-DD)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment, moment + timedelta(microseconds=1)


def add_calls_routes(app: web.Application, guarded: AccountGuard, calls: CallsResource) -> None:
    account = ACCOUNT_PATH
    one = f"{account}/Calls/{{call_sid}}.json"
    app.router.add_post(f"{account}/Calls.json", guarded(calls.create))
    app.router.add_get(f"{account}/Calls.json", guarded(calls.list))
    app.router.add_get(one, guarded(calls.fetch))
    app.router.add_post(one, guarded(calls.update))
    app.router.add_delete(one, guarded(calls.delete))
    notifications = f"{account}/Calls/{{call_sid}}/Notifications.json"
    app.router.add_get(notifications, guarded(calls.notifications))
