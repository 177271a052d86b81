"""GET /metrics on the real switch, after a known sequence of calls, parsed with
prometheus_client's own parser.

The module's switch also has ``[metrics] listen``: /metrics on a port of its
own, without auth, while the API port keeps asking for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    SwitchProcess,
    free_tcp_port,
    new_switch,
    running,
)
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipraw import SipUdp, assert_alive

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
POST_DIAL_MS = 300
"""The callee's pause between its 100 Trying and its 180: the post-dial delay."""
RING_MS = 600
TALK_MS = 1500
DROP_EVERY = 10
"""The callee's audio loses every tenth RTP packet on its way to the switch."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_tcp_port()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory, metrics_port: int
) -> AsyncIterator[SwitchProcess]:
    """The conftest's switch, with ``[metrics] listen`` on ``metrics_port``."""
    handle = new_switch(tmp_path_factory.mktemp("switch"), app_server.base)
    assert handle.config is not None
    with handle.config.open("a") as config:
        config.write(f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    async with running(handle) as started:
        yield started


async def get(url: str, auth: bool = True) -> tuple[int, str]:
    headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)} if auth else {}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(url) as response:
        return response.status, await response.text()


async def scrape(switch: SwitchProcess, auth: bool = True) -> tuple[int, str]:
    return await get(f"{switch.http}/metrics", auth)


def samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class Lossy:
    """A datagram transport that drops every ``every``-th datagram it is asked to send."""

    def __init__(self, transport: asyncio.DatagramTransport, every: int):
        self.transport = transport
        self.every = every
        self.sent = 0
        self.dropped = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += 1
        if self.sent % self.every == 0:
            self.dropped += 1
            return
        self.transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class ForeignPayload:
    """A datagram transport that sends every ``every``-th RTP packet with payload type
    99, which no leg negotiated (the packet is otherwise untouched)."""

    def __init__(self, transport: asyncio.DatagramTransport, every: int):
        self.transport = transport
        self.every = every
        self.sent = 0
        self.foreign = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += 1
        if self.sent % self.every == 0 and len(data) > 12:
            self.foreign += 1
            data = data[:1] + bytes([(data[1] & 0x80) | 99]) + data[2:]
        self.transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def slow_ringing_callee(rtp_port: int) -> str:
    """Answers like ``sipp.callee("answer")`` but waits POST_DIAL_MS before its 180,
    rings RING_MS, then talks TALK_MS and hangs up."""
    text = sipp.callee("answer", rtp_port=rtp_port, ring_ms=RING_MS, hangup_after_ms=TALK_MS)
    trying = sipp.response(100, tag=False)
    assert text.count(trying) == 1
    return text.replace(trying, f'{trying}  <pause milliseconds="{POST_DIAL_MS}"/>\n')


async def test_metrics_count_a_known_sequence_of_calls(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    status, _ = await scrape(switch, auth=False)
    assert status == 401  # behind the REST API's Basic auth
    status, text = await scrape(switch)
    assert status == 200
    before = samples(text)

    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(440), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    assert callee_audio.transport is not None
    lossy = Lossy(callee_audio.transport, DROP_EVERY)
    callee_audio.transport = lossy  # type: ignore[assignment]
    try:
        await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port),
            slow_ringing_callee(callee_audio.port),
        )
        await switch.wait_idle()
        await sipp.run_call(
            switch, workdir, sipp.caller(NUMBER, caller_audio.port), sipp.callee("busy")
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    await switch.wait_idle()
    assert lossy.dropped >= 3

    status, text = await scrape(switch)
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("dialswitch_calls_total", direction="inbound", status="completed") == 2
    assert grew("dialswitch_calls_total", direction="outbound-dial", status="completed") == 1
    assert grew("dialswitch_calls_total", direction="outbound-dial", status="busy") == 1
    assert grew("dialswitch_call_setup_seconds_count", direction="inbound") == 2
    assert grew("dialswitch_call_setup_seconds_count", direction="outbound-dial") == 1
    setup = grew("dialswitch_call_setup_seconds_sum", direction="outbound-dial")
    assert (POST_DIAL_MS + RING_MS) / 1000 <= setup < (POST_DIAL_MS + RING_MS) / 1000 + 0.5

    # The post-dial delay of the answered child only: the busy one never rang.
    pdd = "dialswitch_post_dial_delay_seconds"
    assert grew(f"{pdd}_count", direction="outbound-dial") == 1
    delay = grew(f"{pdd}_sum", direction="outbound-dial")
    assert POST_DIAL_MS / 1000 <= delay < POST_DIAL_MS / 1000 + 0.2
    assert grew(f"{pdd}_bucket", direction="outbound-dial", le="0.25") == 0
    assert grew(f"{pdd}_bucket", direction="outbound-dial", le="0.5") == 1

    # RTP of the answered call's two legs: both peers talked, the callee lost some.
    received = grew("dialswitch_rtp_packets_total", direction="rx")
    lost = grew("dialswitch_rtp_packets_lost_total", direction="rx")
    assert received >= TALK_MS / 20, (received, lost)
    assert 1 <= lost <= lossy.dropped, (received, lost)
    assert grew("dialswitch_rtp_packets_total", direction="tx") >= TALK_MS / 20

    assert grew("dialswitch_webhook_requests_total", kind="document", outcome="ok") == 2
    assert grew("dialswitch_webhook_seconds_count", kind="document") == 2
    for gauge in ("calls_active", "call_actors", "legs", "players", "recorders"):
        assert value(after, f"dialswitch_{gauge}") == 0, gauge
    assert value(after, "dialswitch_media_ports") == 1  # the bridge's own port
    assert value(after, "dialswitch_callbacks_queued") == 0
    assert value(after, "dialswitch_registrations") == 0


async def test_rtp_of_a_payload_type_not_negotiated_is_dropped_and_counted(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    """Every 10th packet of the caller's PCMU stream comes as payload type 99: the
    switch drops those (the callee hears only the caller's tone) and counts them."""
    _, text = await scrape(switch)
    before = samples(text)
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(440), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    assert caller_audio.transport is not None
    foreign = ForeignPayload(caller_audio.transport, 10)
    caller_audio.transport = foreign  # type: ignore[assignment]
    try:
        await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=TALK_MS),
            sipp.callee("answer", rtp_port=callee_audio.port),
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    await switch.wait_idle()
    _, text = await scrape(switch)
    after = samples(text)
    discarded = value(after, "dialswitch_rtp_packets_discarded_total", direction="rx") - value(
        before, "dialswitch_rtp_packets_discarded_total", direction="rx"
    )
    assert foreign.foreign >= 5
    # Those that reached the switch's stream: a few may go before the stream exists.
    assert 0.5 * foreign.foreign <= discarded <= foreign.foreign, (discarded, foreign.foreign)


async def test_metrics_listen_serves_only_metrics_and_without_auth(
    switch: SwitchProcess, metrics_port: int
) -> None:
    own = f"http://127.0.0.1:{metrics_port}"
    status, text = await get(f"{own}/metrics", auth=False)
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"dialswitch_calls", "dialswitch_post_dial_delay_seconds", "dialswitch_legs"} <= names
    assert {"dialswitch_rtp_packets", "dialswitch_rtp_packets_lost"} <= names
    for path in ("/healthz", "/demo/voice", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"):
        status, _ = await get(f"{own}{path}")
        assert status == 404, path
    status, _ = await scrape(switch, auth=False)
    assert status == 401  # the API port still asks for the account's credentials
    status, text = await scrape(switch)
    assert status == 200
    assert names == {family.name for family in text_string_to_metric_families(text)}


async def test_an_options_flood_from_one_source_is_refused_503_and_counted(
    switch: SwitchProcess,
) -> None:
    """A source past its OPTIONS burst (100 by default) gets 503 with Retry-After;
    another source is still served, and /metrics counts the refusals."""
    _, text = await scrape(switch)
    before = value(samples(text), "dialswitch_flood_refused_total", method="OPTIONS")
    async with SipUdp(switch.target(), local="127.0.0.9") as noisy:
        # In bursts of 20: 160 answers at once overflow a test socket's default
        # receive buffer (each small datagram is charged ~1.3 KB) and some are lost.
        for sent in range(160):
            noisy.send(noisy.request("OPTIONS", f"sip:{switch.target()}"))
            if sent % 20 == 19:
                await asyncio.sleep(0.01)
        answers = []
        while (response := await noisy.final(timeout=2.0)) is not None:
            answers.append(response)
    statuses = [a.status for a in answers]
    assert len(statuses) == 160
    assert 100 <= statuses.count(200) < 160
    refused = [a for a in answers if a.status == 503]
    assert refused and all(a.header("Retry-After") == "5" for a in refused)
    await assert_alive(switch)  # 127.0.0.1 is another source
    _, text = await scrape(switch)
    after = value(samples(text), "dialswitch_flood_refused_total", method="OPTIONS")
    assert after - before == len(refused)
