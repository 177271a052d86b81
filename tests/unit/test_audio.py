"""Audio files for <Say>/<Play>: voice mapping, decoding to 8 kHz mono, the cache."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from media import audio
from media.analysis import dominant_frequencies, is_silent
from media.audio import (
    RATE,
    AudioCache,
    AudioError,
    decode_to_pcm,
    espeak_voice,
    wav_duration,
    write_wav,
)


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stereo_wav(
    path: Path, left: float, right: float, rate: int = 16000, seconds: float = 1.0
) -> None:
    frames = np.stack([sine(left, rate, seconds), sine(right, rate, seconds)], axis=1)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames.astype("<i2").tobytes())


def mp3_file(path: Path, freq: float, rate: int = 22050, seconds: float = 1.0) -> None:
    try:
        av.codec.Codec("libmp3lame", "w")
    except (av.error.FFmpegError, ValueError):
        pytest.skip("this PyAV build has no MP3 encoder")
    samples = sine(freq, rate, seconds).reshape(1, -1)
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        step = 1152
        for start in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + step]), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def peaks(samples: npt.ArrayLike, count: int = 2) -> list[float]:
    return sorted(dominant_frequencies(samples, RATE, count=count))


# --- espeak_voice -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voice", "language", "expected"),
    [
        ("man", "en-US", "en-us"),
        ("man", "en-GB", "en-gb"),
        ("man", "en-AU", "en"),
        ("man", "en-IN", "en"),
        ("man", "fr-FR", "fr"),
        ("man", "de-DE", "de"),
        ("man", "pt-BR", "pt"),
        ("man", "EN-us", "en-us"),
        ("man", " en-US ", "en-us"),
        ("man", "", "en-us"),
        ("man", "-", "en-us"),
        ("woman", "en-US", "en-us+f3"),
        ("alice", "en-GB", "en-gb+f3"),
        ("Alice", "es-ES", "es+f3"),
        (" WOMAN ", "it-IT", "it+f3"),
        ("female", "en-US", "en-us+f3"),
        ("Polly.Joanna", "en-US", "en-us"),
        ("Polly.Celine", "fr-FR", "fr"),
    ],
)
def test_espeak_voice(voice: str, language: str, expected: str) -> None:
    assert espeak_voice(voice, language) == expected


@pytest.mark.parametrize("voice", ["Polly.Matthew", "Polly.Brian", "Polly.Joey"])
def test_espeak_voice_male_polly_voices_are_not_female(voice: str) -> None:
    assert espeak_voice(voice, "en-US") == "en-us"


# --- decoding -----------------------------------------------------------------------


def test_decode_stereo_16k_wav_to_8k_mono_keeps_the_tone(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    stereo_wav(source, 440.0, 440.0)
    pcm = decode_to_pcm(source)
    assert pcm.dtype == np.int16
    assert pcm.ndim == 1
    assert abs(pcm.size - RATE) <= RATE // 100  # one second, give or take resampler delay
    [peak] = dominant_frequencies(pcm, RATE, count=1)
    assert peak == pytest.approx(440.0, abs=5.0)
    assert not is_silent(pcm)


def test_decode_mixes_both_channels_down(tmp_path: Path) -> None:
    source = tmp_path / "two.wav"
    stereo_wav(source, 440.0, 1000.0)
    found = peaks(decode_to_pcm(source))
    assert found == pytest.approx([440.0, 1000.0], abs=5.0)


def test_decode_8k_mono_wav_is_unchanged_in_length_and_tone(tmp_path: Path) -> None:
    source = tmp_path / "mono.wav"
    write_wav(source, sine(697.0, RATE, 0.5))
    pcm = decode_to_pcm(source)
    assert pcm.size == RATE // 2
    [peak] = dominant_frequencies(pcm, RATE, count=1)
    assert peak == pytest.approx(697.0, abs=5.0)


def test_decode_mp3(tmp_path: Path) -> None:
    source = tmp_path / "tone.mp3"
    mp3_file(source, 440.0)
    pcm = decode_to_pcm(source)
    assert abs(pcm.size - RATE) <= RATE // 10  # MP3 adds encoder delay and padding
    middle = pcm[pcm.size // 4 : 3 * pcm.size // 4]
    [peak] = dominant_frequencies(middle, RATE, count=1)
    assert peak == pytest.approx(440.0, abs=5.0)


@pytest.mark.parametrize(
    "body",
    [b"this is not audio at all\n" * 200, b"", b"RIFF\x00\x00\x00\x00WAVEjunk"],
    ids=["text", "empty", "truncated-riff"],
)
def test_decode_garbage_raises_audio_error(tmp_path: Path, body: bytes) -> None:
    source = tmp_path / "garbage.bin"
    source.write_bytes(body)
    with pytest.raises(AudioError, match=r"^garbage\.bin: "):
        decode_to_pcm(source)


# --- WAV helpers --------------------------------------------------------------------


def test_write_wav_and_duration(tmp_path: Path) -> None:
    target = tmp_path / "half.wav"
    write_wav(target, np.zeros(4000, dtype=np.int16))
    assert wav_duration(target) == pytest.approx(0.5)
    with wave.open(str(target), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_wav_duration_other_rate(tmp_path: Path) -> None:
    target = tmp_path / "long.wav"
    stereo_wav(target, 440.0, 440.0, rate=16000, seconds=1.5)
    assert wav_duration(target) == pytest.approx(1.5)


# --- the cache ----------------------------------------------------------------------


@pytest.fixture
def tone_body(tmp_path: Path) -> bytes:
    source = tmp_path / "src.wav"
    stereo_wav(source, 440.0, 440.0, seconds=0.25)
    return source.read_bytes()


async def test_download_converts_once_and_caches(
    tmp_path: Path, tone_body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = audio.decode_to_pcm

    def counting(source: Path) -> npt.NDArray[np.int16]:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(audio, "decode_to_pcm", counting)
    cache = AudioCache(tmp_path / "audio")
    first = await cache.download("https://example.com/a.wav", tone_body)
    second = await cache.download("https://example.com/a.wav", tone_body)
    assert first == second
    assert len(calls) == 1
    assert first.parent == tmp_path / "audio"
    assert first.suffix == ".wav"
    assert wav_duration(first) == pytest.approx(0.25, abs=0.01)
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == [first.name]


async def test_download_key_depends_on_url_and_body(tmp_path: Path, tone_body: bytes) -> None:
    cache = AudioCache(tmp_path / "audio")
    base = await cache.download("https://example.com/a.wav", tone_body)
    other_url = await cache.download("https://example.com/b.wav", tone_body)
    other_body = await cache.download("https://example.com/a.wav", tone_body + b"\0\0")
    assert len({base, other_url, other_body}) == 3
    # A second cache over the same directory finds the same file.
    again = await AudioCache(tmp_path / "audio").download("https://example.com/a.wav", tone_body)
    assert again == base


async def test_download_of_garbage_raises_and_caches_nothing(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio")
    with pytest.raises(AudioError):
        await cache.download("https://example.com/x.mp3", b"<html>not found</html>" * 50)
    assert list((tmp_path / "audio").iterdir()) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_speech_is_a_non_silent_8k_wav_and_cached(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio")
    path = await cache.speech("Hello", "alice", "en-US")
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert samples.size > RATE // 10
    assert not is_silent(samples)
    mtime = path.stat().st_mtime_ns
    assert await cache.speech("Hello", "alice", "en-US") == path
    assert path.stat().st_mtime_ns == mtime
    assert await cache.speech("Hello", "man", "en-US") != path
