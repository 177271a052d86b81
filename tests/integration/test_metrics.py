"""GET /metrics on the real switch, after a known sequence of calls, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ACCOUNT_SID, AUTH_TOKEN, NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipraw import SipUdp, assert_alive

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"


async def scrape(switch: SwitchProcess, auth: bool = True) -> tuple[int, str]:
    headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)} if auth else {}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{switch.http}/metrics") as response,
    ):
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_a_known_sequence_of_calls(
    switch: SwitchProcess, app_server: AppServer, workdir
) -> None:
    status, _ = await scrape(switch, auth=False)
    assert status == 401  # behind the REST API's Basic auth
    status, text = await scrape(switch)
    assert status == 200
    before = samples(text)

    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port), sipp.callee("busy"))
    finally:
        peer.close()
    await switch.wait_idle()

    status, text = await scrape(switch)
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("dialswitch_calls_total", direction="inbound", status="completed") == 1
    assert grew("dialswitch_calls_total", direction="outbound-dial", status="busy") == 1
    assert grew("dialswitch_call_setup_seconds_count", direction="inbound") == 1
    assert grew("dialswitch_call_setup_seconds_count", direction="outbound-dial") == 0
    assert grew("dialswitch_webhook_requests_total", kind="document", outcome="ok") == 1
    assert grew("dialswitch_webhook_seconds_count", kind="document") == 1
    for gauge in ("calls_active", "call_actors", "legs", "players", "recorders"):
        assert value(after, f"dialswitch_{gauge}") == 0, gauge
    assert value(after, "dialswitch_media_ports") == 1  # the bridge's own port
    assert value(after, "dialswitch_callbacks_queued") == 0


async def test_an_options_flood_from_one_source_is_refused_503_and_counted(
    switch: SwitchProcess,
) -> None:
    """A source past its OPTIONS burst (100 by default) gets 503 with Retry-After;
    another source is still served, and /metrics counts the refusals."""
    _, text = await scrape(switch)
    before = value(samples(text), "dialswitch_flood_refused_total", method="OPTIONS")
    async with SipUdp(switch.target(), local="127.0.0.9") as noisy:
        for _ in range(160):
            noisy.send(noisy.request("OPTIONS", f"sip:{switch.target()}"))
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
