"""Recordings of ``<Dial record>``: names, files, callback parameters, crash repair.

Shared by the call engine, which records, and the REST API, which serves the result.
Files live under ``<storage>/recordings/``: the engine writes one side file per
direction into ``partial/<xx>/`` (`side_paths`) and `finish_files` turns them into
``<sid>.wav`` (and the API into ``<sid>.mp3`` on demand).

Side files are created on the event-loop thread, which must never wait on the disk, so
they are kept away from the directory operations of the worker processes: finished
files go to another directory (an fsync there stalls file creation in the same
directory for milliseconds on ext4), and ``partial/`` is split into `PARTIAL_SHARDS`
subdirectories by the RecordingSid's last two hex digits (a worker deleting one
recording's side files holds that directory's lock, for milliseconds when the disk is
busy or the worker is descheduled).

Side files are recycled rather than created for each recording: creating a file costs
ext4 an inode allocation, which scans recently deleted inodes and took 0.5 ms of CPU per
file on the development VM, against 0.05 ms to truncate and rename one. So the worker
that finishes a recording empties its two side files and renames them to a fresh
RecordingSid (`recycle_side_files`), and the next ``<Dial record>`` takes that SID from
`SpareSides`. Only when no spare is left are new side files created, ahead, by a thread,
when the ``<Dial>`` starts (`create_side_files`), so the recorder opens an existing file.

The database row holds everything finishing needs (channels, track, trim), so a
recording cut short by a crash is finished the same way at the next start
(`repair_at_startup`).

A disk that fills up during a call never affects the call: the recorders' writes fail
and the side files keep the audio up to that moment. Finishing then finds no room for
the finished file, so it reads the sides into memory, deletes them and writes the file
in the space they held: a partial recording, ``completed`` with its real duration, whose
``problem`` the call's notifications get.

Twilio's ``absent`` status is used for a recording with no audio: error 16101 when
nothing was recorded, 16102 when trimming silence left nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from media.recfiles import (
    DiskFullError,
    FinalRecording,
    Layout,
    RecordingFileError,
    SideSamples,
    finalize,
    finalize_sides,
    write_pcm,
)
from switch.store import RecordingRecord, RecordingStatus, Store, StoreError
from switch.timestamps import rfc2822

API_VERSION = "2010-04-01"
RECORDINGS_DIR = "recordings"
PARTIAL_DIR = "partial"
PARTIAL_SHARDS = 256
"""Subdirectories of ``partial/``: ``00`` to ``ff``, the RecordingSid's last two digits."""
SPARE_LIMIT = 256
"""Spare side-file pairs kept for recordings to come; more are deleted."""
SOURCE = "DialVerb"
ERROR_TOO_SHORT = 16101
"""Twilio: the recording was too short to be processed (nothing was recorded)."""
ERROR_SILENT = 16102
"""Twilio: the recording was silent."""

log = logging.getLogger(__name__)


def new_recording_sid() -> str:
    """A fresh RecordingSid: ``RE`` and 32 lowercase hex digits, as Twilio's."""
    return "RE" + secrets.token_hex(16)


def recording_url(public_url: str, account_sid: str, sid: str) -> str:
    """Twilio's ``RecordingUrl``: the media URL without an extension (WAV by default)."""
    return f"{public_url.rstrip('/')}/{API_VERSION}/Accounts/{account_sid}/Recordings/{sid}"


def recordings_dir(storage_path: Path) -> Path:
    return storage_path / RECORDINGS_DIR


def partial_dir(storage_path: Path) -> Path:
    """Where the engine writes side files while recordings are in progress."""
    return recordings_dir(storage_path) / PARTIAL_DIR


def make_partial_dirs(storage_path: Path) -> None:
    """Create ``partial/`` and its shards (at start, so calls need no mkdir)."""
    for shard in range(PARTIAL_SHARDS):
        (partial_dir(storage_path) / f"{shard:02x}").mkdir(parents=True, exist_ok=True)


def side_paths(storage_path: Path, sid: str) -> tuple[Path, Path]:
    """The side files the engine writes: parent (caller's voice), child (what it heard)."""
    directory = partial_dir(storage_path) / sid[-2:].lower()
    return directory / f"{sid}.parent.wav", directory / f"{sid}.child.wav"


def create_side_files(paths: tuple[Path, ...]) -> None:
    """Create empty side files that do not exist yet (blocking; run off the event loop).

    The recorder then opens a file that exists, which costs the loop no directory
    operation; a file the recorder created first is left alone (``O_EXCL``).
    """
    for path in paths:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def remove_files(paths: tuple[Path, ...]) -> None:
    """Delete files that may or may not exist (blocking; run off the event loop)."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def recycle_side_files(storage_path: Path, paths: tuple[Path, ...]) -> str | None:
    """Empty a finished recording's side files and rename them to a fresh RecordingSid.

    Blocking (a worker runs it). Returns the new SID, whose side files now exist and are
    empty, or None when that failed; whatever is left of either name is then removed.
    """
    sid = new_recording_sid()
    spares = side_paths(storage_path, sid)
    try:
        for old, new in zip(paths, spares, strict=True):
            os.replace(old, new)
            os.truncate(new, 0)
    except OSError as e:
        log.warning("side files %s cannot be reused: %s", paths[0].name, e)
        remove_files(paths + spares)
        return None
    return sid


class SpareSides:
    """RecordingSids whose side files exist, empty, ready for the next recordings.

    Filled by the workers that finish recordings (`recycle_side_files`) and, at start,
    by the empty side files a previous run left (`sweep_side_files`). Recycling is asked
    for only while fewer than `SPARE_LIMIT` are kept (`wanted`); a spare that arrives
    after the limit was reached is kept all the same, since its files exist. Lives on
    the event-loop thread.
    """

    def __init__(self, sids: Iterable[str] = (), limit: int = SPARE_LIMIT):
        self.limit = limit
        self._sids: deque[str] = deque(sids)

    def __len__(self) -> int:
        return len(self._sids)

    @property
    def wanted(self) -> bool:
        """Whether a finished recording's side files should be kept for reuse."""
        return len(self._sids) < self.limit

    def take(self) -> str | None:
        return self._sids.popleft() if self._sids else None

    def add(self, sid: str | None) -> None:
        if sid is not None:
            self._sids.append(sid)


def sweep_side_files(store: Store, storage_path: Path, limit: int = SPARE_LIMIT) -> list[str]:
    """At start, after the repair: keep empty unclaimed side-file pairs, delete the rest.

    A side file no recording row claims was prepared for a call that died first; an
    empty pair of them is as good as a recycled one and is returned as a spare (up to
    `limit`). Side files of finished recordings are leftovers of an interrupted reuse.
    A failed recording's side files stay for a later attempt.
    """
    spares: list[str] = []
    for parent in sorted(partial_dir(storage_path).glob("*/*.parent.wav")):
        sid = parent.name.split(".", 1)[0]
        record = store.recording(sid)
        if record is not None and record.status in ("failed", "in-progress"):
            continue
        pair = side_paths(storage_path, sid)
        if record is None and len(spares) < limit and all(_is_empty(p) for p in pair):
            spares.append(sid)
        else:
            remove_files(pair)
    for child in partial_dir(storage_path).glob("*/*.child.wav"):  # without a parent
        sid = child.name.split(".", 1)[0]
        if not side_paths(storage_path, sid)[0].exists():
            record = store.recording(sid)
            if record is None or record.status not in ("failed", "in-progress"):
                remove_files((child,))
    return spares


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _adopt_old_side_files(storage_path: Path, sid: str) -> None:
    """Move side files a dialswitch from before `PARTIAL_DIR` left next to the WAVs."""
    for side in side_paths(storage_path, sid):
        old = recordings_dir(storage_path) / side.name
        if old.exists() and not side.exists():
            side.parent.mkdir(parents=True, exist_ok=True)
            old.replace(side)


def wav_relpath(sid: str) -> str:
    """The finished WAV, relative to the storage path (the ``path`` column)."""
    return f"{RECORDINGS_DIR}/{sid}.wav"


def mp3_path(storage_path: Path, sid: str) -> Path:
    return recordings_dir(storage_path) / f"{sid}.mp3"


def callback_params(record: RecordingRecord, public_url: str) -> dict[str, str]:
    """The ``recordingStatusCallback`` parameters for the record's current status.

    ``RecordingDuration`` is left out while the recording is in progress (its length is
    not known yet); ``ErrorCode`` is sent when the recording has one (absent, failed).
    """
    params = {
        "AccountSid": record.account_sid,
        "CallSid": record.call_sid,
        "RecordingSid": record.sid,
        "RecordingUrl": recording_url(public_url, record.account_sid, record.sid),
        "RecordingStatus": record.status,
        "RecordingChannels": str(record.channels),
        "RecordingStartTime": rfc2822(record.start_time),
        "RecordingSource": record.source,
    }
    if record.status != "in-progress":
        params["RecordingDuration"] = str(record.duration)
    if record.error_code is not None:
        params["ErrorCode"] = str(record.error_code)
    return params


@dataclass(frozen=True)
class RecordingOutcome:
    """What finishing a recording's files gave: the fields to store on its row."""

    status: RecordingStatus
    duration: int
    length: float
    path: str | None
    error_code: int | None
    problem: str | None = None
    """Why nothing, or only part of the call, was kept (a full disk), for the call's log
    and notifications."""
    spare: str | None = None
    """The RecordingSid the side files were recycled to (`recycle_side_files`)."""


def finish_files(
    storage_path: Path, record: RecordingRecord, recycle: bool = False
) -> RecordingOutcome:
    """Turn a recording's side files into its finished WAV; file work only.

    Blocking and free of the database, so it can run in a worker process. On success
    the side files are recycled for another recording (``recycle``) or removed; on
    failure they are kept for a later attempt. A disk with no room for the finished
    file gets it written in the side files' space (`_finish_in_their_space`).
    """
    parent, child = side_paths(storage_path, record.sid)
    out = storage_path / wav_relpath(record.sid)
    had_audio = any(_holds_audio(side) for side in (parent, child))
    if not had_audio:  # nothing recorded: nothing to write either
        problem = _unwritten(parent, child)
        spare = release_side_files(storage_path, (parent, child), recycle)
        return RecordingOutcome("absent", 0, 0.0, None, ERROR_TOO_SHORT, problem, spare)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        final = finalize(
            parent,
            child,
            out,
            layout=_layout(record),
            track=record.track,
            trim=record.trim,
        )
    except DiskFullError as e:
        # Handled past this clause: the error's traceback holds the side files' memory
        # maps, which would keep their blocks taken after the files are deleted.
        full = str(e)
    except (RecordingFileError, OSError) as e:
        log.error("recording %s cannot be finished: %s", record.sid, e)
        return RecordingOutcome("failed", 0, 0.0, None, None)
    else:
        spare = release_side_files(storage_path, (parent, child), recycle)
        return _finished(record, final, spare=spare)
    return _finish_in_their_space(record, (parent, child), out, full)


def _layout(record: RecordingRecord) -> Layout:
    return "dual" if record.channels == 2 else "mono"


def _finished(
    record: RecordingRecord,
    final: FinalRecording,
    problem: str | None = None,
    spare: str | None = None,
) -> RecordingOutcome:
    if final.samples == 0:  # trimming left nothing
        final.path.unlink(missing_ok=True)
        return RecordingOutcome("absent", 0, 0.0, None, ERROR_SILENT, problem, spare)
    return RecordingOutcome(
        "completed",
        int(final.duration + 0.5),
        final.duration,
        wav_relpath(record.sid),
        None,
        problem,
        spare,
    )


def _finish_in_their_space(
    record: RecordingRecord, sides: tuple[Path, Path], out: Path, full: str
) -> RecordingOutcome:
    """`finish_files` on a disk with no room for the finished file.

    The recorders stopped writing when the disk filled up, so the side files hold the
    call up to that moment. Read into memory and deleted, they leave room for the
    finished file (`finalize_sides` needs no more than they held), which is then the
    partial recording. Should the space be taken meanwhile, the samples are written
    back to side files, kept for a later attempt, and the recording has failed.
    """
    try:
        samples = SideSamples.read(*sides, track=record.track)
    except RecordingFileError as e:
        log.error("recording %s cannot be finished: %s", record.sid, e)
        return RecordingOutcome("failed", 0, 0.0, None, None)
    remove_files(sides)
    try:
        final = finalize_sides(
            samples, out, layout=_layout(record), track=record.track, trim=record.trim
        )
    except RecordingFileError as e:
        kept = _write_back(samples, sides)
        problem = f"the disk is full: the recording cannot be written ({e}); {kept}"
        log.error("recording %s: %s", record.sid, problem)
        return RecordingOutcome("failed", 0, 0.0, None, None, problem)
    if final.samples:
        problem = f"the disk filled up: the recording holds the first {final.duration:.1f} s"
    else:
        problem = "the disk filled up, and what was recorded before is silent"
    log.error("recording %s: %s (%s)", record.sid, problem, full)
    return _finished(record, final, problem)


def _write_back(samples: SideSamples, sides: tuple[Path, Path]) -> str:
    """Put the samples of a recording that cannot be finished back into side files."""
    kept: list[str] = []
    for side, audio in zip(sides, (samples.parent, samples.child), strict=True):
        if len(audio) == 0:
            continue
        try:
            write_pcm(side, audio)
        except RecordingFileError:
            continue
        kept.append(side.name)
    if kept:
        return "its audio is kept in " + " and ".join(kept)
    return "its audio is lost"


def release_side_files(storage_path: Path, paths: tuple[Path, ...], recycle: bool) -> str | None:
    """Side files a recording no longer needs: recycled (the spare's SID) or removed."""
    if recycle:
        return recycle_side_files(storage_path, paths)
    remove_files(paths)
    return None


def _unwritten(*sides: Path) -> str | None:
    """Why the recorder wrote not even a WAV header, if that is what happened.

    A recorder that ran writes at least its 44-byte header; side files that stayed
    empty mean its writes failed (``ENOSPC``, ``EIO``, no permission).
    """
    sizes = []
    for side in sides:
        with contextlib.suppress(OSError):
            sizes.append(side.stat().st_size)
    if not sizes or any(sizes):
        return None
    free = shutil.disk_usage(sides[0].parent).free
    return f"the recorder could not write its files ({free} bytes free on their disk)"


def _holds_audio(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.stat().st_size > 44
    return False


def store_outcome(
    store: Store, record: RecordingRecord, outcome: RecordingOutcome, now: datetime | None = None
) -> RecordingRecord:
    """Store a finished recording; its final callback is due if its status is subscribed."""
    return store.update_recording(
        record.sid,
        status=outcome.status,
        duration=outcome.duration,
        length=outcome.length,
        path=outcome.path,
        error_code=outcome.error_code,
        callback_pending=bool(record.callback_url) and outcome.status in record.callback_events,
        date_updated=now or datetime.now(UTC),
    )


def complete_recording(
    store: Store, storage_path: Path, record: RecordingRecord, now: datetime | None = None
) -> RecordingRecord:
    """`finish_files` then `store_outcome`, on the calling thread."""
    return store_outcome(store, record, finish_files(storage_path, record), now)


def repair_at_startup(store: Store, storage_path: Path) -> list[RecordingRecord]:
    """Finish the recordings a dead process left in progress; return the callbacks due.

    Each side file is repaired (its header claims no audio after a crash), the pair is
    finished as the row says, and the row gets the real duration. A recording that
    failed earlier (its disk was full) and kept audio in its side files is tried again,
    and completes once the disk has room. The result lists every recording whose
    final-status callback is still undelivered, oldest first: those just finished and
    any whose callback an earlier run could not send.
    """
    for record in store.recordings_in_progress():
        _adopt_old_side_files(storage_path, record.sid)
        _complete(store, storage_path, record)
    for record in store.recordings_failed():
        sides = side_paths(storage_path, record.sid)
        if not any(_holds_audio(side) for side in sides):
            continue
        # Only with room for the finished file beside its sides: on a disk still full,
        # finishing would fall back to taking the sides' own space, and could lose them.
        needed = 2 * sum(side.stat().st_size for side in sides if side.exists())
        if shutil.disk_usage(sides[0].parent).free < needed:
            log.error("recording %s failed before and its disk is still full", record.sid)
            continue
        log.info("recording %s failed before: finishing it again", record.sid)
        _complete(store, storage_path, record)
    return store.recordings_callback_pending()


def _complete(store: Store, storage_path: Path, record: RecordingRecord) -> None:
    try:
        complete_recording(store, storage_path, record)
    except StoreError as e:
        log.error("recording %s cannot be stored: %s", record.sid, e)
