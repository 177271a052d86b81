"""More SIPp scenario shapes for the integration tests (see ``tests/support/sipp.py``).

``caller_any_end``: a trunk caller that accepts either way the switch may end a call
it never meant to connect: answered then BYE'd by the switch, or refused with a final
error. The test reads which one from the caller's message log.
"""

from __future__ import annotations

from tests.support import sipp

REFUSALS = (403, 404, 480, 486, 487, 488, 500, 503, 603)
"""The final error responses ``caller_any_end`` accepts (and ACKs)."""

_ACK = """  <send>
    <![CDATA[
      ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""

_BYE_OK = """  <recv request="BYE"/>
  <send next="done">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


def caller_any_end(number: str, rtp_port: int, **caller_options: object) -> str:
    """A caller of ``number`` that ends cleanly on 200-then-BYE or on a refusal.

    Answered: ACK, then wait for the switch's BYE and answer it 200. Refused with one
    of `REFUSALS`: ACK. ``caller_options`` go to `sipp.caller` (``caller_id``, ...).
    """
    # Reuse sipp.caller's INVITE and provisional responses: everything before its
    # final-response <recv> (a refusing caller's scenario ends with that recv + ACK).
    text = sipp.caller(number, rtp_port, expect_final=486, **caller_options)  # type: ignore[arg-type]
    start = text.index("<scenario")
    start = text.index("\n", start) + 1
    invite_and_provisional = text[start : text.index('  <recv response="486"/>')]
    refusals = "".join(
        f'  <recv response="{code}" optional="true" next="refused"/>\n' for code in REFUSALS
    )
    body = (
        invite_and_provisional
        + refusals
        + '  <recv response="200" rtd="true"/>\n'
        + _ACK.format(number=number)
        + _BYE_OK
        + '  <label id="refused"/>\n'
        + _ACK.format(number=number)
        + '  <label id="done"/>\n'
    )
    head = '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    return f'{head}\n<scenario name="caller-any-end">\n{body}</scenario>\n'
