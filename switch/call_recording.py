"""A recording of a call: two side recorders while it runs, one file at the end.

Two users: ``<Dial record>`` (source ``DialVerb``) and an API call created with
``Record=true`` (source ``OutboundAPI``). The parent side records what the
call's own leg says (the caller of a Dial, the called party of an API call);
the child side records what that leg hears (for a Dial: ringback and early
media when recording from ringing, then the called party; for an API call:
every prompt, tone and bridged party, through ``CallMedia.listen``). Both
recorders start in the same tick, so a dual file puts them sample-aligned on
channels 1 and 2. When the recording ends the side files are merged
(switch/recordings.py, in a worker process), the row is completed and
``recordingStatusCallback`` gets the events it asked for. A recording that
never started (record-from-answer and nobody answered) is reported ``absent``.
A recorder that cannot start (disk full) never affects the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from switch.call.protocol import Leg, MediaError, Player, Recorder
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
    from switch.services import Services

log = logging.getLogger("dialswitch.call")

Notify = Callable[..., None]


@dataclass(frozen=True)
class RecordingSettings:
    """What to record and whom to tell (Twilio's recording parameters)."""

    dual: bool
    from_ringing: bool
    track: rcml.RecordingTrack
    trim: bool
    callback_url: str | None
    callback_method: str
    callback_events: tuple[str, ...]
    source: str

    @classmethod
    def of_dial(cls, dial: rcml.Dial, resolve: Callable[[str], str]) -> RecordingSettings:
        """``<Dial record ...>``; a relative ``recordingStatusCallback`` is resolved."""
        url = dial.recording_status_callback
        return cls(
            dual=dial.record.dual,
            from_ringing=dial.record.from_ringing,
            track=dial.recording_track,
            trim=dial.trim is rcml.Trim.TRIM_SILENCE,
            callback_url=resolve(url) if url else None,
            callback_method=dial.recording_status_callback_method.value,
            callback_events=tuple(e.value for e in dial.recording_status_callback_event),
            source="DialVerb",
        )


class CallRecording:
    def __init__(
        self, services: Services, call_sid: str, settings: RecordingSettings, notify: Notify
    ):
        self.services = services
        self.call_sid = call_sid
        self.settings = settings
        self.notify = notify
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
        return self.settings.from_ringing

    @property
    def started(self) -> bool:
        return self.record is not None

    def start(self, own: Leg) -> None:
        """Create the row and both recorders, the parent hearing ``own``; the call
        goes on if that fails."""
        if self.started:
            return
        services = self.services
        parent_path, child_path = self._sides
        if not parent_path.parent.is_dir():  # a stat: mkdir would lock the parent directory
            parent_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.parent = services.engine.recorder(parent_path)
            self.child = services.engine.recorder(child_path)
        except MediaError as error:
            self.notify(16101, f"nothing recorded: the recorder could not start ({error})")
            self._close()
            return
        settings = self.settings
        dual = settings.dual and settings.track is rcml.RecordingTrack.BOTH
        self.record = services.store.create_recording(
            sid=self.sid,
            account_sid=services.account_sid,
            call_sid=self.call_sid,
            channels=2 if dual else 1,
            track=settings.track.value,
            trim=settings.trim,
            start_time=datetime.now(UTC),
            callback_url=settings.callback_url,
            callback_method=settings.callback_method,
            callback_events=settings.callback_events,
            source=settings.source,
        )
        self.hear_own(own)
        if rcml.RecordingEvent.IN_PROGRESS.value in settings.callback_events:
            self._callback(self.record)

    def hear_own(self, own: Leg) -> None:
        """What the call's own leg says (channel 1)."""
        if self.parent is not None:
            self.parent.hear(own)

    @property
    def hearing(self) -> Recorder | None:
        """The recorder of what the call's own leg hears (channel 2), while recording."""
        return self.child

    def hear(self, source: Leg) -> None:
        """A called party's audio, which the caller hears."""
        if self.child is not None:
            self.child.hear(source)

    def hear_tone(self, tone: Player) -> None:
        """A generated tone the caller hears (ringback)."""
        if self.child is not None:
            self.child.hear_player(tone)

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
            settings = self.settings
            record = services.store.create_recording(
                sid=self.sid,
                account_sid=services.account_sid,
                call_sid=self.call_sid,
                channels=1,
                track=settings.track.value,
                trim=False,
                start_time=datetime.now(UTC),
                callback_url=settings.callback_url,
                callback_method=settings.callback_method,
                callback_events=settings.callback_events,
                source=settings.source,
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
            self.notify(16101, f"recording cut short: {outcome.problem}", error=False)
        elif outcome.problem is not None:
            self.notify(outcome.error_code or 16101, f"nothing recorded: {outcome.problem}")
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
        """The final-status callback: ``callback_pending`` stays set until the webhook
        client delivers it (or gives it up), so a crash before then cannot lose it."""
        if record.callback_url and record.status in record.callback_events:
            self._callback(record, final=True)

    def _callback(self, record: RecordingRecord, final: bool = False) -> None:
        if not record.callback_url:
            return
        params = callback_params(record, self.services.config.http.public_url)
        self.services.webhooks.post_callback(
            record.callback_url,
            record.callback_method,
            params,
            key=record.sid,
            recording_sid=record.sid if final else None,
        )
