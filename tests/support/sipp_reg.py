"""Registrar tests' helpers: a switch with ``[[clients]]``, and SIPp phones that register.

``ClientSwitch`` writes a config with clients and a ``[registrar]`` table (the
integration conftest's ``write_config`` has neither); it is a conftest
``SwitchProcess``, so it starts, stops and restarts the real switch process the
same way, and the conftest's ``switch`` fixture (app reset, leak check) works with it.

Scenario builders (SIPp XML, one call each):

- ``register``: REGISTER, the 401, then (``password`` given) the same REGISTER
  with SIPp's ``[authentication]`` and the final response it must get;
- ``register_flood``: one unauthenticated REGISTER a call, any final answer is fine;
- ``client_call``: a registered client's INVITE, the 407, the INVITE again with
  credentials, then 200-and-the-switch's-BYE or a refusal;
- ``registered_uas``: a ``register`` scenario that then stays until an
  out-of-call scenario (``-oocsf``) has answered the switch's INVITE in the same
  SIPp process: the phone that registered is the one that rings (over TCP, on
  the very connection it registered over);
- ``offerless_invite``: an INVITE without SDP, as scanners send, and its refusal.

SIPp's ``[authentication]`` only does MD5 and reads only the first challenge
header: the registrar's default offer lists MD5 first for such clients.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.integration.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    SwitchProcess,
    free_port_pair,
    free_tcp_port,
)
from tests.support import sipp
from tests.support.sipp import SippMessages, free_udp_port

DOMAIN = "dialswitch.test"

# ---- tools ---------------------------------------------------------------------------


def require_tool(name: str, package: str) -> str:
    """The path of a command-line tool; a clear failure (never a skip) when missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name!r} is not installed: these tests need the Debian package {package!r} "
            f"(deploy/apt-install.sh {package})"
        )
    return path


# ---- the switch ----------------------------------------------------------------------


def write_client_config(
    workdir: Path,
    *,
    sip_port: int,
    http_port: int,
    trunk_port: int,
    app: str,
    clients: Mapping[str, str],
    registrar: Mapping[str, object],
    storage: Path,
) -> Path:
    """A switch config like the conftest's, plus ``[registrar]`` and ``[[clients]]``.

    Every client's own calls run ``{app}/client``; the number ``NUMBER`` runs
    ``{app}/voice``.
    """
    lines = [f"{key} = {_toml(value)}" for key, value in registrar.items()]
    client_tables = "".join(
        f"""
[[clients]]
identity = "{identity}"
password = "{password}"
voice_url = "{app}/client"
"""
        for identity, password in clients.items()
    )
    config = workdir / "dialswitch.toml"
    config.write_text(
        f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
rtp_ports = "40000-49999"
domain = "{DOMAIN}"

[http]
listen = "127.0.0.1:{http_port}"

[account]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"

[storage]
path = "{storage}"

[dial]
timeout_grace = 1
max_calls = 100

[webhooks]
connect_timeout = 1.0
total_timeout = 3.0

[log]
level = "info"

[registrar]
{chr(10).join(lines)}

[[trunks]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port}"

[[numbers]]
number = "{NUMBER}"
voice_url = "{app}/voice"
{client_tables}"""
    )
    return config


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


class ClientSwitch(SwitchProcess):
    """The real switch with clients configured; `start` and `stop` may be repeated."""

    @classmethod
    def create(
        cls,
        workdir: Path,
        app: str,
        clients: Mapping[str, str],
        registrar: Mapping[str, object],
    ) -> ClientSwitch:
        handle = cls(workdir, free_port_pair(), free_tcp_port(), free_udp_port())
        handle.config = write_client_config(
            workdir,
            sip_port=handle.sip_port,
            http_port=handle.http_port,
            trunk_port=handle.trunk_port,
            app=app,
            clients=clients,
            registrar=registrar,
            storage=workdir / "var",
        )
        handle.log_path = workdir / "switch.log"
        return handle


# ---- SIPp processes ------------------------------------------------------------------


class Peer(sipp.Sipp):
    """A SIPp process with the options the registrar tests need.

    ``ip``: the local address SIPp binds and writes in Via/Contact (any 127.0.0.0/8
    address works on Linux without setup, so each can be its own "source").
    ``transport``: SIPp's ``-t`` (``u1`` or ``t1``). ``calls``/``rate``: ``-m``/``-r``.
    ``ooc``: an out-of-call scenario text for requests matching no call.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        scenario: str,
        *,
        port: int | None = None,
        ip: str = "127.0.0.1",
        transport: str = "u1",
        calls: int = 1,
        rate: float | None = None,
        ooc: str | None = None,
        auth: tuple[str, str] | None = None,
    ):
        super().__init__(workdir, name, scenario, port=port or free_port_pair(ip))
        self.ip = ip
        self.transport = transport
        self.calls = calls
        self.rate = rate
        self.ooc_file: Path | None = None
        if ooc is not None:
            self.ooc_file = workdir / f"{name}.ooc.xml"
            self.ooc_file.write_text(ooc)
        self.auth = auth

    def options(self) -> list[str]:
        args: list[str] = []
        if self.rate is not None:
            args += ["-r", str(self.rate)]
        if self.ooc_file is not None:
            args += ["-oocsf", str(self.ooc_file)]
        if self.auth is not None:
            args += ["-au", self.auth[0], "-ap", self.auth[1]]
        return args

    async def run(self, target: str, timeout: float = 30) -> SippMessages:
        """Start, wait, and insist the scenario passed; returns what the peer saw."""
        await self.start(target, timeout_s=int(timeout))
        code = await self.wait(timeout + 10)
        assert code == 0, self.failure(code)
        return self.messages()

    def failure(self, code: int) -> str:
        return (
            f"SIPp {self.name} exited {code}: {self.errors()[-2000:]}\n"
            f"{self.messages().text[-4000:]}"
        )


# ---- scenarios -----------------------------------------------------------------------


def _send(lines: Sequence[str], *, retrans: bool = True, body: str = "") -> str:
    """`sipp.send` of a message given as header lines (and a body, indented)."""
    text = "".join(f"      {line}\n" for line in lines)
    if body:
        text += "\n" + body
    return sipp.send(text, retrans=retrans)


def _register_lines(
    user: str,
    cseq: int,
    contact: str | None,
    expires: int | None,
    *,
    to_uri: str | None,
    authenticate: bool,
    auth_user: str | None,
    password: str | None,
    extra: Mapping[str, str],
) -> list[str]:
    lines = [
        "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        f"From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]",
        f"To: <{to_uri or f'sip:{user}@{DOMAIN}'}>",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    if authenticate:
        lines.append(f"[authentication username={auth_user or user} password={password}]")
    lines.append("Content-Length: 0")
    return lines


def register(
    user: str,
    *,
    password: str | None,
    contact: str | None = "<sip:{user}@[local_ip]:[local_port];transport=[transport]>",
    expires: int | None = 3600,
    expect: int = 200,
    auth_user: str | None = None,
    to_uri: str | None = None,
    extra: Mapping[str, str] | None = None,
    attempts: Sequence[tuple[str, int]] = (),
    first: int = 401,
    final_timeout_ms: int | None = None,
) -> str:
    """One registration: REGISTER, the 401, REGISTER with ``password``, ``expect``.

    ``password`` None: stop at the challenge. ``contact`` None: no Contact (a
    query); ``{user}`` in it is replaced. ``auth_user``: the digest username when
    it is not ``user``. ``attempts``: (password, expected status) pairs tried in
    order against the same challenge instead of ``password``/``expect``.
    ``first``: the status the unauthenticated REGISTER must get; anything but 401
    ends the scenario there. ``final_timeout_ms``: fail (rather than wait for
    SIPp's global timeout) when the last expected response takes longer.
    """
    if contact is not None:
        contact = contact.replace("{user}", user)

    def request(cseq: int, secret: str | None) -> str:
        return _send(
            _register_lines(
                user,
                cseq,
                contact,
                expires,
                to_uri=to_uri,
                authenticate=secret is not None,
                auth_user=auth_user,
                password=secret,
                extra=extra or {},
            )
        )

    body = request(1, None) + '  <recv response="100" optional="true"/>\n'
    if first != 401:
        body += f'  <recv response="{first}"/>\n'
        return sipp.scenario("register-refused", body)
    if password is None and not attempts:
        body += '  <recv response="401"/>\n'
        return sipp.scenario("register-challenge", body)
    body += '  <recv response="401" auth="true"/>\n'
    tries = list(attempts) or [(password or "", expect)]
    wait = f' timeout="{final_timeout_ms}"' if final_timeout_ms else ""
    for cseq, (secret, status) in enumerate(tries, start=2):
        body += request(cseq, secret) + '  <recv response="100" optional="true"/>\n'
        body += f'  <recv response="{status}"{wait if cseq == len(tries) + 1 else ""}/>\n'
    return sipp.scenario("register", body)


def registered_uas(main: str, answer: str) -> tuple[str, str]:
    """A phone in one SIPp process: ``main`` (a `register` scenario), then it stays
    until ``answer`` (a UAS scenario, run as the out-of-call scenario on the
    switch's INVITE) has finished. Returns (main, out-of-call) texts for `Peer`.

    The two share a SIPp global variable: the out-of-call scenario sets it at its
    end and the main one polls it every 50 ms, so the process exits (0) as soon as
    the call is over. SIPp's ``-timeout`` bounds the wait.
    """
    marker = '<Global variables="uas_done"/>\n'
    main = _insert_after_scenario_tag(main, marker).replace(
        "</scenario>",
        """  <label id="wait"/>
  <pause milliseconds="50"/>
  <nop next="done" test="uas_done"/>
  <nop next="wait"/>
  <label id="done"/>
</scenario>""",
    )
    answer = _insert_after_scenario_tag(answer, marker).replace(
        "</scenario>",
        '  <nop>\n    <action>\n      <assign assign_to="uas_done" value="1"/>\n'
        "    </action>\n  </nop>\n</scenario>",
    )
    return main, answer


def _insert_after_scenario_tag(text: str, insert: str) -> str:
    start = text.index("<scenario")
    end = text.index(">", start) + 1
    return text[:end] + "\n" + insert + text[end:]


def register_flood(user: str) -> str:
    """One unauthenticated REGISTER per call; a 401 or a 503 both end the call."""
    lines = _register_lines(
        user,
        1,
        "<sip:{user}@[local_ip]:[local_port]>".replace("{user}", user),
        3600,
        to_uri=None,
        authenticate=False,
        auth_user=None,
        password=None,
        extra={},
    )
    body = _send(lines, retrans=False)
    body += '  <recv response="401" optional="true" next="end"/>\n'
    body += '  <recv response="403" optional="true" next="end"/>\n'
    body += '  <recv response="503" timeout="3000" ontimeout="end"/>\n'
    body += '  <label id="end"/>\n'
    return sipp.scenario("register-flood", body)


_INVITE_SDP = """v=0
o=sipp 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
"""


def client_call(
    user: str,
    dialled: str,
    rtp_port: int,
    *,
    expect: int = 200,
    extra: Mapping[str, str] | None = None,
) -> str:
    """Client ``user`` calls ``dialled`` (a Request-URI user): INVITE, 407, INVITE with
    credentials (SIPp's -au/-ap), then ``expect``: 200 (ACK, then answer the
    switch's BYE) or a refusal (ACK)."""
    sdp = "".join(f"      {line}\n" for line in _INVITE_SDP.format(port=rtp_port).splitlines())

    def invite(cseq: int, auth: bool) -> str:
        lines = [
            f"INVITE sip:{dialled}@[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            f"From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]",
            f"To: <sip:{dialled}@{DOMAIN}>",
            "Call-ID: [call_id]",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>",
            "Max-Forwards: 70",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        if auth:
            lines.append("[authentication]")
        lines += ["Content-Type: application/sdp", "Content-Length: [len]"]
        return _send(lines, body=sdp)

    def ack(cseq: int, *, to_last: bool) -> str:
        to = "[last_To:]" if to_last else f"To: <sip:{dialled}@{DOMAIN}>"
        return _send(
            [
                f"ACK sip:{dialled}@[remote_ip]:[remote_port] SIP/2.0",
                "[last_Via:]",
                f"From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]",
                to,
                "Call-ID: [call_id]",
                f"CSeq: {cseq} ACK",
                "Max-Forwards: 70",
                "Content-Length: 0",
            ],
            retrans=False,
        )

    body = invite(1, False)
    body += '  <recv response="100" optional="true"/>\n'
    body += '  <recv response="407" auth="true"/>\n'
    body += ack(1, to_last=True)
    body += invite(2, True)
    body += '  <recv response="100" optional="true"/>\n'
    body += '  <recv response="180" optional="true"/>\n'
    body += '  <recv response="183" optional="true"/>\n'
    if expect != 200:
        body += f'  <recv response="{expect}"/>\n' + ack(2, to_last=True)
        return sipp.scenario("client-call-refused", body)
    body += '  <recv response="200" rtd="true"/>\n' + ack(2, to_last=True)
    body += sipp.answer_bye()
    return sipp.scenario("client-call", body)


def offerless_invite(user: str, dialled: str, refusals: Sequence[int]) -> str:
    """An INVITE with no SDP (a late offer, as scanners send) from ``user`` to
    ``dialled``; it must be refused with one of ``refusals``, which is ACKed."""
    invite = _send(
        [
            f"INVITE sip:{dialled}@[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            f"From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag00[call_number]",
            f"To: <sip:{dialled}@{DOMAIN}>",
            "Call-ID: [call_id]",
            "CSeq: 1 INVITE",
            f"Contact: <sip:{user}@[local_ip]:[local_port]>",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
    )
    ack = _send(
        [
            f"ACK sip:{dialled}@[remote_ip]:[remote_port] SIP/2.0",
            "[last_Via:]",
            "[last_From:]",
            "[last_To:]",
            "Call-ID: [call_id]",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ],
        retrans=False,
    )
    body = invite + '  <recv response="100" optional="true"/>\n'
    *others, last = refusals
    body += "".join(f'  <recv response="{code}" optional="true" next="ack"/>\n' for code in others)
    body += f'  <recv response="{last}" timeout="5000"/>\n'
    body += '  <label id="ack"/>\n' + ack
    return sipp.scenario("offerless-invite", body)


# ---- reading what peers saw ----------------------------------------------------------


def header_values(message: str, name: str) -> list[str]:
    """Every value of header ``name`` in one SIP message (comma lists not split)."""
    head = message.split("\n\n", 1)[0].replace("\r\n", "\n")
    pattern = re.compile(rf"^{re.escape(name)}\s*:\s*(.*)$", re.I | re.M)
    return [m.group(1).strip() for m in pattern.finditer(head)]


def contacts(message: str) -> list[str]:
    """The Contact values of a message, each comma-separated one on its own."""
    values: list[str] = []
    for value in header_values(message, "Contact") + header_values(message, "m"):
        values += [v.strip() for v in re.split(r",(?=\s*<)", value) if v.strip()]
    return values


def final_responses(messages: SippMessages) -> list[str]:
    """Every final response (>= 200) the peer received, in order."""
    return [m for m in messages.received() if re.match(r"SIP/2\.0 [2-6]\d\d ", m) is not None]


async def wait_registered(phone: Peer, timeout: float = 10) -> None:
    """Until the phone's log shows the 200 to its REGISTER."""
    await wait_until(
        phone,
        lambda seen: any(s.startswith("SIP/2.0 200") for s in seen.received_starts()),
        timeout,
    )


async def wait_until(
    phone: Peer, seen: Callable[[SippMessages], bool], timeout: float = 10
) -> None:
    """Poll the SIPp message log (its only output) until ``seen`` holds; fail if
    SIPp exits or ``timeout`` passes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not seen(phone.messages()):
        assert phone.process is not None
        if phone.process.returncode is not None:
            raise AssertionError(phone.failure(phone.process.returncode))
        if loop.time() > deadline:
            raise AssertionError(
                f"{phone.name}: not seen in time:\n{phone.messages().text[-3000:]}"
            )
        await asyncio.sleep(0.05)
