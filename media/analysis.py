"""Audio analysis: G.711 coding, tone power, spectral peaks and silence.

Tests use these to check what a peer actually heard (the right ringback, the
caller's audio after the bridge, DTMF in band); later features (beep detection for
`machineDetection`, `trim-silence` for recordings) build on the same functions.
Everything works on numpy arrays of 16-bit linear PCM and does no I/O.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "Law",
    "dominant_frequencies",
    "g711_decode",
    "g711_encode",
    "is_silent",
    "rms_dbfs",
    "tone_power",
]

Law = Literal["pcmu", "pcma"]

Samples = npt.NDArray[np.int16]

# G.711 mu-law works on magnitudes offset by a bias of 132 (33 in the 14-bit domain
# of the recommendation) and clips them at 32635 so the biased value fits 15 bits.
_ULAW_BIAS = 132
_ULAW_CLIP = 32635
# Upper bounds of the eight mu-law segments (biased 16-bit magnitudes) and of the
# eight A-law segments (13-bit magnitudes).
_ULAW_SEGMENT_ENDS = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
# A-law inverts the even bits of every code word on the line (G.711 table 1).
_ALAW_EVEN_BITS = 0x55
_FULL_SCALE = 32768.0


def _ulaw_decode_table() -> Samples:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Samples:
    code = np.arange(256, dtype=np.int32) ^ _ALAW_EVEN_BITS
    segment = (code >> 4) & 0x07
    mantissa = code & 0x0F
    # Segment 0 is linear; above it the implicit leading bit (0x100 after the shift
    # by 4) appears and each segment doubles the step. Adding half a step (8 or
    # 0x108) decodes to the middle of the quantisation interval.
    base = (mantissa << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, base << np.maximum(segment - 1, 0), base)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW_TO_LINEAR = _ulaw_decode_table()
_ALAW_TO_LINEAR = _alaw_decode_table()


def g711_decode(payload: bytes, law: Law) -> Samples:
    """Decode G.711 bytes (RTP payload types 0 PCMU and 8 PCMA) to 16-bit PCM."""
    codes = np.frombuffer(payload, dtype=np.uint8)
    if law == "pcmu":
        return _ULAW_TO_LINEAR[codes]
    if law == "pcma":
        return _ALAW_TO_LINEAR[codes]
    raise ValueError(f"unknown G.711 law {law!r}")


def g711_encode(samples: npt.ArrayLike, law: Law) -> bytes:
    """Encode 16-bit PCM to G.711 bytes, per ITU-T G.711 (mu-law or A-law).

    Values are clipped to the 16-bit range first, so float arrays of a scaled signal
    can be passed directly after rounding.
    """
    linear = np.clip(np.asarray(samples), -32768, 32767).astype(np.int32)
    if law == "pcmu":
        return _ulaw_encode(linear)
    if law == "pcma":
        return _alaw_encode(linear)
    raise ValueError(f"unknown G.711 law {law!r}")


def _ulaw_encode(linear: npt.NDArray[np.int32]) -> bytes:
    negative = linear < 0
    # One's complement for negative values, as in the ITU-T G.191 reference coder:
    # -32768..-1 fold onto 32767..0 and the quantiser stays symmetric.
    magnitude = np.minimum(np.where(negative, ~linear, linear), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude, side="left")
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = (negative.astype(np.int32) << 7) | (exponent << 4) | mantissa
    return (~code & 0xFF).astype(np.uint8).tobytes()


def _alaw_encode(linear: npt.NDArray[np.int32]) -> bytes:
    scaled = linear >> 3  # A-law quantises 13-bit values
    positive = scaled >= 0
    magnitude = np.where(positive, scaled, ~scaled)  # one's complement, as for mu-law
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left")
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    code = (segment << 4) | mantissa | np.where(positive, 0x80, 0)
    return ((code ^ _ALAW_EVEN_BITS) & 0xFF).astype(np.uint8).tobytes()


def tone_power(samples: npt.ArrayLike, rate: int, freq: float) -> float:
    """Share of the signal's power at `freq`, computed with the Goertzel recurrence.

    The result is scale-free: about 1.0 for a pure sine at `freq`, 0.5 for each tone
    of an equal two-tone pair, near 0 for a frequency that is absent, and 0.0 for
    silence. Goertzel evaluates one DFT bin in a single pass, which is what tone
    detection needs (cheaper than an FFT for a few frequencies). Leakage is not
    windowed away: analyse a few tens of periods for clean figures.
    """
    signal = np.asarray(samples, dtype=np.float64)
    energy = float(np.dot(signal, signal))
    if signal.size == 0 or energy == 0.0:
        return 0.0
    coefficient = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    previous = before = 0.0
    for value in signal.tolist():
        previous, before = value + coefficient * previous - before, previous
    power = previous * previous + before * before - coefficient * previous * before
    return 2.0 * power / (signal.size * energy)


def dominant_frequencies(samples: npt.ArrayLike, rate: int, count: int = 2) -> list[float]:
    """The `count` strongest spectral peaks in Hz, strongest first.

    Hann-windowed FFT of the mean-removed signal; peaks are local maxima of the
    magnitude spectrum, refined to a fraction of a bin by fitting a parabola through
    the log magnitudes around each. Peaks more than 40 dB below the strongest (window
    side lobes, quantisation noise) are not reported, so fewer than `count` may come
    back; silence gives an empty list.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if signal.size < 4 or count < 1:
        return []
    signal = signal - signal.mean()
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    strongest = float(spectrum.max())
    if strongest == 0.0:
        return []
    inner = spectrum[1:-1]
    is_peak = (inner > spectrum[:-2]) & (inner >= spectrum[2:]) & (inner >= strongest * 0.01)
    bins = np.flatnonzero(is_peak) + 1
    bins = bins[np.argsort(spectrum[bins])[::-1]][:count]
    log = np.log(np.maximum(spectrum, strongest * 1e-12))
    frequencies = []
    for index in bins.tolist():
        left, centre, right = log[index - 1], log[index], log[index + 1]
        curvature = left - 2.0 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature != 0.0 else 0.0
        frequencies.append(float((index + offset) * rate / signal.size))
    return frequencies


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level relative to full scale (a full-scale square wave is 0 dBFS).

    Empty or all-zero input gives negative infinity.
    """
    signal = np.asarray(samples, dtype=np.float64)
    if signal.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.dot(signal, signal)) / signal.size)
    return 20.0 * math.log10(rms / _FULL_SCALE) if rms > 0.0 else -math.inf


def is_silent(samples: npt.ArrayLike, threshold: float = -50.0) -> bool:
    """True when the RMS level is below `threshold` dBFS.

    The default, -50 dBFS, sits above G.711 idle-channel noise and comfort noise and
    well below speech or any network tone (about -20 dBFS and up).
    """
    return rms_dbfs(samples) < threshold
