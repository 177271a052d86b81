"""What a call session needs from the process: engine, webhooks, storage, media files.

One ``Services`` per process, built by ``switch.app`` from the config; call
sessions and dial runners reach everything through it, which keeps them free of
globals and easy to read.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from media.audio import MAX_DOWNLOAD, AudioCache
from media.tones import ensure_tone_files
from switch.call.capacity import MAX_LEGS, Admission
from switch.call.events import LegAnswered, LegEnded, LegEvent, LegProgressed
from switch.call.protocol import Leg, MediaEngine, unsubscribed
from switch.call.registry import CallRegistry
from switch.call.status import final_status
from switch.callback_journal import CallbackJournal
from switch.config import Config, NumberConfig, Trunk
from switch.config_clients import ClientConfig
from switch.metrics import Metrics
from switch.numbers import InvalidNumber, to_e164
from switch.recordings import SpareSides
from switch.registrar.bindings import Binding
from switch.registrar.service import Registrar
from switch.store import LegRecord, Store
from switch.webhook import Observer, WebhookClient, WebhookSettings
from switch.workers import WorkerPool

DEMO_SCHEME = "demo:"


@dataclass(frozen=True)
class NumberApp:
    """The app behind one of our numbers (``demo:`` already resolved to a URL)."""

    number: str
    voice_url: str
    voice_method: str
    voice_fallback_url: str | None
    voice_fallback_method: str
    status_callback: str | None
    status_callback_method: str

    @classmethod
    def of_client(cls, client: ClientConfig, demo_url: str) -> NumberApp | None:
        """The app a registered client's own calls run (None: the client has none)."""
        if not client.voice_url:
            return None
        url = demo_url if client.voice_url.startswith(DEMO_SCHEME) else client.voice_url
        return cls(
            number=f"client:{client.identity}",
            voice_url=url,
            voice_method=client.voice_method,
            voice_fallback_url=client.voice_fallback_url,
            voice_fallback_method=client.voice_fallback_method,
            status_callback=None,
            status_callback_method="POST",
        )

    @classmethod
    def of(cls, number: NumberConfig, demo_url: str) -> NumberApp:
        url = demo_url if number.voice_url.startswith(DEMO_SCHEME) else number.voice_url
        return cls(
            number=number.number,
            voice_url=url,
            voice_method=number.voice_method,
            voice_fallback_url=number.voice_fallback_url,
            voice_fallback_method=number.voice_fallback_method,
            status_callback=number.status_callback,
            status_callback_method=number.status_callback_method,
        )


def webhooks_for(
    config: Config, observer: Observer | None = None, store: Store | None = None
) -> WebhookClient:
    """The process's webhook client, as ``[webhooks]`` and the account say.

    With ``store``, status callbacks are journalled in its database (they survive a
    restart) and a callback given up is stored as a notification of its call; without,
    they are kept in memory only.
    """
    hooks = config.webhooks

    def notify(call_sid: str, code: int, message: str, url: str) -> None:
        assert store is not None
        store.record_notification(call_sid, code, "error", message, url, datetime.now(UTC))

    return WebhookClient(
        WebhookSettings(
            connect_timeout=hooks.connect_timeout,
            total_timeout=hooks.total_timeout,
            connect_retries=hooks.connect_retries,
            max_body=hooks.max_body,
            user_agent=config.sip.user_agent,
            callback_retry_interval=hooks.callback_retry_interval,
            callback_retry_max_interval=hooks.callback_retry_max_interval,
            callback_give_up_after=hooks.callback_give_up_after,
            callback_max_pending=hooks.callback_max_pending,
        ),
        config.account.sid,
        config.account.auth_token,
        observer=observer,
        journal=None if store is None else CallbackJournal(store),
        notify=None if store is None else notify,
    )


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


class Services:
    def __init__(
        self,
        config: Config,
        store: Store,
        webhooks: WebhookClient,
        engine: MediaEngine,
        http: aiohttp.ClientSession,
        workers: WorkerPool | None = None,
        metrics: Metrics | None = None,
    ):
        self.config = config
        self.metrics = metrics or Metrics()
        self.store = store
        self.webhooks = webhooks
        self.engine = engine
        self.http = http
        self.workers = workers or WorkerPool()
        self.account_sid = config.account.sid
        self.trunks = config.trunks
        self.default_region = "US"
        self.timeout_grace = config.dial.timeout_grace
        self.default_ringtone = config.dial.default_ringtone
        media = config.storage.path / "media"
        self.audio = AudioCache(media / "audio")
        self._ringback = ensure_tone_files(media / "tones", "ringback")
        self.new_call_sid = new_call_sid
        demo_url = f"{config.http.public_url.rstrip('/')}/demo/voice"
        self.apps = {n.number: NumberApp.of(n, demo_url) for n in config.numbers}
        self.client_apps = {
            c.identity: app
            for c in config.clients
            if (app := NumberApp.of_client(c, demo_url)) is not None
        }
        self.registrar: Registrar | None = None  # set by the switch once created
        self.calls = CallRegistry(config.dial.max_calls)
        self.spares = SpareSides()  # filled at start from what a previous run left

    # ---- numbers and addresses -------------------------------------------------------

    def caller_number(self, user: str) -> str:
        """A caller's From user as E.164 when it is a number, else as sent."""
        try:
            return to_e164(user, self.default_region)
        except InvalidNumber:
            return user

    def dialled(self, user: str) -> str:
        """Twilio's ``To`` for what a client dialled: ``client:bob``, E.164, or as sent."""
        if self.config.client(user) is not None:
            return f"client:{user}"
        return self.caller_number(user)

    def from_uri(self, caller_id: str) -> str:
        """From of a child call; ``client:joey`` becomes the user ``joey``."""
        caller_id = caller_id.removeprefix("client:")
        host = self.config.sip.public_host
        return f"sip:{caller_id}@{f'[{host}]' if ':' in host else host}"

    def client_uri(self, identity: str) -> str:
        """The address-of-record of a client: the To of calls to it."""
        domain = self.config.sip.domain
        return f"sip:{identity}@{f'[{domain}]' if ':' in domain else domain}"

    def trunk_uri(self, trunk: Trunk, number: str) -> str:
        transport = f";transport={trunk.transport}" if trunk.transport else ""
        if trunk.scheme == "sips":
            transport = ""  # sips: is TLS already (RFC 3261 section 26.2)
        return f"{trunk.scheme}:{number}@{trunk.hostport}{transport}"

    def srtp_for(
        self, client: str | None = None, secure: bool = False, binding: Binding | None = None
    ) -> str:
        """The SRTP setting of an outbound leg that is not a trunk's (trunks carry their
        own): "dtls" towards a browser's registration (WebRTC media), mandatory for
        Twilio's ``;secure=true``, else its client's, else [sip] srtp."""
        config = self.config
        if binding is not None and binding.source.browser:
            return "dtls"
        if secure:
            return "mandatory"
        if client is not None:
            configured = config.client(client)
            if configured is not None:
                return configured.srtp
        return config.sip.srtp

    def ringback_file(self, code: str) -> Path:
        return self._ringback.get(code) or self._ringback[self.default_ringtone]

    async def fetch_audio(self, url: str) -> Path:
        """Download a ``<Play>`` file (bounded in size) and convert it for the bridge."""
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            response.raise_for_status()
            body = await response.content.read(MAX_DOWNLOAD + 1)
        if len(body) > MAX_DOWNLOAD:
            raise ValueError(f"audio over {MAX_DOWNLOAD} bytes")
        return await self.audio.download(url, body)

    # ---- records ---------------------------------------------------------------------

    def time_post_dial(self, leg: Leg, direction: str) -> None:
        """Observe an outbound leg's post-dial delay once: from now (its INVITE was
        just sent) to its first provisional ringing (180 to 183) or its answer,
        whichever comes first. A leg that fails or is cancelled first is not observed."""
        if not leg.live:
            return
        sent = time.monotonic()
        observed = False  # events already queued may still arrive after unsubscribing
        stop: Callable[[], None] = unsubscribed

        def seen(event: LegEvent) -> None:
            nonlocal observed, stop
            if observed or not isinstance(event, LegProgressed | LegAnswered | LegEnded):
                return
            observed = True
            stop()
            stop = unsubscribed  # it referred back to seen: let reference counting free both
            if not isinstance(event, LegEnded):
                self.metrics.post_dial_delay(direction, time.monotonic() - sent)

        stop = leg.subscribe(seen)

    def admit_leg(self, kind: str, parent: str | None = None) -> bool:
        """Room for one more leg (``kind``: inbound, dial or api) under [dial] max_calls;
        ``parent``: the call a ``<Dial>`` branch belongs to.

        A refusal is counted in /metrics; reaching capacity, or the loop falling
        behind, is logged at WARNING once per episode (switch/call/capacity.py).
        """
        admission = self.calls.admit(
            self.engine.leg_count(), time.monotonic(), parent, self.engine.arriving()
        )
        if admission.admitted:
            return True
        self.metrics.capacity_refused(kind)
        if admission is Admission.NEWLY_BEHIND:
            logging.getLogger("dialswitch").warning(
                "overloaded: the event loop runs %.0f ms late; new calls get 503 until it"
                " catches up (more calls per second than this machine carries; refusals"
                " are counted in dialswitch_capacity_refused_total)",
                1000 * self.calls.capacity.load.lag,
            )
        if admission is Admission.NEWLY_FULL:
            logging.getLogger("dialswitch").warning(
                "at capacity: %d call legs, [dial] max_calls; new calls get 503 until legs"
                " end (this build carries up to %d: raise max_calls if the machine has room;"
                " refusals are counted in dialswitch_capacity_refused_total)",
                self.calls.max_calls,
                MAX_LEGS,
            )
        return False

    def notify(
        self,
        log: logging.LoggerAdapter[logging.Logger],
        call_sid: str,
        code: int,
        message: str,
        url: str | None = None,
        error: bool = True,
        logged: bool = False,
    ) -> None:
        """A Twilio-coded problem of a call: logged (unless it already was) and stored."""
        if not logged:
            log.log(
                logging.ERROR if error else logging.WARNING,
                "%s %d: %s%s",
                call_sid,
                code,
                message,
                f" ({url})" if url else "",
            )
        self.store.record_notification(
            call_sid, code, "error" if error else "warning", message, url, datetime.now(UTC)
        )

    def record_leg(
        self,
        leg: Leg | None,
        *,
        call_sid: str = "",
        parent_sid: str | None,
        from_: str,
        to: str,
        direction: str,
        started: datetime,
        answered: datetime | None,
        trunk: str | None = None,
        call_reason: str | None = None,
        ended: datetime | None = None,
        status: str | None = None,
        caller_name: str = "",
    ) -> None:
        """The final record of a leg, and its count in the metrics. ``leg`` is None for a
        call that never placed one (an API call withdrawn while queued): ``call_sid`` and
        ``status`` then say what it was."""
        end = ended or datetime.now(UTC)
        duration = int((end - answered).total_seconds()) if answered else 0
        if status is None:
            assert leg is not None
            status = final_status(leg.was_answered, leg.final_code)
        self.metrics.call_ended(direction, status, started, answered)
        self.store.record_leg(
            LegRecord(
                call_sid=leg.call_sid if leg is not None else call_sid,
                parent_call_sid=parent_sid,
                account_sid=self.account_sid,
                from_=from_,
                to=to,
                direction=direction,  # type: ignore[arg-type]
                start_time=started,
                answer_time=answered,
                end_time=end,
                status=status,  # type: ignore[arg-type]
                sip_code=leg.final_code if leg is not None else None,
                sip_call_id=(leg.sip_call_id or None) if leg is not None else None,
                trunk=trunk,
                call_reason=call_reason,
                duration=max(0, duration),
                caller_name=caller_name,
            )
        )
