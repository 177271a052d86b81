"""Recording rows in the store, and the helpers of switch.recordings built on them."""

import errno
import logging
import os
import re
import shutil
import sqlite3
import struct
import wave
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.recfiles import read_pcm
from switch import recordings
from switch.recordings import (
    ERROR_SILENT,
    ERROR_TOO_SHORT,
    callback_params,
    complete_recording,
    new_recording_sid,
    recording_url,
    repair_at_startup,
    side_paths,
)
from switch.store import DB_NAME, MIGRATIONS, RecordingRecord, Store, StoreError

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
CALL = "CA" + "1" * 32
OTHER_CALL = "CA" + "2" * 32
T0 = datetime(2025, 3, 4, 12, 0, 0, 250000, tzinfo=UTC)
RATE = 8000


def sid(n: int) -> str:
    return f"RE{n:032x}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as opened:
        yield opened


def create(store: Store, n: int, **changes: Any) -> RecordingRecord:
    fields: dict[str, Any] = {
        "sid": sid(n),
        "account_sid": ACCOUNT,
        "call_sid": CALL,
        "channels": 2,
        "track": "both",
        "trim": False,
        "start_time": T0,
        "callback_url": "https://app.example.com/recording",
        "now": T0 + timedelta(seconds=n),
    }
    fields.update(changes)
    return store.create_recording(**fields)


# --- store


def test_create_and_fetch(store: Store) -> None:
    rec = create(store, 1, callback_events=["in-progress", "completed"])
    assert rec.status == "in-progress"
    assert rec.source == "DialVerb"
    assert (rec.duration, rec.length, rec.path, rec.error_code) == (0, 0.0, None, None)
    assert rec.callback_method == "POST"
    assert rec.callback_events == ("in-progress", "completed")
    assert rec.callback_pending is False
    assert rec.date_created == rec.date_updated == T0 + timedelta(seconds=1)
    assert store.recording(sid(1)) == rec
    assert store.recording(sid(2)) is None


def test_create_twice_is_an_error(store: Store) -> None:
    create(store, 1)
    with pytest.raises(StoreError, match="already exists"):
        create(store, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sid": "RE123"}, "bad recording sid"),
        ({"track": "sideways"}, "unknown recording track"),
        ({"channels": 3}, "channels"),
        ({"channels": 2, "track": "inbound"}, "one channel"),
        ({"start_time": datetime(2025, 1, 1)}, "timezone-aware"),
    ],
)
def test_create_validates(store: Store, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create(store, 1, **changes)
    assert store.recordings(10) == []


def test_update(store: Store) -> None:
    create(store, 1, trim=True)
    later = T0 + timedelta(minutes=5)
    rec = store.update_recording(
        sid(1),
        status="completed",
        duration=12,
        length=11.5,
        path="recordings/x.wav",
        callback_pending=True,
        date_updated=later,
    )
    assert store.recording(sid(1)) == rec
    assert (rec.status, rec.duration, rec.length, rec.path) == (
        "completed",
        12,
        11.5,
        "recordings/x.wav",
    )
    assert rec.trim is True
    assert rec.callback_pending is True
    assert rec.date_updated == later
    assert rec.date_created == T0 + timedelta(seconds=1)


def test_update_stamps_the_time(store: Store) -> None:
    create(store, 1)
    before = datetime.now(UTC)
    rec = store.update_recording(sid(1), callback_events=("absent",))
    assert rec.date_updated >= before
    assert store.recording(sid(1)) == rec
    assert rec.callback_events == ("absent",)


def test_update_refuses_bad_changes(store: Store) -> None:
    create(store, 1)
    with pytest.raises(ValueError, match="account_sid"):
        store.update_recording(sid(1), account_sid="AC" + "0" * 32)
    with pytest.raises(ValueError, match="unknown recording status"):
        store.update_recording(sid(1), status="lost")
    with pytest.raises(StoreError, match="no recording"):
        store.update_recording(sid(9), status="completed")
    unchanged = store.recording(sid(1))
    assert unchanged is not None and unchanged.status == "in-progress"


def test_lists_are_newest_first_and_page(store: Store) -> None:
    for n in range(1, 6):
        create(store, n, call_sid=CALL if n % 2 else OTHER_CALL)
    assert [r.sid for r in store.recordings(10)] == [sid(n) for n in (5, 4, 3, 2, 1)]
    assert [r.sid for r in store.recordings(2)] == [sid(5), sid(4)]
    assert [r.sid for r in store.recordings(2, offset=2)] == [sid(3), sid(2)]
    assert [r.sid for r in store.recordings(10, CALL)] == [sid(5), sid(3), sid(1)]
    assert [r.sid for r in store.recordings(1, CALL, offset=1)] == [sid(3)]
    assert store.recordings(10, "CA" + "9" * 32) == []


def test_delete(store: Store) -> None:
    create(store, 1)
    assert store.delete_recording(sid(1)) is True
    assert store.recording(sid(1)) is None
    assert store.delete_recording(sid(1)) is False


def test_in_progress_and_pending_lists(store: Store) -> None:
    for n in range(1, 5):
        create(store, n)
    store.update_recording(sid(2), status="completed", callback_pending=True)
    store.update_recording(sid(3), status="completed")
    assert [r.sid for r in store.recordings_in_progress()] == [sid(1), sid(4)]
    assert [r.sid for r in store.recordings_callback_pending()] == [sid(2)]


def test_migration_keeps_existing_data(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    for target, script in enumerate(MIGRATIONS[:2], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")
    db.execute("INSERT INTO bindings (identity, row) VALUES ('alice', '{\"a\": 1}')")
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.bindings() == [{"a": 1}]
        create(store, 1)
        assert store.recording(sid(1)) is not None


# --- helpers of switch.recordings


def test_new_recording_sid() -> None:
    sids = {new_recording_sid() for _ in range(100)}
    assert len(sids) == 100
    assert all(re.fullmatch(r"RE[0-9a-f]{32}", s) for s in sids)


def test_recording_url() -> None:
    url = recording_url("https://switch.example.com/", ACCOUNT, sid(1))
    assert url == f"https://switch.example.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid(1)}"


def test_callback_params(store: Store) -> None:
    rec = create(store, 1)
    params = callback_params(rec, "http://127.0.0.1:8080")
    assert params == {
        "AccountSid": ACCOUNT,
        "CallSid": CALL,
        "RecordingSid": sid(1),
        "RecordingUrl": f"http://127.0.0.1:8080/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid(1)}",
        "RecordingStatus": "in-progress",
        "RecordingChannels": "2",
        "RecordingStartTime": "Tue, 04 Mar 2025 12:00:00 +0000",
        "RecordingSource": "DialVerb",
    }
    done = store.update_recording(sid(1), status="completed", duration=7)
    params = callback_params(done, "http://127.0.0.1:8080")
    assert params["RecordingStatus"] == "completed"
    assert params["RecordingDuration"] == "7"
    assert "ErrorCode" not in params
    absent = store.update_recording(sid(1), status="absent", duration=0, error_code=16102)
    assert callback_params(absent, "http://h")["ErrorCode"] == "16102"


def crashed_side(path: Path, samples: np.ndarray) -> None:
    """A side file as the recorder leaves it when the process is killed."""
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, 2 * RATE, 2, 16)
    head = b"RIFF\0\0\0\0WAVEfmt " + struct.pack("<I", 16) + fmt + b"data\0\0\0\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + samples.astype("<i2").tobytes() + b"\x03")


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def write_wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(tone(seconds).tobytes())


def test_repair_at_startup_finishes_what_a_crash_left(store: Store, tmp_path: Path) -> None:
    storage = tmp_path
    dual = create(store, 1)
    mono = create(store, 2, channels=1, track="inbound", trim=True, callback_url=None)
    silent = create(store, 3, channels=1, trim=True, callback_events=("completed", "absent"))
    empty = create(store, 4, callback_events=("in-progress",))
    done = create(store, 5)
    store.update_recording(done.sid, status="completed", callback_pending=True)

    parent, child = side_paths(storage, dual.sid)
    crashed_side(parent, tone(3.0))
    crashed_side(child, tone(2.0))
    parent, child = side_paths(storage, mono.sid)
    crashed_side(parent, np.concatenate([np.zeros(RATE, np.int16), tone(1.0)]))
    crashed_side(child, tone(4.0))
    parent, _ = side_paths(storage, silent.sid)
    crashed_side(parent, np.zeros(2 * RATE, np.int16))

    due = repair_at_startup(store, storage)
    assert [r.sid for r in due] == [sid(1), sid(3), sid(5)]
    assert store.recordings_in_progress() == []

    rec = store.recording(dual.sid)
    assert rec is not None
    assert (rec.status, rec.duration, rec.path) == ("completed", 3, f"recordings/{dual.sid}.wav")
    assert rec.length == pytest.approx(3.0)
    with wave.open(str(storage / f"recordings/{dual.sid}.wav"), "rb") as w:
        assert (w.getnchannels(), w.getnframes()) == (2, 3 * RATE)
    assert not any(p.exists() for p in side_paths(storage, dual.sid))

    rec = store.recording(mono.sid)
    assert rec is not None and rec.status == "completed"
    assert rec.length == pytest.approx(1.05, abs=0.03)  # leading second trimmed
    assert rec.callback_pending is False

    rec = store.recording(silent.sid)
    assert rec is not None
    assert (rec.status, rec.error_code, rec.path) == ("absent", ERROR_SILENT, None)
    assert not (storage / f"recordings/{silent.sid}.wav").exists()

    rec = store.recording(empty.sid)
    assert rec is not None
    assert (rec.status, rec.error_code) == ("absent", ERROR_TOO_SHORT)
    assert rec.callback_pending is False  # "absent" was not asked for

    # Until a callback is delivered and callback_pending cleared, each start reports it.
    assert [r.sid for r in repair_at_startup(store, storage)] == [sid(1), sid(3), sid(5)]


def test_repair_keeps_side_files_of_a_failed_recording(store: Store, tmp_path: Path) -> None:
    rec = create(store, 1, callback_events=("completed", "failed"))
    parent, _ = side_paths(tmp_path, rec.sid)
    parent.parent.mkdir(parents=True)
    parent.write_bytes(b"garbage that is no WAV file, and longer than a header.......")
    due = repair_at_startup(store, tmp_path)
    assert [r.status for r in due] == ["failed"]
    assert parent.exists()


def test_complete_recording_in_normal_operation(store: Store, tmp_path: Path) -> None:
    rec = create(store, 1, channels=1)
    parent, child = side_paths(tmp_path, rec.sid)
    for side in (parent, child):
        side.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(side), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(tone(1.6).tobytes())
    now = T0 + timedelta(seconds=30)
    done = complete_recording(store, tmp_path, rec, now=now)
    assert (done.status, done.duration, done.channels) == ("completed", 2, 1)
    assert done.callback_pending is True
    assert done.date_updated == now
    assert recordings.callback_params(done, "http://h")["RecordingDuration"] == "2"


def test_side_files_are_written_apart_from_finished_recordings(tmp_path: Path) -> None:
    # Finishing fsyncs in recordings/ and deletes side files: creating side files where
    # that happens would wait on it.
    parent, child = side_paths(tmp_path, "RE" + "0" * 30 + "A7")
    assert parent.parent == child.parent == recordings.partial_dir(tmp_path) / "a7"
    assert recordings.partial_dir(tmp_path).parent == recordings.recordings_dir(tmp_path)
    recordings.make_partial_dirs(tmp_path)
    shards = sorted(p.name for p in recordings.partial_dir(tmp_path).iterdir())
    assert len(shards) == recordings.PARTIAL_SHARDS
    assert shards[0] == "00" and shards[-1] == "ff"


def test_repair_finds_side_files_left_where_older_versions_wrote_them(
    store: Store, tmp_path: Path
) -> None:
    rec = create(store, 1, channels=1)
    parent, child = side_paths(tmp_path, rec.sid)
    old_dir = recordings.recordings_dir(tmp_path)
    old_dir.mkdir(parents=True)
    for side in (parent, child):
        write_wav(old_dir / side.name, 1.6)
    (done,) = repair_at_startup(store, tmp_path)
    assert (done.status, done.duration) == ("completed", 2)
    assert not any((old_dir / side.name).exists() for side in (parent, child))


def test_side_files_created_ahead_never_truncate_the_recorders_file(tmp_path: Path) -> None:
    recordings.make_partial_dirs(tmp_path)
    parent, child = side_paths(tmp_path, "RE" + "0" * 30 + "b1")
    parent.write_bytes(b"RIFF already being recorded")
    recordings.create_side_files((parent, child))
    assert parent.read_bytes() == b"RIFF already being recorded"
    assert child.exists() and child.stat().st_size == 0
    recordings.remove_files((parent, child))
    recordings.remove_files((parent, child))  # twice is fine
    assert not parent.exists() and not child.exists()


def test_start_up_keeps_empty_unclaimed_side_files_as_spares(store: Store, tmp_path: Path) -> None:
    recordings.make_partial_dirs(tmp_path)
    failed = create(store, 1, callback_events=("completed", "failed"))
    kept, _ = side_paths(tmp_path, failed.sid)
    kept.write_bytes(b"garbage that is no WAV file, and longer than a header.......")
    done = create(store, 2)
    store.update_recording(done.sid, status="completed", duration=1)
    leftovers = side_paths(tmp_path, done.sid)  # a reuse cut short
    recordings.create_side_files(leftovers)
    empty = side_paths(tmp_path, "RE" + "e" * 32)  # prepared for a call that died
    recordings.create_side_files(empty)
    with_audio = side_paths(tmp_path, "RE" + "f" * 32)
    recordings.create_side_files(with_audio)
    write_wav(with_audio[0], 0.5)
    lone_child = side_paths(tmp_path, "RE" + "d" * 32)[1]
    lone_child.touch()

    repair_at_startup(store, tmp_path)
    assert recordings.sweep_side_files(store, tmp_path) == ["RE" + "e" * 32]

    assert kept.exists()  # a failed recording's sides stay for a later attempt
    assert all(p.exists() and p.stat().st_size == 0 for p in empty)
    assert not any(p.exists() for p in (*leftovers, *with_audio, lone_child))
    assert recordings.sweep_side_files(store, tmp_path, limit=0) == []
    assert not any(p.exists() for p in empty)  # spares beyond the limit are deleted


def test_finished_side_files_are_recycled_to_a_fresh_sid(store: Store, tmp_path: Path) -> None:
    recordings.make_partial_dirs(tmp_path)
    rec = create(store, 1, channels=1)
    sides = side_paths(tmp_path, rec.sid)
    for side in sides:
        write_wav(side, 1.2)
    inodes = [side.stat().st_ino for side in sides]

    outcome = recordings.finish_files(tmp_path, rec, recycle=True)
    assert (outcome.status, outcome.duration) == ("completed", 1)
    assert outcome.spare is not None and re.fullmatch(r"RE[0-9a-f]{32}", outcome.spare)
    assert outcome.spare != rec.sid
    spares = side_paths(tmp_path, outcome.spare)
    assert [p.stat().st_ino for p in spares] == inodes  # the same files, renamed
    assert all(p.stat().st_size == 0 for p in spares)
    assert not any(p.exists() for p in sides)
    assert (tmp_path / recordings.wav_relpath(rec.sid)).exists()

    nothing = create(store, 2, channels=1)  # nothing recorded: reused as well
    recordings.create_side_files(side_paths(tmp_path, nothing.sid))
    absent = recordings.finish_files(tmp_path, nothing, recycle=True)
    assert absent.status == "absent" and absent.spare is not None
    assert all(p.exists() for p in side_paths(tmp_path, absent.spare))


def test_side_files_that_cannot_be_recycled_are_removed(tmp_path: Path) -> None:
    recordings.make_partial_dirs(tmp_path)
    parent, child = side_paths(tmp_path, sid(1))
    parent.write_bytes(b"x" * 100)  # its child is missing
    assert recordings.recycle_side_files(tmp_path, (parent, child)) is None
    assert list(recordings.partial_dir(tmp_path).glob("*/*")) == []


def test_spare_sides_hand_out_each_sid_once_and_stop_asking_at_the_limit() -> None:
    spares = recordings.SpareSides(["RE1", "RE2"], limit=3)
    assert spares.wanted
    spares.add("RE3")
    spares.add(None)
    assert not spares.wanted and len(spares) == 3
    spares.add("RE4")  # recycled while the limit was reached: its files exist, keep it
    assert [spares.take() for _ in range(5)] == ["RE1", "RE2", "RE3", "RE4", None]
    assert spares.wanted


def test_sides_left_empty_mean_the_recorder_could_not_write(store: Store, tmp_path: Path) -> None:
    recordings.make_partial_dirs(tmp_path)
    unwritten = create(store, 1)
    recordings.create_side_files(side_paths(tmp_path, unwritten.sid))  # and nothing more
    outcome = recordings.finish_files(tmp_path, unwritten)
    assert (outcome.status, outcome.error_code) == ("absent", ERROR_TOO_SHORT)
    assert outcome.problem is not None and "could not write" in outcome.problem
    assert not any(p.exists() for p in side_paths(tmp_path, unwritten.sid))

    silent = create(store, 2)
    for side in side_paths(tmp_path, silent.sid):  # headers only: it ran, heard nothing
        with wave.open(str(side), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
    outcome = recordings.finish_files(tmp_path, silent)
    assert (outcome.status, outcome.problem) == ("absent", None)
    assert not (tmp_path / recordings.wav_relpath(silent.sid)).exists()


# --- a disk that fills up during the call


def disk_full_for(monkeypatch: pytest.MonkeyPatch, writes: int | None, code: int) -> None:
    """The next ``writes`` WAV files written (all of them: None) fail with ``code``."""
    original = wave.Wave_write.writeframesraw
    failed = 0

    def writeframesraw(self: wave.Wave_write, data: bytes) -> None:
        nonlocal failed
        if writes is None or failed < writes:
            failed += 1
            raise OSError(code, os.strerror(code))
        original(self, data)

    monkeypatch.setattr(wave.Wave_write, "writeframesraw", writeframesraw)


def sides_of_a_call(storage: Path, rec: RecordingRecord) -> tuple[np.ndarray, np.ndarray]:
    """Side files as the recorders leave them when the disk fills up: the caller's
    voice, 0.5 s of silence first, and what the caller heard, cut mid-sample."""
    parent_samples = np.concatenate([np.zeros(RATE // 2, np.int16), tone(2.0)])
    t = np.arange(len(parent_samples)) / RATE
    child_samples = (5000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    parent, child = side_paths(storage, rec.sid)
    crashed_side(parent, parent_samples)
    crashed_side(child, child_samples)
    return parent_samples, child_samples


def leftovers(storage: Path) -> list[str]:
    """Side files and temporaries under recordings/: every file but the finished ones."""
    top = recordings.recordings_dir(storage)
    finished = {p for p in top.glob("RE*.wav")}
    return sorted(p.name for p in top.rglob("*") if p.is_file() and p not in finished)


@pytest.mark.parametrize(
    ("channels", "track", "trim"),
    [
        (2, "both", False),
        (1, "both", False),
        (1, "inbound", False),
        (1, "outbound", False),
        (2, "both", True),
        (1, "inbound", True),
    ],
)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_disk_too_full_for_the_finished_file_gets_it_in_the_side_files_space(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    channels: int,
    track: str,
    trim: bool,
    code: int,
) -> None:
    rec = create(store, 1, channels=channels, track=track, trim=trim)
    roomy, full = tmp_path / "roomy", tmp_path / "full"
    sides_of_a_call(roomy, rec)
    shutil.copytree(roomy, full)
    normal = recordings.finish_files(roomy, rec)
    assert normal.status == "completed" and normal.problem is None

    disk_full_for(monkeypatch, 1, code)  # the first attempt finds no room
    with caplog.at_level(logging.ERROR, logger="switch.recordings"):
        outcome = recordings.finish_files(full, rec, recycle=True)
    assert (outcome.status, outcome.duration, outcome.path, outcome.error_code) == (
        "completed",
        normal.duration,
        normal.path,
        None,
    )
    assert outcome.length == normal.length
    assert outcome.spare is None  # the side files were used up
    assert outcome.problem == (
        f"the disk filled up: the recording holds the first {normal.length:.1f} s"
    )
    finished = recordings.wav_relpath(rec.sid)
    assert (full / finished).read_bytes() == (roomy / finished).read_bytes()
    assert leftovers(full) == []
    (line,) = caplog.records
    assert line.levelno == logging.ERROR and line.exc_info is None
    assert rec.sid in line.getMessage() and "the disk filled up" in line.getMessage()


def test_a_full_disk_gets_the_side_files_blocks_back_before_writing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deleted file's blocks stay taken while it is memory-mapped: were the side files
    # still mapped, the finished file would find no more room than the first time.
    rec = create(store, 1)
    sides_of_a_call(tmp_path, rec)
    original = wave.Wave_write.writeframesraw
    seen: list[tuple[bool, bool]] = []

    def writeframesraw(self: wave.Wave_write, data: bytes) -> None:
        mapped = rec.sid in Path("/proc/self/maps").read_text()
        seen.append((mapped, any(p.exists() for p in side_paths(tmp_path, rec.sid))))
        if len(seen) == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, data)

    monkeypatch.setattr(wave.Wave_write, "writeframesraw", writeframesraw)
    outcome = recordings.finish_files(tmp_path, rec)
    assert outcome.status == "completed"
    assert seen == [(True, True), (False, False)]  # mapped and there, then neither


def test_a_disk_filled_again_keeps_the_samples_in_side_files(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = create(store, 1)
    parent_samples, child_samples = sides_of_a_call(tmp_path, rec)
    disk_full_for(monkeypatch, 2, errno.ENOSPC)  # the space freed was taken at once
    outcome = recordings.finish_files(tmp_path, rec, recycle=True)
    assert (outcome.status, outcome.path, outcome.spare) == ("failed", None, None)
    assert outcome.problem is not None
    assert outcome.problem.startswith("the disk is full: the recording cannot be written")
    assert outcome.problem.endswith(f"kept in {rec.sid}.parent.wav and {rec.sid}.child.wav")
    parent, child = side_paths(tmp_path, rec.sid)
    assert read_pcm(parent).tolist() == parent_samples.tolist()
    assert read_pcm(child).tolist() == child_samples.tolist()
    assert not (tmp_path / recordings.wav_relpath(rec.sid)).exists()
    assert leftovers(tmp_path) == sorted([parent.name, child.name])
    # The disk has room again: a later attempt finishes it as if nothing happened.
    monkeypatch.undo()
    again = recordings.finish_files(tmp_path, rec)
    assert (again.status, again.duration, again.problem) == ("completed", 3, None)


def test_a_disk_that_stays_full_loses_the_recording_with_an_error(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rec = create(store, 1)
    sides_of_a_call(tmp_path, rec)
    disk_full_for(monkeypatch, None, errno.ENOSPC)
    with caplog.at_level(logging.ERROR, logger="switch.recordings"):
        outcome = recordings.finish_files(tmp_path, rec)
    assert (outcome.status, outcome.path) == ("failed", None)
    assert outcome.problem is not None and outcome.problem.endswith("its audio is lost")
    (line,) = caplog.records
    assert "its audio is lost" in line.getMessage() and line.exc_info is None
    assert leftovers(tmp_path) == []


def test_a_full_disk_with_silence_before_it_is_absent(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = create(store, 1, channels=1, track="inbound", trim=True)
    parent, _ = side_paths(tmp_path, rec.sid)
    parent.parent.mkdir(parents=True)
    with wave.open(str(parent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(2 * RATE))
    real_fsync = os.fsync
    fsyncs: list[int] = []

    def fsync(fd: int) -> None:  # not a sample to write: the header is refused
        fsyncs.append(fd)
        if len(fsyncs) == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    outcome = recordings.finish_files(tmp_path, rec)
    assert (outcome.status, outcome.error_code, outcome.path) == ("absent", ERROR_SILENT, None)
    assert outcome.problem == "the disk filled up, and what was recorded before is silent"
    assert leftovers(tmp_path) == []
    assert not (tmp_path / recordings.wav_relpath(rec.sid)).exists()
    assert len(fsyncs) == 2


def test_a_failed_recording_is_finished_at_a_later_start_once_the_disk_has_room(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = create(store, 1)
    sides_of_a_call(tmp_path, rec)
    kept = sorted(p.name for p in side_paths(tmp_path, rec.sid))
    no_sides = create(store, 2)
    store.update_recording(no_sides.sid, status="failed")
    disk_full_for(monkeypatch, 2, errno.ENOSPC)  # the space its sides freed was taken too
    recordings.store_outcome(store, rec, recordings.finish_files(tmp_path, rec))
    failed = store.recording(rec.sid)
    assert failed is not None and failed.status == "failed"
    assert leftovers(tmp_path) == kept
    # A start while the disk is still full: nothing is tried, nothing is lost.
    full = shutil.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    assert repair_at_startup(store, tmp_path) == []
    assert leftovers(tmp_path) == kept
    # The disk has room again: the next start finishes it and its callback is due.
    monkeypatch.undo()
    (due,) = repair_at_startup(store, tmp_path)
    assert (due.sid, due.status, due.duration) == (rec.sid, "completed", 3)
    assert (tmp_path / recordings.wav_relpath(rec.sid)).exists()
    assert leftovers(tmp_path) == []
    alone = store.recording(no_sides.sid)
    assert alone is not None and alone.status == "failed"  # nothing to finish it from
