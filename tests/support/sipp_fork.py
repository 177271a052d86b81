"""SIPp callee shapes for the ``<Dial>`` fork tests (see ``tests/support/sipp.py``).

Every callee here runs one call and tolerates the switch's CANCEL at any moment it
may legally come, so one scenario serves both the branch that wins and the ones
that lose: which path it took is read back from its message log.

``callee(...)`` composes a UAS:

- optional digest challenge: 401 with ``WWW-Authenticate``, then a second INVITE
  whose ``Authorization`` SIPp verifies with the expected username and password;
- 100 Trying (unless not ``trying``), then 180, 183 with SDP, or no provisional
  response (with neither and no ``after_ms``, the 200 is SIPp's first reply: the
  tightest answer SIPp can give, for answer races);
- the final step: ``"answer"`` (200 with SDP and optional extra headers),
  a refusal code (404, 486, 600, ...), ``"ring"`` (no final response until
  CANCELled) or ``"silent"`` (never sends anything at all);
- ``after_ms``: the final step waits this long; a CANCEL during the wait is
  answered 200 + 487 (or, with ``late_answer``, by a 200 to the INVITE that
  "crossed" the CANCEL: the switch must then ACK and BYE it);
- after answering: a CANCEL that crossed our 200 is answered 200; the call then
  waits for the switch's BYE, or sends its own BYE after ``hangup_after_ms``
  unless the switch's BYE comes first.

SIPp sends the 200 a moment (about a millisecond) after a wait ends; a CANCEL that
lands in that gap is not handled, so tests that race answers use no wait at all.

``caller_cancel(...)``: a trunk caller that CANCELs while the switch rings it (the
switch must keep it unanswered: ``answerOnBridge``).

``timeline(peer)`` gives each message's time as SIPp logged it (local wall clock,
microseconds), so tests can compare moments across peers.
"""

from __future__ import annotations

import re
from datetime import datetime

from tests.support import sipp

NONCE = "8e1b1e3f9c2d4a7b"
REALM = "dialswitch.test"

_CAPTURE_CSEQ = (
    '      <ereg regexp="[0-9]+ INVITE" search_in="hdr" header="CSeq:" assign_to="invite_cseq"/>\n'
)
_CAPTURE_FROM = '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>\n'


def _ok_to_cancel() -> str:
    """200 to a CANCEL: its To gets our tag (the INVITE's To had none)."""
    return sipp.response(200)


def callee(
    final: str | int = "answer",
    *,
    rtp_port: int = 0,
    trying: bool = True,
    provisional: int | None = 180,
    after_ms: int = 0,
    hangup_after_ms: int | None = None,
    headers_200: dict[str, str] | None = None,
    late_answer: bool = False,
    challenge: tuple[str, str] | None = None,
    silent_ms: int = 8000,
) -> str:
    """One UAS call; see the module docstring. ``final``: ``"answer"``, ``"ring"``,
    ``"silent"`` or a SIP status code to refuse with."""
    name = f"fork-callee-{final}"
    if final == "silent":
        # Never answer; INVITE retransmissions are absorbed by SIPp. The call ends
        # on our side after ``silent_ms``; a CANCEL cannot come (no 1xx was sent).
        body = '  <recv request="INVITE"/>\n' + f'  <pause milliseconds="{silent_ms}"/>\n'
        return sipp.scenario(name, body)
    # SIPp rejects a variable that is set but never used: capture only what is used.
    actions = _CAPTURE_CSEQ
    if final == "answer" and hangup_after_ms is not None:
        actions += _CAPTURE_FROM
    body = f'  <recv request="INVITE" rrs="true">\n    <action>\n{actions}    </action>\n'
    body += "  </recv>\n"
    if challenge is not None:
        username, password = challenge
        body += sipp.response(
            401,
            headers={
                "WWW-Authenticate": (f'Digest realm="{REALM}", nonce="{NONCE}", algorithm=MD5')
            },
        )
        body += '  <recv request="ACK"/>\n'
        body += (
            '  <recv request="INVITE">\n    <action>\n'
            + actions
            + f'      <verifyauth assign_to="authvalid" username="{username}"'
            f' password="{password}"/>\n'
            "    </action>\n  </recv>\n"
            '  <nop hide="true" test="authvalid" next="authok"/>\n'
            + sipp.response(403)
            + '  <recv request="ACK"/>\n'
            # A wrong Authorization fails the scenario: nothing ever answers this recv.
            + '  <recv request="BYE" timeout="50"/>\n'
            + '  <label id="authok"/>\n'
        )
    if trying:
        body += sipp.response(100, tag=False)
    if provisional == 183:
        body += sipp.response(183, sdp_port=rtp_port)
    elif provisional is not None:
        body += sipp.response(provisional)
    if final == "ring":
        body += '  <recv request="CANCEL" next="cancelled"/>\n'
    elif after_ms > 0:
        body += (
            f'  <recv request="CANCEL" timeout="{after_ms}" ontimeout="final" next="cancelled"/>\n'
        )
    body += '  <label id="final"/>\n'
    if final == "answer":
        body += sipp.response(200, sdp_port=rtp_port, headers=headers_200)
        body += '  <recv request="CANCEL" optional="true" next="crossed"/>\n'
        body += '  <recv request="ACK" next="confirmed"/>\n'
        body += '  <label id="crossed"/>\n' + sipp.ok_to_request()
        body += '  <recv request="ACK"/>\n'
        body += '  <label id="confirmed"/>\n'
        body += _after_answer(hangup_after_ms)
    elif final != "ring":
        body += sipp.response(int(final)) + '  <recv request="ACK" next="end"/>\n'
    body += '  <label id="cancelled"/>\n'
    if late_answer:
        # Our 200 "crossed" the CANCEL: the switch gets a 2xx for the INVITE it
        # cancelled. The CANCEL is answered first: the switch ACKs the INVITE's 200 at
        # once, and SIPp drops an ACK that lands between two of its sends.
        body += _ok_to_cancel()
        body += sipp.response(
            200, sdp_port=rtp_port, cseq="CSeq: [$invite_cseq]", headers=headers_200
        )
        body += '  <recv request="ACK"/>\n'
        body += sipp.answer_bye(next_label="end")
    else:
        body += _ok_to_cancel()
        body += sipp.response(487, cseq="CSeq: [$invite_cseq]")
        body += '  <recv request="ACK"/>\n'
    body += '  <label id="end"/>\n'
    return sipp.scenario(name, body)


def _after_answer(hangup_after_ms: int | None) -> str:
    if hangup_after_ms is None:
        return sipp.answer_bye(next_label="end")
    return (
        f'  <recv request="BYE" timeout="{hangup_after_ms}" ontimeout="ourbye"'
        ' next="theirbye"/>\n'
        '  <label id="theirbye"/>\n'
        + sipp.ok_to_request(next_label="end")
        + '  <label id="ourbye"/>\n'
        + sipp.send(sipp.CALLEE_BYE, retrans=True)
        + '  <recv response="200" next="end"/>\n'
    )


def caller_cancel(number: str, rtp_port: int, cancel_after_ms: int, ringing: int = 180) -> str:
    """A trunk caller that CANCELs ``cancel_after_ms`` after the ``ringing`` response.

    The switch must not answer meanwhile (``answerOnBridge``): a 200 fails the
    scenario. After the CANCEL: 200 to it, 487 to the INVITE, which we ACK.
    """
    invite = sipp.caller_invite(number, rtp_port)
    via = "[last_Via:]"  # our INVITE's Via, as echoed: CANCEL and ACK share its branch
    common = (
        f"      {via}\n"
        "      [last_From:]\n"
        "      [last_To:]\n"
        "      Call-ID: [call_id]\n"
        "{cseq}"
        "      Max-Forwards: 70\n"
        "      Content-Length: 0\n"
    )
    body = (
        invite
        + '  <recv response="100" optional="true"/>\n'
        # SIPp starts a recv's timeout only once it is the current step: the wait
        # follows one mandatory provisional response.
        + f'  <recv response="{ringing}"/>\n'
        + f'  <recv response="200" timeout="{cancel_after_ms}" ontimeout="cancel"'
        ' next="answered"/>\n'
        + '  <label id="cancel"/>\n'
        + sipp.send(
            f"      CANCEL sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
            + common.format(cseq="      CSeq: 1 CANCEL\n")
        )
        + '  <recv response="200"/>\n'
        + '  <recv response="487"/>\n'
        + sipp.send(
            f"      ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0\n"
            + common.format(cseq="      CSeq: 1 ACK\n"),
            next_label="end",
        )
        + '  <label id="answered"/>\n'
        # Answered although it should still ring: fail (nothing sends this request).
        + '  <recv request="NOTIFY" timeout="50"/>\n'
        + '  <label id="end"/>\n'
    )
    return sipp.scenario("caller-cancel", body)


# ---- reading the logs -------------------------------------------------------------------


def timeline(peer: sipp.Sipp) -> list[tuple[datetime, str, str]]:
    """(time, "sent"/"received", whole message) of every message in ``peer``'s log."""
    parts = re.split(
        r"-{10,} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
        r"(?:UDP|TCP) message (sent|received)[^\n]*\n",
        peer.messages().text,
    )
    found = []
    for i in range(1, len(parts) - 2, 3):
        stamp = datetime.strptime(parts[i].replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f")
        found.append((stamp, parts[i + 1], parts[i + 2].strip()))
    return found


def first(peer: sipp.Sipp, direction: str, start: str) -> tuple[datetime, str]:
    """Time and text of the first message going ``direction`` whose first line starts
    with ``start`` (``"CANCEL "``, ``"SIP/2.0 200"``); AssertionError if none."""
    for stamp, way, message in timeline(peer):
        if way == direction and message.startswith(start):
            return stamp, message
    raise AssertionError(
        f"{peer.name} {direction} no {start!r}: {peer.messages().received_starts()}"
    )


def header(message: str, name: str) -> str | None:
    """The value of the first ``name`` header of a logged message, or None."""
    head = message.split("\n\n", 1)[0]
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\s*$", head, re.M | re.I)
    return match.group(1) if match else None


def starts(peer: sipp.Sipp, direction: str) -> list[str]:
    """First lines of the messages going ``direction``, in order."""
    return [m.splitlines()[0] for _, way, m in timeline(peer) if way == direction and m]
