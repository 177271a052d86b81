"""SIPp scenarios for call transfer (REFER, RFC 3515) through the switch.

``referring_callee``: the far end of a ``<Dial>`` answers, then asks the switch to
transfer the call with an in-dialog REFER. ``referring_caller``: the trunk caller does
the same once it is answered. Each expects the switch's answer to the REFER (202 or
603); an accepted one then gets the switch's NOTIFYs (RFC 3515 section 2.4.5), which
the peer answers 200, and the switch's BYE.
"""

from __future__ import annotations

from tests.support import sipp

_CAPTURE = (
    "    <action>\n"
    '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>\n'
    "    </action>\n"
)


def _callee_request(method: str, cseq: int, extra: str = "") -> str:
    """An in-dialog request of the called party (its tag as `sipp.response` sets it)."""
    return sipp.send(
        f"      {method} [next_url] SIP/2.0\n"
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "      From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]\n"
        "      To: [$remote_from]\n"
        "      Call-ID: [call_id]\n"
        f"      CSeq: {cseq} {method}\n"
        "      Contact: <sip:callee@[local_ip]:[local_port]>\n"
        f"{extra}"
        "      Max-Forwards: 70\n"
        "      Content-Length: 0\n",
        retrans=True,
    )


def refer_headers(target: str, x_headers: dict[str, str] | None = None) -> str:
    lines = f"      Refer-To: <{target}>\n      Referred-By: <sip:callee@[local_ip]:[local_port]>\n"
    return lines + "".join(f"      {k}: {v}\n" for k, v in (x_headers or {}).items())


def _notifies(count: int) -> str:
    """Answer ``count`` NOTIFYs of the refer event with 200."""
    return ('  <recv request="NOTIFY"/>\n' + sipp.ok_to_request()) * count


def referring_callee(
    target: str,
    *,
    rtp_port: int,
    expect: int,
    refer_after_ms: int = 500,
    x_headers: dict[str, str] | None = None,
    decline: bool = False,
) -> str:
    """Answer, REFER to ``target`` ``refer_after_ms`` later, expect ``expect`` (202/603).

    202: answer the NOTIFYs (100 Trying, then the outcome), then the switch's BYE,
    or with ``decline`` (the app refused) hang up ourselves.
    603: the call goes on; hang up ourselves a moment later.
    """
    body = (
        f'  <recv request="INVITE" rrs="true">\n{_CAPTURE}  </recv>\n'
        + sipp.response(100, tag=False)
        + sipp.response(180)
        + sipp.response(200, sdp_port=rtp_port)
        + '  <recv request="ACK"/>\n'
        + f'  <pause milliseconds="{refer_after_ms}"/>\n'
        + _callee_request("REFER", 2, refer_headers(target, x_headers))
        + f'  <recv response="{expect}"/>\n'
    )
    if expect == 202:
        body += _notifies(2)
    if expect == 202 and not decline:
        body += sipp.answer_bye()
    else:
        body += (
            '  <pause milliseconds="500"/>\n'
            + _callee_request("BYE", 3)
            + '  <recv response="200"/>\n'
        )
    return sipp.scenario("referring-callee", body)


def referring_caller(number: str, target: str, *, rtp_port: int, refer_after_ms: int = 800) -> str:
    """Call ``number``; once answered, REFER to ``target``, expect 603, then hang up."""
    in_dialog = (
        "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        '      From: "Test Caller" <sip:+14155550100@[local_ip]:[local_port]>'
        ";tag=[pid]SIPpTag00[call_number]\n"
        "      To: [$remote_to]\n"
        "      Call-ID: [call_id]\n"
        "{cseq}"
        "      Contact: <sip:+14155550100@[local_ip]:[local_port]>\n"
        "{extra}"
        "      Max-Forwards: 70\n"
        "      Content-Length: 0\n"
    )
    body = (
        sipp.caller_invite(number, rtp_port)
        + sipp.CALLER_PROVISIONAL
        + '  <recv response="200" rtd="true">\n'
        "    <action>\n"
        '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="remote_to"/>\n'
        "    </action>\n"
        "  </recv>\n"
        + sipp.caller_ack(number)
        + f'  <pause milliseconds="{refer_after_ms}"/>\n'
        + sipp.send(
            f"      REFER sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
            + in_dialog.format(cseq="      CSeq: 2 REFER\n", extra=refer_headers(target)),
            retrans=True,
        )
        + '  <recv response="603"/>\n'
        + '  <pause milliseconds="300"/>\n'
        + sipp.send(
            f"      BYE sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
            + in_dialog.format(cseq="      CSeq: 3 BYE\n", extra=""),
            retrans=True,
        )
        + '  <recv response="200"/>\n'
    )
    return sipp.scenario("referring-caller", body)


def callee_sending(methods: dict[str, int], *, rtp_port: int) -> str:
    """Answer, then send each in-dialog request of ``methods`` and expect its status;
    then hang up."""
    body = (
        f'  <recv request="INVITE" rrs="true">\n{_CAPTURE}  </recv>\n'
        + sipp.response(100, tag=False)
        + sipp.response(200, sdp_port=rtp_port)
        + '  <recv request="ACK"/>\n'
    )
    cseq = 2
    for method, status in methods.items():
        body += _callee_request(method, cseq) + f'  <recv response="{status}"/>\n'
        cseq += 1
    body += _callee_request("BYE", cseq) + '  <recv response="200"/>\n'
    return sipp.scenario("callee-sending", body)
