"""The real switch with clients and a ws: listener, for browser (WebRTC) tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from tests.integration.conftest import NUMBER, free_tcp_port
from tests.support import sipp
from tests.support.certs import TestCa
from tests.support.rtp_peer import RtpPeer
from tests.support.sipp_reg import DOMAIN, ClientSwitch
from tests.support.ws_peer import WsPhone

CALLER_HZ = 600


class WebRtcSwitch(ClientSwitch):
    """`ClientSwitch` with a ws: listener besides its udp: and tcp: ones."""

    ws_port: int
    certificate: Path | None = None  # a wss: listener's, from create_wss

    @classmethod
    def create(  # type: ignore[override]
        cls, workdir: Path, app: str, clients: Mapping[str, str]
    ) -> WebRtcSwitch:
        base = ClientSwitch.create(workdir, app, clients, {})
        handle = cls(base.workdir, base.sip_port, base.http_port, base.trunk_port)
        handle.config, handle.log_path = base.config, base.log_path
        handle.ws_port = free_tcp_port()
        assert handle.config is not None
        text = handle.config.read_text()
        old = f'"tcp:127.0.0.1:{handle.sip_port}"]'
        assert old in text
        ws = f'"tcp:127.0.0.1:{handle.sip_port}", "ws:127.0.0.1:{handle.ws_port}"]'
        handle.config.write_text(text.replace(old, ws))
        return handle

    ws_scheme = "ws"

    @classmethod
    def create_wss(
        cls, workdir: Path, app: str, clients: Mapping[str, str], ca: TestCa
    ) -> WebRtcSwitch:
        """`create`, with its WebSocket listener a wss: one serving a certificate
        ``ca`` issued (as ``[sip] tls_certificate``)."""
        handle = cls.create(workdir, app, clients)
        issued = ca.issue("switch")
        assert handle.config is not None
        text = handle.config.read_text()
        handle.config.write_text(
            text.replace(
                f'"ws:127.0.0.1:{handle.ws_port}"]', f'"wss:127.0.0.1:{handle.ws_port}"]'
            ).replace(
                "[http]",
                f'tls_certificate = "{issued.certificate}"\n'
                f'tls_private_key = "{issued.private_key}"\n\n[http]',
                1,
            )
        )
        handle.ws_scheme = "wss"
        handle.certificate = issued.certificate
        return handle

    @property
    def ws_url(self) -> str:
        return f"{self.ws_scheme}://127.0.0.1:{self.ws_port}/"

    def phone(self, identity: str, password: str, tone: float = 1000.0) -> WsPhone:
        """An aiortc browser (tests/support/ws_peer.py) for this switch."""
        return WsPhone(self.ws_url, identity, password, DOMAIN, tone=tone)

    @contextlib.asynccontextmanager
    async def calling(
        self, workdir: Path, hangup_after_ms: int | None = None
    ) -> AsyncIterator[tuple[sipp.Sipp, RtpPeer]]:
        """A SIPp trunk caller of NUMBER, started, whose RTP party sends CALLER_HZ and
        decodes what it hears; both are stopped on the way out."""
        audio = RtpPeer(CALLER_HZ)
        await audio.start()
        scenario = sipp.caller(NUMBER, audio.port, hangup_after_ms=hangup_after_ms)
        caller = sipp.Sipp(workdir, "caller", scenario)
        try:
            await caller.start(self.target(), timeout_s=40)
            yield caller, audio
        finally:
            audio.close()
            await caller.stop()
