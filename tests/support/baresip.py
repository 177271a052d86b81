"""baresip (Debian's ``baresip``/``baresip-core``) as a real softphone in the tests.

`Baresip` writes a config directory, runs ``baresip -f DIR -s`` (``-s``: every
SIP message it sends and receives is printed) and keeps its output, so tests
assert on what the phone saw: the REGISTER answers, the INVITE and its headers.
Audio: the ``ausine`` module is the microphone (a sine at ``tone_hz``), and the
``sndfile`` module writes what the phone heard (the decoded stream) to a WAV
file in ``snd_path``; the speaker is an ``aubridge`` device nobody reads.
baresip answers calls itself (``answermode=auto``).

``tls``: (its own certificate, the CA file it trusts); the phone then also
listens for TLS (on ``sip_port`` + 1, baresip's choice) and may register with a
``;transport=tls`` registrar. ``mediaenc``: ``srtp``, ``srtp-mand`` ... for SDES.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.support.certs import Issued

MODULE_PATH = Path("/usr/lib/baresip/modules")
MODULES = ("stdio", "g711", "ausine", "aubridge", "sndfile", "account", "menu", "ctrl_tcp")


class Baresip:
    def __init__(
        self,
        workdir: Path,
        *,
        identity: str,
        password: str,
        registrar: str,
        sip_port: int,
        tone_hz: int = 1000,
        tls: tuple[Issued, Path] | None = None,
        mediaenc: str | None = None,
    ):
        self.dir = workdir / "baresip"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.audio_dir = self.dir / "audio"
        self.audio_dir.mkdir(exist_ok=True)
        self.sip_port = sip_port
        self.identity = identity
        self.registrar = registrar.split(";", 1)[0]  # host:port of the switch
        self.control_port = _free_tcp_port()  # ctrl_tcp: commands as JSON netstrings
        # srtp before account: an account naming an unknown mediaenc is dropped.
        names = ("srtp", *MODULES) if mediaenc else MODULES
        modules = "".join(f"module\t\t\t{name}.so\n" for name in names)
        tls_lines = ""
        if tls is not None:
            own, ca = tls
            # baresip reads its certificate and key from one PEM file.
            bundle = self.dir / "cert.pem"
            bundle.write_bytes(own.certificate.read_bytes() + own.private_key.read_bytes())
            tls_lines = f"sip_certificate\t\t{bundle}\nsip_cafile\t\t{ca}\n"
        (self.dir / "config").write_text(
            f"""poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{sip_port}
sip_trans_def\t\tudp
audio_player\t\taubridge,speaker
audio_source\t\tausine,{tone_hz}
audio_alert\t\taubridge,alert
ausrc_srate\t\t48000
ausrc_channels\t\t2
auplay_srate\t\t48000
auplay_channels\t\t2
audio_level\t\tno
rtp_tos\t\t\t0
rtcp_mux\t\tno
jitter_buffer_delay\t1-10
module_path\t\t{MODULE_PATH}
{modules}snd_path\t\t{self.audio_dir}
net_interface\t\t127.0.0.1
dns_server\t\t127.0.0.1:53
ctrl_tcp_listen\t\t127.0.0.1:{self.control_port}
{tls_lines}"""
        )
        encryption = f";mediaenc={mediaenc}" if mediaenc else ""
        (self.dir / "accounts").write_text(
            f"<sip:{identity}@{registrar}>;auth_pass={password};answermode=auto;"
            f"regint=600;audio_codecs=PCMU{encryption}\n"
        )
        (self.dir / "contacts").write_text("")
        self.output: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(self.dir),
            "-s",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            self._changed.set()
        self._changed.set()

    def text(self) -> str:
        return "\n".join(self.output)

    async def wait_for(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """Until ``pattern`` (a regex, multiline) matches the output so far."""

        async def seen() -> re.Match[str]:
            while True:
                found = re.search(pattern, self.text(), re.M)
                if found:
                    return found
                if self.process is not None and self.process.returncode is not None:
                    raise AssertionError(f"baresip exited:\n{self.text()[-3000:]}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"baresip: {pattern!r} not seen in {timeout} s:\n{self.text()[-4000:]}"
            ) from None

    async def press(self, keys: str) -> None:
        """Send ``keys`` as DTMF (RFC 4733) in the current call."""
        await self.command("sndcode", keys)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def command(self, name: str, params: str) -> None:
        """Run one of the menu's commands through ctrl_tcp (a JSON netstring)."""
        command = json.dumps({"command": name, "params": params, "token": name})
        reader, writer = await asyncio.open_connection("127.0.0.1", self.control_port)
        try:
            writer.write(f"{len(command)}:{command},".encode())
            await writer.drain()
            while True:  # events may come first; the reply carries our token
                length = (await reader.readuntil(b":"))[:-1]
                reply = json.loads(await reader.readexactly(int(length)))
                await reader.readexactly(1)  # the netstring's ","
                if reply.get("response") and reply.get("token") == name:
                    break
            assert reply.get("ok"), reply
        finally:
            writer.close()

    def transports(self) -> set[str]:
        """The transports of the SIP messages in the trace (UDP, TCP, TLS)."""
        return set(re.findall(r"#\n(UDP|TCP|TLS) \S+ -> ", self.text()))

    def received(self) -> list[str]:
        """The SIP messages baresip's trace shows it received, in order."""
        return [m for direction, m in self._trace() if direction == "recv"]

    def sent(self) -> list[str]:
        return [m for direction, m in self._trace() if direction == "send"]

    def _trace(self) -> list[tuple[str, str]]:
        # With -s each message is printed as a coloured "#", "UDP <src> -> <dst>",
        # the message, then an ANSI colour reset.
        found: list[tuple[str, str]] = []
        # A TLS connection the phone opened has an ephemeral local port: what goes
        # to the switch's address was sent, everything else was received.
        pattern = r"#\n(?:UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\x1b\[;m"
        for match in re.finditer(pattern, self.text(), re.S):
            src, dst, message = match.group(1), match.group(2), match.group(3).strip("\n")
            local = f"127.0.0.1:{self.sip_port}"
            sent = src == local or dst == self.registrar
            found.append(("send" if sent else "recv", message))
        return found

    def heard(self) -> tuple[npt.NDArray[np.int16], int]:
        """What the phone decoded (the sndfile ``dec`` dump of its last call): the
        first channel's samples and the sample rate."""
        files = sorted(self.audio_dir.glob("*-dec.wav"))
        if not files:
            return np.zeros(0, dtype=np.int16), 8000
        with wave.open(str(files[-1])) as wav:
            frames = wav.readframes(wav.getnframes())
            channels = wav.getnchannels()
            rate = wav.getframerate()
        return np.frombuffer(frames, dtype=np.int16)[::channels], rate

    async def stop(self, timeout: float = 10) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.process.stdin.write(b"q")
                await self.process.stdin.drain()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
        return self.process.returncode or 0


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
