"""Twilio's Recordings resources, under ``/2010-04-01/Accounts/{AccountSid}/``.

- ``GET Recordings.json``, ``GET Calls/{CallSid}/Recordings.json``: pages of Recording
  resources, newest first, in Twilio's list shape (``Page``/``PageSize``; ``CallSid``
  filters the account-wide list).
- ``GET Recordings/{Sid}.json`` (also under ``Calls/{CallSid}/``): one Recording.
- ``GET Recordings/{Sid}`` and ``{Sid}.wav``: the audio as WAV; ``{Sid}.mp3``: as MP3,
  encoded on the first request and kept. Both honour HTTP Range requests.
- ``DELETE Recordings/{Sid}.json``: 204, the row and every file of the recording gone.

Auth, errors and paging are switch/rest.py's, shared with the Calls resource.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from media.recfiles import RecordingFileError, encode_mp3
from switch.config import Config
from switch.recordings import (
    API_VERSION,
    mp3_path,
    recording_url,
    recordings_dir,
    side_paths,
)
from switch.rest import (
    ACCOUNT_PATH,
    AccountGuard,
    PageRequest,
    not_found,
    page_body,
    twilio_error,
)
from switch.store import RecordingRecord, Store
from switch.timestamps import rfc2822
from switch.workers import WorkerPool

ERROR_INTERNAL = 20500
ERROR_CONFLICT = 20409
"""A recording still being written cannot be deleted (a dialswitch choice)."""

_NAME = re.compile(r"^(?P<sid>RE[0-9a-f]{32})(?P<ext>\.json|\.wav|\.mp3)?$")
_MEDIA_TYPES = {"": "audio/x-wav", ".wav": "audio/x-wav", ".mp3": "audio/mpeg"}

log = logging.getLogger(__name__)


def recording_json(record: RecordingRecord, public_url: str) -> dict[str, Any]:
    """Twilio's Recording resource. ``duration`` is ``"-1"`` while recording, as Twilio's."""
    uri = f"/{API_VERSION}/Accounts/{record.account_sid}/Recordings/{record.sid}.json"
    return {
        "account_sid": record.account_sid,
        "api_version": API_VERSION,
        "call_sid": record.call_sid,
        "conference_sid": None,
        "date_created": rfc2822(record.date_created),
        "date_updated": rfc2822(record.date_updated),
        "start_time": rfc2822(record.start_time),
        "duration": "-1" if record.status == "in-progress" else str(record.duration),
        "sid": record.sid,
        "price": None,
        "price_unit": None,
        "status": record.status,
        "channels": record.channels,
        "source": record.source,
        "track": record.track,
        "error_code": record.error_code,
        "encryption_details": None,
        "uri": uri,
        "subresource_uris": {},
        "media_url": recording_url(public_url, record.account_sid, record.sid),
    }


class _RecordingsApi:
    def __init__(self, store: Store, config: Config, workers: WorkerPool) -> None:
        self.store = store
        self.workers = workers
        self.account_sid = config.account.sid
        self.public_url = config.http.public_url
        self.storage = config.storage.path
        self.encoding: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # --- lists

    async def list_account(self, request: web.Request) -> web.Response:
        return self._page(request, request.query.get("CallSid") or None, "CallSid")

    async def list_call(self, request: web.Request) -> web.Response:
        return self._page(request, request.match_info["call_sid"], None)

    def _page(
        self, request: web.Request, call_sid: str | None, filter_name: str | None
    ) -> web.Response:
        page = PageRequest.of(request.query)
        rows = self.store.recordings(page.size + 1, call_sid, offset=page.offset)
        filters = {filter_name: call_sid} if filter_name and call_sid else None
        items = [recording_json(r, self.public_url) for r in rows[: page.size]]
        return web.json_response(
            page_body("recordings", items, request.path, page, len(rows) > page.size, filters)
        )

    # --- one recording

    def _find(
        self, request: web.Request, call_sid: str | None
    ) -> tuple[RecordingRecord, str] | None:
        match = _NAME.match(request.match_info["name"])
        if match is None:
            return None
        record = self.store.recording(match["sid"])
        if record is None or record.account_sid != self.account_sid:
            return None
        if call_sid is not None and record.call_sid != call_sid:
            return None
        return record, match["ext"] or ""

    async def fetch_account(self, request: web.Request) -> web.StreamResponse:
        return await self._fetch(request, None)

    async def fetch_call(self, request: web.Request) -> web.StreamResponse:
        return await self._fetch(request, request.match_info["call_sid"])

    async def _fetch(self, request: web.Request, call_sid: str | None) -> web.StreamResponse:
        found = self._find(request, call_sid)
        if found is None:
            return not_found(request)
        record, ext = found
        if ext == ".json":
            return web.json_response(recording_json(record, self.public_url))
        if call_sid is not None or record.status != "completed" or record.path is None:
            return not_found(request)
        wav = self.storage / record.path
        if not wav.is_file():
            return not_found(request)
        path = wav
        if ext == ".mp3":
            path = mp3_path(self.storage, record.sid)
            lock = self.encoding.setdefault(record.sid, asyncio.Lock())
            async with lock:
                try:
                    await self.workers.run(encode_mp3, wav, path)
                except RecordingFileError as e:
                    log.error("recording %s: %s", record.sid, e)
                    return twilio_error(500, ERROR_INTERNAL, "Internal Server Error")
            if self.store.recording(record.sid) is None:  # deleted while encoding
                path.unlink(missing_ok=True)
                return not_found(request)
        return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: _MEDIA_TYPES[ext]})

    async def delete_account(self, request: web.Request) -> web.StreamResponse:
        return await self._delete(request, None)

    async def delete_call(self, request: web.Request) -> web.StreamResponse:
        return await self._delete(request, request.match_info["call_sid"])

    async def _delete(self, request: web.Request, call_sid: str | None) -> web.StreamResponse:
        found = self._find(request, call_sid)
        if found is None or found[1] not in ("", ".json"):
            return not_found(request)
        record = found[0]
        if record.status == "in-progress":
            return twilio_error(
                409, ERROR_CONFLICT, f"Recording {record.sid} is in progress and cannot be deleted"
            )
        self.store.delete_recording(record.sid)
        for path in self._files(record):
            path.unlink(missing_ok=True)
        return web.Response(status=204)

    def _files(self, record: RecordingRecord) -> list[Path]:
        files = [*side_paths(self.storage, record.sid), mp3_path(self.storage, record.sid)]
        if record.path is not None:
            wav = (self.storage / record.path).resolve()
            if wav.is_relative_to(recordings_dir(self.storage).resolve()):
                files.append(wav)
        return files


def add_recordings_routes(
    app: web.Application,
    guarded: AccountGuard,
    store: Store,
    config: Config,
    workers: WorkerPool | None = None,
) -> None:
    """Serve the Recordings resources of the configured account on `app`.

    MP3 encoding runs on `workers` (threads of this process when none is given).
    """
    api = _RecordingsApi(store, config, workers or WorkerPool())
    account = ACCOUNT_PATH
    call = f"{account}/Calls/{{call_sid}}"
    app.router.add_get(f"{account}/Recordings.json", guarded(api.list_account))
    app.router.add_get(f"{account}/Recordings/{{name}}", guarded(api.fetch_account))
    app.router.add_delete(f"{account}/Recordings/{{name}}", guarded(api.delete_account))
    app.router.add_get(f"{call}/Recordings.json", guarded(api.list_call))
    app.router.add_get(f"{call}/Recordings/{{name}}", guarded(api.fetch_call))
    app.router.add_delete(f"{call}/Recordings/{{name}}", guarded(api.delete_call))
