"""SRTP media transports torn down while RTP arrives (CVE-2023-38703).

deploy/pjsua2/patches/0014 ties an SRTP transport's lifetime to the group lock
of the UDP or ICE transport under it, so the member transport can no longer
call into an SRTP transport (or its DTLS keying) that has been freed. This
test drives exactly that path with the built pjsua2: waves of SDES-SRTP calls
between two accounts of one endpoint, audio flowing both ways, then hung up
(by either side) while RTP is still arriving, 50 calls per case. It checks
that the calls were SRTP (RTP/SAVP with a=crypto in the SDP, and the callee's
stream decrypting packets), that every leg reached DISCONNECTED, and that the
process survives to a clean libDestroy().

The pjsua2 part runs in a child process (this file run as a script), so a
crash is a failed test with the child's output, not a dead pytest. The cases:

- ``udp-main``: the switch's own configuration (``medConfig.threadCnt = 0``:
  RTP is received on the thread that hangs up).
- ``udp-media-thread``: pjsua's default media worker thread receives RTP while
  the main thread destroys the transports.

SRTP over ICE, the member transport whose deferred destroy made the bug
reachable, is not exercised: in this pjproject tree (Jami's fork) creating an
ICE media transport blocks the calling thread in a netlink recv() (Jami's
deprecated-IPv6-address scan in ice_session.c) on machines like the CI
containers, with or without patch 0014. Over UDP the member's destroy blocks
until its callbacks are done, so the unpatched build does not fail this
test either: it checks that the patched lifetime rules (group lock on the UDP
transport, SRTP freed by the group lock's destroy handler) hold up under
hang-ups with RTP in flight and a clean shutdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback

import pytest

CALLS = 50
WAVE = 10  # calls up at once
TIMEOUT = 120  # seconds for one child run

CASES = {
    # name: (member transport, pjmedia worker threads)
    "udp-main": ("udp", 0),
    "udp-media-thread": ("udp", 1),
}


def _run_child(case: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object] | None]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), case],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return proc, result


@pytest.mark.parametrize("case", list(CASES))
def test_srtp_calls_hung_up_while_rtp_arrives(case: str) -> None:
    pytest.importorskip("pjsua2")
    proc, result = _run_child(case)
    tail = (proc.stdout[-3000:] + "\n--- stderr ---\n" + proc.stderr[-6000:]).strip()
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} (negative: killed by signal)\n{tail}"
    )
    assert result is not None, f"child printed no result\n{tail}"
    assert not result["callback_errors"], result["callback_errors"]
    assert result["calls"] == CALLS
    assert result["confirmed_legs"] == 2 * CALLS, result
    # SDES-SRTP was negotiated on every call, and the streams really decrypted.
    assert result["savp_offers"] == CALLS and result["crypto_offers"] == CALLS, result
    assert result["savp_answers"] == CALLS and result["crypto_answers"] == CALLS, result
    assert result["srtp_tp_legs"] == 2 * CALLS, result
    assert result["legs_with_rx"] == 2 * CALLS, result
    assert result["min_rx_pkts"] > 0, result
    # Every leg ended, and nothing was left behind.
    assert result["disconnected_legs"] == 2 * CALLS, result
    assert result["live_legs_at_end"] == 0, result
    assert result["lib_destroyed"] is True, result


# --------------------------------------------------------------------------
# Child process: one pjsua2 Endpoint, driven from its main thread only.


def child(case: str) -> int:
    import pjsua2 as pj

    _transport, media_threads = CASES[case]
    errors: list[str] = []
    main_thread = threading.get_ident()

    def guarded(fn):
        def wrapper(*args, **kwargs):
            try:
                if threading.get_ident() != main_thread:
                    errors.append(f"{fn.__name__} called off the main thread")
                return fn(*args, **kwargs)
            except Exception:  # noqa: BLE001 - reported in the result
                errors.append(traceback.format_exc())
                return None

        return wrapper

    legs: dict[int, Leg] = {}
    stats = {
        "confirmed_legs": 0,
        "disconnected_legs": 0,
        "savp_offers": 0,
        "crypto_offers": 0,
        "savp_answers": 0,
        "crypto_answers": 0,
        "srtp_tp_legs": 0,
        "legs_with_rx": 0,
        "min_rx_pkts": None,
    }

    class Leg(pj.Call):
        def __init__(self, acc, role, call_id=pj.PJSUA_INVALID_ID):
            super().__init__(acc, call_id)
            self.role = role
            self.confirmed = False
            self.media_active = False
            self.audio_index = -1
            self.rx_checked = False

        @guarded
        def onCallState(self, prm):
            ci = self.getInfo()
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
                self.confirmed = True
                stats["confirmed_legs"] += 1
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                stats["disconnected_legs"] += 1
                legs.pop(self.getId(), None)

        @guarded
        def onCallSdpCreated(self, prm):
            # The caller's offer and the callee's answer, as they go out.
            sdp = prm.sdp.wholeSdp
            kind = "offers" if self.role == "caller" and not prm.remSdp.wholeSdp else "answers"
            if self.role == "callee" and prm.remSdp.wholeSdp:
                stats["savp_answers"] += "m=audio" in sdp and "RTP/SAVP" in sdp
                stats["crypto_answers"] += "a=crypto:" in sdp
            elif kind == "offers":
                stats["savp_offers"] += "m=audio" in sdp and "RTP/SAVP" in sdp
                stats["crypto_offers"] += "a=crypto:" in sdp

        @guarded
        def onCallMediaState(self, prm):
            ci = self.getInfo()
            for mi in ci.media:
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    self.media_active = True
                    self.audio_index = mi.index

    class Acc(pj.Account):
        @guarded
        def onIncomingCall(self, prm):
            leg = Leg(self, "callee", prm.callId)
            legs[leg.getId()] = leg
            op = pj.CallOpParam(True)
            op.statusCode = 200
            leg.answer(op)

    ep = pj.Endpoint()
    ep.libCreate()
    result: dict[str, object] = {
        "case": case,
        "pjsua2": f"{pj.__file__} {ep.libVersion().full}",
        "calls": 0,
        "lib_destroyed": False,
    }
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 64
        cfg.medConfig.threadCnt = media_threads
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        tcfg.port = 0
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        local = ep.transportGetInfo(tid).localName
        ep.audDevManager().setNullDev()
        ep.libStart()

        def pump(until, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ep.libHandleEvents(5)
                if until():
                    return True
            return False

        accs = {}
        for name, rtp_base in (("alice", 31000), ("bob", 41000)):
            acfg = pj.AccountConfig()
            acfg.idUri = f"sip:{name}@{local}"
            acfg.sipConfig.transportId = tid
            acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
            acfg.mediaConfig.transportConfig.port = rtp_base
            acfg.mediaConfig.transportConfig.portRange = 5000
            acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
            acfg.mediaConfig.srtpSecureSignaling = 0
            acc = Acc()
            acc.create(acfg)
            accs[name] = acc

        tone = pj.ToneGenerator()
        tone.createToneGenerator(8000, 1)
        td = pj.ToneDesc()
        td.freq1, td.freq2, td.on_msec, td.off_msec, td.volume = 440, 480, 1000, 0, 0
        tones = pj.ToneDescVector()
        tones.append(td)
        tone.play(tones, True)

        def place_call():
            # Only the registry holds the Leg: no local may outlive the call
            # (a Call destroyed after libDestroy() trips a pjsua assertion).
            leg = Leg(accs["alice"], "caller")
            op = pj.CallOpParam(True)
            op.opt.audioCount = 1
            op.opt.videoCount = 0
            leg.makeCall(f"sip:bob@{local}", op)
            legs[leg.getId()] = leg

        def hang_up(role):
            for call_id in [i for i, call in legs.items() if call.role == role]:
                if call_id in legs:
                    legs[call_id].hangup(pj.CallOpParam(True))
                ep.libHandleEvents(1)

        rx_counts: list[int] = []
        wave_no = 0
        while result["calls"] < CALLS:
            n = min(WAVE, CALLS - int(result["calls"]))
            for _ in range(n):
                place_call()
            result["calls"] = int(result["calls"]) + n

            def wave_up(n=n):
                return len(legs) == 2 * n and all(
                    call.confirmed and call.media_active for call in legs.values()
                )

            if not pump(wave_up, 20):
                raise RuntimeError(f"wave {wave_no}: calls not all up: {len(legs)} legs")

            # Audio into every leg, both directions: RTP arrives at every
            # SRTP transport when the hang-up comes.
            for call_id in legs:
                tone.startTransmit(legs[call_id].getAudioMedia(legs[call_id].audio_index))

            def all_receiving():
                for call in legs.values():
                    if call.rx_checked:
                        continue
                    st = call.getStreamStat(call.audio_index)
                    if st.rtcp.rxStat.pkt < 5:
                        return False
                    call.rx_checked = True
                    rx_counts.append(int(st.rtcp.rxStat.pkt))
                    stats["legs_with_rx"] += 1
                    stats["srtp_tp_legs"] += _is_srtp(call)
                return True

            if not pump(all_receiving, 10):
                raise RuntimeError(f"wave {wave_no}: no RTP on some legs")
            # Hang up while media flows: callers of even waves, callees of odd
            # ones, one after the other with events pumped in between.
            hang_up("caller" if wave_no % 2 == 0 else "callee")
            if not pump(lambda: not legs, 20):
                raise RuntimeError(f"wave {wave_no}: {len(legs)} legs did not end")
            wave_no += 1

        stats["min_rx_pkts"] = min(rx_counts) if rx_counts else 0
        del tone
        for acc in accs.values():
            acc.shutdown()
        accs.clear()
    except Exception:  # noqa: BLE001 - reported in the result
        errors.append(traceback.format_exc())
    finally:
        result.update(stats)
        result["live_legs_at_end"] = len(legs)
        legs.clear()
        import gc

        gc.collect()
        ep.libDestroy()
        result["lib_destroyed"] = True
        result["callback_errors"] = errors
        print("RESULT " + json.dumps(result), flush=True)
    return 0


def _is_srtp(leg) -> bool:
    """Whether SRTP is active on the leg's media transport: pjsua's call dump
    prints the SRTP transport's own info ("SRTP status: Active Crypto-suite:
    AES_...") from pjmedia_transport_get_info()."""
    dump = leg.dump(True, "")
    return "SRTP status: Active Crypto-suite: AES" in dump


if __name__ == "__main__":
    sys.exit(child(sys.argv[1]))
