"""G.711 coding, Goertzel tone power, spectral peaks and silence detection."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from media.analysis import (
    dominant_frequencies,
    g711_decode,
    g711_encode,
    is_silent,
    rms_dbfs,
    tone_power,
)
from media.tones import load_table, synthesize

RATE = 8000


def sine(freq: float, seconds: float = 0.5, amplitude: float = 0.25) -> npt.NDArray[np.int16]:
    n = np.arange(int(seconds * RATE))
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * n / RATE)).astype(np.int16)


# Code words and the values G.711 decodes them to (mu-law inverts all bits, A-law the
# even ones; both decode to the middle of the quantisation interval).
ULAW_KNOWN = {0xFF: 0, 0x7F: 0, 0x80: 32124, 0x00: -32124, 0xFE: 8, 0x7E: -8, 0xEF: 132}
ALAW_KNOWN = {0xD5: 8, 0x55: -8, 0xAA: 32256, 0x2A: -32256, 0xD4: 24, 0xC5: 264}


@pytest.mark.parametrize(("law", "known"), [("pcmu", ULAW_KNOWN), ("pcma", ALAW_KNOWN)])
def test_g711_decodes_known_code_words(law: str, known: dict[int, int]) -> None:
    decoded = g711_decode(bytes(known), law)  # type: ignore[arg-type]
    assert decoded.dtype == np.int16
    assert decoded.tolist() == list(known.values())


@pytest.mark.parametrize(
    ("law", "linear", "code"),
    [
        ("pcmu", [0, -1, 1, 32767, -32768, 8, -9, 32635, 40000], "ff7fff8000fe7e8080"),
        ("pcma", [0, -1, 8, -9, 32767, -32768, 264, 100000], "d555d555aa2ac5aa"),
    ],
)
def test_g711_encodes_known_values(law: str, linear: list[int], code: str) -> None:
    assert g711_encode(np.array(linear), law).hex() == code  # type: ignore[arg-type]


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_g711_code_words_round_trip(law: str) -> None:
    codes = bytes(range(256))
    again = g711_encode(g711_decode(codes, law), law)  # type: ignore[arg-type]
    if law == "pcmu":
        # Negative zero (0x7F) decodes to 0, which encodes as positive zero (0xFF).
        assert again == codes.replace(b"\x7f", b"\xff")
    else:
        assert again == codes


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_g711_quantisation_error_is_bounded(law: str) -> None:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    decoded = g711_decode(g711_encode(linear, law), law).astype(np.int32)  # type: ignore[arg-type]
    large = np.abs(linear) > 1024
    relative = np.abs(decoded - linear)[large] / np.abs(linear)[large]
    assert relative.max() < 0.034
    assert np.abs(decoded - linear)[~large].max() <= 32
    # The quantiser is monotonic and symmetric.
    assert np.all(np.diff(decoded) >= 0)
    assert np.array_equal(decoded[::-1], -decoded)  # x and -x-1 (one's complement)


def test_g711_rejects_an_unknown_law() -> None:
    with pytest.raises(ValueError, match="unknown G.711 law"):
        g711_decode(b"\x00", "g722")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown G.711 law"):
        g711_encode(np.zeros(1), "g722")  # type: ignore[arg-type]


def test_g711_keeps_a_tone_recognisable() -> None:
    for law in ("pcmu", "pcma"):
        decoded = g711_decode(g711_encode(sine(1000), law), law)  # type: ignore[arg-type]
        assert dominant_frequencies(decoded, RATE, 1) == pytest.approx([1000], abs=0.5)


def test_goertzel_finds_440_and_480_in_us_ringback() -> None:
    spec = load_table()["us"].ringback
    ringing = synthesize(spec)[: spec.cadence[0] * RATE // 1000]
    assert tone_power(ringing, RATE, 440) == pytest.approx(0.5, abs=0.05)
    assert tone_power(ringing, RATE, 480) == pytest.approx(0.5, abs=0.05)
    for absent in (350, 400, 425, 620, 1000):
        assert tone_power(ringing, RATE, absent) < 0.01


def test_tone_power_is_scale_free() -> None:
    assert tone_power(sine(1000, amplitude=0.9), RATE, 1000) == pytest.approx(1.0, abs=0.01)
    assert tone_power(sine(1000, amplitude=0.01), RATE, 1000) == pytest.approx(1.0, abs=0.02)
    assert tone_power(sine(1000), RATE, 1200) < 0.001


def test_tone_power_of_silence_is_zero() -> None:
    assert tone_power(np.zeros(160, dtype=np.int16), RATE, 1000) == 0.0
    assert tone_power(np.zeros(0, dtype=np.int16), RATE, 1000) == 0.0


def test_dominant_frequencies_strongest_first_with_sub_bin_accuracy() -> None:
    mix = sine(697, 0.1, 0.3).astype(np.int32) + sine(1209.5, 0.1, 0.1)
    found = dominant_frequencies(mix, RATE, count=2)
    assert found == pytest.approx([697, 1209.5], abs=1.0)


def test_dominant_frequencies_reports_only_real_peaks() -> None:
    assert dominant_frequencies(sine(440), RATE, count=5) == pytest.approx([440], abs=0.2)
    assert dominant_frequencies(np.zeros(800), RATE) == []
    assert dominant_frequencies(np.full(800, 1000), RATE) == []
    assert dominant_frequencies(sine(440)[:3], RATE) == []
    assert dominant_frequencies(sine(440), RATE, count=0) == []


def test_rms_and_silence() -> None:
    assert rms_dbfs(np.full(100, 32768.0)) == pytest.approx(0.0)
    assert rms_dbfs(sine(1000, amplitude=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(np.zeros(10)) == -math.inf
    assert rms_dbfs(np.zeros(0)) == -math.inf
    assert is_silent(np.zeros(160, dtype=np.int16))
    assert is_silent(np.zeros(0, dtype=np.int16))
    assert is_silent(sine(1000, amplitude=0.001))
    assert not is_silent(sine(1000, amplitude=0.01))
    assert not is_silent(sine(1000, amplitude=0.001), threshold=-70)
