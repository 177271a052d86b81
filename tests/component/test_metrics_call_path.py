"""What the call path counts in /metrics (switch/metrics.py), with fake legs.

The post-dial delay of an outbound leg runs from its INVITE to its first
180/183 or its answer, observed once per leg; a leg refused before it rang is
not observed. Each ended leg is counted by direction and final status.
"""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from switch.call_request import parse_call_request
from switch.outbound_call import ApiCall
from tests.component.conftest import NUMBER, Harness
from tests.support.fakes import FakeLeg, FarEnd

ALICE = "+14155550101"
BOB = "+14155550102"
RING_AFTER = 0.15
"""Seconds a callee waits before its 180: the post-dial delay these tests expect."""


def ringing_late(ring_after: float, answer_after: float) -> FarEnd:
    """180 after ``ring_after`` s, a second 180 (not observed again), 200 after ``answer_after``."""

    async def far_end(leg: FakeLeg) -> None:
        await asyncio.sleep(ring_after)
        leg.far_ring()
        leg.far_ring(early_media=True)
        await asyncio.sleep(answer_after)
        leg.far_answer()

    return far_end


def refusing_at_once(code: int) -> FarEnd:
    async def far_end(leg: FakeLeg) -> None:
        await asyncio.sleep(0.01)
        leg.far_reject(code, "Busy Here")

    return far_end


def answering_at_once(after: float) -> FarEnd:
    """200 with no provisional response before it: the answer ends the post-dial delay."""

    async def far_end(leg: FakeLeg) -> None:
        await asyncio.sleep(after)
        leg.far_answer()

    return far_end


def samples(harness: Harness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = harness.services.metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_a_dial_observes_the_post_dial_delay_of_the_leg_that_rang(harness: Harness) -> None:
    harness.app.documents["/voice"] = (
        f"<Response><Dial><Number>{ALICE}</Number><Number>{BOB}</Number></Dial></Response>"
    )
    harness.engine.far_end(ALICE, ringing_late(RING_AFTER, 0.05))
    harness.engine.far_end(BOB, refusing_at_once(486))
    call = harness.call()
    await harness.until(lambda: len(harness.engine.connections) == 2)
    call.leg.far_hangup()
    await call.finished()

    found = samples(harness)
    pdd = "dialswitch_post_dial_delay_seconds"
    assert value(found, f"{pdd}_count", direction="outbound-dial") == 1  # BOB never rang
    assert RING_AFTER <= value(found, f"{pdd}_sum", direction="outbound-dial") < RING_AFTER + 0.1
    assert value(found, f"{pdd}_bucket", direction="outbound-dial", le="0.1") == 0
    assert value(found, f"{pdd}_bucket", direction="outbound-dial", le="0.25") == 1
    assert value(found, f"{pdd}_count", direction="inbound") == 0
    calls = "dialswitch_calls_total"
    assert value(found, calls, direction="inbound", status="completed") == 1
    assert value(found, calls, direction="outbound-dial", status="completed") == 1
    assert value(found, calls, direction="outbound-dial", status="busy") == 1
    setup = "dialswitch_call_setup_seconds"
    assert value(found, f"{setup}_count", direction="outbound-dial") == 1
    assert value(found, f"{setup}_sum", direction="outbound-dial") >= RING_AFTER + 0.05


async def test_an_api_call_answered_without_ringing_observes_its_answer(
    harness: Harness,
) -> None:
    harness.engine.far_end(ALICE, answering_at_once(0.05))
    harness.app.documents["/api-voice"] = "<Response><Hangup/></Response>"
    form = {"To": ALICE, "From": NUMBER, "Url": harness.url("/api-voice")}
    config = harness.services.config
    request = parse_call_request(
        form, {}, numbers=[n.number for n in config.numbers], clients=[], trunks=[]
    )
    services = harness.services
    actor = ApiCall(
        services, request, None, services.new_call_sid(), asyncio.get_running_loop().time()
    )
    services.calls.add(actor)
    await asyncio.wait_for(actor.run(), 2)
    services.calls.remove(actor.call_sid)

    found = samples(harness)
    pdd = "dialswitch_post_dial_delay_seconds"
    assert value(found, f"{pdd}_count", direction="outbound-api") == 1
    assert 0.05 <= value(found, f"{pdd}_sum", direction="outbound-api") < 0.15
    assert value(found, "dialswitch_calls_total", direction="outbound-api", status="completed") == 1
