"""<Dial record>, end to end: a real switch records a bridged call between SIPp peers
whose RTP parties send distinct tones (caller 600 Hz, callee 1000 Hz). Each test fetches
the recording as a user would, through the REST API with Basic auth from the
RecordingUrl the action received, decodes it and checks it by frequency analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    AppServer,
    SwitchProcess,
    bounded,
    new_switch,
    running,
    wait_gone,
)
from tests.support import sipp
from tests.support.recording_checks import (
    DelayedRtpPeer,
    RecordingsClient,
    Wav,
    basic_auth,
    leading_silence,
    mp3_duration,
    parse_wav,
    peak_tone_share,
    sound_seconds,
    tone_share,
    trailing_silence,
)
from tests.support.rtp_peer import RtpPeer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
CALLER_HZ = 600
CALLEE_HZ = 1000
RINGBACK_HZ = (440, 480)
RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}$")
CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
HANGUP = "<Response><Hangup/></Response>"
DURATION_SLACK = 0.3
"""Recorded length against the bridged time the callee's RTP party measured."""

# Figures the tests measured, printed at the end of the module (pytest -s) for the report.
FIGURES: list[str] = []


def figure(text: str) -> None:
    FIGURES.append(text)


@pytest.fixture(scope="module", autouse=True)
def print_figures():
    yield
    if FIGURES:
        print("\nrecording figures:\n  " + "\n  ".join(FIGURES))


def dial(number_attrs: str = "", **attrs: str) -> str:
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    number = f"<Number {number_attrs}>" if number_attrs else "<Number>"
    return f"<Response><Dial {attributes}>{number}{CALLEE}</Number></Dial></Response>"


def api(switch: SwitchProcess) -> RecordingsClient:
    return RecordingsClient(switch.http, ACCOUNT_SID, AUTH_TOKEN)


@dataclass
class Call:
    voice: dict[str, str]
    action: dict[str, str]
    caller_audio: RtpPeer
    callee_audio: RtpPeer
    callee: sipp.Sipp

    @property
    def call_sid(self) -> str:
        return self.voice["CallSid"]

    @property
    def bridged(self) -> float:
        """Seconds the callee's RTP party heard the switch: first packet to last."""
        times = [t for t, _ in self.callee_audio.chunks]
        assert times, "the callee heard nothing"
        return times[-1] - times[0] + 0.02


async def place_call(
    switch: SwitchProcess,
    app_server: AppServer,
    workdir: Path,
    *,
    caller_audio: RtpPeer | None = None,
    callee_audio: RtpPeer | None = None,
    behaviour: str = "answer",
    ring_ms: int = 0,
    hangup_after_ms: int | None = 3000,
    number_attrs: str = "",
    meanwhile: Callable[[RtpPeer, RtpPeer], Awaitable[None]] | None = None,
    **attrs: str,
) -> Call:
    """One call through the ``<Dial record...>`` of ``attrs``; the action hangs up.

    The callee hangs up after ``hangup_after_ms``; the caller waits for the switch's BYE.
    ``meanwhile`` runs once the call is placed, with the caller's and callee's RTP parties.
    """
    app_server.routes["/voice"] = dial(number_attrs, action="/action", **attrs)
    app_server.routes["/action"] = HANGUP
    app_server.routes.setdefault("/rec", "")
    caller_audio = caller_audio or RtpPeer(CALLER_HZ)
    callee_audio = callee_audio or RtpPeer(CALLEE_HZ)
    await caller_audio.start()
    await callee_audio.start()
    scenario = (
        sipp.callee(
            "answer", rtp_port=callee_audio.port, ring_ms=ring_ms, hangup_after_ms=hangup_after_ms
        )
        if behaviour == "answer"
        else sipp.callee(behaviour)
    )
    callee = sipp.Sipp(workdir, "callee", scenario, port=switch.trunk_port)
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    try:
        await callee.start(timeout_s=30)
        await caller.start(switch.target(), timeout_s=30)
        if meanwhile is not None:
            await meanwhile(caller_audio, callee_audio)
        await caller.finish(40)
        await callee.finish(20)
    finally:
        await caller.stop()
        await callee.stop()
        caller_audio.close()
        callee_audio.close()
    (voice,) = app_server.hits("/voice")
    (action,) = await app_server.wait_for("/action", timeout=10)
    return Call(voice.params, action.params, caller_audio, callee_audio, callee)


async def recording_of(switch: SwitchProcess, call: Call) -> Wav:
    """The recording the action names, fetched from its RecordingUrl + ``.wav``."""
    url = call.action.get("RecordingUrl")
    assert url, f"no RecordingUrl in the action: {call.action}"
    return await api(switch).wav(url)


def check_holds(samples, present: list[float], absent: list[float], share: float = 0.3) -> None:
    """``present`` tones each hold ``share`` of the power; ``absent`` ones nowhere 5 %."""
    assert sound_seconds(samples) >= 0.5, "no sound"
    for freq in present:
        got = tone_share(samples, freq)
        assert got > share, f"{freq} Hz holds {got:.3f} of the power"
    for freq in absent:
        got = peak_tone_share(samples, freq)
        assert got < 0.05, f"{freq} Hz should be absent, holds up to {got:.3f}"


def check_dual(wav: Wav) -> None:
    """Channel 1 holds the caller's tone only, channel 2 the callee's only."""
    check_holds(wav.channel(1), [CALLER_HZ], [CALLEE_HZ], share=0.5)
    check_holds(wav.channel(2), [CALLEE_HZ], [CALLER_HZ], share=0.5)


# ---- 1. record-from-answer-dual ------------------------------------------------------------


@bounded(60)
async def test_record_from_answer_dual(switch: SwitchProcess, app_server: AppServer, workdir):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record="record-from-answer-dual",
        recordingStatusCallback=app_server.url("/rec"),
    )
    action = call.action
    assert action["DialCallStatus"] == "completed"
    assert RECORDING_SID.match(action["RecordingSid"]), action
    assert action["RecordingUrl"] == (
        f"{switch.http}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{action['RecordingSid']}"
    )
    wav = await recording_of(switch, call)
    assert (wav.channels, wav.rate) == (2, 8000)
    check_dual(wav)
    # As long as the bridge: the callee's party heard the switch that long.
    figure(
        f"from-answer-dual: file {wav.duration:.3f} s, bridged {call.bridged:.3f} s,"
        f" DialCallDuration {action['DialCallDuration']}, RecordingDuration"
        f" {action['RecordingDuration']}"
    )
    assert abs(wav.duration - call.bridged) <= DURATION_SLACK, (wav.duration, call.bridged)
    dial_duration = int(action["DialCallDuration"])
    assert dial_duration - DURATION_SLACK <= wav.duration <= dial_duration + 1 + DURATION_SLACK
    assert abs(int(action["RecordingDuration"]) - wav.duration) <= 0.5 + 0.01

    (callback,) = await app_server.wait_for("/rec", timeout=10)
    params = callback.params
    assert callback.method == "POST"
    assert params["AccountSid"] == ACCOUNT_SID
    assert params["CallSid"] == call.call_sid
    assert CALL_SID.match(call.call_sid)
    assert params["RecordingSid"] == action["RecordingSid"]
    assert params["RecordingUrl"] == action["RecordingUrl"]
    assert params["RecordingStatus"] == "completed"
    assert params["RecordingChannels"] == "2"
    assert params["RecordingSource"] == "DialVerb"
    assert params["RecordingDuration"] == action["RecordingDuration"]
    error = abs(int(params["RecordingDuration"]) - wav.duration)
    figure(f"from-answer-dual: |RecordingDuration - real| = {error:.3f} s")
    assert error <= 0.5 + 0.01
    started = parsedate_to_datetime(params["RecordingStartTime"])
    assert started.tzinfo is not None
    assert abs((datetime.now(started.tzinfo) - started).total_seconds()) < 30


# ---- 2. record-from-answer: mono, both tracks ----------------------------------------------


@bounded(60)
async def test_record_from_answer_mixes_both_parties(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record="record-from-answer",
        recordingStatusCallback=app_server.url("/rec"),
    )
    wav = await recording_of(switch, call)
    assert wav.channels == 1
    check_holds(wav.mono(), [CALLER_HZ, CALLEE_HZ], [], share=0.2)
    assert abs(wav.duration - call.bridged) <= DURATION_SLACK, (wav.duration, call.bridged)
    (callback,) = await app_server.wait_for("/rec", timeout=10)
    assert callback.params["RecordingChannels"] == "1"


# ---- 3. recordingTrack ---------------------------------------------------------------------


@bounded(60)
@pytest.mark.parametrize(
    "record,track,heard,unheard",
    [
        ("record-from-answer", "inbound", CALLER_HZ, CALLEE_HZ),
        ("record-from-answer-dual", "inbound", CALLER_HZ, CALLEE_HZ),
        ("record-from-answer", "outbound", CALLEE_HZ, CALLER_HZ),
        ("record-from-answer-dual", "outbound", CALLEE_HZ, CALLER_HZ),
    ],
)
async def test_recording_track_gives_mono_of_one_side(
    switch: SwitchProcess, app_server: AppServer, workdir, record, track, heard, unheard
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record=record,
        recordingTrack=track,
        recordingStatusCallback=app_server.url("/rec"),
    )
    wav = await recording_of(switch, call)
    assert wav.channels == 1
    check_holds(wav.mono(), [heard], [unheard], share=0.5)
    (callback,) = await app_server.wait_for("/rec", timeout=10)
    assert callback.params["RecordingChannels"] == "1"


# ---- 4. record-from-ringing ----------------------------------------------------------------


@bounded(60)
@pytest.mark.parametrize("record", ["record-from-ringing-dual", "record-from-answer-dual"])
async def test_recording_from_ringing_holds_the_ringback(
    switch: SwitchProcess, app_server: AppServer, workdir, record
):
    call = await place_call(
        switch, app_server, workdir, ring_ms=2000, hangup_after_ms=2500, record=record
    )
    wav = await recording_of(switch, call)
    assert wav.channels == 2
    ringing = wav.duration - call.bridged
    figure(f"{record}, callee rings 2 s: file {wav.duration:.3f} s, bridged {call.bridged:.3f} s")
    if record == "record-from-answer-dual":
        # Nothing of the ringing period: as long as the bridge, no ringback anywhere.
        assert abs(ringing) <= DURATION_SLACK, (wav.duration, call.bridged)
        check_holds(wav.channel(2), [CALLEE_HZ], [*RINGBACK_HZ, CALLER_HZ], share=0.5)
        check_holds(wav.channel(1), [CALLER_HZ], [*RINGBACK_HZ, CALLEE_HZ], share=0.5)
        return
    # About 2 s longer than the bridge: the callee rang that long.
    assert 2.0 - DURATION_SLACK <= ringing <= 2.0 + 2 * DURATION_SLACK, ringing
    # Channel 2 (what the caller heard): US ringback (440+480 Hz) first, then the callee.
    check_holds(wav.part(0.1, ringing - 0.2, channel=2), RINGBACK_HZ, [CALLEE_HZ], share=0.2)
    check_holds(
        wav.part(ringing + 0.2, wav.duration, channel=2), [CALLEE_HZ], RINGBACK_HZ, share=0.5
    )
    # Channel 1 (what the caller said): its 600 Hz all along, during the ringing too.
    check_holds(wav.part(0.2, ringing - 0.2, channel=1), [CALLER_HZ], [*RINGBACK_HZ], share=0.5)
    check_holds(wav.channel(1), [CALLER_HZ], [CALLEE_HZ, *RINGBACK_HZ], share=0.5)


# ---- 5. trim-silence -----------------------------------------------------------------------


@bounded(60)
async def test_trim_silence_cuts_leading_and_trailing_silence(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    """The caller keeps quiet 1.5 s, talks 1.5 s, keeps quiet; the callee says nothing."""
    files: dict[str, Wav] = {}
    for trim in ("do-not-trim", "trim-silence"):
        app_server.reset()
        call = await place_call(
            switch,
            app_server,
            workdir,
            caller_audio=DelayedRtpPeer(CALLER_HZ, delay=1.5, duration=1.5),
            callee_audio=RtpPeer(None),
            hangup_after_ms=4000,
            record="record-from-answer",
            trim=trim,
        )
        files[trim] = wav = await recording_of(switch, call)
        assert wav.channels == 1
        samples = wav.mono()
        figure(
            f"{trim}: file {wav.duration:.3f} s, leading silence"
            f" {leading_silence(samples):.3f} s, trailing {trailing_silence(samples):.3f} s,"
            f" RecordingDuration {call.action['RecordingDuration']}"
        )
        assert abs(int(call.action["RecordingDuration"]) - wav.duration) <= 0.5 + 0.01
    untrimmed, trimmed = files["do-not-trim"].mono(), files["trim-silence"].mono()
    assert leading_silence(untrimmed) >= 1.0
    assert trailing_silence(untrimmed) >= 0.5
    # Trimmed: it starts (and ends) with the caller's audio, within the 50 ms margin.
    assert leading_silence(trimmed) <= 0.1
    assert trailing_silence(trimmed) <= 0.1
    check_holds(trimmed[:4000], [CALLER_HZ], [CALLEE_HZ], share=0.5)
    assert abs(files["trim-silence"].duration - 1.6) <= DURATION_SLACK
    # The same audio: untrimmed less its silent ends is the trimmed length.
    spoken = (
        files["do-not-trim"].duration - leading_silence(untrimmed) - trailing_silence(untrimmed)
    )
    assert abs(files["trim-silence"].duration - 0.1 - spoken) <= 0.1


# ---- 6. recordingStatusCallbackEvent ---------------------------------------------------------


@bounded(60)
async def test_in_progress_then_completed_callbacks(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record="record-from-answer-dual",
        recordingStatusCallback=app_server.url("/rec"),
        recordingStatusCallbackEvent="in-progress completed",
    )
    in_progress, completed = await app_server.wait_for("/rec", 2, timeout=10)
    assert in_progress.params["RecordingStatus"] == "in-progress"
    assert completed.params["RecordingStatus"] == "completed"
    for callback in (in_progress, completed):
        assert callback.params["RecordingSid"] == call.action["RecordingSid"]
        assert callback.params["CallSid"] == call.call_sid
        assert callback.params["RecordingSource"] == "DialVerb"
        assert callback.params["RecordingChannels"] == "2"
    # in-progress came while the call was up, before the action was requested.
    assert app_server.requests.index(in_progress) < app_server.requests.index(
        app_server.hits("/action")[0]
    )
    assert completed.params["RecordingDuration"] == call.action["RecordingDuration"]


@bounded(60)
async def test_busy_callee_gives_an_absent_recording(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        behaviour="busy",
        record="record-from-answer",
        recordingStatusCallback=app_server.url("/rec"),
        recordingStatusCallbackEvent="in-progress completed absent",
    )
    assert call.action["DialCallStatus"] == "busy"
    assert "RecordingUrl" not in call.action
    assert "RecordingSid" not in call.action
    (absent,) = await app_server.wait_for("/rec", 1, timeout=10)
    params = absent.params
    assert params["RecordingStatus"] == "absent"
    assert params["CallSid"] == call.call_sid
    assert RECORDING_SID.match(params["RecordingSid"])
    assert params["RecordingSource"] == "DialVerb"
    assert len(app_server.hits("/rec")) == 1  # no in-progress, no completed
    # The side files made ready when the <Dial> started were emptied for the next one.
    sides = side_files(switch)
    assert not [name for name in sides if name.startswith(params["RecordingSid"])]
    assert all(size == 0 for _, size in sides.values())


def side_files(switch: SwitchProcess) -> dict[str, tuple[int, int]]:
    """The side files on the switch's disk: name -> (inode, size)."""
    partial = switch.workdir / "var" / "recordings" / "partial"
    return {p.name: (p.stat().st_ino, p.stat().st_size) for p in partial.glob("*/*")}


@bounded(90)
async def test_the_next_recording_reuses_the_side_files(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    """A finished recording's side files are renamed for the next one, not deleted."""
    attrs = {"record": "record-from-answer-dual", "recordingStatusCallback": app_server.url("/rec")}
    first = await place_call(switch, app_server, workdir, **attrs)
    await app_server.wait_for("/rec", 1, timeout=10)
    spares = side_files(switch)
    assert spares and all(size == 0 for _, size in spares.values())
    assert not [name for name in spares if name.startswith(first.action["RecordingSid"])]

    app_server.reset()
    second = await place_call(switch, app_server, workdir, **attrs)
    await app_server.wait_for("/rec", 1, timeout=10)
    sid = second.action["RecordingSid"]
    assert f"{sid}.parent.wav" in spares and f"{sid}.child.wav" in spares
    after = side_files(switch)
    assert {inode for inode, _ in after.values()} == {inode for inode, _ in spares.values()}
    wav = await recording_of(switch, second)
    check_dual(wav)


@bounded(60)
async def test_child_completed_status_callback_carries_the_recording(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/child"] = ""
    call = await place_call(
        switch,
        app_server,
        workdir,
        number_attrs='statusCallback="/child" statusCallbackEvent="answered completed"',
        record="record-from-answer-dual",
        recordingStatusCallback=app_server.url("/rec"),
    )
    (final,) = await app_server.wait_for("/rec", 1, timeout=10)
    answered, completed = await app_server.wait_for("/child", 2, timeout=10)
    assert completed.params["CallStatus"] == "completed"
    assert completed.params["RecordingSid"] == final.params["RecordingSid"]
    assert completed.params["RecordingUrl"] == final.params["RecordingUrl"]
    # Sent as the leg ends, before any trimming: within a second of the final figure.
    duration = int(completed.params["RecordingDuration"])
    assert abs(duration - int(final.params["RecordingDuration"])) <= 1
    assert call.action["RecordingSid"] == final.params["RecordingSid"]
    # Only the completed event names the recording (Twilio's <Number> statusCallback).
    assert not {"RecordingUrl", "RecordingSid", "RecordingDuration"} & answered.params.keys()


# ---- 7. an unknown record value ------------------------------------------------------------


@bounded(60)
async def test_unknown_record_value_records_nothing(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record="sometimes",
        recordingStatusCallback=app_server.url("/rec"),
        recordingStatusCallbackEvent="in-progress completed absent",
    )
    assert call.action["DialCallStatus"] == "completed"  # the dial itself went on
    assert "RecordingUrl" not in call.action
    codes = [n["code"] for n in switch.notifications(call.call_sid)]
    assert 12200 in codes, codes
    listed = await api(switch).get(f"Calls/{call.call_sid}/Recordings.json")
    assert listed.status == 200
    assert listed.json()["recordings"] == []
    assert app_server.hits("/rec") == []


# ---- 8. a recordingStatusCallback that cannot be reached -------------------------------------


@bounded(60)
async def test_unreachable_status_callback_keeps_the_recording(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch,
        app_server,
        workdir,
        record="record-from-answer-dual",
        recordingStatusCallback="http://127.0.0.1:1/cb",
    )
    client = api(switch)
    sid = call.action["RecordingSid"]
    resource = await client.get(f"Recordings/{sid}.json")
    assert resource.status == 200
    assert resource.json()["status"] == "completed"
    wav = await recording_of(switch, call)
    check_dual(wav)


# ---- 9. the REST API -----------------------------------------------------------------------


@bounded(90)
async def test_rest_api_lists_serves_and_deletes(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(switch, app_server, workdir, record="record-from-answer-dual")
    client = api(switch)
    sid = call.action["RecordingSid"]
    url = call.action["RecordingUrl"]

    listed = await client.get("Recordings.json")
    assert listed.status == 200
    entry = next(r for r in listed.json()["recordings"] if r["sid"] == sid)
    assert entry["call_sid"] == call.call_sid
    assert entry["status"] == "completed"
    assert entry["channels"] == 2
    assert entry["source"] == "DialVerb"
    assert entry["duration"] == call.action["RecordingDuration"]
    per_call = await client.get(f"Calls/{call.call_sid}/Recordings.json")
    assert per_call.status == 200
    assert [r["sid"] for r in per_call.json()["recordings"]] == [sid]

    wav = await client.wav(url)
    full = await client.get(url + ".wav")
    mp3 = await client.get(url + ".mp3")
    assert mp3.status == 200
    assert mp3.headers["Content-Type"].startswith("audio/mpeg")
    seconds, channels = mp3_duration(mp3.body)
    figure(f"mp3 {seconds:.3f} s against wav {wav.duration:.3f} s")
    assert channels == 2
    assert abs(seconds - wav.duration) <= 0.25

    ranged = await client.get(url + ".wav", headers={"Range": "bytes=0-99"})
    assert ranged.status == 206
    assert ranged.body == full.body[:100]
    assert ranged.headers["Content-Range"] == f"bytes 0-99/{len(full.body)}"

    for auth in (basic_auth(ACCOUNT_SID, "wrong-token"), None):
        refused = await client.get(url + ".wav", auth=auth)
        assert refused.status == 401
        assert refused.json()["code"] == 20003
        refused = await client.get(f"Recordings/{sid}.json", auth=auth)
        assert refused.status == 401

    deleted = await client.request("DELETE", f"Recordings/{sid}.json")
    assert deleted.status == 204
    for path in (f"Recordings/{sid}.json", f"Recordings/{sid}.wav", f"Recordings/{sid}.mp3"):
        gone = await client.get(path)
        assert gone.status == 404, path
        error = gone.json()
        assert error["code"] == 20404
        assert error["status"] == 404
        assert {"message", "more_info"} <= error.keys()
    listed = await client.get(f"Calls/{call.call_sid}/Recordings.json")
    assert listed.json()["recordings"] == []


# ---- 9b. a full disk -------------------------------------------------------------------------


@contextlib.contextmanager
def full_filesystem(path: Path) -> Iterator[None]:
    """A 256 kB tmpfs at ``path`` (`fill` fills it); skips the test where mounting is denied."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Fill the filesystem holding ``path`` until a write fails with ENOSPC."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


@bounded(90)
async def test_a_full_disk_never_affects_the_call(app_server: AppServer, workdir: Path):
    app_server.reset()
    handle = new_switch(workdir, app_server.base)
    recordings = workdir / "var" / "recordings"
    with full_filesystem(recordings):
        async with running(handle):
            fill(recordings)
            call = await place_call(
                handle,
                app_server,
                workdir,
                record="record-from-answer-dual",
                recordingStatusCallback=app_server.url("/rec"),
                recordingStatusCallbackEvent="completed absent",
            )
            # The call itself went on as if nothing were recorded: bridged both ways.
            assert call.action["DialCallStatus"] == "completed"
            assert int(call.action["DialCallDuration"]) >= 2
            assert tone_share(call.callee_audio.audio(), CALLER_HZ) > 0.5
            assert tone_share(call.caller_audio.audio(), CALLEE_HZ) > 0.5
            assert "RecordingUrl" not in call.action
            (absent,) = await app_server.wait_for("/rec", 1, timeout=10)
            assert absent.params["RecordingStatus"] == "absent"
            assert absent.params["ErrorCode"] == "16101"
            listed = await api(handle).get("Recordings.json")
            (resource,) = listed.json()["recordings"]
            assert resource["status"] == "absent"
            # The call's notifications say why, with Twilio's code.
            problems = [n for n in handle.notifications(call.call_sid) if n["code"] == 16101]
            assert [n["level"] for n in problems] == ["error"]
            assert "could not write" in problems[0]["message"]
            await handle.wait_idle()


@bounded(90)
async def test_a_disk_that_fills_mid_call_keeps_the_recording_so_far(
    app_server: AppServer, workdir: Path
):
    app_server.reset()
    handle = new_switch(workdir, app_server.base)
    recordings = workdir / "var" / "recordings"
    times: dict[str, float] = {}

    async def fill_after_a_while(caller_audio: RtpPeer, callee_audio: RtpPeer) -> None:
        # Bridged and recorded for 1.5 s: each party has heard the other that long.
        await callee_audio.wait_for_audio(1.5, timeout=20)
        times["bridged"] = callee_audio.chunks[0][0]
        await caller_audio.wait_for_audio(1.0, since=times["bridged"], timeout=10)
        fill(recordings)
        times["filled"] = asyncio.get_running_loop().time()
        await callee_audio.wait_for_audio(2.0, since=times["filled"], timeout=10)

    with full_filesystem(recordings):
        async with running(handle):
            call = await place_call(
                handle,
                app_server,
                workdir,
                hangup_after_ms=5000,
                meanwhile=fill_after_a_while,
                record="record-from-answer-dual",
                recordingStatusCallback=app_server.url("/rec"),
                recordingStatusCallbackEvent="completed absent",
            )
            # The call went on to its end, bridged both ways, after the disk filled too.
            assert call.action["DialCallStatus"] == "completed"
            assert int(call.action["DialCallDuration"]) >= 4
            after = times["filled"] + 0.5
            assert len(call.callee_audio.audio(since=after)) >= 2 * 8000
            assert tone_share(call.callee_audio.audio(since=after), CALLER_HZ) > 0.5
            assert len(call.caller_audio.audio(since=after)) >= 2 * 8000
            assert tone_share(call.caller_audio.audio(since=after), CALLEE_HZ) > 0.5
            # The recording holds the call until the disk filled up, and says so.
            (done,) = await app_server.wait_for("/rec", 1, timeout=10)
            params = done.params
            assert params["RecordingStatus"] == "completed"
            assert params["RecordingChannels"] == "2"
            assert "ErrorCode" not in params
            wav = await recording_of(handle, call)
            recorded = times["filled"] - times["bridged"]
            figure(
                f"disk filled after {recorded:.3f} s of {call.bridged:.3f} s bridged:"
                f" file {wav.duration:.3f} s, RecordingDuration {params['RecordingDuration']}"
            )
            assert (wav.channels, wav.rate) == (2, 8000)
            assert 1.0 <= wav.duration <= recorded + 0.5, (wav.duration, recorded)
            assert wav.duration < call.bridged - 2
            assert abs(int(params["RecordingDuration"]) - wav.duration) <= 0.5 + 0.01
            assert call.action["RecordingSid"] == params["RecordingSid"]
            check_dual(wav)
            (cut,) = [n for n in handle.notifications(call.call_sid) if n["code"] == 16101]
            assert cut["level"] == "warning"
            assert cut["message"].startswith("recording cut short: the disk filled up"), cut
            sid = params["RecordingSid"]
            assert list((recordings / "partial").glob(f"*/{sid}.*")) == []
            await handle.wait_idle()


# ---- 10. crash repair ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def recorded_call_bridged(
    app_server: AppServer, workdir: Path, handle: SwitchProcess
) -> AsyncIterator[float]:
    """Start ``handle`` and a dual-recorded call through it; yield once both parties
    have heard each other (the loop time the callee first heard the caller). The SIPp
    peers are stopped (by their PIDs) on the way out, whatever the switch did."""
    app_server.routes["/voice"] = dial(
        action="/action",
        record="record-from-answer-dual",
        recordingStatusCallback=app_server.url("/rec"),
    )
    app_server.routes["/action"] = HANGUP
    app_server.routes["/rec"] = ""
    caller_audio, callee_audio = RtpPeer(CALLER_HZ), RtpPeer(CALLEE_HZ)
    await caller_audio.start()
    await callee_audio.start()
    callee = sipp.Sipp(
        workdir, "callee", sipp.callee("answer", rtp_port=callee_audio.port), port=handle.trunk_port
    )
    caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
    try:
        await handle.start(workdir / "switch-1.log")
        await callee.start(timeout_s=60)
        await caller.start(handle.target(), timeout_s=60)
        # Bridged and recording: each party hears the other's tone for 2 s.
        await callee_audio.wait_for_audio(2.0, timeout=20)
        await caller_audio.wait_for_audio(0.5, since=callee_audio.chunks[0][0], timeout=10)
        yield callee_audio.chunks[0][0]
    finally:
        await caller.stop()
        await callee.stop()
        caller_audio.close()
        callee_audio.close()


@bounded(150)
async def test_recording_of_a_crashed_switch_is_finished_at_restart(
    app_server: AppServer, workdir: Path
):
    app_server.reset()
    loop = asyncio.get_running_loop()
    handle = new_switch(workdir, app_server.base)
    async with recorded_call_bridged(app_server, workdir, handle) as bridged_at:
        assert handle.process is not None
        workers = handle.children()
        assert workers, "the switch runs its recording workers as child processes"
        os.kill(handle.process.pid, signal.SIGKILL)
        killed = loop.time()
        assert await asyncio.wait_for(handle.process.wait(), 10) == -signal.SIGKILL
        for worker in workers:  # they go with the switch, however it died
            assert await wait_gone(worker, 10), f"worker {worker} outlived the switch"
    recorded = killed - bridged_at
    (row,) = handle.query("SELECT sid, call_sid, status FROM recordings")
    assert row["status"] == "in-progress"
    assert row["call_sid"] == app_server.hits("/voice")[0].params["CallSid"]
    assert app_server.hits("/rec") == []

    try:
        await handle.start(workdir / "switch-2.log")
        (callback,) = await app_server.wait_for("/rec", 1, timeout=20)
        params = callback.params
        assert params["RecordingStatus"] == "completed"
        assert params["RecordingSid"] == row["sid"]
        assert params["CallSid"] == row["call_sid"]
        assert params["RecordingChannels"] == "2"
        assert params["RecordingSource"] == "DialVerb"
        wav = await RecordingsClient(handle.http, ACCOUNT_SID, AUTH_TOKEN).wav(
            params["RecordingUrl"]
        )
        figure(
            f"crash: recorded {recorded:.3f} s before SIGKILL, repaired file"
            f" {wav.duration:.3f} s, RecordingDuration {params['RecordingDuration']}"
        )
        assert abs(wav.duration - recorded) <= 0.5
        assert abs(int(params["RecordingDuration"]) - wav.duration) <= 0.5 + 0.01
        assert wav.channels == 2
        check_dual(wav)
        resource = await RecordingsClient(handle.http, ACCOUNT_SID, AUTH_TOKEN).get(
            f"Recordings/{row['sid']}.json"
        )
        assert resource.json()["status"] == "completed"
        assert resource.json()["duration"] == params["RecordingDuration"]
        await handle.wait_idle()
    finally:
        code = await handle.stop()
    assert code == 0, f"restarted switch exited {code}:\n{handle.log()[-4000:]}"


@bounded(120)
async def test_stopping_the_switch_finishes_the_recording_in_progress(
    app_server: AppServer, workdir: Path
):
    """SIGTERM mid-call: the call is hung up, the recorders' files are finished by the
    engine's background closer before pjsua goes, the recording is merged, stored as
    completed and its callback sent, and the switch exits 0."""
    app_server.reset()
    loop = asyncio.get_running_loop()
    handle = new_switch(workdir, app_server.base)
    async with recorded_call_bridged(app_server, workdir, handle) as bridged_at:
        stopping = loop.time()
        code = await handle.stop()
    assert code == 0, f"the switch exited {code}:\n{handle.log()[-4000:]}"
    recorded = stopping - bridged_at
    (callback,) = app_server.hits("/rec")
    params = callback.params
    assert params["RecordingStatus"] == "completed"
    assert params["RecordingChannels"] == "2"
    (row,) = handle.query("SELECT sid, status, duration, path FROM recordings")
    assert (row["sid"], row["status"]) == (params["RecordingSid"], "completed")
    storage = handle.database.parent
    wav = parse_wav((storage / row["path"]).read_bytes())
    figure(f"stop: recorded {recorded:.3f} s before SIGTERM, file {wav.duration:.3f} s")
    assert abs(wav.duration - recorded) <= 0.5
    assert abs(int(params["RecordingDuration"]) - wav.duration) <= 0.5 + 0.01
    check_dual(wav)
    assert list((storage / "recordings" / "partial").glob(f"*/{row['sid']}.*")) == []


# ---- 11. a relative recordingStatusCallback --------------------------------------------------


@bounded(60)
async def test_relative_status_callback_is_resolved_against_the_document(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    call = await place_call(
        switch, app_server, workdir, record="record-from-answer", recordingStatusCallback="/rec"
    )
    (callback,) = await app_server.wait_for("/rec", 1, timeout=10)
    assert callback.params["RecordingSid"] == call.action["RecordingSid"]
    assert callback.params["RecordingStatus"] == "completed"
