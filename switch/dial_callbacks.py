"""Status callbacks of one ``<Dial>`` target (``statusCallback`` on its noun).

Twilio's call-progress events: ``initiated`` (INVITE sent), ``ringing`` (first
18x), ``answered`` (2xx) and ``completed`` (the leg ended, with its final
CallStatus and CallDuration, and RecordingUrl, RecordingSid and RecordingDuration
when the ``<Dial>`` records). Only the events named in
``statusCallbackEvent`` are sent; with none named, only ``completed``.
``SequenceNumber`` counts the callbacks actually sent for the leg, from 0.
Each event is sent at most once. Delivery is the webhook client's callback
journal, off the call path: kept until delivered, in order per CallSid.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

from switch.rcml.model import CallEvent
from switch.timestamps import rfc2822
from switch.webhook import WebhookClient


class BranchCallbacks:
    def __init__(
        self,
        webhooks: WebhookClient,
        url: str,
        method: str,
        events: Collection[CallEvent],
        params: Callable[[], dict[str, str]],
    ):
        self.webhooks = webhooks
        self.url = url
        self.method = method
        self.events = frozenset(events) or frozenset({CallEvent.COMPLETED})
        self.params = params
        self.sequence = 0
        self.sent: set[CallEvent] = set()

    def _send(self, event: CallEvent, status: str, extra: dict[str, str] | None = None) -> None:
        if event in self.sent or CallEvent.COMPLETED in self.sent:
            return  # each event once, and none after the leg's last
        self.sent.add(event)
        if event not in self.events:
            return
        params = self.params()
        params.update(
            CallStatus=status,
            Timestamp=rfc2822(datetime.now(UTC)),
            CallbackSource="call-progress-events",
            SequenceNumber=str(self.sequence),
        )
        if extra:
            params.update(extra)
        self.sequence += 1
        self.webhooks.post_callback(self.url, self.method, params, key=params["CallSid"])

    def initiated(self) -> None:
        self._send(CallEvent.INITIATED, "initiated")

    def ringing(self) -> None:
        self._send(CallEvent.RINGING, "ringing")

    def answered(self) -> None:
        self._send(CallEvent.ANSWERED, "in-progress")

    def completed(
        self, status: str, duration: int, recording: Mapping[str, str] | None = None
    ) -> None:
        """The leg ended; `recording` is the Dial's RecordingUrl/Sid/Duration, if any."""
        self._send(
            CallEvent.COMPLETED, status, {"CallDuration": str(duration), **(recording or {})}
        )
        # The last event: `params` refers back to the <Dial> that holds these
        # callbacks, so drop it and let reference counting free the call's objects.
        self.params = _no_params


def _no_params() -> dict[str, str]:
    raise RuntimeError("a branch's callbacks are used after its completed callback")
