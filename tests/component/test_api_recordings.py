"""The Recordings REST API on a real aiohttp server over loopback, with a real store.

Requests are made both by hand (aiohttp) and with Twilio's own Python client pointed
at the server, which must work unchanged.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from switch.api import add_api_routes
from switch.config import Config, load_config
from switch.recordings import complete_recording, side_paths
from switch.store import RecordingRecord, Store

ACCOUNT = "AC0123456789abcdef0123456789abcdef"
TOKEN = "a-test-auth-token-of-at-least-32-chars"
PUBLIC_URL = "https://switch.example.com"
CALL = "CA" + "a" * 32
OTHER_CALL = "CA" + "b" * 32
RATE = 8000
T0 = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)


def sid(n: int) -> str:
    return f"RE{n:032x}"


def config_for(tmp_path: Path) -> Config:
    path = tmp_path / "dialswitch.toml"
    path.write_text(
        f"""
[sip]
listen = ["udp:127.0.0.1:5060"]
[http]
listen = "127.0.0.1:8080"
public_url = "{PUBLIC_URL}"
[account]
sid = "{ACCOUNT}"
auth_token = "{TOKEN}"
[storage]
path = "{tmp_path / "var"}"
"""
    )
    return load_config(path)


@dataclass
class Api:
    base: str
    store: Store
    storage: Path
    http: aiohttp.ClientSession

    def url(self, rest: str) -> str:
        return f"{self.base}/2010-04-01/Accounts/{ACCOUNT}/{rest}"

    def record(self, n: int, seconds: float, call_sid: str = CALL) -> RecordingRecord:
        """A dual recording of `seconds`, finished as at the end of a call."""
        rec = self.store.create_recording(
            sid=sid(n),
            account_sid=ACCOUNT,
            call_sid=call_sid,
            channels=2,
            track="both",
            trim=False,
            start_time=T0 + timedelta(minutes=n),
            now=T0 + timedelta(minutes=n),
        )
        t = np.arange(int(seconds * RATE)) / RATE
        for path, hz in zip(side_paths(self.storage, rec.sid), (300, 700), strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes((5000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())
        return complete_recording(self.store, self.storage, rec, now=T0 + timedelta(minutes=n))

    def twilio(self) -> Client:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = self.base
        return client


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "var") as opened:
        yield opened


@pytest.fixture
async def api(tmp_path: Path, store: Store) -> AsyncIterator[Api]:
    config = config_for(tmp_path)
    app = web.Application()
    add_api_routes(app, store, config)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT, TOKEN)}
    async with aiohttp.ClientSession(headers=headers) as http:
        yield Api(str(server.make_url("")).rstrip("/"), store, config.storage.path, http)
    await server.close()


# --- authentication and errors


@pytest.mark.parametrize(
    "auth",
    [
        None,
        aiohttp.encode_basic_auth(ACCOUNT, "wrong"),
        aiohttp.encode_basic_auth("AC" + "f" * 32, TOKEN),
        aiohttp.encode_basic_auth(ACCOUNT, ""),
        f"Bearer {TOKEN}",
        "Basic !!!not-base64",
    ],
    ids=["missing", "wrong-token", "wrong-sid", "no-token", "bearer", "garbled"],
)
async def test_authentication_is_required(api: Api, auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(api.url("Recordings.json")) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="dialswitch"'
        assert await response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }


async def test_another_account_in_the_path(api: Api) -> None:
    url = f"{api.base}/2010-04-01/Accounts/AC{'e' * 32}/Recordings.json"
    async with api.http.get(url) as response:
        assert response.status == 404
        body = await response.json()
        assert body["code"] == 20404
        assert body["status"] == 404


@pytest.mark.parametrize(
    "name", [f"{sid(42)}.json", sid(42), f"{sid(42)}.mp3", "nonsense.json", f"{sid(1)}.xml"]
)
async def test_unknown_recording(api: Api, name: str) -> None:
    api.record(1, 0.2)
    async with api.http.get(api.url(f"Recordings/{name}")) as response:
        assert response.status == 404
        assert await response.json() == {
            "code": 20404,
            "message": f"The requested resource /2010-04-01/Accounts/{ACCOUNT}/Recordings/{name}"
            " was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404",
            "status": 404,
        }


# --- resources


async def test_fetch_json(api: Api) -> None:
    api.record(1, 2.4)
    async with api.http.get(api.url(f"Recordings/{sid(1)}.json")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == {
        "account_sid": ACCOUNT,
        "api_version": "2010-04-01",
        "call_sid": CALL,
        "conference_sid": None,
        "date_created": "Tue, 04 Mar 2025 12:01:00 +0000",
        "date_updated": "Tue, 04 Mar 2025 12:01:00 +0000",
        "start_time": "Tue, 04 Mar 2025 12:01:00 +0000",
        "duration": "2",
        "sid": sid(1),
        "price": None,
        "price_unit": None,
        "status": "completed",
        "channels": 2,
        "source": "DialVerb",
        "track": "both",
        "error_code": None,
        "encryption_details": None,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid(1)}.json",
        "subresource_uris": {},
        "media_url": f"{PUBLIC_URL}/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid(1)}",
    }


async def test_in_progress_recording(api: Api) -> None:
    api.store.create_recording(
        sid=sid(7),
        account_sid=ACCOUNT,
        call_sid=CALL,
        channels=1,
        track="inbound",
        trim=False,
        start_time=T0,
    )
    async with api.http.get(api.url(f"Recordings/{sid(7)}.json")) as response:
        body = await response.json()
        assert (body["status"], body["duration"], body["channels"]) == ("in-progress", "-1", 1)
    async with api.http.get(api.url(f"Recordings/{sid(7)}.wav")) as response:
        assert response.status == 404
    async with api.http.delete(api.url(f"Recordings/{sid(7)}.json")) as response:
        assert response.status == 409
        assert (await response.json())["code"] == 20409
    assert api.store.recording(sid(7)) is not None


@pytest.mark.parametrize("suffix", ["", ".wav"])
async def test_wav_media(api: Api, suffix: str) -> None:
    api.record(1, 1.0)
    async with api.http.get(api.url(f"Recordings/{sid(1)}{suffix}")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/x-wav"
        assert response.headers["Accept-Ranges"] == "bytes"
        body = await response.read()
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert len(body) == 44 + RATE * 2 * 2


async def test_wav_range(api: Api) -> None:
    api.record(1, 1.0)
    whole = (api.storage / "recordings" / f"{sid(1)}.wav").read_bytes()
    headers = {"Range": "bytes=0-99"}
    async with api.http.get(api.url(f"Recordings/{sid(1)}.wav"), headers=headers) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 0-99/{len(whole)}"
        body = await response.read()
    assert body == whole[:100]
    headers = {"Range": "bytes=-10"}
    async with api.http.get(api.url(f"Recordings/{sid(1)}"), headers=headers) as response:
        assert response.status == 206
        assert await response.read() == whole[-10:]


async def test_mp3_media(api: Api, tmp_path: Path) -> None:
    api.record(1, 2.0)
    url = api.url(f"Recordings/{sid(1)}.mp3")
    async with api.http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/mpeg"
        body = await response.read()
    mp3 = api.storage / "recordings" / f"{sid(1)}.mp3"
    assert mp3.read_bytes() == body
    copy = tmp_path / "copy.mp3"
    copy.write_bytes(body)
    with av.open(str(copy)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.codec_context.channels == 2
    assert samples / RATE == pytest.approx(2.0, abs=0.1)

    mtime = mp3.stat().st_mtime_ns
    async with api.http.get(url, headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206
        assert await response.read() == body[10:20]
    assert mp3.stat().st_mtime_ns == mtime  # encoded once


async def test_concurrent_mp3_requests(api: Api) -> None:
    api.record(1, 1.0)
    url = api.url(f"Recordings/{sid(1)}.mp3")

    async def fetch() -> bytes:
        async with api.http.get(url) as response:
            assert response.status == 200
            return await response.read()

    bodies = await asyncio.gather(*(fetch() for _ in range(4)))
    assert len(set(bodies)) == 1


async def test_delete(api: Api) -> None:
    api.record(1, 0.5)
    async with api.http.get(api.url(f"Recordings/{sid(1)}.mp3")) as response:
        assert response.status == 200
    files = sorted(p.name for p in (api.storage / "recordings").iterdir() if p.is_file())
    assert files == [f"{sid(1)}.mp3", f"{sid(1)}.wav"]
    async with api.http.delete(api.url(f"Recordings/{sid(1)}.json")) as response:
        assert response.status == 204
    assert [p for p in (api.storage / "recordings").rglob("*") if p.is_file()] == []
    for suffix in (".json", "", ".wav", ".mp3"):
        async with api.http.get(api.url(f"Recordings/{sid(1)}{suffix}")) as response:
            assert response.status == 404
    async with api.http.delete(api.url(f"Recordings/{sid(1)}.json")) as response:
        assert response.status == 404


async def test_list_pages(api: Api) -> None:
    for n in range(1, 6):
        api.record(n, 0.1, call_sid=CALL if n != 3 else OTHER_CALL)
    async with api.http.get(api.url("Recordings.json")) as response:
        body = await response.json()
    assert [r["sid"] for r in body["recordings"]] == [sid(n) for n in (5, 4, 3, 2, 1)]
    assert (body["page"], body["page_size"], body["start"], body["end"]) == (0, 50, 0, 4)
    assert body["next_page_uri"] is None and body["previous_page_uri"] is None

    path = f"/2010-04-01/Accounts/{ACCOUNT}/Recordings.json"
    async with api.http.get(api.url("Recordings.json?PageSize=2&Page=1")) as response:
        body = await response.json()
    assert [r["sid"] for r in body["recordings"]] == [sid(3), sid(2)]
    assert body["uri"] == f"{path}?PageSize=2&Page=1"
    assert body["first_page_uri"] == f"{path}?PageSize=2&Page=0"
    assert body["next_page_uri"] == f"{path}?PageSize=2&Page=2"
    assert body["previous_page_uri"] == f"{path}?PageSize=2&Page=0"
    async with api.http.get(api.url(f"Recordings.json?PageSize=2&Page=2&CallSid={CALL}")) as r:
        body = await r.json()
    assert body["recordings"] == []
    assert body["next_page_uri"] is None
    assert body["uri"] == f"{path}?PageSize=2&Page=2&CallSid={CALL}"


async def test_list_for_a_call(api: Api) -> None:
    api.record(1, 0.1)
    api.record(2, 0.1, call_sid=OTHER_CALL)
    api.record(3, 0.1)
    async with api.http.get(api.url(f"Calls/{CALL}/Recordings.json")) as response:
        body = await response.json()
    assert [r["sid"] for r in body["recordings"]] == [sid(3), sid(1)]
    assert (
        body["uri"]
        == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}/Recordings.json?PageSize=50&Page=0"
    )
    async with api.http.get(api.url(f"Recordings.json?CallSid={OTHER_CALL}")) as response:
        assert [r["sid"] for r in (await response.json())["recordings"]] == [sid(2)]
    async with api.http.get(api.url(f"Calls/{CALL}/Recordings/{sid(1)}.json")) as response:
        assert (await response.json())["sid"] == sid(1)
    async with api.http.get(api.url(f"Calls/{CALL}/Recordings/{sid(2)}.json")) as response:
        assert response.status == 404


# --- Twilio's Python client


async def test_twilio_client(api: Api) -> None:
    for n in range(1, 4):
        api.record(n, 1.2 * n)

    def use_client() -> None:
        client = api.twilio()
        rec = client.recordings(sid(2)).fetch()
        assert (rec.sid, rec.call_sid, rec.status, rec.duration) == (
            sid(2),
            CALL,
            "completed",
            "2",
        )
        assert rec.channels == 2
        assert rec.start_time == T0 + timedelta(minutes=2)
        assert rec.source == "DialVerb"
        # Paging through next_page_uri, two at a time.
        listed = client.recordings.list(page_size=2)
        assert [r.sid for r in listed] == [sid(3), sid(2), sid(1)]
        per_call = client.calls(CALL).recordings.list()
        assert len(per_call) == 3
        assert client.recordings(sid(1)).delete() is True
        with pytest.raises(TwilioRestException) as raised:
            client.recordings(sid(1)).fetch()
        assert (raised.value.status, raised.value.code) == (404, 20404)
        wrong = Client(ACCOUNT, "not-the-token")
        wrong.api.base_url = api.base
        with pytest.raises(TwilioRestException) as raised:
            wrong.recordings(sid(2)).fetch()
        assert (raised.value.status, raised.value.code) == (401, 20003)

    await asyncio.to_thread(use_client)


async def test_media_and_delete_under_a_call(api: Api) -> None:
    api.record(1, 0.2)
    prefix = f"Calls/{CALL}/Recordings/{sid(1)}"
    async with api.http.get(api.url(f"{prefix}.wav")) as response:
        assert response.status == 404  # media only under Recordings/, as Twilio
    async with api.http.delete(api.url(f"Recordings/{sid(1)}.wav")) as response:
        assert response.status == 404
    async with api.http.delete(api.url(f"Calls/{OTHER_CALL}/Recordings/{sid(1)}.json")) as r:
        assert r.status == 404
    async with api.http.delete(api.url(f"{prefix}.json")) as response:
        assert response.status == 204
    assert api.store.recording(sid(1)) is None


async def test_an_mp3_that_cannot_be_encoded(api: Api) -> None:
    api.record(1, 0.2)
    (api.storage / "recordings" / f"{sid(1)}.wav").write_bytes(b"no longer a WAV file" * 4)
    async with api.http.get(api.url(f"Recordings/{sid(1)}.mp3")) as response:
        assert response.status == 500
        assert (await response.json())["code"] == 20500
    assert not (api.storage / "recordings" / f"{sid(1)}.mp3").exists()


async def test_a_finished_file_gone_missing(api: Api) -> None:
    api.record(1, 0.2)
    (api.storage / "recordings" / f"{sid(1)}.wav").unlink()
    for suffix in ("", ".mp3"):
        async with api.http.get(api.url(f"Recordings/{sid(1)}{suffix}")) as response:
            assert response.status == 404
    async with api.http.delete(api.url(f"Recordings/{sid(1)}")) as response:
        assert response.status == 204
