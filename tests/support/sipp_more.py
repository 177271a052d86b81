"""More SIPp scenario shapes for the integration tests (see ``tests/support/sipp.py``).

``caller_any_end``: a trunk caller that accepts either way the switch may end a call
it never meant to connect: answered then BYE'd by the switch, or refused with a final
error. The test reads which one from the caller's message log.
"""

from __future__ import annotations

from typing import Any

from tests.support import sipp

REFUSALS = (403, 404, 480, 486, 487, 488, 500, 503, 603)
"""The final error responses ``caller_any_end`` accepts (and ACKs)."""


def caller_any_end(number: str, rtp_port: int, **caller_options: Any) -> str:
    """A caller of ``number`` that ends cleanly on 200-then-BYE or on a refusal.

    Answered: ACK, then wait for the switch's BYE and answer it 200. Refused with one
    of `REFUSALS`: ACK. ``caller_options`` go to `sipp.caller_invite` (``caller_id``, ...).
    """
    refusals = "".join(
        f'  <recv response="{code}" optional="true" next="refused"/>\n' for code in REFUSALS
    )
    body = (
        sipp.caller_invite(number, rtp_port, **caller_options)
        + sipp.CALLER_PROVISIONAL
        + refusals
        + '  <recv response="200" rtd="true"/>\n'
        + sipp.caller_ack(number)
        + sipp.answer_bye(next_label="done")
        + '  <label id="refused"/>\n'
        + sipp.caller_ack(number)
        + '  <label id="done"/>\n'
    )
    return sipp.scenario("caller-any-end", body)
