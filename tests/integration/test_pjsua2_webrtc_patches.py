"""pjsua2 for browser (WebRTC) legs: deploy/pjsua2/patches 0020-0024.

Runs deploy/pjsua2/webrtc_check.py with this interpreter in a child process (one pjsua2
Endpoint per process; a step that hangs inside pjsua ends the child through its
watchdog, not pytest) and checks the JSON it prints. The installed pjsua2 must be the
wheel deploy/pjsua2/build.sh builds with these patches: with an older wheel the child
hangs creating an ICE media transport (0020) and every test here fails, naming the step.

- 0020: ICE media transports are created (IPv4 and IPv6 host candidates, and a
  127.0.0.1 candidate for media bound to loopback) without waiting on the kernel.
- 0021: completed DTLS-SRTP handshakes do not stall the polling thread.
- 0022: an answer repeats the offer's a=mid and accepts its BUNDLE group.
- 0023: an account bound to a transport takes the requests that arrive through it, and
  only those.
- 0024: a poll that completes a DTLS-SRTP handshake does not wait for the retransmission
  clock's thread, and a later handshake on the same transport (a re-INVITE that swaps
  the DTLS roles) still runs that clock.
- PJSUA_CALL_NO_SDP_OFFER from the browser account: offer in the 200, answer in the ACK.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHECK = Path(__file__).resolve().parents[2] / "deploy" / "pjsua2" / "webrtc_check.py"
TIMEOUT = 60  # seconds; the child's watchdog gives each step 8 s, a whole run takes ~3 s


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    pytest.importorskip("pjsua2")
    proc = subprocess.run(
        [sys.executable, str(CHECK)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    tail = proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, f"webrtc_check.py printed nothing (exit {proc.returncode})\n{tail}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "hung" not in result, (
        f"webrtc_check.py hung in step {result['hung']!r}: is the installed pjsua2 built "
        f"with deploy/pjsua2/patches 0020-0024?\n{json.dumps(result, indent=1)}\n{tail}"
    )
    assert not result["callback_errors"], result["callback_errors"]
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{tail}"
    return result


def failed(result: dict[str, Any], prefix: str) -> list[str]:
    return [name for name, ok in result["checks"].items() if name.startswith(prefix) and not ok]


def test_ice_media_transports_are_created(report: dict[str, Any]) -> None:
    ice = report["ice_any"]
    assert not failed(report, "ice_any"), ice
    assert ice["candidates"], ice
    # Creating the ICE transport used to block for good; now it takes milliseconds.
    assert ice["make_call_to_invite_ms"] < 2000, ice
    assert report["browser_invite"]["invite_to_200_ms"] < 2000, report["browser_invite"]


def test_bound_account_takes_its_transports_requests_only(report: dict[str, Any]) -> None:
    assert report["browser_invite"]["account"] == "browser", report["browser_invite"]
    for name in ("udp", "public_tcp"):
        assert report["plain_invites"][name]["account"] == "default", report["plain_invites"]
    assert report["dtls"]["callee_accounts"] == ["browser"], report["dtls"]


def test_sip_tcp_and_tls_connections_send_without_nagle_delay(report: dict[str, Any]) -> None:
    """Patches 0025 and 0027: the connections pjsua accepted over TCP (the relay
    listener) and over TLS have TCP_NODELAY."""
    assert report["accepted_nodelay"] == {"tcp": True, "tls": True}, report["accepted_nodelay"]


def test_answer_repeats_mid_and_accepts_bundle(report: dict[str, Any]) -> None:
    browser = report["browser_invite"]
    assert browser["status"] == 200, browser
    answer = browser["answer"]
    assert answer["mid"] == ["0"], browser["answer_sdp"]
    assert answer["group"] == ["BUNDLE 0"], browser["answer_sdp"]
    assert answer["candidates"] > 0 and answer["fingerprint"], browser["answer_sdp"]
    assert answer["profile"] == "UDP/TLS/RTP/SAVPF" and answer["rtcp_mux"], answer
    plain = report["plain_invites"]
    assert plain["public_tcp"]["answer"]["mid"] == ["a0"], plain
    assert plain["public_tcp"]["answer"]["group"] == ["BUNDLE a0"], plain
    # An offer without a=mid gets the answer it always got.
    assert not plain["udp"]["answer"]["mid"] and not plain["udp"]["answer"]["group"], plain
    # The line pjsua rejects keeps its mid and loses its group.
    two = plain["udp_two_lines"]["answer"]
    assert two["mid"] == ["a", "b"] and two["group"] == ["BUNDLE a"], two
    assert two["m"][1].split()[1] == "0", two


def test_no_sdp_offer_call_answers_in_the_ack(report: dict[str, Any]) -> None:
    result = report["no_sdp_offer"]
    assert not failed(report, "no_sdp_offer"), result
    assert result["answer"]["mid"] == ["0"], result["answer_sdp"]
    assert result["answer"]["group"] == ["BUNDLE 0"], result["answer_sdp"]


def test_dtls_srtp_over_ice_without_stalls(report: dict[str, Any]) -> None:
    dtls = report["dtls"]
    assert dtls["calls_with_srtp_both_ways"] == dtls["calls"], dtls
    assert dtls["slowest_polls_ms"][0] < dtls["poll_limit_ms"], dtls
    assert dtls["handshakes"] == 2 * dtls["calls"], dtls


def test_dtls_handshake_completion_does_not_wait_for_the_clock(report: dict[str, Any]) -> None:
    # Before 0024 each completing poll joined the 50 Hz clock's thread: about 20 ms.
    dtls = report["dtls"]
    assert dtls["handshake_polls_ms"], dtls
    assert dtls["handshake_polls_ms"][0] < dtls["handshake_poll_limit_ms"], dtls


def test_dtls_renegotiation_restarts_the_clock(report: dict[str, Any]) -> None:
    reneg = report["dtls_renegotiation"]
    assert not failed(report, "dtls_renegotiation"), reneg
    assert reneg["handshakes"] == 2, reneg
    # The clock stopped without a join after the first handshake runs a thread again.
    assert reneg["live_threads_during"] > reneg["live_threads_before"], reneg


def test_every_check_passed(report: dict[str, Any]) -> None:
    assert report["ok"], failed(report, "")
