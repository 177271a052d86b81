"""The HTTP side: health and metrics, and the built-in demo app.

``GET /healthz`` answers 200 once SIP and HTTP are serving, with the live
counts of calls and media objects, and of call actors reachable by CallSid
(tests check them for leaks after each call). ``/demo/voice`` is the app
behind ``voice_url = "demo:"`` (switch/demo.py).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from switch.demo import DemoApp

NO_CLIENTS = DemoApp(frozenset(), ())


def build_app(
    counts: Callable[[], dict[str, int]],
    ready: Callable[[], bool],
    demo: DemoApp | None = None,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        if not ready():
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response({"status": "ok", **counts()})

    async def demo_voice(request: web.Request) -> web.Response:
        params = dict(request.query) if request.method == "GET" else dict(await request.post())
        document = (demo or NO_CLIENTS).document({k: str(v) for k, v in params.items()})
        return web.Response(text=document, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/demo/voice", demo_voice)
    return app
