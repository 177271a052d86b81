"""``<Dial record>``: two side recorders while the dial runs, one file at the end.

The parent side records what the caller says; the child side records what
the caller hears (ringback and early media when recording from ringing, then
the called party). Both recorders start in the same tick, so a dual file puts
them sample-aligned on channels 1 and 2. When the dial ends the side files are
merged (switch/recordings.py, in a worker process), the row is completed and
``recordingStatusCallback`` gets the events it asked for. A recording that
never started (record-from-answer and nobody answered) is reported ``absent``.
A recorder that cannot start (disk full) never affects the call.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.engine import EngineError, Leg, Player, Recorder
from switch.rcml import model as rcml
from switch.recordings import (
    callback_params,
    create_side_files,
    finish_files,
    new_recording_sid,
    recording_url,
    release_side_files,
    side_paths,
    store_outcome,
)
from switch.store import RecordingRecord

if TYPE_CHECKING:
    from switch.dial import DialRunner

log = logging.getLogger("dialswitch.call")


class DialRecording:
    def __init__(self, runner: DialRunner):
        self.runner = runner
        self.services = runner.services
        self.dial = runner.dial
        self.parent: Recorder | None = None
        self.child: Recorder | None = None
        self.record: RecordingRecord | None = None
        self._closing: list[asyncio.Future[None]] = []
        # Side files that a finished recording left empty, or new ones created now, off
        # the loop; either way the recorders open existing files later.
        spare = self.services.spares.take()
        self.sid = spare or new_recording_sid()
        self._sides = side_paths(self.services.config.storage.path, self.sid)
        self._prepared: asyncio.Future[None] | None = None
        if spare is None:
            self._prepared = asyncio.get_running_loop().run_in_executor(
                None, create_side_files, self._sides
            )

    @property
    def from_ringing(self) -> bool:
        return self.dial.record.from_ringing

    @property
    def callback_url(self) -> str | None:
        """``recordingStatusCallback``, relative URLs resolved against the document's."""
        url = self.dial.recording_status_callback
        return self.runner.session.resolve(url) if url else None

    @property
    def started(self) -> bool:
        return self.record is not None

    def start(self) -> None:
        """Create the row and both recorders; the call goes on if that fails."""
        if self.started:
            return
        services = self.services
        parent_path, child_path = self._sides
        if not parent_path.parent.is_dir():  # a stat: mkdir would lock the parent directory
            parent_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.parent = services.engine.recorder(parent_path)
            self.child = services.engine.recorder(child_path)
        except EngineError as error:
            self.runner.session.notify(
                16101, f"nothing recorded: the recorder could not start ({error})"
            )
            self._close()
            return
        dial = self.dial
        dual = dial.record.dual and dial.recording_track is rcml.RecordingTrack.BOTH
        self.record = services.store.create_recording(
            sid=self.sid,
            account_sid=services.account_sid,
            call_sid=self.runner.caller.call_sid,
            channels=2 if dual else 1,
            track=dial.recording_track.value,
            trim=dial.trim is rcml.Trim.TRIM_SILENCE,
            start_time=datetime.now(UTC),
            callback_url=self.callback_url,
            callback_method=dial.recording_status_callback_method.value,
            callback_events=tuple(e.value for e in dial.recording_status_callback_event),
        )
        self.hear_caller()
        if rcml.RecordingEvent.IN_PROGRESS in dial.recording_status_callback_event:
            self._callback(self.record)

    def hear_caller(self) -> None:
        if self.parent is not None:
            self.parent.hear(self.runner.caller)

    def hear(self, source: Leg | Player) -> None:
        """Something the caller hears: a called party's audio or a generated tone."""
        if self.child is None:
            return
        if isinstance(source, Player):
            self.child.hear_player(source)
        else:
            self.child.hear(source)

    async def finish(self) -> dict[str, str]:
        """Close, merge and report; the action's RecordingUrl/Sid/Duration params."""
        self._close()
        if self._prepared is not None:
            await self._prepared  # never reuse or merge side files still being created
        await asyncio.gather(*self._closing)  # nor side files still being written
        services = self.services
        storage = services.config.storage.path
        record = self.record
        if record is None:
            record = services.store.create_recording(
                sid=self.sid,
                account_sid=services.account_sid,
                call_sid=self.runner.caller.call_sid,
                channels=1,
                track=self.dial.recording_track.value,
                trim=False,
                start_time=datetime.now(UTC),
                callback_url=self.callback_url,
                callback_method=self.dial.recording_status_callback_method.value,
                callback_events=tuple(e.value for e in self.dial.recording_status_callback_event),
            )
            record = services.store.update_recording(record.sid, status="absent", error_code=16101)
            spare = await services.workers.run(
                release_side_files, storage, self._sides, services.spares.wanted
            )
            services.spares.add(spare)
            self._final_callback(record)
            return {}
        outcome = await services.workers.run(finish_files, storage, record, services.spares.wanted)
        services.spares.add(outcome.spare)
        if outcome.problem is not None and outcome.status == "completed":
            # Twilio has no code for a recording cut short: 16101 is its nearest.
            self.runner.session.notify(
                16101, f"recording cut short: {outcome.problem}", error=False
            )
        elif outcome.problem is not None:
            self.runner.session.notify(
                outcome.error_code or 16101, f"nothing recorded: {outcome.problem}"
            )
        record = store_outcome(services.store, record, outcome)
        self._final_callback(record)
        if record.status != "completed":
            return {}
        return self._params(record.duration)

    def progress_params(self) -> dict[str, str]:
        """RecordingUrl/Sid/Duration for a child leg's ``completed`` status callback.

        That event comes as the leg ends, while the recording may still be finishing, so
        the duration is the time recorded so far, untrimmed; as Twilio says, the exact
        figure comes with ``recordingStatusCallback``. Nothing before the recording starts.
        """
        if self.record is None:
            return {}
        elapsed = (datetime.now(UTC) - self.record.start_time).total_seconds()
        return self._params(int(elapsed + 0.5))

    def _params(self, duration: int) -> dict[str, str]:
        services = self.services
        return {
            "RecordingUrl": recording_url(
                services.config.http.public_url, services.account_sid, self.sid
            ),
            "RecordingSid": self.sid,
            "RecordingDuration": str(duration),
        }

    def _close(self) -> None:
        """Stop both recorders; `_closing` is done once their files are complete."""
        for recorder in (self.parent, self.child):
            if recorder is not None:
                self._closing.append(recorder.close())
        self.parent = self.child = None

    def _final_callback(self, record: RecordingRecord) -> None:
        if record.callback_url and record.status in record.callback_events:
            self._callback(record)
            self.services.store.update_recording(record.sid, callback_pending=False)

    def _callback(self, record: RecordingRecord) -> None:
        if not record.callback_url:
            return
        params = callback_params(record, self.services.config.http.public_url)
        self.services.webhooks.post_callback(
            record.callback_url, record.callback_method, params, key=record.sid
        )
