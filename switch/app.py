"""The dialswitch process: config in, SIP and HTTP serving, clean stop on a signal."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from switch import sipcheck, srtp
from switch.api import add_api_routes
from switch.api_calls import CallsResource
from switch.call.capacity import LAG_BEHIND, RETRY_AFTER, LoopLoad
from switch.call.commands import CancelCall
from switch.call.protocol import Leg
from switch.config import Config
from switch.config_tls import server_context
from switch.demo import DemoApp
from switch.engine import Engine, EngineSettings, Listener, TrunkAccount
from switch.engine.core import RegisterRequest
from switch.floods import FloodGuard
from switch.http import build_app
from switch.metrics import CONTENT_TYPE, Metrics
from switch.numbers import InvalidNumber, request_uri_user_to_e164
from switch.outbound_call import ApiCall
from switch.phone import PhoneConfig, add_phone_routes
from switch.recordings import (
    SpareSides,
    callback_params,
    make_partial_dirs,
    repair_at_startup,
    sweep_side_files,
)
from switch.registrar.bindings import Source
from switch.registrar.service import Registrar
from switch.rest import AccountGuard
from switch.services import Services, new_call_sid, webhooks_for
from switch.session import CallSession
from switch.sipmsg import SipMessage, uri_user
from switch.sipws.edge import Peer, WebSocketEdge, WebSocketListener
from switch.store import Store
from switch.webhook import WebhookClient
from switch.workers import WorkerPool

log = logging.getLogger("dialswitch")

LAG_PROBE_SECONDS = 0.05  # how often the event loop's lateness is measured


class Switch:
    """Wires the parts together and routes each inbound INVITE."""

    def __init__(self, config: Config):
        self.config = config
        self.sessions: set[asyncio.Task[None]] = set()
        self.ready = False
        self.edge: WebSocketEdge | None = None

    async def run(self) -> int:
        config = self.config
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        config.storage.path.mkdir(parents=True, exist_ok=True)
        make_partial_dirs(config.storage.path)
        store = Store.open(config.storage.path)
        metrics = Metrics()
        webhooks = webhooks_for(config, metrics.webhook, store)
        self.registrar = Registrar(config.registrar, config.sip.domain, config.clients, store)
        limits = config.limits
        self.floods = FloodGuard(
            limits.invite_rate,
            limits.invite_burst,
            limits.options_rate,
            limits.options_burst,
            limits.trusted,
        )
        engine = Engine(self._engine_settings(), self._incoming, self._register, self._admit)
        self.edge = self._websocket_edge(engine)
        if self.edge is not None:
            # Before any thread or the engine starts: a port in use stops us cleanly.
            await self.edge.start()
        http_client = aiohttp.ClientSession()
        workers = WorkerPool()
        await workers.start()
        self.services = Services(config, store, webhooks, engine, http_client, workers, metrics)
        metrics.watch(lambda: self._levels(engine, webhooks))
        metrics.watch_rtp(lambda: engine.rtp)
        self.services.registrar = self.registrar
        engine.start(new_call_sid)
        if self.edge is not None and engine.websocket_relay is not None:
            await self.edge.attach(engine.websocket_relay)
        self._resend_recording_callbacks(store, webhooks)
        webhooks.start()  # what an earlier run left undelivered goes first
        self.services.spares = SpareSides(sweep_side_files(store, config.storage.path))
        store.group_commits(asyncio.get_running_loop())
        http_app = build_app(
            lambda: {**engine.counts(), "actors": len(self.services.calls)},
            lambda: self.ready,
            DemoApp(
                frozenset(n.number for n in config.numbers),
                tuple(c.identity for c in config.clients),
            ),
        )
        calls_api = CallsResource(self.services)
        add_api_routes(http_app, store, config, workers, calls_api)
        add_phone_routes(
            http_app,
            PhoneConfig.from_sip(config.sip.listen, config.sip.domain, config.webrtc.ice_servers),
        )
        guard = AccountGuard(config.account.sid, config.account.auth_token)
        http_app.router.add_get("/metrics", guard(self._metrics))
        runner = web.AppRunner(http_app)
        await runner.setup()
        try:
            await web.TCPSite(runner, config.http.host, config.http.port).start()
            metrics_runner = await self._metrics_listener()
        except OSError:  # undo what started, so the process can exit (cli reports it)
            await engine.shutdown()  # pjsua2 must not outlive the loop
            if self.edge is not None:
                await self.edge.close()
            await workers.close()
            await webhooks.close()
            await http_client.close()
            await runner.cleanup()
            store.close()
            raise
        self.ready = True
        lag_watch = loop.create_task(self._watch_loop(self.services.calls.capacity.load))
        # Start-up objects (config, parsed tables, modules) never die: keep the
        # collector off them, and let it run less often under call load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        log.info(
            "dialswitch serving: SIP %s, HTTP %s:%d",
            ", ".join(f"{x.transport}:{x.host}:{x.port}" for x in config.sip.listen),
            config.http.host,
            config.http.port,
        )
        await stop.wait()
        lag_watch.cancel()
        log.info("stopping: hanging up %d calls", len(self.sessions))
        self.services.calls.stopping = True
        self.ready = False
        if self.edge is not None:
            await self.edge.close()  # browsers: their calls end with their connections
        for call in self.services.calls:
            if isinstance(call, ApiCall) and call.session is None:
                call.deliver(CancelCall())  # queued or ringing: withdrawn, recorded canceled
        await engine.shutdown()
        if self.sessions:
            await asyncio.wait(self.sessions, timeout=10)
        await calls_api.close()
        await workers.close()
        await webhooks.drain(5)
        await webhooks.close()
        await http_client.close()
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        store.close()
        log.info("stopped")
        return 0

    @staticmethod
    async def _watch_loop(load: LoopLoad) -> None:
        """Tell admission how late the event loop runs (switch/call/capacity.py)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_SECONDS
            await asyncio.sleep(LAG_PROBE_SECONDS)
            load.observe(loop.time() - due)

    def _levels(self, engine: Engine, webhooks: WebhookClient) -> dict[str, tuple[str, float]]:
        """The gauges of /metrics, read from whoever owns each fact."""
        counts = engine.counts()
        calls = self.services.calls
        return {
            "calls_active": ("Top-level calls live (inbound and API).", calls.top_level),
            "call_actors": ("Live calls reachable by CallSid, Dial children included.", len(calls)),
            "legs": ("SIP legs the engine holds.", counts["calls"]),
            "players": ("Audio players open.", counts["players"]),
            "recorders": ("Recorders open.", counts["recorders"]),
            "media_ports": ("Conference bridge ports in use.", counts["media_ports"]),
            "relayed_pairs": (
                "Bridged pairs of legs exchanging RTP packet by packet, off the bridge.",
                counts["relayed"],
            ),
            "registrations": ("Live registrations of clients.", self._registrations()),
            "loop_lag_seconds": (
                f"How late the event loop runs (smoothed); new calls get 503 past {LAG_BEHIND} s.",
                calls.capacity.load.lag,
            ),
            "callbacks_queued": ("Status callbacks not delivered yet.", webhooks.queued),
        }

    def _registrations(self) -> int:
        """Live bindings of the configured clients (an expired one stays in the
        registrar's table until its identity registers again)."""
        return sum(len(self.registrar.lookup(c.identity)) for c in self.config.clients)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.services.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _metrics_listener(self) -> web.AppRunner | None:
        """``[metrics] listen``: GET /metrics and nothing else, without auth (the
        operator binds it to a private address); None when it is not configured."""
        listen = self.config.metrics
        if not listen.port:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, listen.host, listen.port).start()
        log.info("metrics served without auth on %s:%d", listen.host, listen.port)
        return runner

    def _resend_recording_callbacks(self, store: Store, webhooks: WebhookClient) -> None:
        """Finish recordings a crash left open and send the callbacks still owed.

        A recording whose final callback is still in the callback journal is left to
        it (no second copy); ``callback_pending`` is cleared when that is delivered.
        """
        journal = webhooks.callbacks.journal
        for record in repair_at_startup(store, self.config.storage.path):
            if journal.holds_recording(record.sid):
                continue
            if record.callback_url:
                params = callback_params(record, self.config.http.public_url)
                webhooks.post_callback(
                    record.callback_url,
                    record.callback_method,
                    params,
                    key=record.sid,
                    recording_sid=record.sid,
                )
            else:
                store.update_recording(record.sid, callback_pending=False)
            log.info("recording %s finished after restart: %s", record.sid, record.status)

    def _engine_settings(self) -> EngineSettings:
        sip = self.config.sip
        return EngineSettings(
            listeners=[Listener(x.transport, x.host, x.port) for x in sip.engine_listen],
            public_host=sip.public_host,
            rtp_port_min=sip.rtp_ports.start,
            rtp_port_max=sip.rtp_ports.stop - 1,
            max_calls=self.config.dial.max_calls,
            user_agent=sip.user_agent,
            trunk_accounts=[
                TrunkAccount(t.name, t.username, t.password)
                for t in self.config.trunks
                if t.username and t.password
            ],
            log_level=5 if self.config.log.level == "debug" else 1,
            tls=sip.tls,
            rtp_timeout=self.config.media.rtp_timeout,
            relay=self.config.media.relay,
            media_threads=self.config.media.threads,
            websocket=bool(sip.websocket_listen),
            webrtc=self.config.webrtc,
        )

    def _websocket_edge(self, engine: Engine) -> WebSocketEdge | None:
        """The ws:/wss: listeners browsers use (switch/sipws), or None without any."""
        sip = self.config.sip
        if not sip.websocket_listen:
            return None
        return WebSocketEdge(
            [WebSocketListener(x.transport, x.host, x.port) for x in sip.websocket_listen],
            lambda peer: self._browser_gone(engine, peer),
            server_context(sip.tls) if any(x.transport == "wss" for x in sip.listen) else None,
            rate=self.config.registrar.register_rate,
            max_per_source=sip.ws_per_source,
            codecs=self.config.webrtc.codecs,
        )

    def _browser_gone(self, engine: Engine, peer: Peer) -> None:
        """A browser's WebSocket closed: its registrations go, its calls end."""
        log.info("browser %s:%d (%s) disconnected", peer.host, peer.port, peer.connection_id)
        self.registrar.drop_connection(peer.connection_id)
        engine.drop_flow(peer.connection_id)

    def _browser(self, host: str, port: int, via: str | None) -> Peer | None:
        """The browser a request from ``host:port`` with top Via ``via`` came from."""
        if self.edge is None or via is None:
            return None
        return self.edge.peer(host, port, via)

    def _client_ip(self, host: str, port: int, via: str | None) -> str:
        """The address per-source limits count a SIP peer under (a browser's own)."""
        browser = self._browser(host, port, via)
        return browser.host if browser is not None else host

    def _admit(self, method: str, host: str, port: int, raw: bytes) -> sipcheck.Answer | None:
        """An out-of-dialog request, before the SIP stack acts on it: the per-source
        limits; for a browser's INVITE, an offer its leg can answer (pjsua would
        refuse one without DTLS with a bare 480); for an INVITE, room for its leg
        (switch/call/capacity.py)."""
        browser = None
        if self.edge is not None and (host, port) == self.edge.relay_address:
            request = SipMessage.parse(raw.decode("utf-8", "replace"))
            browser = self._browser(host, port, request.header("via"))
        source_ip = browser.host if browser is not None else host
        refused = self.floods.admit(method, source_ip, time.monotonic())
        if refused is not None:
            self.services.metrics.flood_refused(method)
            status, reason, retry_after = refused
            return sipcheck.Answer(status, reason, (("Retry-After", retry_after),))
        if method != "INVITE":
            return None
        if browser is not None:
            body = raw.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
            unusable = srtp.refusal("dtls", body)
            if unusable is not None:
                log.info("browser INVITE from %s:%d refused: 488 %s", host, port, unusable)
                warning = f'399 dialswitch "{unusable}"'
                return sipcheck.Answer(488, unusable, (("Warning", warning),))
        if not self.services.admit_leg("inbound"):
            return sipcheck.Answer(503, "Service Unavailable", (("Retry-After", RETRY_AFTER),))
        return None

    def _register(self, request: RegisterRequest) -> tuple[int, str, Sequence[tuple[str, str]]]:
        peer = self._browser(request.host, request.port, request.message.header("via"))
        if peer is not None:
            source = Source(peer.scheme, request.host, request.port)
            reply = self.registrar.handle(request.message, source, peer.connection_id, peer.host)
        else:
            source = Source(request.transport, request.host, request.port)
            reply = self.registrar.handle(request.message, source, request.connection_id)
        return reply.status, reply.reason, reply.headers

    def _incoming(self, leg: Leg) -> None:
        """An INVITE arrived: admit it, find the number's app, start its session.

        An INVITE from a client identity is a client's call. Any other INVITE
        for a number that is not ours gets 404, except when clients are
        configured: then it gets the same 407 (then 403) a client would, so
        INVITEs cannot tell which identities exist.
        """
        if not leg.live:
            return  # CANCELled before we got to it
        request = leg.request
        assert request is not None
        caller = uri_user(request.header("from") or "")
        if self.config.client(caller) is not None:
            self._client_call(leg, caller)
            return
        try:
            number = request_uri_user_to_e164(uri_user(request.request_uri))
        except InvalidNumber:
            number = ""
        app = self.services.apps.get(number)
        if app is None and self.config.clients:
            self._client_call(leg, caller)
            return
        if app is None:
            log.info("%s: no number %r: 404", leg.call_sid, request.request_uri)
            leg.hangup(404, "Not Found")
            return
        if not self._srtp_acceptable(leg, self.config.sip.srtp):
            return
        self._start(CallSession.inbound(self.services, leg, app, to=number))

    def _srtp_acceptable(self, leg: Leg, mode: str) -> bool:
        """Refuse (488) an offer the caller's SRTP setting does not allow. A browser's
        offer was checked before the SIP stack saw it (`_admit`)."""
        assert leg.request is not None
        if leg.srtp == "dtls":
            return True
        reason = srtp.refusal(mode, leg.request.body)
        if reason is None:
            return True
        log.info("%s: SDP offer refused under srtp=%s: 488 %s", leg.call_sid, mode, reason)
        leg.hangup(488, reason, [("Warning", f'399 dialswitch "{reason}"')])
        return False

    def _client_call(self, leg: Leg, identity: str) -> None:
        """A registered client places a call: digest first (407), then its own app."""
        request = leg.request
        assert request is not None
        host, _, port = leg.source.rpartition(":")
        source_ip = self._client_ip(host.strip("[]"), int(port or 0), request.header("via"))
        user, refusal = self.registrar.authenticate(
            "INVITE", request, source_ip, "Proxy-Authorization"
        )
        if refusal is not None:
            leg.hangup(refusal.status, refusal.reason, refusal.headers)
            return
        if user != identity:
            leg.hangup(403, "Forbidden")
            return
        client = self.config.client(identity)
        if client is not None and not self._srtp_acceptable(leg, client.srtp):
            return
        app = self.services.client_apps.get(identity)
        if app is None:
            leg.hangup(403, "No Application For This Client")
            return
        to = self.services.dialled(uri_user(request.request_uri))
        self._start(CallSession.inbound(self.services, leg, app, to=to, from_=f"client:{identity}"))

    def _start(self, session: CallSession) -> None:
        """Run the session as the call's actor: reachable by its CallSid until it ends."""
        self.services.calls.add(session)
        task = asyncio.get_running_loop().create_task(session.run(), name=session.call_sid)
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)
        task.add_done_callback(lambda _: self.services.calls.remove(session.call_sid))
