"""Debian's Chromium driven by Playwright, and the browser phone (/phone) as a test peer.

`chromium()` launches ``/usr/bin/chromium`` (Debian's ``chromium`` package, never a
browser Playwright downloads) headless with a fake microphone that plays a tone:
``--use-file-for-fake-audio-capture`` loops a WAV file this module writes, so a
test can check the far end hears that frequency. Media permission prompts are
answered yes and WebRTC may use loopback candidates, so two peers on one machine
connect. As root Chromium cannot sandbox itself, so it runs without (also when a
non-root sandbox cannot start, as in some containers).

`PhonePage` wraps one tab of the phone through the page's stable ids and data
attributes; each wait fails with the page's status, message and call state, and a
screenshot. Screenshots go to the ``artifacts`` directory given (a test's tmp path),
or to ``$DIALSWITCH_ARTIFACTS`` when set (CI keeps that directory).

Typical use, the switch serving /phone and a ws: listener::

    async with chromium(tmp_path, tone_hz=1000) as browser:
        alice = await PhonePage.open(browser, switch.http, "alice")
        await alice.login("alice", "tango-42")
        await alice.wait_registered()
        await alice.dial("client:bob")
        await alice.wait_call_state("in-call")
        await alice.press("5")
        await alice.hangup()
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from media.tones import write_wav

CHROMIUM = Path("/usr/bin/chromium")
TONE_RATE = 48_000
TONE_LEVEL = 0.3
"""Peak of the fake microphone's tone as a fraction of full scale."""
DEFAULT_TIMEOUT = 10.0


def artifacts_dir(default: Path) -> Path:
    """Where screenshots go: ``$DIALSWITCH_ARTIFACTS`` if set, else ``default``."""
    directory = Path(os.environ.get("DIALSWITCH_ARTIFACTS") or default)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def tone_wav(path: Path, hz: float, seconds: float = 4.0, rate: int = TONE_RATE) -> Path:
    """A mono 16-bit WAV of a sine at ``hz``, a whole number of cycles long, so Chromium's
    looping of the fake capture file is seamless."""
    cycles = max(1, round(seconds * hz))
    samples = round(cycles * rate / hz)
    t = np.arange(samples) / rate
    tone = np.sin(2 * np.pi * hz * t) * TONE_LEVEL * 32767
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.round(tone).astype(np.int16), rate)
    return path


def spki_fingerprint(certificate: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: what Chromium's
    ``--ignore-certificate-errors-spki-list`` takes to trust it (a test CA's leaf)."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def chromium_args(fake_audio: Path, trusted: Sequence[Path] = ()) -> list[str]:
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}",
        "--allow-loopback-in-peer-connection",
    ]
    if trusted:
        spkis = ",".join(spki_fingerprint(path) for path in trusted)
        args.append(f"--ignore-certificate-errors-spki-list={spkis}")
    return args


def require_chromium() -> Path:
    """Debian's Chromium; a clear failure (never a skip) when it is missing."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        raise AssertionError(
            "Chromium is not installed: these tests need the Debian package 'chromium' "
            "(deploy/apt-install.sh chromium, or make test-tools)"
        )
    return CHROMIUM


@dataclass
class Chromium:
    """A running Chromium whose fake microphone plays ``tone_hz``."""

    browser: Browser
    artifacts: Path
    tone_hz: float
    version: str = ""

    async def new_context(self, *, ignore_https_errors: bool = False) -> BrowserContext:
        return await self.browser.new_context(
            permissions=["microphone"], ignore_https_errors=ignore_https_errors
        )


async def _launch(playwright: Playwright, args: list[str]) -> Browser:
    """Headless Chromium; sandboxed unless that cannot work (root, or no user namespaces)."""
    sandbox = os.geteuid() != 0
    try:
        return await playwright.chromium.launch(
            executable_path=require_chromium(), headless=True, chromium_sandbox=sandbox, args=args
        )
    except PlaywrightError as error:
        if not sandbox or "sandbox" not in str(error).lower():
            raise
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, chromium_sandbox=False, args=args
    )


@contextlib.asynccontextmanager
async def chromium(
    workdir: Path,
    *,
    tone_hz: float = 1000.0,
    artifacts: Path | None = None,
    trusted_certificates: Sequence[Path] = (),
) -> AsyncIterator[Chromium]:
    """Chromium for the duration of the block, its microphone playing ``tone_hz``.

    ``trusted_certificates``: PEM leaf certificates Chromium accepts although no CA it
    knows signed them (a wss: listener with a test CA's certificate).
    """
    require_chromium()
    wav = tone_wav(workdir / f"fake-mic-{tone_hz:g}hz.wav", tone_hz)
    async with async_playwright() as playwright:
        browser = await _launch(playwright, chromium_args(wav, trusted_certificates))
        try:
            yield Chromium(
                browser, artifacts_dir(artifacts or workdir / "artifacts"), tone_hz, browser.version
            )
        finally:
            await browser.close()


@dataclass
class PhonePage:
    """One tab of the browser phone. ``name`` prefixes its screenshots."""

    page: Page
    context: BrowserContext
    artifacts: Path
    name: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        browser: Chromium,
        base_url: str,
        name: str = "phone",
        *,
        debug: bool = False,
        ignore_https_errors: bool = False,
    ) -> PhonePage:
        """A new browser context (its own storage) with ``base_url``/phone loaded and
        its config fetched. ``debug``: JsSIP logs to the console (kept in ``console``)."""
        context = await browser.new_context(ignore_https_errors=ignore_https_errors)
        page = await context.new_page()
        phone = cls(page, context, browser.artifacts, name)
        page.on("console", lambda message: phone.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: phone.errors.append(str(error)))
        response = await page.goto(f"{base_url.rstrip('/')}/phone{'?debug=1' if debug else ''}")
        if response is None or response.status != 200:
            status = response.status if response is not None else "no response"
            hint = " (is switch.phone.add_phone_routes wired in?)" if status == 404 else ""
            raise AssertionError(f"GET /phone: {status}{hint}: {await page.content()}"[:2000])
        await phone._wait('#app[data-ready="true"]', "the page to load its config")
        return phone

    async def close(self) -> None:
        await self.context.close()

    # --- actions ------------------------------------------------------------------

    async def login(self, identity: str, password: str, server: str | None = None) -> None:
        """Fill in the login form (``server``: a ws:// or wss:// URL instead of the
        switch's own) and submit it."""
        await self.page.fill("#identity", identity)
        await self.page.fill("#password", password)
        if server is not None:
            details = self.page.locator("#server-details")
            if not await details.evaluate("element => element.open"):
                await self.page.click("#server-details summary")
            await self.page.fill("#server", server)
        await self.page.click("#login")

    async def logout(self) -> None:
        await self.page.click("#logout")
        await self.wait_status("logged-out")

    async def dial(self, target: str) -> None:
        """Call a number (``+15005550100``) or a client (``client:bob``)."""
        await self.page.fill("#dial", target)
        await self._click("#call")

    async def answer(self) -> None:
        await self.wait_call_state("incoming")
        await self._click("#answer")

    async def decline(self) -> None:
        await self.wait_call_state("incoming")
        await self._click("#decline")

    async def hangup(self) -> None:
        await self._click("#hangup")

    async def mute(self) -> None:
        """Toggle mute (the button's aria-pressed says which)."""
        await self._click("#mute")

    async def is_muted(self) -> bool:
        return await self.page.get_attribute("#mute", "aria-pressed") == "true"

    async def press(self, digits: str) -> None:
        """Press keypad keys: DTMF (RFC 4733) in a call, else typed into the dial box."""
        for digit in digits:
            await self._click(f'#keypad button[data-digit="{digit}"]')

    # --- what the page shows --------------------------------------------------------

    async def status_text(self) -> str:
        return (await self.page.text_content("#status") or "").strip()

    async def registration_state(self) -> str:
        return await self.page.get_attribute("#status", "data-state") or ""

    async def state_text(self) -> str:
        """The call state as shown (``In call with client:bob``)."""
        return (await self.page.text_content("#call-state") or "").strip()

    async def call_state(self) -> str:
        """``idle``, ``calling``, ``ringing``, ``incoming``, ``answering``, ``in-call``,
        ``ended`` or ``failed``."""
        return await self.page.get_attribute("#call-state", "data-state") or ""

    async def message_text(self) -> str:
        """The message line ('' when hidden)."""
        if await self.page.is_hidden("#message"):
            return ""
        return (await self.page.text_content("#message") or "").strip()

    async def message_reason(self) -> str:
        """What the message is about: ``connection``, ``auth``, ``registration``,
        ``call-failed``, ``answered-elsewhere``, ``missed``, ``declined``, ``cancelled``,
        ``ended``, ``media``, ``config``, ``input``, ``insecure``, ``dtmf`` ('' when none)."""
        return await self.page.get_attribute("#message", "data-reason") or ""

    async def caller(self) -> str:
        return (await self.page.text_content("#caller") or "").strip()

    async def dtmf_sent(self) -> str:
        return (await self.page.text_content("#dtmf-sent") or "").strip()

    async def level(self) -> float:
        """RMS of the remote audio, 0..1 (0 when there is none)."""
        return float(await self.page.get_attribute("#level", "data-level") or 0)

    async def peak_hz(self) -> int:
        """Strongest frequency of the remote audio (about 23 Hz resolution), 0 if silent."""
        return int(await self.page.get_attribute("#level", "data-peak-hz") or 0)

    # --- waiting ----------------------------------------------------------------------

    async def wait_status(self, state: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(f'#status[data-state="{state}"]', f"registration state {state}", timeout)

    async def wait_registered(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.wait_status("registered", timeout)

    async def wait_call_state(self, state: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self._wait(f'#call-state[data-state="{state}"]', f"call state {state}", timeout)

    async def wait_incoming(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait for a ringing incoming call; the caller as shown."""
        await self.wait_call_state("incoming", timeout)
        return await self.caller()

    async def wait_message(self, reason: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait for a message about ``reason`` (see `message_reason`); its text."""
        await self._wait(f'#message[data-reason="{reason}"]:not([hidden])', reason, timeout)
        return await self.message_text()

    async def wait_tone(
        self, hz: float, tolerance: float = 50.0, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until the remote audio's strongest frequency is within ``tolerance`` of
        ``hz`` and it is audible."""
        js = (
            "([hz, tolerance]) => { const level = document.getElementById('level');"
            " return Number(level.dataset.level) > 0.005 &&"
            " Math.abs(Number(level.dataset.peakHz) - hz) <= tolerance; }"
        )
        try:
            await self.page.wait_for_function(js, arg=[hz, tolerance], timeout=timeout * 1000)
        except PlaywrightError as error:
            await self._fail(f"a {hz:g} Hz tone", error)

    async def screenshot(self, label: str) -> Path:
        """A full-page screenshot, ``<artifacts>/<name>-<label>.png``."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{self.name}-{label}")
        path = self.artifacts / f"{safe}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def describe(self) -> str:
        """Status, call state and message as shown: what a failed wait reports."""
        return (
            f"status={await self.registration_state()!r} ({await self.status_text()!r}), "
            f"call={await self.call_state()!r} ({await self.state_text()!r}), "
            f"message={await self.message_reason()!r} ({await self.message_text()!r})"
        )

    def assert_no_page_errors(self, allow: Sequence[str] = ()) -> None:
        """No uncaught exception and no console error (a CSP violation is one) but those
        matching a regular expression of ``allow`` (Chromium logs each failed WebSocket
        connection as an error, say)."""
        problems = self.errors + [
            line
            for line in self.console
            if line.startswith("error:") and not any(re.search(a, line) for a in allow)
        ]
        assert not problems, f"{self.name}: page errors: {problems}"

    async def _click(self, selector: str) -> None:
        try:
            await self.page.click(selector, timeout=DEFAULT_TIMEOUT * 1000)
        except PlaywrightError as error:
            await self._fail(f"{selector} to be clickable", error)

    async def _wait(self, selector: str, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            await self.page.wait_for_selector(selector, state="attached", timeout=timeout * 1000)
        except PlaywrightError as error:
            await self._fail(what, error)

    async def _fail(self, what: str, error: Exception) -> None:
        shot = await self.screenshot(f"failed-{what}")
        console = "\n".join(self.console[-20:])
        raise AssertionError(
            f"{self.name}: waited for {what}: {await self.describe()}\n"
            f"screenshot: {shot}\nconsole (last 20 lines):\n{console}\n{error}"
        ) from None
