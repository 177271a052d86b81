"""Recording files of ``<Dial record>``: repair, finalize and encode.

The call engine records each side of a recorded ``<Dial>`` into its own mono 8 kHz
16-bit WAV (``<sid>.parent.wav``: what the caller said; ``<sid>.child.wav``: what the
caller heard), both started in the same tick so that sample n of one is sample n of
the other. The recorder writes a 44-byte RIFF header up front and fixes its sizes only
when it is closed, so a process killed mid-call leaves a header claiming zero bytes of
audio in front of all the audio: `repair_wav` makes such a file whole again.

`finalize` turns the two sides into the file Twilio's ``record`` attribute asks for:
dual channel (channel 1 the parent, channel 2 the child), both sides mixed into mono,
or one side alone (``recordingTrack`` inbound/outbound), optionally with leading and
trailing silence trimmed (``trim="trim-silence"``). It reads the sides through memory
maps and writes in blocks, so a four-hour call costs no more memory than a short one.
When the disk has no room for the finished file, `SideSamples` holds the sides in
memory instead, so that their files can be deleted and `finalize_sides` can write the
finished file in the space they held.

Nothing here touches SQLite or HTTP; every output is written to a temporary file and
moved into place, so a reader never sees half a recording.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import av
import numpy as np
import numpy.typing as npt

RATE = 8000
SILENCE_DBFS = -50.0
"""A 20 ms frame whose RMS is below this on every channel counts as silence."""
FRAME_MS = 20
MARGIN_MS = 50
"""Audio kept either side of the first and last sound when trimming."""
BLOCK_SECONDS = 60
"""Finalize and encode work on blocks of this many seconds."""
MP3_BIT_RATES = {1: 32_000, 2: 64_000}

Layout = Literal["dual", "mono"]
Track = Literal["both", "inbound", "outbound"]

_PCM = 1
_EXTENSIBLE = 0xFFFE
_HEADER = 44
"""Size of the canonical header the recorder writes (RIFF, fmt of 16 bytes, data)."""

Samples = npt.NDArray[np.int16]
_T = TypeVar("_T")

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RecordingFileError(Exception):
    """A recording file is not a WAV file we can read, or cannot be written."""


class DiskFullError(RecordingFileError):
    """An output file cannot be written for lack of space (``ENOSPC``, ``EDQUOT``)."""


def _write_error(out: Path, error: OSError) -> RecordingFileError:
    kind = DiskFullError if error.errno in _NO_SPACE else RecordingFileError
    return kind(f"{out.name}: cannot write ({error.strerror or error})")


@dataclass(frozen=True)
class FinalRecording:
    """The finished recording file and what it holds."""

    path: Path
    duration: float
    """Seconds of audio (``samples / rate``)."""
    channels: int
    samples: int
    """Samples per channel."""


@dataclass(frozen=True)
class _WavLayout:
    channels: int
    rate: int
    bits: int
    block_align: int
    data_offset: int
    data_size: int


def _parse(head: bytes, file_size: int, name: str) -> tuple[_WavLayout, bool]:
    """The format and data chunk of a RIFF/WAVE file, and whether data is its last chunk.

    The data size in the result is the one to use: the claimed one when it is nonzero
    and the data chunk is followed by another chunk or ends the file exactly, else
    whatever the file holds from the data chunk to its end, in whole samples.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise RecordingFileError(f"{name}: not a WAV file")
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(head):
                raise RecordingFileError(f"{name}: truncated fmt chunk")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise RecordingFileError(f"{name}: data chunk before fmt chunk")
            tag, channels, rate, block_align, bits = fmt
            if tag not in (_PCM, _EXTENSIBLE) or bits != 16 or channels < 1:
                raise RecordingFileError(f"{name}: not 16-bit PCM (format {tag}, {bits} bits)")
            if block_align != 2 * channels:
                raise RecordingFileError(f"{name}: bad block alignment {block_align}")
            available = file_size - body
            end = body + size + (size & 1)
            if 0 < size <= available and end == file_size:
                return _WavLayout(channels, rate, bits, block_align, body, size), True
            if 0 < size <= available and _chunk_at(head, end, file_size):
                return _WavLayout(channels, rate, bits, block_align, body, size), False
            size = available - available % block_align
            return _WavLayout(channels, rate, bits, block_align, body, size), True
        pos = body + size + (size & 1)
    raise RecordingFileError(f"{name}: no data chunk")


def _chunk_at(head: bytes, pos: int, file_size: int) -> bool:
    """Whether a plausible RIFF chunk header (ASCII id, size within the file) is at `pos`."""
    if pos + 8 > min(file_size, len(head)):
        return False
    chunk_id = head[pos : pos + 4]
    (size,) = struct.unpack_from("<I", head, pos + 4)
    return all(32 <= c < 127 for c in chunk_id) and pos + 8 + size <= file_size


def _read_head(path: Path) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64 * 1024)
    except OSError as e:
        raise RecordingFileError(f"{path.name}: cannot read ({e.strerror or e})") from e
    return head, size


def _layout(path: Path) -> _WavLayout:
    """Repair `path` if needed and return where its samples are."""
    head, file_size = _read_head(path)
    layout, data_is_last = _parse(head, file_size, path.name)
    end = layout.data_offset + layout.data_size + (layout.data_size & 1)
    riff_size = (end if data_is_last else file_size) - 8
    (claimed_data,) = struct.unpack_from("<I", head, layout.data_offset - 4)
    (claimed_riff,) = struct.unpack_from("<I", head, 4)
    cut = data_is_last and file_size > end
    if claimed_data == layout.data_size and claimed_riff == riff_size and not cut:
        return layout
    try:
        with path.open("r+b") as f:
            # Header first, then cut: a crash in between leaves a header whose data
            # chunk is still seen as the last one, and a later repair finishes the job.
            f.seek(4)
            f.write(struct.pack("<I", riff_size))
            f.seek(layout.data_offset - 4)
            f.write(struct.pack("<I", layout.data_size))
            if cut:
                f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RecordingFileError(f"{path.name}: cannot repair ({e.strerror or e})") from e
    return layout


def repair_wav(path: Path) -> int:
    """Make the RIFF and data sizes of a WAV file match its contents; return its frames.

    For a recording whose process died before the recorder closed it the header claims
    no audio: the data chunk then runs to the end of the file, less a trailing partial
    sample, which is cut off. A file that is already consistent is left untouched, so
    repairing twice is the same as repairing once.
    """
    layout = _layout(path)
    return layout.data_size // layout.block_align


def _samples(path: Path, rate: int) -> Samples:
    """The samples of a mono 16-bit WAV at `rate`, memory-mapped, after repairing it."""
    layout = _layout(path)
    if layout.channels != 1 or layout.rate != rate:
        raise RecordingFileError(
            f"{path.name}: expected mono {rate} Hz, got {layout.channels} channels"
            f" at {layout.rate} Hz"
        )
    return _map(path, layout)


def _map(path: Path, layout: _WavLayout) -> Samples:
    count = layout.data_size // 2
    if count == 0:
        return np.zeros(0, dtype=np.int16)
    mapped = np.memmap(path, dtype="<i2", mode="r", offset=layout.data_offset, shape=(count,))
    return mapped.view(np.int16)


def read_pcm(path: Path, rate: int = RATE) -> Samples:
    """The samples of a mono 8 kHz 16-bit WAV file (repaired first), in memory."""
    return np.array(_samples(path, rate), dtype=np.int16)


def _side(path: Path | None, rate: int) -> Samples:
    """One side's samples; a side never recorded, or cut off in its header, is empty."""
    if path is None:
        return np.zeros(0, dtype=np.int16)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return np.zeros(0, dtype=np.int16)
    except OSError as e:
        raise RecordingFileError(f"{path.name}: cannot read ({e.strerror or e})") from e
    if size < _HEADER:
        head, _ = _read_head(path)
        if head == b"RIFF"[: len(head)] or head.startswith(b"RIFF"):
            return np.zeros(0, dtype=np.int16)
    return _samples(path, rate)


def _padded(side: Samples, start: int, stop: int) -> npt.NDArray[np.int32]:
    """``side[start:stop]`` widened to int32, with silence past its end."""
    out = np.zeros(stop - start, dtype=np.int32)
    if start < len(side):
        part = side[start : min(stop, len(side))]
        out[: len(part)] = part
    return out


def _source(sides: list[Samples], channels: int) -> Callable[[int, int], npt.NDArray[np.int16]]:
    """A function giving output samples ``[start, stop)`` as an (n, channels) array."""

    def block(start: int, stop: int) -> npt.NDArray[np.int16]:
        columns = [_padded(side, start, stop) for side in sides]
        if channels == 1:
            mixed = np.clip(sum(columns[1:], columns[0]), -32768, 32767)
            return mixed.astype(np.int16).reshape(-1, 1)
        return np.stack(columns, axis=1).astype(np.int16)

    return block


def _blocks(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(start, stop, size):
        yield first, min(first + size, stop)


def _sound_span(
    block: Callable[[int, int], npt.NDArray[np.int16]], total: int, rate: int
) -> tuple[int, int]:
    """Samples ``[begin, end)`` from a little before the first sound to after the last.

    A 20 ms frame is sound when any channel's RMS reaches `SILENCE_DBFS`; silence
    between the first and last sound is kept. All silence gives an empty span.
    """
    frame = rate * FRAME_MS // 1000
    margin = rate * MARGIN_MS // 1000
    threshold = (32768.0 * 10 ** (SILENCE_DBFS / 20)) ** 2
    first: int | None = None
    last = 0
    for start, stop in _blocks(0, total, frame * (BLOCK_SECONDS * 1000 // FRAME_MS)):
        data = block(start, stop).astype(np.float64)
        frames = -(-len(data) // frame)
        padded = np.zeros((frames * frame, data.shape[1]))
        padded[: len(data)] = data
        power = np.mean(padded.reshape(frames, frame, -1) ** 2, axis=1)
        loud = np.flatnonzero((power >= threshold).any(axis=1))
        if len(loud):
            if first is None:
                first = start + int(loud[0]) * frame
            last = min(stop, start + (int(loud[-1]) + 1) * frame)
    if first is None:
        return 0, 0
    return max(0, first - margin), min(total, last + margin)


def _atomic_output(out: Path, suffix: str) -> tuple[int, Path]:
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix)
    except OSError as e:
        raise _write_error(out, e) from e
    return fd, Path(name)


def _on_track(track: Track, parent: _T, child: _T) -> list[_T]:
    """What ``recordingTrack`` keeps of the two sides, in channel order."""
    if track == "both":
        return [parent, child]
    if track == "inbound":
        return [parent]
    if track == "outbound":
        return [child]
    raise ValueError(f"unknown track {track!r}")


def _channels(layout: Layout, track: Track) -> int:
    if layout not in ("dual", "mono"):
        raise ValueError(f"unknown layout {layout!r}")
    return 2 if layout == "dual" and track == "both" else 1


def finalize(
    parent: Path | None,
    child: Path | None,
    out: Path,
    *,
    layout: Layout,
    track: Track,
    trim: bool,
    rate: int = RATE,
) -> FinalRecording:
    """Build the finished recording of a ``<Dial>`` from its two side files.

    ``dual`` with track ``both`` gives two channels, the parent (inbound, what the
    caller said) on channel 1 and the child (what the caller heard) on channel 2,
    aligned at their first sample, the shorter padded with silence at the end. ``mono``
    with ``both`` mixes the two (sum, clipped). Track ``inbound`` is the parent alone,
    ``outbound`` the child alone, always mono, as Twilio's ``recordingTrack`` does. A
    missing or empty side is silence. `trim` removes leading and trailing silence.
    Raises `DiskFullError` when the disk has no room for the result.
    """
    channels = _channels(layout, track)
    sides = [_side(path, rate) for path in _on_track(track, parent, child)]
    return _write(sides, out, channels=channels, trim=trim, rate=rate)


@dataclass(frozen=True)
class SideSamples:
    """The sides a recording's track uses, read into memory (a side not used is empty).

    For a disk too full to take the finished file: once the sides are in memory their
    files can be deleted and `finalize_sides` writes the finished file in the space
    they held. A side holds 16 kB a second of the call.
    """

    parent: Samples
    child: Samples

    @classmethod
    def read(
        cls, parent: Path | None, child: Path | None, *, track: Track, rate: int = RATE
    ) -> SideSamples:
        """Copy the sides out of their files (repaired first), which stay untouched."""
        nothing = np.zeros(0, dtype=np.int16)
        return cls(
            np.array(_side(parent, rate)) if track in ("both", "inbound") else nothing,
            np.array(_side(child, rate)) if track in ("both", "outbound") else nothing,
        )


def finalize_sides(
    sides: SideSamples,
    out: Path,
    *,
    layout: Layout,
    track: Track,
    trim: bool,
    rate: int = RATE,
) -> FinalRecording:
    """`finalize` from sides in memory, up to where the shorter side ends.

    The sides are those of a recording whose disk filled up: a side that stops short
    of the other lost its audio from there on, which is not silence, so both stop at
    the shorter one (a side with no samples at all is still silence). The two-channel
    result then needs no more space than the side files held.
    """
    channels = _channels(layout, track)
    used = _on_track(track, sides.parent, sides.child)
    recorded = [len(side) for side in used if len(side)]
    if recorded:
        used = [side[: min(recorded)] for side in used]
    return _write(used, out, channels=channels, trim=trim, rate=rate)


def write_pcm(path: Path, samples: Samples, rate: int = RATE) -> None:
    """Write mono 16-bit samples as a WAV file, atomically (the inverse of `read_pcm`)."""
    _write([samples], path, channels=1, trim=False, rate=rate)


def _write(
    sides: list[Samples], out: Path, *, channels: int, trim: bool, rate: int
) -> FinalRecording:
    """The sides, mixed or side by side as `channels` says, trimmed, as the file `out`."""
    total = max(len(side) for side in sides)
    block = _source(sides, channels)
    begin, end = _sound_span(block, total, rate) if trim else (0, total)

    fd, tmp = _atomic_output(out, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with wave.open(f, "wb") as w:
                w.setnchannels(channels)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.setnframes(end - begin)
                for start, stop in _blocks(begin, end, rate * BLOCK_SECONDS):
                    w.writeframesraw(block(start, stop).astype("<i2").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _write_error(out, e) from e
        raise
    samples = end - begin
    return FinalRecording(out, samples / rate, channels, samples)


def encode_mp3(wav: Path, mp3: Path) -> None:
    """Encode a finished recording to MP3 (libmp3lame), unless `mp3` is newer than `wav`.

    Twilio serves every recording as ``.mp3`` as well as ``.wav``; we encode on the
    first request and keep the result next to the WAV.
    """
    try:
        wav_time = wav.stat().st_mtime_ns
    except OSError as e:
        raise RecordingFileError(f"{wav.name}: cannot read ({e.strerror or e})") from e
    with contextlib.suppress(OSError):
        if mp3.stat().st_mtime_ns >= wav_time:
            return
    layout = _layout(wav)
    samples = _map(wav, layout).reshape(-1, layout.channels)
    name = "mono" if layout.channels == 1 else "stereo"
    if layout.channels not in MP3_BIT_RATES:
        raise RecordingFileError(f"{wav.name}: cannot encode {layout.channels} channels")

    fd, tmp = _atomic_output(mp3, ".tmp")
    os.close(fd)
    try:
        with av.open(str(tmp), "w", format="mp3") as container:
            stream = container.add_stream("libmp3lame", rate=layout.rate, layout=name)
            stream.bit_rate = MP3_BIT_RATES[layout.channels]
            for start, stop in _blocks(0, len(samples), layout.rate * BLOCK_SECONDS):
                planar = np.ascontiguousarray(samples[start:stop].T)
                frame = av.AudioFrame.from_ndarray(planar, format="s16p", layout=name)
                frame.sample_rate = layout.rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(tmp, mp3)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, (OSError, av.error.FFmpegError)):
            raise RecordingFileError(f"{mp3.name}: cannot encode ({e})") from e
        raise
