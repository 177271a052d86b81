#!/usr/bin/env python3
"""Smoke test for dialswitch's pjsua2 build.

Run with the interpreter the wheel was installed into:

    .venv/bin/pip install --no-deps --force-reinstall "$(deploy/pjsua2/build.sh .venv/bin/python | tail -n 1)"
    .venv/bin/python deploy/pjsua2/smoke.py

It starts one endpoint the way the call engine does (no pjsua worker
threads, callbacks on the main thread, maxCalls 2000, null audio device),
places CALLS simultaneous calls between two local accounts over UDP on
127.0.0.1, checks that all of them are answered with 200 and confirmed, that
audio, DTMF, a player and a recorder work, hangs up and shuts down cleanly.
More than 4 calls at once proves the wheel was built with dialswitch's
config_site.h: stock builds clamp maxCalls to 4.

Exit status 0 when every check passed, 1 otherwise. GPL-3.0-or-later.
"""

from __future__ import annotations

import argparse
import gc
import os
import struct
import sys
import tempfile
import threading
import time
import traceback
import wave

import pjsua2 as pj

RSS_LIMIT_MB = 300
MAIN_THREAD = threading.get_ident()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def thread_names() -> list[str]:
    names = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def where() -> str:
    return "main" if threading.get_ident() == MAIN_THREAD else "other"


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def ok(self, cond: bool, what: str) -> bool:
        print(("  ok    " if cond else "  FAIL  ") + what, flush=True)
        if not cond:
            self.failed.append(what)
        return cond


CHECKS = Checks()
ERRORS: list[str] = []


def guarded(fn):
    """Callbacks must never let an exception escape into pjsua2."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - recorded and reported
            ERRORS.append(traceback.format_exc())
            return None

    return wrapper


class Leg(pj.Call):
    """One call leg; the registry in `Smoke.legs` holds the only reference."""

    def __init__(self, smoke: "Smoke", acc: pj.Account, role: str, call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.smoke = smoke
        self.role = role
        self.states: list[int] = []
        self.last_code = 0
        self.media_active = False
        self.dtmf = ""
        self.dtmf_threads: set[str] = set()

    @guarded
    def onCallState(self, prm):
        ci = self.getInfo()
        self.states.append(ci.state)
        self.last_code = ci.lastStatusCode
        self.call_id_string = ci.callIdString
        self.smoke.state_threads.add(where())
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # Drop the registry's reference inside the leg's own callback.
            self.smoke.legs.pop(self.getId(), None)
            self.smoke.disconnected += 1

    @guarded
    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_active = True
                self.audio_index = mi.index
                self.conf_slot = mi.audioConfSlot

    @guarded
    def onDtmfDigit(self, prm):
        self.dtmf += prm.digit
        self.dtmf_threads.add(where())


class Acc(pj.Account):
    def __init__(self, smoke: "Smoke", name: str) -> None:
        super().__init__()
        self.smoke = smoke
        self.name = name

    @guarded
    def onIncomingCall(self, prm):
        leg = Leg(self.smoke, self, "callee", prm.callId)
        self.smoke.legs[leg.getId()] = leg
        self.smoke.incoming_msgs.append(prm.rdata.wholeMsg)
        self.smoke.incoming_src.append(prm.rdata.srcAddress)
        op = pj.CallOpParam(True)
        op.statusCode = 180
        leg.answer(op)
        op = pj.CallOpParam(True)
        op.statusCode = 200
        op.reason = "OK"
        leg.answer(op)


class Player(pj.AudioMediaPlayer):
    def __init__(self) -> None:
        super().__init__()
        self.eof = 0
        self.eof_threads: set[str] = set()

    @guarded
    def onEof2(self):
        self.eof += 1
        self.eof_threads.add(where())


class Smoke:
    def __init__(self, calls: int, log_level: int) -> None:
        self.n_calls = calls
        self.log_level = log_level
        self.legs: dict[int, Leg] = {}
        self.incoming_msgs: list[str] = []
        self.incoming_src: list[str] = []
        self.state_threads: set[str] = set()
        self.disconnected = 0
        self.ep = pj.Endpoint()

    def pump(self, until, timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(5)
            if until():
                return True
        print(f"  timeout after {timeout}s waiting for {what}", flush=True)
        return False

    def run(self) -> None:
        ep = self.ep
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 2000
        cfg.medConfig.threadCnt = 0
        cfg.logConfig.level = self.log_level
        cfg.logConfig.consoleLevel = self.log_level
        ep.libInit(cfg)

        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        tcfg.port = 0
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        local = ep.transportGetInfo(tid).localName
        ep.audDevManager().setNullDev()
        ep.libStart()

        rss = rss_mb()
        print(f"pjsua2 {ep.libVersion().full}; UDP transport {local}", flush=True)
        print(f"RSS after libStart: {rss:.1f} MB", flush=True)
        print(f"threads after libStart: {len(thread_names())} (main + pjsua/pjmedia C threads)", flush=True)
        CHECKS.ok(rss < RSS_LIMIT_MB, f"RSS after libStart {rss:.1f} MB < {RSS_LIMIT_MB} MB")

        accs = {}
        # Each account allocates RTP ports from its own counter and gives up
        # after 100 busy ports, so accounts sharing one base port collide once
        # a few hundred calls are up: give each its own range.
        for name, rtp_base in (("alice", 10000), ("bob", 20000)):
            acfg = pj.AccountConfig()
            acfg.idUri = f"sip:{name}@{local}"
            acfg.sipConfig.transportId = tid
            acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
            acfg.mediaConfig.transportConfig.port = rtp_base
            acfg.mediaConfig.transportConfig.portRange = 9000
            acc = Acc(self, name)
            acc.create(acfg)
            accs[name] = acc
        alice = accs["alice"]

        # --- N simultaneous calls alice -> bob -------------------------------
        callers = []
        for i in range(self.n_calls):
            leg = Leg(self, alice, "caller")
            op = pj.CallOpParam(True)
            op.opt.audioCount = 1
            op.opt.videoCount = 0
            hdr = pj.SipHeader()
            hdr.hName = "X-Dialswitch-Smoke"
            hdr.hValue = str(i)
            op.txOption.headers.append(hdr)
            leg.makeCall(f"sip:bob@{local}", op)
            self.legs[leg.getId()] = leg
            callers.append(leg)

        def all_confirmed():
            return len(self.legs) == 2 * self.n_calls and all(
                leg.states and leg.states[-1] == pj.PJSIP_INV_STATE_CONFIRMED and leg.media_active
                for leg in self.legs.values()
            )

        t0 = time.monotonic()
        confirmed = self.pump(all_confirmed, 15, "all legs CONFIRMED")
        print(f"  {2 * self.n_calls} legs set up in {time.monotonic() - t0:.2f}s", flush=True)
        CHECKS.ok(confirmed, f"{self.n_calls} simultaneous calls: all {2 * self.n_calls} legs CONFIRMED with active audio")
        CHECKS.ok(all(c.last_code == 200 for c in callers), "every caller saw 200 from the callee")
        CHECKS.ok(
            all(pj.PJSIP_INV_STATE_CALLING in c.states and pj.PJSIP_INV_STATE_EARLY in c.states for c in callers),
            "callers went CALLING -> EARLY (180) -> CONFIRMED",
        )
        CHECKS.ok(
            len(self.incoming_msgs) == self.n_calls
            and all("X-Dialswitch-Smoke:" in m for m in self.incoming_msgs),
            "custom X- header arrived in OnIncomingCallParam.rdata.wholeMsg",
        )
        if not confirmed:
            return
        names = {getattr(pj, n): n[len("PJSIP_INV_STATE_"):] for n in dir(pj) if n.startswith("PJSIP_INV_STATE_")}
        print("  caller states: " + " -> ".join(names[s] for s in callers[0].states), flush=True)

        caller = callers[0]
        callee = next(l for l in self.legs.values() if l.role == "callee" and l.call_id_string == caller.call_id_string)

        # --- audio: tone generator on the caller, RTP counted at the callee --
        tone = pj.ToneGenerator()
        tone.createToneGenerator(8000, 1)
        td = pj.ToneDesc()
        td.freq1, td.freq2, td.on_msec, td.off_msec, td.volume = 440, 480, 200, 50, 0
        tones = pj.ToneDescVector()
        tones.append(td)
        tone.play(tones, True)
        caller_am = caller.getAudioMedia(caller.audio_index)
        tone.startTransmit(caller_am)
        self._sleep_pumping(1.0)
        stat = callee.getStreamStat(callee.audio_index)
        rx = stat.rtcp.rxStat.pkt
        CHECKS.ok(rx > 20, f"callee received {rx} RTP packets in 1 s (media flows with medConfig.threadCnt=0)")
        tone.stopTransmit(caller_am)

        # --- recorder on the callee's leg, player on the caller's leg ------
        tmp = tempfile.mkdtemp(prefix="dialswitch-smoke-")
        wav_in = os.path.join(tmp, "prompt.wav")
        with wave.open(wav_in, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"".join(struct.pack("<h", (i % 40 - 20) * 800) for i in range(8000 * 3 // 10)))
        wav_out = os.path.join(tmp, "rec.wav")
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(wav_out)
        callee_am = callee.getAudioMedia(-1)
        callee_am.startTransmit(rec)
        player = Player()
        player.createPlayer(wav_in, pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(caller_am)
        got_eof = self.pump(lambda: player.eof > 0, 5, "player onEof2")
        CHECKS.ok(got_eof, f"AudioMediaPlayer.onEof2 fired (NO_LOOP), on thread: {sorted(player.eof_threads)}")
        player.stopTransmit(caller_am)
        callee_am.stopTransmit(rec)
        del rec  # closing the recorder writes the WAV header
        gc.collect()
        size = os.path.getsize(wav_out) if os.path.exists(wav_out) else 0
        CHECKS.ok(size > 44 + 1000, f"recorder wrote {size} bytes")
        del player, tone
        gc.collect()

        # --- DTMF (RFC 4733) -------------------------------------------------
        caller.dialDtmf("12#")
        got = self.pump(lambda: callee.dtmf == "12#", 5, "DTMF at callee")
        CHECKS.ok(got, f"dialDtmf('12#') arrived via onDtmfDigit as {callee.dtmf!r}, on thread: {sorted(callee.dtmf_threads)}")

        # --- hang up everything ------------------------------------------------
        del caller, callee, callers
        for leg in list(self.legs.values()):
            if leg.role == "caller":
                leg.hangup(pj.CallOpParam(True))
        done = self.pump(lambda: not self.legs, 10, "all legs DISCONNECTED")
        CHECKS.ok(done and self.disconnected == 2 * self.n_calls, f"all {2 * self.n_calls} legs DISCONNECTED")
        print(f"  call state callbacks ran on: {sorted(self.state_threads)}", flush=True)

        for acc in accs.values():
            acc.shutdown()
        del accs, alice, acc
        self.legs.clear()
        gc.collect()

    def _sleep_pumping(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ep.libHandleEvents(5)

    def destroy(self) -> None:
        gc.collect()
        self.ep.libDestroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10, help="simultaneous calls (default 10)")
    ap.add_argument("--log-level", type=int, default=1, help="pjsip log level 0-5 (default 1)")
    args = ap.parse_args()

    smoke = Smoke(args.calls, args.log_level)
    try:
        smoke.run()
    except pj.Error as e:
        CHECKS.ok(False, f"pjsua2 error: {e.info()}")
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        CHECKS.ok(False, f"unexpected {type(e).__name__}: {e}")
        traceback.print_exc()
    finally:
        try:
            smoke.destroy()
            print("  libDestroy done", flush=True)
        except pj.Error as e:
            CHECKS.ok(False, f"libDestroy: {e.info()}")

    for err in ERRORS:
        print("callback raised:\n" + err, file=sys.stderr)
    CHECKS.ok(not ERRORS, "no exception escaped a callback")
    if CHECKS.failed:
        print(f"SMOKE FAILED: {len(CHECKS.failed)} check(s): " + "; ".join(CHECKS.failed), flush=True)
        return 1
    print("SMOKE OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
