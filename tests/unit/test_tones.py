"""Ringback and busy tone synthesis: every code renders, sounds and times right."""

from __future__ import annotations

import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media import tones
from media.analysis import dominant_frequencies
from media.tones import (
    ToneSet,
    ToneSpec,
    ToneTableError,
    ensure_tone_files,
    load_table,
    parse_table,
    read_wav,
    synthesize,
    tone_file_name,
    write_wav,
)

RATE = 8000
TABLE = load_table()
CODES = sorted(TABLE)
ALL_TONES = [(code, kind) for code in CODES for kind in ("ringback", "busy")]

EXPECTED_CODES = [
    "at",
    "au",
    "bg",
    "br",
    "be",
    "ch",
    "cl",
    "cn",
    "cz",
    "de",
    "dk",
    "ee",
    "es",
    "fi",
    "fr",
    "gr",
    "hu",
    "il",
    "in",
    "it",
    "lt",
    "jp",
    "mx",
    "my",
    "nl",
    "no",
    "nz",
    "ph",
    "pl",
    "pt",
    "ru",
    "se",
    "sg",
    "th",
    "uk",
    "us",
    "us-old",
    "tw",
    "ve",
    "za",
]


def bursts(samples: npt.NDArray[np.int16], rate: int) -> list[tuple[float, float]]:
    """(start, end) in ms of each stretch of sound; gaps under 2 ms are zero crossings."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 0.01 * 32767)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) > 2 * rate // 1000)
    starts = np.concatenate(([loud[0]], loud[breaks + 1]))
    ends = np.concatenate((loud[breaks], [loud[-1]])) + 1
    return [(s * 1000 / rate, e * 1000 / rate) for s, e in zip(starts, ends, strict=True)]


def expected_bursts(spec: ToneSpec) -> list[tuple[float, float]]:
    edges = np.cumsum((0, *spec.cadence))
    return [(float(a), float(b)) for a, b in zip(edges[0:-1:2], edges[1::2], strict=True)]


def test_table_has_the_forty_ringtone_codes() -> None:
    assert sorted(EXPECTED_CODES) == CODES
    assert len(TABLE) == 40
    assert list(TABLE)[:3] == ["at", "au", "bg"]


def test_table_rows_are_read_in_the_documented_notation() -> None:
    us = TABLE["us"]
    assert us == ToneSet(
        "us",
        "United States",
        ToneSpec((440.0, 480.0), None, (2000, 4000)),
        ToneSpec((480.0, 620.0), None, (500, 500)),
    )
    assert TABLE["in"].ringback == ToneSpec((400.0,), 25.0, (400, 200, 400, 2000))
    assert TABLE["in"].ringback.spectral_lines == (375.0, 400.0, 425.0)
    assert TABLE["de"].ringback.spectral_lines == (425.0,)
    assert TABLE["uk"].ringback.period_ms == 3000
    assert TABLE["us-old"].busy.modulation == 100.0
    assert TABLE["us"].tone("busy") is TABLE["us"].busy


@pytest.mark.parametrize(("code", "kind"), ALL_TONES)
def test_every_tone_synthesizes_one_cycle_at_a_sane_level(code: str, kind: str) -> None:
    spec = TABLE[code].ringback if kind == "ringback" else TABLE[code].busy
    samples = synthesize(spec)
    assert samples.dtype == np.int16
    assert samples.size == spec.period_ms * RATE // 1000
    peak = np.abs(samples.astype(np.int32)).max() / 32767
    assert 0.2 < peak <= 0.26
    assert samples[0] == 0
    assert samples[-1] == 0


@pytest.mark.parametrize(("code", "kind"), ALL_TONES)
def test_spectrum_holds_the_tables_frequencies(code: str, kind: str) -> None:
    spec = TABLE[code].ringback if kind == "ringback" else TABLE[code].busy
    samples = synthesize(spec)
    on = spec.cadence[0] * RATE // 1000
    lines = spec.spectral_lines
    found = dominant_frequencies(samples[:on], RATE, count=len(lines) + 2)
    assert len(found) == len(lines), found
    assert sorted(found) == pytest.approx(sorted(lines), abs=1.0)


@pytest.mark.parametrize(("code", "kind"), ALL_TONES)
def test_cadence_timing_within_five_ms(code: str, kind: str) -> None:
    spec = TABLE[code].ringback if kind == "ringback" else TABLE[code].busy
    measured = bursts(synthesize(spec, cycles=2), RATE)
    expected = expected_bursts(spec)
    period = spec.period_ms
    expected += [(start + period, end + period) for start, end in expected]
    assert len(measured) == len(expected)
    for (start, end), (want_start, want_end) in zip(measured, expected, strict=True):
        assert start == pytest.approx(want_start, abs=5)
        assert end == pytest.approx(want_end, abs=5)


def test_bursts_ramp_in_and_out_without_clicks() -> None:
    spec = TABLE["us"].busy
    samples = synthesize(spec).astype(np.float64) / 32767
    ramp = int(tones.RAMP_MS * RATE / 1000)
    on = spec.cadence[0] * RATE // 1000
    # The raised-cosine ramp bounds the envelope: quiet at the edges, full after.
    assert np.abs(samples[:2]).max() < 0.01
    assert np.abs(samples[on - 2 : on]).max() < 0.01
    assert np.abs(samples[: ramp // 2]).max() < 0.5 * tones.PEAK_LEVEL
    assert np.abs(samples[ramp : on - ramp]).max() > 0.9 * tones.PEAK_LEVEL
    # No step larger than the steepest slope of the tones themselves.
    steepest = 2 * np.pi * max(spec.frequencies) / RATE * tones.PEAK_LEVEL
    assert np.abs(np.diff(samples)).max() <= steepest * 1.05


def test_cycles_repeat_the_cycle_exactly() -> None:
    spec = TABLE["uk"].ringback
    one = synthesize(spec)
    three = synthesize(spec, cycles=3)
    assert np.array_equal(three, np.tile(one, 3))


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_other_rates_keep_length_and_pitch(rate: int) -> None:
    spec = TABLE["au"].ringback
    samples = synthesize(spec, rate=rate)
    assert samples.size == round(spec.period_ms * rate / 1000)
    first = samples[: spec.cadence[0] * rate // 1000]
    assert sorted(dominant_frequencies(first, rate)) == pytest.approx([413, 438], abs=1.0)


@pytest.mark.parametrize(("rate", "cycles"), [(0, 1), (8000, 0)])
def test_synthesize_rejects_bad_arguments(rate: int, cycles: int) -> None:
    with pytest.raises(ValueError):
        synthesize(TABLE["us"].ringback, rate=rate, cycles=cycles)


@pytest.mark.parametrize(
    ("frequency", "cadence"),
    [
        ("", "1000,4000"),
        ("440+", "1000,4000"),
        ("440-480", "1000,4000"),
        ("abc", "1000,4000"),
        ("0", "1000,4000"),
        ("400*400", "1000,4000"),
        ("440", "1000"),
        ("440", "1000,0"),
        ("440", "1000,x"),
        ("440", ""),
    ],
)
def test_tone_notation_errors(frequency: str, cadence: str) -> None:
    with pytest.raises(ValueError):
        ToneSpec.parse(frequency, cadence)


HEADER = "code\tcountry\tringback_freq\tringback_cadence_ms\tbusy_freq\tbusy_cadence_ms\n"


def test_parse_table_skips_comments_and_blank_lines() -> None:
    table = parse_table("# comment\n\n" + HEADER + "xx\tNowhere\t425\t1000,4000\t425\t500,500\n")
    assert list(table) == ["xx"]
    assert table["xx"].country == "Nowhere"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xx\tNowhere\t425\t1000,4000\t425\t500,500\n", "line 1: expected the header"),
        (HEADER + "xx\tNowhere\t425\t1000,4000\t425\n", "line 2: expected 6 fields"),
        (HEADER + "xx\tA\t425\t1,1\t425\t1,1\nxx\tB\t425\t1,1\t425\t1,1\n", "duplicate code"),
        (HEADER + "xx\tNowhere\t425\t1000\t425\t500,500\n", "line 2: cadence"),
        ("# only a comment\n", "no header"),
    ],
)
def test_parse_table_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ToneTableError, match=message):
        parse_table(text)


def test_load_table_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "tones.tsv"
    path.write_text(HEADER + "xx\tNowhere\t425\t1000,4000\t425\t500,500\n")
    assert list(load_table(path)) == ["xx"]
    assert list(load_table(str(path))) == ["xx"]


def test_wav_round_trip(tmp_path: Path) -> None:
    samples = synthesize(TABLE["jp"].ringback)
    path = tmp_path / "jp.wav"
    write_wav(path, samples, RATE)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert wav.getnframes() == samples.size
    read, rate = read_wav(path)
    assert rate == RATE
    assert np.array_equal(read, samples)


def test_read_wav_refuses_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(8))
    with pytest.raises(ValueError, match="not mono 16-bit"):
        read_wav(path)


def test_fingerprint_follows_everything_that_shapes_the_audio() -> None:
    spec = TABLE["us"].ringback
    assert spec.fingerprint(8000) == spec.fingerprint(8000)
    assert len(spec.fingerprint(8000)) == 8
    assert spec.fingerprint(8000) != spec.fingerprint(16000)
    assert spec.fingerprint(8000) != replace(spec, cadence=(2000, 3000)).fingerprint(8000)
    assert spec.fingerprint(8000) != replace(spec, frequencies=(440.0,)).fingerprint(8000)


def test_ensure_tone_files_writes_every_code(tmp_path: Path) -> None:
    paths = ensure_tone_files(tmp_path / "tones")
    assert sorted(paths) == CODES
    for code, path in paths.items():
        assert path.name == tone_file_name(code, "ringback", TABLE[code].ringback, RATE)
        samples, rate = read_wav(path)
        assert rate == RATE
        assert np.array_equal(samples, synthesize(TABLE[code].ringback))
    busy = ensure_tone_files(tmp_path / "tones", "busy")
    assert busy["us"].name.startswith("busy-us-")
    assert len(list((tmp_path / "tones").iterdir())) == 80


def test_ensure_tone_files_keeps_up_to_date_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_tone_files(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an up-to-date tone was synthesised again")

    monkeypatch.setattr(tones, "synthesize", refuse)
    assert ensure_tone_files(tmp_path) == first


def test_ensure_tone_files_regenerates_a_changed_tone(tmp_path: Path) -> None:
    table = {code: TABLE[code] for code in ("us", "us-old")}
    before = ensure_tone_files(tmp_path, table=table)
    changed = replace(TABLE["us"], ringback=replace(TABLE["us"].ringback, cadence=(1000, 2000)))
    after = ensure_tone_files(tmp_path, table={**table, "us": changed})
    assert after["us"] != before["us"]
    assert not before["us"].exists()
    assert after["us"].exists()
    assert after["us-old"] == before["us-old"]
    assert before["us-old"].exists()
    samples, _ = read_wav(after["us"])
    assert samples.size == 3000 * RATE // 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in after.values())


def test_ensure_tone_files_rejects_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tone kind"):
        ensure_tone_files(tmp_path, "dial")  # type: ignore[arg-type]
