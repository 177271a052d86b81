"""Audio files for ``<Say>`` and ``<Play>``, ready for the conference bridge.

The bridge runs at 8 kHz; every file we play is converted once to 8 kHz,
16-bit mono WAV (PyAV decodes WAV, MP3 and the rest) and cached under the
storage path by a hash of what produced it, so a repeated prompt costs a file
lookup. ``<Say>`` is spoken by espeak-ng.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import wave
from pathlib import Path

import av
import numpy as np

RATE = 8000
MAX_DOWNLOAD = 32 * 1024 * 1024


class AudioError(Exception):
    """A file could not be fetched, decoded or spoken."""


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write mono int16 samples; atomically, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    with wave.open(tmp, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    os.replace(tmp, path)


def decode_to_pcm(source: Path) -> np.ndarray:
    """Decode any audio file PyAV reads into 8 kHz mono int16 samples."""
    try:
        with av.open(str(source)) as container:
            if not container.streams.audio:
                raise AudioError(f"{source.name}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            chunks: list[np.ndarray] = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as error:
        raise AudioError(f"{source.name}: cannot decode audio ({error})") from error
    if not chunks:
        raise AudioError(f"{source.name}: no audio samples")
    return np.concatenate(chunks).astype(np.int16)


class AudioCache:
    """Converted audio under ``<storage>/audio``, keyed by a hash of its origin."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, *key: str) -> Path:
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:32]
        return self.directory / f"{digest}.wav"

    async def speech(self, text: str, voice: str, language: str) -> Path:
        """``<Say>``: espeak-ng speaks ``text``; the result is cached."""
        target = self._path("say", espeak_voice(voice, language), text)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            raw = Path(tmp) / "say.wav"
            process = await asyncio.create_subprocess_exec(
                "espeak-ng",
                "-v",
                espeak_voice(voice, language),
                "-w",
                str(raw),
                "--",
                text,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            if process.returncode != 0 or not raw.exists():
                raise AudioError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
            await asyncio.to_thread(self._convert, raw, target)
        return target

    async def download(self, url: str, body: bytes) -> Path:
        """``<Play>``: convert a downloaded file (WAV, MP3, ...) once."""
        target = self._path("play", url, hashlib.sha256(body).hexdigest())
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            raw = Path(tmp) / "play.bin"
            raw.write_bytes(body)
            await asyncio.to_thread(self._convert, raw, target)
        return target

    @staticmethod
    def _convert(source: Path, target: Path) -> None:
        write_wav(target, decode_to_pcm(source))


_FEMALE = {"woman", "alice", "female"}


def espeak_voice(voice: str, language: str) -> str:
    """Map Twilio's ``voice``/``language`` onto an espeak-ng voice name.

    ``en-US`` -> ``en-us``; ``woman``/``alice`` get espeak's female variant;
    every other voice (``man``, Polly and Google voice names) speaks with
    espeak's default voice for the language. Unknown languages fall back to espeak's handling of the
    base language code.
    """
    lang = (language or "en-US").strip().lower()
    base = {"en-us": "en-us", "en-gb": "en-gb", "en-au": "en", "en-in": "en"}.get(lang)
    if base is None:
        base = lang.split("-")[0] or "en-us"
    female = voice.strip().lower() in _FEMALE
    return f"{base}+f3" if female else base
