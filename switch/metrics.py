"""Prometheus metrics of the switch, served at ``GET /metrics``.

The official ``prometheus_client`` library keeps the series in a registry of
the switch's own (not the library's global one). Three kinds:

- events, counted as they happen: calls by direction and final status
  (``dialswitch_calls_total``), the time from a leg's start to its answer
  (``dialswitch_call_setup_seconds``), the post-dial delay of outbound legs,
  from the INVITE to the first 180/183 or answer
  (``dialswitch_post_dial_delay_seconds``), webhook requests by kind and outcome
  (``dialswitch_webhook_requests_total``, outcome ``ok`` or the Twilio error
  code) and their latency (``dialswitch_webhook_seconds``), requests refused by
  the per-source limits (``dialswitch_flood_refused_total``);
- totals the engine keeps, read when the metrics are scraped: RTP packets of
  the media streams that ended, received and sent
  (``dialswitch_rtp_packets_total``), and those lost
  (``dialswitch_rtp_packets_lost_total``), by ``direction``: ``rx`` is what
  the far ends sent us (gaps in the sequence numbers), ``tx`` what we sent
  them (as their RTCP receiver reports said); and received packets the streams
  dropped (``dialswitch_rtp_packets_discarded_total``): of a payload type the
  leg did not negotiate, duplicates, a new source still on probation;
- levels, read when the metrics are scraped: live calls and call actors, legs,
  players, recorders and media ports of the engine, registrations, and status
  callbacks queued.

The endpoint is behind the REST API's Basic auth (AccountSid and AuthToken);
``[metrics] listen`` serves it on a listener of its own as well, without auth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SETUP_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 120)
"""Seconds from INVITE to answer: people take seconds to pick up."""
POST_DIAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30)
"""Seconds from INVITE to ringing: carriers take tenths of a second to seconds."""
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15)


class RtpTotals(Protocol):
    """RTP packets of the media streams ended so far (the engine's ``RtpCounts``)."""

    received: int
    received_lost: int
    received_discarded: int
    sent: int
    sent_lost: int


class _Levels(Collector):
    """Gauges computed at scrape time from whoever owns each fact."""

    def __init__(self, read: Callable[[], Mapping[str, tuple[str, float]]]):
        self._read = read

    def collect(self) -> Iterable[Metric]:
        for name, (help_text, value) in self._read().items():
            yield GaugeMetricFamily(f"dialswitch_{name}", help_text, value=value)


RTP_SERIES = (
    (
        "dialswitch_rtp_packets",
        "RTP packets of ended media streams: rx received, tx sent.",
        (("rx", "received"), ("tx", "sent")),
    ),
    (
        "dialswitch_rtp_packets_lost",
        "RTP packets lost on ended media streams: rx from the far ends (sequence"
        " gaps), tx from us (their RTCP receiver reports).",
        (("rx", "received_lost"), ("tx", "sent_lost")),
    ),
    (
        "dialswitch_rtp_packets_discarded",
        "RTP packets received on ended media streams and dropped: a payload type the"
        " leg did not negotiate, duplicates, a new source on probation.",
        (("rx", "received_discarded"),),
    ),
)
"""Each counter family of `RtpTotals`: name, help, (direction label, field) pairs."""


class _Rtp(Collector):
    """The engine's RTP totals as counters, read at scrape time."""

    def __init__(self, read: Callable[[], RtpTotals]):
        self._read = read

    def collect(self) -> Iterable[Metric]:
        totals = self._read()
        for name, help_text, fields in RTP_SERIES:
            family = CounterMetricFamily(name, help_text, labels=("direction",))
            for direction, field in fields:
                family.add_metric((direction,), getattr(totals, field))
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "dialswitch_calls",
            "Call legs ended, by direction and final CallStatus.",
            ("direction", "status"),
            registry=self.registry,
        )
        self.setup = Histogram(
            "dialswitch_call_setup_seconds",
            "Seconds from a leg's start to its answer, answered legs only.",
            ("direction",),
            buckets=SETUP_BUCKETS,
            registry=self.registry,
        )
        self.post_dial = Histogram(
            "dialswitch_post_dial_delay_seconds",
            "Seconds from an outbound leg's INVITE to its first ringing (180/183) or"
            " answer; legs that fail first are not observed.",
            ("direction",),
            buckets=POST_DIAL_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "dialswitch_webhook_requests",
            "Webhook requests (documents and callbacks) by outcome: ok or the error code.",
            ("kind", "outcome"),
            registry=self.registry,
        )
        self.floods = Counter(
            "dialswitch_flood_refused",
            "Out-of-dialog requests refused 503 by the per-source limits, by method.",
            ("method",),
            registry=self.registry,
        )
        self.capacity = Counter(
            "dialswitch_capacity_refused",
            "New legs refused 503 at [dial] max_calls, by kind: inbound, dial, api.",
            ("kind",),
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "dialswitch_webhook_seconds",
            "Seconds a webhook request took, retries and redirects included.",
            ("kind",),
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )

    def flood_refused(self, method: str) -> None:
        self.floods.labels(method).inc()

    def capacity_refused(self, kind: str) -> None:
        self.capacity.labels(kind).inc()

    def watch(self, read: Callable[[], Mapping[str, tuple[str, float]]]) -> None:
        """Levels to read at each scrape: name -> (help, value)."""
        self.registry.register(_Levels(read))

    def watch_rtp(self, read: Callable[[], RtpTotals]) -> None:
        """RTP totals to read at each scrape."""
        self.registry.register(_Rtp(read))

    def call_ended(
        self, direction: str, status: str, started: datetime, answered: datetime | None
    ) -> None:
        self.calls.labels(direction, status).inc()
        if answered is not None:
            self.setup.labels(direction).observe(max(0.0, (answered - started).total_seconds()))

    def post_dial_delay(self, direction: str, seconds: float) -> None:
        self.post_dial.labels(direction).observe(max(0.0, seconds))

    def webhook(self, kind: str, seconds: float, error_code: int | None) -> None:
        self.webhooks.labels(kind, "ok" if error_code is None else str(error_code)).inc()
        self.webhook_seconds.labels(kind).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
