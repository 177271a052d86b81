"""Checks for ``<Dial record>`` recordings: fetch them as a user would, decode, analyse.

- `RecordingsClient`: the Twilio-style REST API of a switch with HTTP Basic auth
  (AccountSid/AuthToken), returning status, headers and body of each request.
- `Wav`/`parse_wav`: a WAV body as samples per channel; `mp3_duration` decodes an
  MP3 body with PyAV.
- `tone_share`/`peak_tone_share`: how much of a signal's power sits at a frequency,
  measured over short windows of sound (silent windows are skipped), so that a
  phase jump from a lost packet or a silent stretch does not spoil the figure.
- `leading_silence`/`trailing_silence`: seconds of silence at either end.
- `DelayedRtpPeer`: an RTP party that sends silence first, then its tone for a while,
  then silence again (the caller of the trim-silence test).
- `bounded`: fail a test that runs too long instead of letting it hang.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import random
import wave
from dataclasses import dataclass
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt

from media.analysis import g711_encode, rms_dbfs, tone_power
from tests.support.rtp import PCMU, RtpPacket
from tests.support.rtp_peer import FRAME, RATE, RtpPeer

SOUND_DBFS = -40.0
"""A window louder than this holds sound (the tones are sent at about -13 dBFS)."""
WINDOW_S = 0.25
"""Analysis window: 2000 samples at 8 kHz, so 440, 480, 600 and 1000 Hz fall on bins."""


# ---- the REST API ------------------------------------------------------------------------


def basic_auth(login: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` value (RFC 7617)."""
    token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingsClient:
    """Requests to a switch's REST API with HTTP Basic auth, as a Twilio user makes them."""

    def __init__(self, base: str, account_sid: str, auth_token: str):
        self.base = base.rstrip("/")
        self.account_sid = account_sid
        self.auth = basic_auth(account_sid, auth_token)

    @property
    def account_url(self) -> str:
        return f"{self.base}/2010-04-01/Accounts/{self.account_sid}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        auth: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """``url`` absolute, or relative to the account URL (``Recordings.json``).

        ``auth``: an ``Authorization`` value (`basic_auth`); empty: this client's own;
        None: no header at all.
        """
        if not url.startswith("http"):
            url = f"{self.account_url}/{url}"
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = auth or self.auth
        timeout = aiohttp.ClientTimeout(total=20)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, headers=headers) as response,
        ):
            body = await response.read()
            return Response(response.status, dict(response.headers), body)

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def wav(self, recording_url: str) -> Wav:
        """The recording at ``RecordingUrl`` + ``.wav``, decoded; fails unless 200."""
        response = await self.get(recording_url + ".wav")
        assert response.status == 200, (response.status, response.body[:300])
        assert response.headers.get("Content-Type", "").startswith("audio/"), response.headers
        return parse_wav(response.body)


# ---- decoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Wav:
    channels: int
    rate: int
    frames: npt.NDArray[np.int16]
    """Shape (samples, channels)."""

    @property
    def duration(self) -> float:
        return len(self.frames) / self.rate

    def channel(self, number: int) -> npt.NDArray[np.int16]:
        """Channel ``number`` counted from 1, as Twilio counts them."""
        return np.ascontiguousarray(self.frames[:, number - 1])

    def mono(self) -> npt.NDArray[np.int16]:
        assert self.channels == 1, f"expected mono, got {self.channels} channels"
        return self.channel(1)

    def part(self, start: float, stop: float, channel: int = 1) -> npt.NDArray[np.int16]:
        """Seconds ``[start, stop)`` of one channel (negative: from the end)."""
        samples = self.channel(channel)
        first = int(round((start if start >= 0 else self.duration + start) * self.rate))
        last = int(round((stop if stop >= 0 else self.duration + stop) * self.rate))
        return samples[max(first, 0) : max(last, 0)]


def parse_wav(body: bytes) -> Wav:
    with wave.open(io.BytesIO(body), "rb") as reader:
        channels = reader.getnchannels()
        rate = reader.getframerate()
        assert reader.getsampwidth() == 2, "expected 16-bit PCM"
        count = reader.getnframes()
        raw = reader.readframes(count)
    assert len(raw) == count * 2 * channels, "the data chunk is shorter than the header says"
    frames = np.frombuffer(raw, dtype="<i2").astype(np.int16).reshape(-1, channels)
    return Wav(channels, rate, frames)


def mp3_duration(body: bytes) -> tuple[float, int]:
    """Seconds of audio and channel count of an MP3 body, decoded with PyAV."""
    samples = 0
    rate = 0
    channels = 0
    with av.open(io.BytesIO(body), format="mp3") as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
            channels = len(frame.layout.channels)
    assert rate, "no audio decoded"
    return samples / rate, channels


# ---- analysis ----------------------------------------------------------------------------


def _windows(samples: npt.ArrayLike, rate: int = RATE) -> list[npt.NDArray[np.int16]]:
    signal = np.asarray(samples)
    size = int(rate * WINDOW_S)
    return [
        signal[start : start + size]
        for start in range(0, len(signal) - size + 1, size)
        if rms_dbfs(signal[start : start + size]) > SOUND_DBFS
    ]


def sound_seconds(samples: npt.ArrayLike, rate: int = RATE) -> float:
    """Seconds of the windows that hold sound."""
    return len(_windows(samples, rate)) * WINDOW_S


def tone_share(samples: npt.ArrayLike, freq: float, rate: int = RATE) -> float:
    """Median share of power at ``freq`` over the windows with sound (0 when none)."""
    shares = [tone_power(w, rate, freq) for w in _windows(samples, rate)]
    return float(np.median(shares)) if shares else 0.0


def peak_tone_share(samples: npt.ArrayLike, freq: float, rate: int = RATE) -> float:
    """Largest share of power at ``freq`` in any window with sound (0 when none)."""
    shares = [tone_power(w, rate, freq) for w in _windows(samples, rate)]
    return max(shares, default=0.0)


def _loud_frames(samples: npt.ArrayLike, rate: int, threshold: float) -> npt.NDArray[np.intp]:
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim == 2:
        signal = np.abs(signal).max(axis=1)
    frame = rate // 50
    count = len(signal) // frame
    if count == 0:
        return np.zeros(0, dtype=np.intp)
    power = np.mean(signal[: count * frame].reshape(count, frame) ** 2, axis=1)
    limit = (32768.0 * 10 ** (threshold / 20)) ** 2
    return np.flatnonzero(power >= limit)


def leading_silence(samples: npt.ArrayLike, rate: int = RATE, threshold: float = -45.0) -> float:
    """Seconds before the first 20 ms frame louder than ``threshold`` dBFS (all: total)."""
    loud = _loud_frames(samples, rate, threshold)
    if len(loud) == 0:
        return len(samples) / rate
    return float(loud[0]) * 0.02


def trailing_silence(samples: npt.ArrayLike, rate: int = RATE, threshold: float = -45.0) -> float:
    """Seconds after the last 20 ms frame louder than ``threshold`` dBFS."""
    loud = _loud_frames(samples, rate, threshold)
    if len(loud) == 0:
        return len(samples) / rate
    return max(0.0, len(samples) / rate - (float(loud[-1]) + 1) * 0.02)


# ---- a caller that keeps quiet first -----------------------------------------------------


class DelayedRtpPeer(RtpPeer):
    """An `RtpPeer` that sends silence for ``delay`` seconds after it first hears the
    switch, then its tone for ``duration`` seconds (None: until closed), then silence.

    Silence is sent as real packets (G.711 zero), as a phone with no voice activity
    detection does; ``tone_started``/``tone_stopped`` are the loop times of the change.
    """

    def __init__(
        self, tone_hz: float, delay: float, duration: float | None = None, level: float = 0.3
    ):
        super().__init__(tone_hz, level)
        self.delay = delay
        self.duration = duration
        self.tone_started: float | None = None
        self.tone_stopped: float | None = None

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        assert self.tone_hz is not None
        step = 2 * math.pi * self.tone_hz / RATE
        silence = g711_encode(np.zeros(FRAME, dtype=np.int16), "pcmu")
        tone_frames = round(self.delay / 0.02)
        end_frames = None if self.duration is None else tone_frames + round(self.duration / 0.02)
        n = 0
        start = loop.time()
        while self.transport is not None and self.remote is not None:
            if n < tone_frames or (end_frames is not None and n >= end_frames):
                if end_frames is not None and n == end_frames:
                    self.tone_stopped = loop.time()
                payload = silence
            else:
                if n == tone_frames:
                    self.tone_started = loop.time()
                index = np.arange((n - tone_frames) * FRAME, (n - tone_frames + 1) * FRAME)
                samples = (np.sin(index * step) * self.level * 32767).astype(np.int16)
                payload = g711_encode(samples, "pcmu")
            packet = RtpPacket(
                PCMU, (seq + n) & 0xFFFF, (ts + n * FRAME) & 0xFFFFFFFF, ssrc, payload
            )
            self.transport.sendto(packet.serialize(), self.remote)
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
