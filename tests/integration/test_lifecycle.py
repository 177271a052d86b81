"""The switch as a process: what it does with requests it does not serve, what it
records when a call ends, how it checks a configuration, and how it stops.

Everything here talks to a real switch: SIPp peers, raw UDP/TCP from the test, the
SQLite database the switch writes, ``python -m switch`` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from media.analysis import tone_power
from tests.integration.conftest import (
    ACCOUNT_SID,
    FALLBACK_NUMBER,
    NUMBER,
    REPO,
    AppServer,
    SwitchProcess,
    free_port_pair,
    free_tcp_port,
    new_switch,
    run_command,
    wait_gone,
    write_config,
)
from tests.support import sipp
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp import free_udp_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CALLER_ID = "+14155550100"
CALLEE = "+15551230001"
NOT_OURS = "+15005559999"
SID = re.compile(r"^CA[0-9a-f]{32}$")


# ---- helpers -------------------------------------------------------------------------


def call_id_of(message: str) -> str:
    match = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", message, re.M | re.I)
    assert match, message
    return match[1]


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        text = data.decode("utf-8", errors="replace")
        with contextlib.suppress(AssertionError):
            if call_id_of(text) == self.call_id and not self.reply.done():
                self.reply.set_result(text)

    def error_received(self, exc: Exception) -> None:
        pass


async def options(port: int, timeout: float = 5.0) -> str:
    """Send an out-of-dialog OPTIONS over UDP; returns the whole response.

    Retransmitted every 0.5 s (RFC 3261 timer E starts at T1) until answered.
    """
    loop = asyncio.get_running_loop()
    call_id = f"{secrets.token_hex(8)}@options.test"
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Replies(call_id), local_addr=("127.0.0.1", 0)
    )
    try:
        local = transport.get_extra_info("sockname")[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@127.0.0.1:{local}>\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no reply to OPTIONS on port {port}")
            transport.sendto(request, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(protocol.reply), min(0.5, remaining))
    finally:
        transport.close()


def status_line(response: str) -> str:
    return response.split("\r\n", 1)[0]


async def healthz(switch: SwitchProcess) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{switch.http}/healthz") as response,
    ):
        return response.status, dict(await response.json())


LEGS_OF_CALL = (
    "SELECT * FROM legs WHERE call_sid = ? OR parent_call_sid = ?"
    " ORDER BY parent_call_sid IS NOT NULL, start_time"
)
"""The row of a call and of its children, parent first."""


async def wait_for_legs(
    switch: SwitchProcess, call_sid: str, count: int, timeout: float = 10
) -> list[dict]:
    """Poll the switch's database until ``count`` legs of the call are recorded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        exists = switch.database.exists()
        legs = switch.query(LEGS_OF_CALL, call_sid, call_sid) if exists else []
        if len(legs) >= count or loop.time() > deadline:
            return legs
        await asyncio.sleep(0.05)


def when(text: object) -> datetime:
    assert isinstance(text, str) and text.endswith("Z"), text
    return datetime.fromisoformat(text)


# ---- requests the switch does not serve ----------------------------------------------


async def test_invite_for_a_number_we_do_not_own_gets_404(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    peer = RtpPeer(None)
    await peer.start()
    try:
        caller, _ = await sipp.run_call(
            switch, workdir, sipp.caller(NOT_OURS, peer.port, expect_final=404)
        )
    finally:
        peer.close()
    assert "SIP/2.0 404 Not Found" in caller.messages().received_starts()
    assert not any(s.startswith("SIP/2.0 200") for s in caller.messages().received_starts())
    assert app_server.requests == []  # no app was asked


async def test_options_gets_200(switch: SwitchProcess):
    response = await options(switch.sip_port)
    assert re.match(r"SIP/2\.0 200 ", status_line(response)), response
    assert re.search(r"^CSeq:\s*1 OPTIONS", response, re.M | re.I), response


def _garbage() -> list[bytes]:
    rng = random.Random(20240501)
    half_invite = (
        f"INVITE sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKhalf\r\n"
        "From: <sip:+14155550100@127.0.0.1>;tag=half\r\n"
        "To: <sip:"
    ).encode()
    short_body = (
        f"INVITE sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKshort\r\n"
        "From: <sip:+14155550100@127.0.0.1>;tag=short\r\n"
        f"To: <sip:{NUMBER}@127.0.0.1>\r\n"
        "Call-ID: short-body@test\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 900\r\n\r\n"
        "v=0\r\no="
    ).encode()
    return [
        rng.randbytes(1),
        rng.randbytes(64),
        rng.randbytes(1400),
        rng.randbytes(8000),
        b"\x00" * 300,
        b"\r\n\r\n",
        half_invite,
        short_body,
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE SIP/2.0\r\nVia:\r\nCSeq: x\r\nContent-Length: -5\r\n\r\n",
        "BYE sip:\u00e9\u00e8@127.0.0.1 SIP/2.0\r\nVia: \u2603\r\n\r\n".encode(),
    ]


async def test_garbage_on_the_sip_port_does_not_stop_the_switch(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        for payload in _garbage():
            transport.sendto(payload, ("127.0.0.1", switch.sip_port))
    finally:
        transport.close()
    # The same over TCP: a stream that starts with noise, and one cut off mid-message.
    for payload in (_garbage()[3], _garbage()[6]):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", switch.sip_port), 5
        )
        writer.write(payload)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), 5)
    # Still serving SIP (OPTIONS and a call) and HTTP.
    assert re.match(r"SIP/2\.0 200 ", status_line(await options(switch.sip_port)))
    app_server.routes["/voice"] = '<Response><Reject reason="busy"/></Response>'
    peer = RtpPeer(None)
    await peer.start()
    try:
        await sipp.run_call(switch, workdir, sipp.caller(NUMBER, peer.port, expect_final=486))
    finally:
        peer.close()
    status, body = await healthz(switch)
    assert status == 200 and body["status"] == "ok", body
    assert switch.process is not None and switch.process.returncode is None


# ---- call records --------------------------------------------------------------------


async def test_bridged_call_leaves_a_record_per_leg(
    switch: SwitchProcess, app_server: AppServer, workdir
):
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    try:
        caller, callee = await sipp.run_call(
            switch,
            workdir,
            sipp.caller(NUMBER, caller_audio.port),
            sipp.callee("answer", rtp_port=callee_audio.port, ring_ms=300, hangup_after_ms=1500),
        )
    finally:
        caller_audio.close()
        callee_audio.close()
    assert callee is not None
    # It was bridged: the callee heard the caller's tone.
    assert tone_power(callee_audio.audio(), 8000, 600) > 0.5
    sid = app_server.hits("/voice")[0].params["CallSid"]
    legs = await wait_for_legs(switch, sid, 2)
    assert len(legs) == 2, legs
    parent, child = legs

    assert parent["call_sid"] == sid
    assert parent["parent_call_sid"] is None
    assert parent["account_sid"] == ACCOUNT_SID
    assert parent["direction"] == "inbound"
    assert (parent["from_"], parent["to_"]) == (CALLER_ID, NUMBER)
    assert parent["status"] == "completed"
    assert parent["sip_code"] == 200
    assert parent["sip_call_id"] == call_id_of(caller.messages().sent()[0])
    assert parent["trunk"] is None

    assert SID.match(str(child["call_sid"])) and child["call_sid"] != sid
    assert child["parent_call_sid"] == sid
    assert child["account_sid"] == ACCOUNT_SID
    assert child["direction"] == "outbound-dial"
    assert (child["from_"], child["to_"]) == (CALLER_ID, CALLEE)
    assert child["status"] == "completed"
    assert child["sip_code"] == 200
    assert child["sip_call_id"] == call_id_of(callee.messages().received()[0])
    assert child["trunk"] == "carrier"

    for leg in (parent, child):
        assert leg["answer_time"] is not None, leg
        start, answer, end = (
            when(leg["start_time"]),
            when(leg["answer_time"]),
            when(leg["end_time"]),
        )
        assert start <= answer <= end, leg
        seconds = (end - answer).total_seconds()
        assert int(leg["duration"]) == int(seconds), leg  # type: ignore[call-overload]
    # The caller was answered first (it heard ringback), the callee after 0.3 s of
    # ringing; the callee hung up 1.5 s after its answer.
    assert when(parent["answer_time"]) <= when(child["answer_time"])
    assert when(parent["start_time"]) <= when(child["start_time"])
    assert 1 <= int(child["duration"]) <= 3  # type: ignore[call-overload]
    assert int(parent["duration"]) >= int(child["duration"])  # type: ignore[call-overload]


# ---- dialswitch --check-config ---------------------------------------------------------


async def check_config(path: Path) -> tuple[int, str, str]:
    args = ("-m", "switch", "--config", str(path), "--check-config")
    code, out, err = await run_command(sys.executable, *args, cwd=REPO, timeout=30)
    return code, out.decode(), err.decode()


def good_config(workdir: Path) -> tuple[Path, int, int]:
    """A valid file (the integration tests' own) with free ports; (path, sip, http)."""
    sip_port, http_port = free_port_pair(), free_tcp_port()
    path = write_config(workdir, sip_port, http_port, free_udp_port(), "http://127.0.0.1:9")
    return path, sip_port, http_port


SPOILERS = {
    "unknown-key": ("[dial]\n", '[dial]\ncolour = "blue"\n', "dial.colour"),
    "wrong-type": ("max_calls = 100", 'max_calls = "many"', "dial.max_calls"),
    "bad-url": (
        'voice_url = "http://127.0.0.1:9/voice"',
        'voice_url = "ftp://x/voice"',
        "numbers[0].voice_url",
    ),
    "duplicate-number": (
        f'number = "{FALLBACK_NUMBER}"',
        f'number = "{NUMBER}"',
        "numbers[1].number",
    ),
}
"""Problem -> (text of the good file, what replaces it, the key the problem is reported at)."""


def spoil(path: Path, *problems: str) -> list[str]:
    """Put ``problems`` into the file; returns the keys they should be reported at."""
    text = path.read_text()
    keys = []
    for name in problems:
        old, new, key = SPOILERS[name]
        assert old in text, (old, text)
        text = text.replace(old, new, 1)
        keys.append(key)
    path.write_text(text)
    return keys


def reported_keys(stderr: str) -> list[str]:
    return [line.split(": ", 1)[0] for line in stderr.splitlines() if ": " in line]


@contextlib.contextmanager
def ports_in_use(sip_port: int, http_port: int):
    """Hold the SIP port (UDP) and the HTTP port (a listening TCP socket)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", sip_port))
        tcp.bind(("127.0.0.1", http_port))
        tcp.listen()
        yield


async def test_check_config_accepts_a_good_file(workdir: Path):
    path, _, _ = good_config(workdir)
    code, out, err = await check_config(path)
    assert code == 0, err
    assert out.strip() == f"{path}: ok"
    assert err == ""


@pytest.mark.parametrize("problem", sorted(SPOILERS))
async def test_check_config_names_the_key_of_a_problem(workdir: Path, problem: str):
    path, _, _ = good_config(workdir)
    keys = spoil(path, problem)
    code, out, err = await check_config(path)
    assert code == 2, (out, err)
    assert reported_keys(err) == keys, err


async def test_check_config_reports_ports_in_use(workdir: Path):
    path, sip_port, http_port = good_config(workdir)
    with ports_in_use(sip_port, http_port):
        code, out, err = await check_config(path)
    assert code == 2, (out, err)
    assert reported_keys(err) == ["sip.listen[0]", "http.listen"], err
    assert "port in use" in err


async def test_check_config_reports_every_file_problem_at_once(workdir: Path):
    path, _, _ = good_config(workdir)
    keys = spoil(path, *SPOILERS)
    code, out, err = await check_config(path)
    assert code == 2, (out, err)
    assert sorted(reported_keys(err)) == sorted(keys), err


async def test_check_config_reports_a_port_in_use_along_with_file_problems(workdir: Path):
    path, sip_port, http_port = good_config(workdir)
    keys = spoil(path, *SPOILERS)
    with ports_in_use(sip_port, http_port):
        code, out, err = await check_config(path)
    assert code == 2, (out, err)
    for key in [*keys, "sip.listen[0]", "http.listen"]:
        assert key in reported_keys(err), err


# ---- SIGTERM with a live call ----------------------------------------------------------


@contextlib.asynccontextmanager
async def own_switch(
    workdir: Path, app: str, own_group: bool = False
) -> AsyncIterator[SwitchProcess]:
    """A switch process of this test alone (as conftest's switch_process starts one)."""
    handle = new_switch(workdir, app)
    try:
        await handle.start(workdir / "own-switch.log", own_group=own_group)
        yield handle
    finally:
        if handle.process is not None and handle.process.returncode is None:
            handle.process.kill()
            await handle.process.wait()


async def test_sigterm_hangs_up_live_calls_and_exits_0(app_server: AppServer, workdir: Path):
    app_server.reset()
    app_server.routes["/voice"] = f"<Response><Dial><Number>{CALLEE}</Number></Dial></Response>"
    loop = asyncio.get_running_loop()
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    async with own_switch(workdir, app_server.base) as own:
        assert own.process is not None
        callee = sipp.Sipp(
            workdir,
            "callee",
            sipp.callee("answer", rtp_port=callee_audio.port),
            port=own.trunk_port,
        )
        caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
        try:
            await callee.start(timeout_s=40)
            await caller.start(own.target(), timeout_s=40)
            # Both answered and bridged: the app ran and the callee hears the caller.
            await app_server.wait_for("/voice", timeout=15)
            await callee_audio.wait_for_audio(1.0, timeout=15)
            assert tone_power(callee_audio.audio(), 8000, 600) > 0.5
            assert caller.process is not None and caller.process.returncode is None
            assert callee.process is not None and callee.process.returncode is None

            own.process.send_signal(signal.SIGTERM)
            signalled = loop.time()
            code = await asyncio.wait_for(own.process.wait(), 15)
            took = loop.time() - signalled

            # Both peers got a BYE (their scenarios end by answering one with 200).
            for peer in (caller, callee):
                await peer.finish(10)
                received = peer.messages().received_starts()
                assert any(s.startswith("BYE ") for s in received), (peer.name, received)
            assert took < 15
            assert code == 0, f"exit {code} after SIGTERM:\n{own.log()[-4000:]}"
        finally:
            await caller.stop()
            await callee.stop()
            caller_audio.close()
            callee_audio.close()


async def test_sigterm_to_the_process_group_finishes_a_recorded_call(
    app_server: AppServer, workdir: Path
):
    """systemd stops a service by signalling its whole process group: the recording
    workers get SIGTERM too. They must outlive it until the switch has handed them the
    last recording; the switch BYEs the call, finishes the file and exits 0, with no
    worker death or traceback in its log."""
    app_server.reset()
    app_server.routes["/voice"] = (
        f'<Response><Dial record="record-from-answer-dual" recordingStatusCallback="/rec">'
        f"<Number>{CALLEE}</Number></Dial></Response>"
    )
    app_server.routes["/rec"] = "<Response/>"
    caller_audio, callee_audio = RtpPeer(600), RtpPeer(1000)
    await caller_audio.start()
    await callee_audio.start()
    async with own_switch(workdir, app_server.base, own_group=True) as own:
        assert own.process is not None
        callee = sipp.Sipp(
            workdir,
            "callee",
            sipp.callee("answer", rtp_port=callee_audio.port),
            port=own.trunk_port,
        )
        caller = sipp.Sipp(workdir, "caller", sipp.caller(NUMBER, caller_audio.port))
        try:
            await callee.start(timeout_s=40)
            await caller.start(own.target(), timeout_s=40)
            await app_server.wait_for("/voice", timeout=15)
            await callee_audio.wait_for_audio(1.5, timeout=15)
            workers = own.children()
            assert workers, "no recording workers"
            os.killpg(own.process.pid, signal.SIGTERM)
            code = await asyncio.wait_for(own.process.wait(), 20)
            for peer in (caller, callee):
                await peer.finish(10)
                assert any(s.startswith("BYE ") for s in peer.messages().received_starts())
        finally:
            await caller.stop()
            await callee.stop()
            caller_audio.close()
            callee_audio.close()
        log = own.log()
        assert code == 0, f"exit {code} after SIGTERM to the group:\n{log[-4000:]}"
        assert "Traceback" not in log and " died " not in log, log[-4000:]
        for pid in workers:
            assert await wait_gone(pid, 10), f"worker {pid} outlived the switch"
        (done,) = await app_server.wait_for("/rec", timeout=10)
        assert done.params["RecordingStatus"] == "completed"
        assert int(done.params["RecordingDuration"]) >= 1
        (row,) = own.query("SELECT status, channels FROM recordings")
        assert row == {"status": "completed", "channels": 2}
