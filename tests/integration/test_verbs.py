"""The RCML verbs end to end: a SIPp trunk caller with an RTP party calls one of our
numbers, the app serves the document, and each test asserts on what the caller saw
(SIP messages and their times, decoded audio) and on what the app received."""

from __future__ import annotations

import asyncio
import io
import math
import re
import wave
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web

from media.analysis import dominant_frequencies, is_silent, rms_dbfs, tone_power
from tests.integration.conftest import NUMBER, AppServer, SwitchProcess
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_more import caller_any_end

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLEE = "+15551230001"
RATE = 8000
FRAME = 160  # 20 ms
LOUD = -40.0  # dBFS: a 20 ms frame above this is sound, not G.711 silence
SPEECH = "Hello from the integration tests. This sentence is spoken by the switch."


# ---- helpers -------------------------------------------------------------------------


async def call(
    switch: SwitchProcess,
    workdir: Path,
    scenario: str,
    *,
    callee_scenario: str | None = None,
    timeout: float = 40,
) -> sipp.Sipp:
    """Run one call to completion (`sipp.run_call`); returns the caller."""
    caller, _ = await sipp.run_call(switch, workdir, scenario, callee_scenario, timeout=timeout)
    return caller


def timeline(peer: sipp.Sipp) -> list[tuple[datetime, str, str]]:
    """(time, "sent"/"received", start line) of every message in ``peer``'s log."""
    found = re.findall(
        r"-{10,} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
        r"(?:UDP|TCP) message (sent|received)[^\n]*\n\n?([^\n]*)",
        peer.messages().text,
    )
    return [
        (datetime.strptime(stamp.replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f"), way, line.strip())
        for stamp, way, line in found
    ]


def stamped(peer: sipp.Sipp, direction: str, pattern: str) -> tuple[datetime, str]:
    """Time and start line of the first message going ``direction`` matching ``pattern``."""
    for time, way, line in timeline(peer):
        if way == direction and re.match(pattern, line):
            return time, line
    raise AssertionError(f"no {direction} {pattern!r}:\n{peer.messages().text[-3000:]}")


def seconds(earlier: tuple[datetime, str], later: tuple[datetime, str]) -> float:
    return (later[0] - earlier[0]).total_seconds()


FINAL = r"SIP/2\.0 [2-6]\d\d "
ERROR = r"SIP/2\.0 [3-6]\d\d "


def frame_levels(samples: npt.NDArray[np.int16]) -> list[float]:
    return [rms_dbfs(samples[i : i + FRAME]) for i in range(0, len(samples) - FRAME + 1, FRAME)]


def loud_seconds(samples: npt.NDArray[np.int16]) -> float:
    """Seconds of 20 ms frames above `LOUD` (sound rather than silence)."""
    return sum(level > LOUD for level in frame_levels(samples)) * FRAME / RATE


def loud_part(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    frames = [samples[i : i + FRAME] for i in range(0, len(samples) - FRAME + 1, FRAME)]
    loud = [f for f in frames if rms_dbfs(f) > LOUD]
    return np.concatenate(loud) if loud else np.zeros(0, dtype=np.int16)


def sine(freq: float, seconds: float, rate: int) -> npt.NDArray[np.int16]:
    index = np.arange(int(seconds * rate))
    return (np.sin(2 * math.pi * freq * index / rate) * 0.5 * 32767).astype(np.int16)


def wav_file(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def mp3_file(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def serve(body: bytes, content_type: str):
    def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    return handler


def starts(caller: sipp.Sipp) -> list[str]:
    return caller.messages().received_starts()


# ---- <Say> ---------------------------------------------------------------------------


async def test_say_is_heard_then_bye(switch: SwitchProcess, app_server: AppServer, workdir):
    app_server.routes["/voice"] = f"<Response><Say>{SPEECH}</Say></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    # The caller was answered and the switch sent the BYE once the document was done.
    assert "BYE" in [s.split(" ", 1)[0] for s in starts(caller)], starts(caller)
    heard = peer.audio()
    assert not is_silent(heard), f"caller heard only silence ({rms_dbfs(heard):.1f} dBFS)"
    # The sentence takes espeak-ng about four seconds; allow for pauses between words.
    assert loud_seconds(heard) >= 1.5, loud_seconds(heard)
    assert rms_dbfs(loud_part(heard)) > -30
    # Speech, not a tone: no single frequency carries most of the power.
    peak = dominant_frequencies(loud_part(heard), RATE, 1)[0]
    assert tone_power(loud_part(heard), RATE, peak) < 0.5


# ---- <Play> --------------------------------------------------------------------------

TONE_SECONDS = 1.0


@pytest.mark.parametrize(
    "kind,loop",
    [("wav", None), ("mp3", None), ("wav", 2), ("mp3", 2)],
    ids=["wav", "mp3", "wav-loop2", "mp3-loop2"],
)
async def test_play_tone_is_heard(
    switch: SwitchProcess, app_server: AppServer, workdir, kind: str, loop: int | None
):
    if kind == "wav":
        body = wav_file(sine(1000, TONE_SECONDS, 16000), 16000)
        content_type = "audio/wav"
    else:
        body = mp3_file(sine(1000, TONE_SECONDS, 22050), 22050)
        content_type = "audio/mpeg"
    path = f"/tone-{kind}-{loop}.{kind}"
    app_server.routes[path] = serve(body, content_type)
    attrs = f' loop="{loop}"' if loop else ""
    app_server.routes["/voice"] = f"<Response><Play{attrs}>{path}</Play></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    assert len(app_server.hits(path)) >= 1
    assert any(s.startswith("BYE ") for s in starts(caller)), starts(caller)
    tone = loud_part(peer.audio())
    assert tone.size, "caller heard nothing"
    assert tone_power(tone, RATE, 1000) > 0.8, tone_power(tone, RATE, 1000)
    assert abs(dominant_frequencies(tone, RATE, 1)[0] - 1000) < 15
    heard = len(tone) / RATE
    expected = TONE_SECONDS * (loop or 1)
    assert expected - 0.25 <= heard <= expected + 0.35, f"heard {heard:.2f} s of tone"


# ---- <Pause> -------------------------------------------------------------------------


async def test_pause_after_answer_delays_the_hangup(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    # <Play digits> answers the call at once (a 0.1 s digit), then the pause runs.
    app_server.routes["/voice"] = (
        '<Response><Play digits="1"/><Pause length="2"/><Hangup/></Response>'
    )
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    held = seconds(stamped(caller, "received", "SIP/2.0 200"), stamped(caller, "received", "BYE "))
    assert 1.5 <= held <= 4.0, f"BYE {held:.2f} s after the answer"


async def test_pause_then_hangup_answers_after_the_pause_and_hangs_up(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    # Twilio: a leading <Pause> delays the answer; <Hangup> answers the call and ends it.
    app_server.routes["/voice"] = '<Response><Pause length="2"/><Hangup/></Response>'
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, caller_any_end(NUMBER, peer.port))
    finally:
        peer.close()
    invite = stamped(caller, "sent", "INVITE ")
    final = stamped(caller, "received", FINAL)
    assert 1.5 <= seconds(invite, final) <= 4.0, f"{final[1]} {seconds(invite, final):.2f} s"
    assert final[1].startswith("SIP/2.0 200"), starts(caller)
    assert seconds(invite, stamped(caller, "received", "BYE ")) <= 5.0


# ---- <Reject> ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document,code",
    [('<Reject reason="busy"/>', 486), ("<Reject/>", 603), ('<Reject reason="rejected"/>', 603)],
    ids=["busy", "default", "rejected"],
)
async def test_reject_refuses_without_answering(
    switch: SwitchProcess, app_server: AppServer, workdir, document: str, code: int
):
    app_server.routes["/voice"] = f"<Response>{document}</Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port, expect_final=code))
    finally:
        peer.close()
    assert not any(s.startswith("SIP/2.0 200") for s in starts(caller)), starts(caller)
    assert peer.audio().size == 0 or is_silent(peer.audio())


# ---- <Redirect> ----------------------------------------------------------------------


@pytest.mark.parametrize("method", [None, "GET", "POST"], ids=["default", "get", "post"])
async def test_redirect_fetches_and_runs_the_next_document(
    switch: SwitchProcess, app_server: AppServer, workdir, method: str | None
):
    attrs = f' method="{method}"' if method else ""
    app_server.routes["/voice"] = f"<Response><Redirect{attrs}>/next</Redirect></Response>"
    # Only /next's document can refuse the call with 486.
    app_server.routes["/next"] = '<Response><Reject reason="busy"/></Response>'
    peer = RtpPeer(None)
    await peer.start()
    try:
        await call(switch, workdir, sipp.caller(NUMBER, peer.port, expect_final=486))
    finally:
        peer.close()
    (voice,) = app_server.hits("/voice")
    (nxt,) = app_server.hits("/next")
    assert nxt.method == (method or "POST")
    assert nxt.params["CallSid"] == voice.params["CallSid"]
    assert nxt.params["To"] == NUMBER
    assert nxt.params["CallStatus"] == "ringing"


async def test_redirect_after_answer_runs_the_next_document(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    tone = wav_file(sine(1000, TONE_SECONDS, 8000), 8000)
    app_server.routes["/tone.wav"] = serve(tone, "audio/wav")
    app_server.routes["/voice"] = (
        '<Response><Play digits="1"/><Redirect method="GET">/next?step=2</Redirect></Response>'
    )
    app_server.routes["/next"] = "<Response><Play>/tone.wav</Play></Response>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    (voice,) = app_server.hits("/voice")
    (nxt,) = app_server.hits("/next")
    assert nxt.method == "GET"
    assert nxt.params["step"] == "2"
    assert nxt.params["CallSid"] == voice.params["CallSid"]
    assert nxt.params["CallStatus"] == "in-progress"
    # The next document's <Play> was heard, then the switch hung up.
    assert tone_power(loud_part(peer.audio()), RATE, 1000) > 0.8
    assert any(s.startswith("BYE ") for s in starts(caller)), starts(caller)


# ---- no verb left --------------------------------------------------------------------


async def test_no_verb_left_after_answer_hangs_up(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = (
        '<Response><Play digits="1"/><Redirect>/empty</Redirect></Response>'
    )
    app_server.routes["/empty"] = "<Response/>"
    peer = RtpPeer(None)
    await peer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        caller = await call(switch, workdir, sipp.caller(NUMBER, peer.port))
    finally:
        peer.close()
    assert loop.time() - started < 10
    assert len(app_server.hits("/empty")) == 1
    answered = stamped(caller, "received", "SIP/2.0 200")
    assert seconds(answered, stamped(caller, "received", "BYE ")) < 3.0


async def test_empty_document_releases_the_caller(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = "<Response/>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, caller_any_end(NUMBER, peer.port), timeout=15)
    finally:
        peer.close()
    invite = stamped(caller, "sent", "INVITE ")
    ended = stamped(caller, "received", f"BYE |{ERROR}")
    assert seconds(invite, ended) < 3.0, ended


async def test_empty_document_answers_then_hangs_up(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = "<Response/>"
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(switch, workdir, caller_any_end(NUMBER, peer.port), timeout=15)
    finally:
        peer.close()
    final = stamped(caller, "received", FINAL)
    assert final[1].startswith("SIP/2.0 200"), starts(caller)
    assert seconds(final, stamped(caller, "received", "BYE ")) < 2.0


# ---- <Dial> without action -----------------------------------------------------------


async def test_dial_without_action_goes_on_to_the_next_verb(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = (
        f"<Response><Dial><Number>{CALLEE}</Number></Dial><Say>{SPEECH}</Say></Response>"
    )
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller = await call(
            switch,
            workdir,
            sipp.caller(NUMBER, peer.port),
            callee_scenario=sipp.callee("busy"),
        )
    finally:
        peer.close()
    # Only /voice was asked: no action URL.
    assert [r.path for r in app_server.requests] == ["/voice"]
    assert any(s.startswith("BYE ") for s in starts(caller)), starts(caller)
    # After the (short) ringback the caller heard speech: loud frames that are not
    # the US ringback's 440+480 Hz.
    heard = peer.audio()
    speech = []
    for i in range(0, len(heard) - FRAME * 10 + 1, FRAME * 10):
        window = heard[i : i + FRAME * 10]  # 200 ms
        if rms_dbfs(window) <= LOUD:
            continue
        ringback = tone_power(window, RATE, 440) + tone_power(window, RATE, 480)
        if ringback < 0.3:
            speech.append(window)
    windows = [
        (
            round(rms_dbfs(heard[i : i + 1600]), 1),
            round(tone_power(heard[i : i + 1600], RATE, 440), 2),
        )
        for i in range(0, len(heard) - 1600 + 1, 1600)
    ]
    assert len(speech) * 0.2 >= 1.0, (
        f"{len(speech) * 0.2:.1f} s of speech heard; {windows}\n{timeline(caller)}"
    )
