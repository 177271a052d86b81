"""switch/metrics.py's series as prometheus_client's parser reads them, and the
``[metrics]`` table of the config file."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switch.config import ConfigError, MetricsConfig, Problem, check_config, load_config
from switch.metrics import Metrics

SID = "AC0123456789abcdef0123456789abcdef"
BASE = f"""
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5070"]
[http]
listen = "127.0.0.1:8080"
[account]
sid = "{SID}"
auth_token = "{"t" * 32}"
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parsed(metrics: Metrics) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@dataclass
class Totals:
    received: int = 0
    received_lost: int = 0
    received_discarded: int = 0
    sent: int = 0
    sent_lost: int = 0


# ---- the series ---------------------------------------------------------------------------


def test_post_dial_delays_fill_their_buckets_by_direction() -> None:
    metrics = Metrics()
    metrics.post_dial_delay("outbound-dial", 0.3)
    metrics.post_dial_delay("outbound-dial", 2.5)
    metrics.post_dial_delay("outbound-api", -0.001)  # a clock step: counted as 0
    found = parsed(metrics)
    name = "dialswitch_post_dial_delay_seconds"
    assert value(found, f"{name}_count", direction="outbound-dial") == 2
    assert value(found, f"{name}_sum", direction="outbound-dial") == pytest.approx(2.8)
    assert value(found, f"{name}_bucket", direction="outbound-dial", le="0.25") == 0
    assert value(found, f"{name}_bucket", direction="outbound-dial", le="0.5") == 1
    assert value(found, f"{name}_bucket", direction="outbound-dial", le="3.0") == 2
    assert value(found, f"{name}_sum", direction="outbound-api") == 0
    assert value(found, f"{name}_bucket", direction="outbound-api", le="0.05") == 1


def test_rtp_totals_are_counters_read_at_each_scrape() -> None:
    metrics = Metrics()
    totals = Totals()
    metrics.watch_rtp(lambda: totals)
    found = parsed(metrics)
    assert value(found, "dialswitch_rtp_packets_total", direction="rx") == 0
    totals.received, totals.received_lost, totals.sent, totals.sent_lost = 950, 50, 1000, 7
    totals.received_discarded = 12
    found = parsed(metrics)
    assert value(found, "dialswitch_rtp_packets_discarded_total", direction="rx") == 12
    assert value(found, "dialswitch_rtp_packets_total", direction="rx") == 950
    assert value(found, "dialswitch_rtp_packets_total", direction="tx") == 1000
    assert value(found, "dialswitch_rtp_packets_lost_total", direction="rx") == 50
    assert value(found, "dialswitch_rtp_packets_lost_total", direction="tx") == 7
    families = {
        f.name: f.type for f in text_string_to_metric_families(metrics.exposition().decode())
    }
    assert families["dialswitch_rtp_packets"] == "counter"
    assert families["dialswitch_rtp_packets_lost"] == "counter"


def test_an_ended_call_is_counted_and_an_answered_one_timed() -> None:
    metrics = Metrics()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    metrics.call_ended("inbound", "completed", start, start + timedelta(seconds=4))
    metrics.call_ended("outbound-dial", "busy", start, None)
    found = parsed(metrics)
    assert value(found, "dialswitch_calls_total", direction="inbound", status="completed") == 1
    assert value(found, "dialswitch_calls_total", direction="outbound-dial", status="busy") == 1
    assert value(found, "dialswitch_call_setup_seconds_sum", direction="inbound") == 4
    assert (
        "dialswitch_call_setup_seconds_count",
        frozenset({("direction", "outbound-dial")}),
    ) not in found


def test_the_engine_adds_each_ended_streams_statistics() -> None:
    pj = pytest.importorskip("pjsua2")
    from switch.engine.core import RtpCounts

    counts = RtpCounts()
    for pkt, loss, discard, sent, far_loss in ((100, 3, 4, 110, 1), (50, 0, 1, 40, 2)):
        stat = pj.RtcpStat()
        stat.rxStat.pkt, stat.rxStat.loss, stat.rxStat.discard = pkt, loss, discard
        stat.txStat.pkt, stat.txStat.loss = sent, far_loss
        counts.add(stat)
    assert counts == RtpCounts(
        received=150, received_lost=3, received_discarded=5, sent=150, sent_lost=3
    )


# ---- [metrics] -----------------------------------------------------------------------------


def load(tmp_path: Path, extra: str) -> MetricsConfig:
    path = tmp_path / "dialswitch.toml"
    path.write_text(BASE + extra)
    return load_config(path).metrics


def problems(tmp_path: Path, extra: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return info.value.problems


def test_no_metrics_table_means_no_listener_of_its_own(tmp_path: Path) -> None:
    assert load(tmp_path, "") == MetricsConfig("", 0)
    assert load(tmp_path, "[metrics]\n") == MetricsConfig("", 0)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("[::1]:9464", "::1", 9464),
        ("10.0.0.5:8080", "10.0.0.5", 8080),  # another address than [http]'s
        ("127.0.0.1:5060", "127.0.0.1", 5060),  # only a UDP listener has 5060
    ],
)
def test_listen_is_a_host_and_port(tmp_path: Path, listen: str, host: str, port: int) -> None:
    assert load(tmp_path, f'[metrics]\nlisten = "{listen}"\n') == MetricsConfig(host, port)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('listen = "127.0.0.1"', "missing port in '127.0.0.1'"),
        ('listen = "127.0.0.1:0"', "bad port '0' (expected 1-65535)"),
        ('listen = ""', "expected host:port, got ''"),
        ("listen = 9464", "expected a string, got an integer"),
        ('listen = "::1:9464"', "IPv6 address needs brackets: '::1:9464'"),
        ('listen = "127.0.0.1:8080"', "127.0.0.1:8080 clashes with http.listen"),
        ('listen = "0.0.0.0:8080"', "0.0.0.0:8080 clashes with http.listen"),
        (
            'listen = "127.0.0.1:5070"',
            "127.0.0.1:5070 clashes with sip.listen tcp:127.0.0.1:5070",
        ),
    ],
)
def test_a_bad_listen_is_named(tmp_path: Path, extra: str, message: str) -> None:
    assert problems(tmp_path, f"[metrics]\n{extra}\n") == [Problem("metrics.listen", message)]


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    found = problems(tmp_path, "[metrics]\nport = 9464\n")
    assert found == [Problem("metrics.port", "unknown key")]


def free_port(kind: socket.SocketKind) -> str:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def test_check_config_reports_a_metrics_port_in_use(tmp_path: Path) -> None:
    text = (
        BASE.replace("5060", free_port(socket.SOCK_DGRAM))
        .replace("5070", free_port(socket.SOCK_STREAM))
        .replace("8080", free_port(socket.SOCK_STREAM))
    )
    path = tmp_path / "dialswitch.toml"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        listen = f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        path.write_text(f'{text}[storage]\npath = "{tmp_path / "var"}"\n{listen}')
        found = check_config(path)
    assert found == [Problem("metrics.listen", f"cannot bind tcp 127.0.0.1:{port}: port in use")]
    assert check_config(path) == []  # once the port is free
