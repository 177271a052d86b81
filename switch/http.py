"""The HTTP side: health and metrics, and the built-in demo app.

``GET /healthz`` answers 200 once SIP and HTTP are serving, with the live
counts of calls and media objects, and of call actors reachable by CallSid
(tests check them for leaks after each call). ``/demo/voice`` is the app
behind ``voice_url = "demo:"``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

DEMO_DOCUMENT = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say>Welcome to dialswitch. This is the built-in demo application.</Say>
  <Pause length="1"/>
  <Say>Point this number's voice URL at your own app to take over. Goodbye.</Say>
  <Hangup/>
</Response>
"""


def build_app(counts: Callable[[], dict[str, int]], ready: Callable[[], bool]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if not ready():
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok", **counts()})

    async def demo_voice(request: web.Request) -> web.Response:
        return web.Response(text=DEMO_DOCUMENT, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/demo/voice", demo_voice)
    return app
