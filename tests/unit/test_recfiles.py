import errno
import os
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from media import recfiles
from media.recfiles import (
    DiskFullError,
    FinalRecording,
    RecordingFileError,
    SideSamples,
    encode_mp3,
    finalize,
    finalize_sides,
    read_pcm,
    repair_wav,
    write_pcm,
)

RATE = 8000


def header(data_size: int, riff_size: int | None = None, rate: int = RATE) -> bytes:
    """The 44-byte header the engine's recorder writes (sizes 0 until it is closed)."""
    riff = 36 + data_size if riff_size is None else riff_size
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


def crashed(path: Path, samples: np.ndarray, extra: bytes = b"") -> Path:
    """A side file as a killed process leaves it: sizes zero, audio present."""
    path.write_bytes(header(0, 0) + samples.astype("<i2").tobytes() + extra)
    return path


def closed(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def tone(seconds: float, level: int = 8000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def frames_of(path: Path) -> tuple[int, int, np.ndarray]:
    """Channels, rate and (n, channels) samples of a WAV, read with the stdlib."""
    with wave.open(str(path), "rb") as w:
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return channels, rate, data.reshape(-1, channels)


# --- repair


def test_repair_fixes_a_header_claiming_zero_length(tmp_path: Path) -> None:
    samples = tone(1.5)
    path = crashed(tmp_path / "side.wav", samples)
    assert repair_wav(path) == len(samples)
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    assert struct.unpack_from("<I", raw, 40)[0] == 2 * len(samples)
    channels, rate, data = frames_of(path)
    assert (channels, rate) == (1, RATE)
    assert np.array_equal(data[:, 0], samples)


def test_repair_cuts_a_trailing_partial_sample(tmp_path: Path) -> None:
    samples = tone(0.25)
    path = crashed(tmp_path / "side.wav", samples, extra=b"\x7f")
    assert repair_wav(path) == len(samples)
    assert path.stat().st_size == 44 + 2 * len(samples)


def test_repair_is_idempotent(tmp_path: Path) -> None:
    path = crashed(tmp_path / "side.wav", tone(0.5), extra=b"\x01")
    first = repair_wav(path)
    after_first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert repair_wav(path) == first
    assert path.read_bytes() == after_first
    assert path.stat().st_mtime_ns == mtime


def test_repair_leaves_a_closed_file_alone(tmp_path: Path) -> None:
    path = closed(tmp_path / "side.wav", tone(0.3))
    before = path.read_bytes()
    assert repair_wav(path) == int(0.3 * RATE)
    assert path.read_bytes() == before


def test_repair_of_a_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "side.wav"
    path.write_bytes(header(0, 0))
    assert repair_wav(path) == 0
    assert frames_of(path)[2].size == 0


def test_repair_finishes_an_interrupted_repair(tmp_path: Path) -> None:
    # Header already rewritten, the partial sample not yet cut off.
    samples = tone(0.1)
    path = tmp_path / "side.wav"
    path.write_bytes(header(2 * len(samples)) + samples.astype("<i2").tobytes() + b"\x02")
    assert repair_wav(path) == len(samples)
    assert path.stat().st_size == 44 + 2 * len(samples)


def test_repair_keeps_a_chunk_after_the_data(tmp_path: Path) -> None:
    samples = tone(0.1)
    data = samples.astype("<i2").tobytes()
    trailer = b"LIST" + struct.pack("<I", 4) + b"INFO"
    path = tmp_path / "side.wav"
    path.write_bytes(header(len(data), riff_size=0) + data + trailer)
    assert repair_wav(path) == len(samples)
    raw = path.read_bytes()
    assert raw.endswith(trailer)
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8


def test_repair_extends_a_stale_data_size(tmp_path: Path) -> None:
    samples = tone(0.2)
    path = tmp_path / "side.wav"
    path.write_bytes(header(100) + samples.astype("<i2").tobytes())
    assert repair_wav(path) == len(samples)


@pytest.mark.parametrize(
    "content",
    [
        b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 100,
        b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 40,
        b"",
        b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00",
    ],
    ids=["mp3", "avi", "empty", "no-fmt"],
)
def test_repair_rejects_a_non_wav(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "side.wav"
    path.write_bytes(content)
    with pytest.raises(RecordingFileError):
        repair_wav(path)


def test_repair_rejects_8_bit_audio(tmp_path: Path) -> None:
    path = tmp_path / "side.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(RATE)
        w.writeframes(b"\x80" * 100)
    with pytest.raises(RecordingFileError, match="16-bit"):
        repair_wav(path)


def test_repair_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingFileError, match="cannot read"):
        repair_wav(tmp_path / "nothing.wav")


def test_read_pcm_repairs_first(tmp_path: Path) -> None:
    samples = tone(0.4)
    path = crashed(tmp_path / "side.wav", samples, extra=b"\x05")
    pcm = read_pcm(path)
    assert pcm.dtype == np.int16
    assert np.array_equal(pcm, samples)


def test_read_pcm_wants_8_khz_mono(tmp_path: Path) -> None:
    path = closed(tmp_path / "side.wav", tone(0.1), rate=16000)
    with pytest.raises(RecordingFileError, match="expected mono 8000 Hz"):
        read_pcm(path)


# --- finalize


def test_dual_puts_parent_on_channel_1_and_pads_the_shorter(tmp_path: Path) -> None:
    parent = crashed(tmp_path / "p.wav", np.array([1, 2, 3], dtype=np.int16))
    child = crashed(tmp_path / "c.wav", np.array([10, 20, 30, 40, 50], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize(parent, child, out, layout="dual", track="both", trim=False)
    assert result == FinalRecording(out, 5 / RATE, 2, 5)
    channels, rate, data = frames_of(out)
    assert (channels, rate) == (2, RATE)
    assert data[:, 0].tolist() == [1, 2, 3, 0, 0]
    assert data[:, 1].tolist() == [10, 20, 30, 40, 50]


def test_dual_pads_the_parent_side_too(tmp_path: Path) -> None:
    parent = closed(tmp_path / "p.wav", np.array([5, 6, 7, 8], dtype=np.int16))
    child = closed(tmp_path / "c.wav", np.array([9], dtype=np.int16))
    out = tmp_path / "out.wav"
    finalize(parent, child, out, layout="dual", track="both", trim=False)
    assert frames_of(out)[2].tolist() == [[5, 9], [6, 0], [7, 0], [8, 0]]


def test_mono_mixes_both_and_clips(tmp_path: Path) -> None:
    parent = crashed(tmp_path / "p.wav", np.array([100, 30000, -30000, 7], dtype=np.int16))
    child = crashed(tmp_path / "c.wav", np.array([-50, 10000, -10000], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize(parent, child, out, layout="mono", track="both", trim=False)
    assert (result.channels, result.samples) == (1, 4)
    assert frames_of(out)[2][:, 0].tolist() == [50, 32767, -32768, 7]


@pytest.mark.parametrize("layout", ["dual", "mono"])
@pytest.mark.parametrize(("track", "expected"), [("inbound", [1, 2]), ("outbound", [7, 8, 9])])
def test_a_single_track_is_mono(
    tmp_path: Path, layout: recfiles.Layout, track: recfiles.Track, expected: list[int]
) -> None:
    parent = closed(tmp_path / "p.wav", np.array([1, 2], dtype=np.int16))
    child = closed(tmp_path / "c.wav", np.array([7, 8, 9], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize(parent, child, out, layout=layout, track=track, trim=False)
    assert result.channels == 1
    channels, _, data = frames_of(out)
    assert channels == 1
    assert data[:, 0].tolist() == expected


def test_a_side_never_answered_is_silence(tmp_path: Path) -> None:
    parent = crashed(tmp_path / "p.wav", np.array([4, 5, 6], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize(
        parent, tmp_path / "missing.wav", out, layout="dual", track="both", trim=False
    )
    assert result.samples == 3
    assert frames_of(out)[2].tolist() == [[4, 0], [5, 0], [6, 0]]
    result = finalize(parent, None, out, layout="mono", track="both", trim=False)
    assert frames_of(out)[2][:, 0].tolist() == [4, 5, 6]


@pytest.mark.parametrize("content", [b"", b"RI", b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_an_empty_or_headless_side_is_silence(tmp_path: Path, content: bytes) -> None:
    child = tmp_path / "c.wav"
    child.write_bytes(content)
    parent = closed(tmp_path / "p.wav", np.array([1, 2], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize(parent, child, out, layout="dual", track="both", trim=False)
    assert frames_of(out)[2].tolist() == [[1, 0], [2, 0]]
    assert result.duration == 2 / RATE


def test_nothing_recorded_gives_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    result = finalize(None, None, out, layout="dual", track="both", trim=True)
    assert (result.samples, result.duration, result.channels) == (0, 0.0, 2)
    assert frames_of(out)[2].size == 0


def test_a_corrupt_side_is_an_error(tmp_path: Path) -> None:
    child = tmp_path / "c.wav"
    child.write_bytes(b"not a wav file at all, but long enough to have a header......")
    with pytest.raises(RecordingFileError):
        finalize(None, child, tmp_path / "o.wav", layout="mono", track="both", trim=False)
    assert not (tmp_path / "o.wav").exists()


def test_trim_removes_leading_and_trailing_silence_only(tmp_path: Path) -> None:
    audio = np.concatenate([silence(2), tone(0.5), silence(1), tone(0.5), silence(1.5)])
    parent = crashed(tmp_path / "p.wav", audio)
    out = tmp_path / "out.wav"
    untrimmed = finalize(parent, None, out, layout="mono", track="inbound", trim=False)
    assert untrimmed.duration == pytest.approx(5.5)
    result = finalize(parent, None, out, layout="mono", track="inbound", trim=True)
    # 2 s of sound and the silence between, plus at most a 50 ms margin each side.
    assert 2.0 <= result.duration <= 2.0 + 2 * 0.05 + 0.04
    data = frames_of(out)[2][:, 0].astype(np.int32)
    assert np.abs(data[: int(0.03 * RATE)]).max() < 50
    middle = data[int(0.75 * RATE) : int(1.25 * RATE)]
    assert np.abs(middle).max() == 0


def test_trim_keeps_what_either_channel_heard(tmp_path: Path) -> None:
    parent = closed(tmp_path / "p.wav", np.concatenate([silence(3), tone(0.2)]))
    child = closed(tmp_path / "c.wav", np.concatenate([silence(1), tone(0.2), silence(3)]))
    out = tmp_path / "out.wav"
    result = finalize(parent, child, out, layout="dual", track="both", trim=True)
    assert result.channels == 2
    assert result.duration == pytest.approx(2.2 + 0.1, abs=0.03)


def test_trim_ignores_sound_below_the_threshold(tmp_path: Path) -> None:
    hiss = tone(1, level=50)  # about -59 dBFS
    parent = closed(tmp_path / "p.wav", np.concatenate([hiss, tone(0.5), hiss]))
    out = tmp_path / "out.wav"
    result = finalize(parent, None, out, layout="mono", track="both", trim=True)
    assert result.duration == pytest.approx(0.6, abs=0.03)


def test_trim_of_silence_only_is_empty(tmp_path: Path) -> None:
    parent = closed(tmp_path / "p.wav", silence(2))
    out = tmp_path / "out.wav"
    result = finalize(parent, parent, out, layout="mono", track="both", trim=True)
    assert result.samples == 0


def test_block_boundaries_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    audio = np.concatenate([silence(1.3), rng.integers(-3000, 3000, 3 * RATE), silence(1.1)])
    parent = crashed(tmp_path / "p.wav", audio.astype(np.int16))
    child = crashed(tmp_path / "c.wav", tone(2.7))
    whole = finalize(parent, child, tmp_path / "a.wav", layout="dual", track="both", trim=True)
    monkeypatch.setattr(recfiles, "BLOCK_SECONDS", 1)
    pieces = finalize(parent, child, tmp_path / "b.wav", layout="dual", track="both", trim=True)
    assert whole.samples == pieces.samples
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_finalize_replaces_the_output_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    parent = closed(tmp_path / "p.wav", tone(0.1))
    finalize(parent, None, out, layout="mono", track="both", trim=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "p.wav"]
    assert frames_of(out)[2].shape == (800, 1)


def test_finalize_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        finalize(None, None, tmp_path / "o.wav", layout="quad", track="both", trim=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="track"):
        finalize(None, None, tmp_path / "o.wav", layout="mono", track="left", trim=False)  # type: ignore[arg-type]


def test_finalize_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RecordingFileError, match="cannot write"):
        finalize(None, None, tmp_path / "no" / "o.wav", layout="mono", track="both", trim=False)


# --- a full disk


def no_space(monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOSPC) -> None:
    """Every WAV file written from now on fails with ``code`` at its first samples."""

    def writeframesraw(self: wave.Wave_write, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(wave.Wave_write, "writeframesraw", writeframesraw)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_finalize_on_a_full_disk_is_a_disk_full_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    parent = closed(tmp_path / "p.wav", tone(0.5))
    no_space(monkeypatch, code)
    with pytest.raises(DiskFullError, match=os.strerror(code)):
        finalize(parent, None, tmp_path / "out.wav", layout="mono", track="both", trim=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.wav"]  # no temporary left


def test_other_write_errors_are_not_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = closed(tmp_path / "p.wav", tone(0.5))
    no_space(monkeypatch, errno.EIO)
    with pytest.raises(RecordingFileError, match="cannot write") as raised:
        finalize(parent, None, tmp_path / "out.wav", layout="mono", track="both", trim=False)
    assert not isinstance(raised.value, DiskFullError)


@pytest.mark.parametrize("layout", ["dual", "mono"])
@pytest.mark.parametrize("track", ["both", "inbound", "outbound"])
@pytest.mark.parametrize("trim", [False, True])
def test_sides_in_memory_finalize_as_their_files_do(
    tmp_path: Path, layout: recfiles.Layout, track: recfiles.Track, trim: bool
) -> None:
    talk = np.concatenate([silence(0.6), tone(1.2, hz=600), silence(0.7)])
    parent = crashed(tmp_path / "p.wav", talk, extra=b"\x05")  # a partial sample
    child = closed(tmp_path / "c.wav", np.roll(tone(2.5, hz=1000), 4000))
    from_files = finalize(parent, child, tmp_path / "a.wav", layout=layout, track=track, trim=trim)
    sides = SideSamples.read(parent, child, track=track)
    from_memory = finalize_sides(sides, tmp_path / "b.wav", layout=layout, track=track, trim=trim)
    assert from_memory.samples == from_files.samples > 0
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_sides_in_memory_are_copies_and_only_the_tracks(tmp_path: Path) -> None:
    parent = closed(tmp_path / "p.wav", np.array([1, 2, 3], dtype=np.int16))
    child = closed(tmp_path / "c.wav", np.array([4, 5], dtype=np.int16))
    sides = SideSamples.read(parent, child, track="inbound")
    parent.unlink()
    child.unlink()
    assert sides.parent.tolist() == [1, 2, 3]
    assert sides.child.tolist() == []
    assert SideSamples.read(None, None, track="both").parent.tolist() == []


@pytest.mark.parametrize(
    ("layout", "expected"), [("dual", [[1, 7], [2, 8]]), ("mono", [[8], [10]])]
)
def test_sides_in_memory_stop_where_the_shorter_side_ends(
    tmp_path: Path, layout: recfiles.Layout, expected: list[list[int]]
) -> None:
    # On a full disk a side that stops short lost its audio there: it is not silence.
    sides = SideSamples(np.array([1, 2], dtype=np.int16), np.array([7, 8, 9], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize_sides(sides, out, layout=layout, track="both", trim=False)
    assert result.samples == 2
    assert frames_of(out)[2].tolist() == expected
    outbound = finalize_sides(sides, out, layout="mono", track="outbound", trim=False)
    assert outbound.samples == 3  # one side alone is never cut


def test_sides_in_memory_with_a_side_that_recorded_nothing(tmp_path: Path) -> None:
    sides = SideSamples(np.zeros(0, dtype=np.int16), np.array([7, 8, 9], dtype=np.int16))
    out = tmp_path / "out.wav"
    result = finalize_sides(sides, out, layout="dual", track="both", trim=False)
    assert frames_of(out)[2].tolist() == [[0, 7], [0, 8], [0, 9]]
    assert result.samples == 3


def test_write_pcm_round_trip(tmp_path: Path) -> None:
    samples = tone(0.3)
    path = tmp_path / "side.wav"
    path.write_bytes(b"old")
    write_pcm(path, samples)
    assert read_pcm(path).tolist() == samples.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["side.wav"]


# --- mp3


def decoded(path: Path) -> tuple[int, int, int]:
    """Samples per channel, channels and rate of an audio file, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples, stream.codec_context.channels, stream.codec_context.sample_rate


@pytest.mark.parametrize(("layout", "channels"), [("dual", 2), ("mono", 1)])
def test_mp3_round_trip(tmp_path: Path, layout: recfiles.Layout, channels: int) -> None:
    parent = closed(tmp_path / "p.wav", tone(2.5))
    child = closed(tmp_path / "c.wav", tone(1.0, hz=800))
    wav = tmp_path / "r.wav"
    finalize(parent, child, wav, layout=layout, track="both", trim=False)
    mp3 = tmp_path / "r.mp3"
    encode_mp3(wav, mp3)
    samples, got_channels, rate = decoded(mp3)
    assert (got_channels, rate) == (channels, RATE)
    assert samples / rate == pytest.approx(2.5, abs=0.1)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_mp3_is_cached_until_the_wav_changes(tmp_path: Path) -> None:
    wav = closed(tmp_path / "r.wav", tone(0.5))
    mp3 = tmp_path / "r.mp3"
    encode_mp3(wav, mp3)
    first = mp3.stat().st_mtime_ns
    encode_mp3(wav, mp3)
    assert mp3.stat().st_mtime_ns == first
    closed(wav, tone(1.5))
    later = first + 1_000_000_000
    os.utime(wav, ns=(later, later))
    encode_mp3(wav, mp3)
    assert mp3.stat().st_mtime_ns > first
    assert decoded(mp3)[0] / RATE == pytest.approx(1.5, abs=0.1)


def test_mp3_of_a_missing_wav(tmp_path: Path) -> None:
    with pytest.raises(RecordingFileError):
        encode_mp3(tmp_path / "none.wav", tmp_path / "none.mp3")
    assert not (tmp_path / "none.mp3").exists()
