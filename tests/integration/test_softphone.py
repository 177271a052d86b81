"""Real SIP software against the registrar: baresip as alice's phone, sipvicious
as the attacker. Assertions are on what those programs saw and printed.

baresip 1.0 (Debian 12) gives up on a 401 that offers any algorithm it does not
know ("Register: Function not implemented" when SHA-256 is listed, first or
not), and svcrack/SIPp only do MD5: this file's switch keeps the registrar's
default offer, MD5 alone, which is what lets such phones register unconfigured.
Scanners run from their own loopback addresses (127.0.0.7, ...) so the blocks
they earn never touch 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from media.analysis import tone_power
from tests.integration.conftest import NUMBER, AppServer, free_port_pair, run_command, running
from tests.support import sipp, sipp_reg
from tests.support.baresip import Baresip
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_reg import ClientSwitch, Peer, header_values, register

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CRACKED = "tango-42"  # alice's password: 8 characters, the shortest the config allows
CLIENTS = {"alice": CRACKED, "bob": "bob-secret-22"}
REGISTRAR = {
    "max_failures": 5,
    "failure_window": 60,
    "block_seconds": 120,
}
TOOLS = {"sipp": "sip-tester", "baresip": "baresip", "svwar": "sipvicious", "svcrack": "sipvicious"}


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool, package in TOOLS.items():
        sipp_reg.require_tool(tool, package)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def switch_process(
    app_server: AppServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ClientSwitch]:
    """This module's switch: the conftest's, with clients and a [registrar] table."""
    handle = ClientSwitch.create(
        tmp_path_factory.mktemp("switch"), app_server.base, CLIENTS, REGISTRAR
    )
    async with running(handle):
        yield handle


async def run_tool(*args: str, cwd: Path, timeout: float = 90) -> str:
    """Run a command to its end; its combined output."""
    _, out, _ = await run_command(*args, cwd=cwd, timeout=timeout, stderr=asyncio.subprocess.STDOUT)
    return out.decode("utf-8", "replace")


# sipvicious 0.3.3 (Debian 12) accepts -b but never hands it to its scanner, which
# then sends from 127.0.0.1: run the tool's own main() with the address forced.
_SIPVICIOUS = """
import sys
home, source_ip = sys.argv[1:3]
sys.path.insert(0, home)
from sipvicious import {module} as tool
scanner = tool.{scanner}
original = scanner.__init__
def bound(self, *args, **kwargs):
    kwargs["bindingip"] = source_ip
    original(self, *args, **kwargs)
scanner.__init__ = bound
sys.argv = ["{module}", *sys.argv[3:]]
sys.exit(tool.main())
"""
_SCANNERS = {"svwar": "TakeASip", "svcrack": "ASipOfRedWine"}


async def sipvicious(tool: str, source_ip: str, *args: str, cwd: Path) -> str:
    """Run ``tool`` (svwar, svcrack) from ``source_ip``; its combined output."""
    home = Path(os.path.realpath(sipp_reg.require_tool(tool, "sipvicious"))).parent
    script = _SIPVICIOUS.format(module=tool, scanner=_SCANNERS[tool])
    return await run_tool("/usr/bin/python3", "-c", script, str(home), source_ip, *args, cwd=cwd)


# ---- 8. baresip registers, auto-answers, is bridged -------------------------------------


async def test_baresip_registers_answers_and_talks(
    switch: ClientSwitch, app_server: AppServer, workdir: Path
):
    app_server.routes["/voice"] = (
        '<Response><Dial timeout="10" action="/action">'
        '<Client>alice?X-Custom-Header1=1234<Parameter name="foo" value="bar"/></Client>'
        "</Dial></Response>"
    )
    app_server.routes["/action"] = "<Response><Hangup/></Response>"
    phone = Baresip(
        workdir,
        identity="alice",
        password=CLIENTS["alice"],
        registrar=switch.target(),
        sip_port=free_port_pair(),
        tone_hz=1000,
    )
    caller_audio = RtpPeer(600)
    await caller_audio.start()
    try:
        await phone.start()
        await phone.wait_for(r"registered successfully")
        caller = Peer(
            workdir, "caller", sipp.caller(NUMBER, caller_audio.port, hangup_after_ms=3000)
        )
        await caller.run(switch.target(), timeout=40)
        await phone.wait_for(r"Call with \S+ terminated")
    finally:
        caller_audio.close()
        code = await phone.stop()
    assert code == 0, phone.text()[-3000:]
    received, sent = phone.received(), phone.sent()
    # It registered: the switch's 200 to its authenticated REGISTER.
    register_ok = [
        m
        for m in received
        if m.startswith("SIP/2.0 200") and re.search(r"^CSeq: \d+ REGISTER", m, re.M)
    ]
    assert register_ok, phone.text()[-3000:]
    assert "Contact: <sip:alice" in register_ok[0]
    # The switch's INVITE reached it at the address it registered from, with the
    # <Parameter> and the RestComm URI headers.
    invite = next(m for m in received if m.startswith("INVITE "))
    assert re.match(rf"INVITE sip:alice[^@]*@127\.0\.0\.1:{phone.sip_port} SIP/2\.0", invite)
    assert header_values(invite, "X-foo") == ["bar"], invite
    assert header_values(invite, "X-Custom-Header1") == ["1234"], invite
    # It answered by itself.
    assert any(
        m.startswith("SIP/2.0 200") and re.search(r"^CSeq: \d+ INVITE", m, re.M) for m in sent
    ), phone.text()[-3000:]
    # Audio both ways: the caller heard baresip's 1000 Hz sine, baresip heard 600 Hz.
    heard_by_caller = caller_audio.audio()
    assert tone_power(heard_by_caller, 8000, 1000) > 10 * tone_power(heard_by_caller, 8000, 600)
    heard_by_phone, rate = phone.heard()
    assert len(heard_by_phone) >= rate, "baresip decoded less than a second of audio"
    assert tone_power(heard_by_phone, rate, 600) > 10 * tone_power(heard_by_phone, rate, 1000)
    (action,) = app_server.hits("/action")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialBridged"] == "true"
    # On quitting it unregistered (expires=0) and the switch said 200.
    assert any("expires=0" in m for m in sent if m.startswith("REGISTER "))


# ---- 9. sipvicious ----------------------------------------------------------------------


async def test_svwar_finds_no_extension(switch: ClientSwitch, workdir: Path):
    # alice first: svwar stops at the first answer it cannot classify, so the
    # names that matter go before it does.
    names = workdir / "extensions.txt"
    names.write_text("alice\nbob\n100\nadmin\n1000\n")
    common = ["-d", str(names), "-p", str(switch.sip_port), "127.0.0.1"]
    out = await sipvicious("svwar", "127.0.0.6", *common, cwd=workdir)
    assert "authentication request for an unknown extension" in out, out
    assert "found nothing" in out and "exists" not in out, out
    forced = await sipvicious("svwar", "127.0.0.6", "--force", *common, cwd=workdir)
    assert "Bad user = SIP/2.0 401" in forced, forced  # it did get answers...
    assert '"alice" <sip:alice@' in forced, forced  # ...alice's too, the same 401
    assert "found nothing" in forced and "exists" not in forced, forced


async def test_svwar_invite_scan_finds_nothing_and_the_switch_survives(
    app_server: AppServer, tmp_path: Path
):
    # Its own switch: in the failing case this one dies.
    own = ClientSwitch.create(tmp_path, app_server.base, CLIENTS, REGISTRAR)
    await own.start()
    names = tmp_path / "extensions.txt"
    names.write_text("100\nalice\nbob\nadmin\n")
    try:
        out = await sipvicious(
            "svwar",
            "127.0.0.9",
            "--force",
            "-m",
            "INVITE",
            "-d",
            str(names),
            "-p",
            str(own.sip_port),
            "127.0.0.1",
            cwd=tmp_path,
        )
        assert own.process is not None and own.process.returncode is None, own.log()[-2000:]
        assert "found nothing" in out and "exists" not in out, out
        assert (await own.health())["calls"] == 0
    finally:
        code = await own.stop()
    assert code == 0, f"switch exited {code}:\n{own.log()[-2000:]}"


async def test_svcrack_is_blocked_before_it_reaches_the_password(
    switch: ClientSwitch, workdir: Path
):
    target = ["-p", str(switch.sip_port), "127.0.0.1"]
    # Control: svcrack does crack a password early in its list (bob's, 3rd), so a
    # miss below is the switch's doing.
    short = workdir / "short.txt"
    short.write_text(f"guess-000\nguess-001\n{CLIENTS['bob']}\n")
    out = await sipvicious(
        "svcrack", "127.0.0.8", "-u", "bob", "-d", str(short), *target, cwd=workdir
    )
    assert re.search(rf"\|\s*bob\s*\|\s*{CLIENTS['bob']}\s*\|", out), out
    # The attack: alice's password is the 41st guess; max_failures is 5.
    words = workdir / "passwords.txt"
    words.write_text("".join(f"guess-{n:03d}\n" for n in range(40)) + f"{CRACKED}\nguess-999\n")
    out = await sipvicious(
        "svcrack", "127.0.0.7", "-u", "alice", "-d", str(words), *target, cwd=workdir
    )
    assert CRACKED not in out, out
    assert "found nothing" in out, out
    # The switch now refuses that source outright, even with the right password...
    refused = register("alice", password=CRACKED, first=403)
    seen = await Peer(workdir, "after-crack", refused, ip="127.0.0.7").run(switch.target())
    assert sipp_reg.final_responses(seen)[-1].startswith("SIP/2.0 403 ")
    # ...while everyone else is served.
    ok = register("alice", password=CRACKED, contact=None, expires=None)
    seen = await Peer(workdir, "other-source", ok).run(switch.target())
    assert sipp_reg.final_responses(seen)[-1].startswith("SIP/2.0 200 ")
