"""The Calls resource's admission and pacing, on a real aiohttp server over the
component harness (real Services, fake legs)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from switch.api_calls import CallsResource, add_calls_routes
from switch.rest import AccountGuard
from tests.component.conftest import ACCOUNT_SID, AUTH_TOKEN, NUMBER, Harness
from tests.support.fakes import rings

CALLEE = "+14155550101"


async def test_creations_beyond_max_calls_are_refused_with_20503(harness: Harness) -> None:
    services = harness.services
    services.calls.capacity.max_legs = 2  # one call: its leg and one kept for a <Dial>
    harness.engine.far_end(CALLEE, rings())
    resource = CallsResource(services)
    app = web.Application()
    add_calls_routes(app, AccountGuard(ACCOUNT_SID, AUTH_TOKEN), resource)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"))
    form = {"To": CALLEE, "From": NUMBER, "Twiml": "<Response/>"}
    headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(url, data=form) as first:
                assert first.status == 201
                sid = (await first.json())["sid"]
            async with http.post(url, data=form) as second:
                assert second.status == 503
                assert second.headers["Retry-After"] == "1"
                body = await second.json()
                assert body["code"] == 20503 and body["status"] == 503
            one = url.replace("Calls.json", f"Calls/{sid}.json")
            async with http.post(one, data={"Status": "canceled"}) as cancelled:
                assert cancelled.status == 200
            await resource.close()
            async with http.get(one) as fetched:
                assert (await fetched.json())["status"] == "canceled"
    finally:
        await server.close()
