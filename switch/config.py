"""The dialswitch configuration file: TOML read into frozen dataclasses.

`load_config` validates the whole file and reports every problem it finds at once,
each named by its key (``trunks[0].uri``, array indices counting from 0), so that an
operator fixes a broken file in one pass. `check_config` adds the checks that depend
on the machine rather than the file: can each listen address be bound right now, can
the storage directory be created and written.

`config/dialswitch.toml` in the repository is the default configuration and the
commented reference for every key.

Relative paths (``storage.path``) resolve against the current working directory when
the file is loaded, like the paths a shell command is given; run from the repository
root the default file therefore keeps its SQLite database and recordings under
``var/``. A service manager should set the working directory or use absolute paths.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import re
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias, TypeVar

from switch.call.capacity import DEFAULT_MAX_CALLS, ENGINE_SLOTS, MAX_LEGS
from switch.config_clients import ClientConfig, RegistrarConfig, build_clients, build_registrar
from switch.config_tls import TlsConfig, build_tls, srtp_mode
from switch.config_webrtc import WebRtcConfig, build_webrtc

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "dialswitch.toml"
"""The default configuration file of a repository checkout."""

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
ENGINE_TRANSPORTS = ("udp", "tcp", "tls")
WEBSOCKET_TRANSPORTS = ("ws", "wss")
"""SIP over WebSocket (RFC 7118) for browsers: served by switch/sipws, not the engine."""
METHODS = ("GET", "POST")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?$")
_TRUNK_URI = re.compile(
    r"^(?P<scheme>sips?):(?P<hostport>\[[^\]]*\](?::[^;]*)?|[^:;\[\]]+(?::[^;]*)?)"
    r"(?:;transport=(?P<transport>[A-Za-z]+))?$"
)
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
_TRUNK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PREFIX = re.compile(r"^\+[0-9]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_DEMO_URL = re.compile(r"^demo:[A-Za-z0-9_./-]*$")
_RTP_PORTS = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class Problem(NamedTuple):
    """One thing wrong with a configuration: the dotted key and what is wrong."""

    key: str
    message: str


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(format_problems(problems))
        self.problems = problems


def format_problems(problems: Iterable[Problem]) -> str:
    """One ``key: message`` line per problem."""
    return "\n".join(f"{p.key}: {p.message}" for p in problems)


# --- the configuration -------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    """A SIP listening address, written ``transport:host:port`` (IPv6 host bracketed)."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        transport, sep, rest = text.partition(":")
        if not sep:
            raise ValueError("expected transport:host:port, e.g. udp:127.0.0.1:5060")
        transport = transport.lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (expected udp, tcp, tls, ws or wss)")
        host, port = _parse_hostport(rest, port_required=True)
        assert port is not None
        return cls(transport, host, port)

    def __str__(self) -> str:
        return f"{self.transport}:{_join_hostport(self.host, self.port)}"


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[Listen, ...]
    public_host: str
    """Host put in Contact and Via and in SDP; defaults to the first listener's host."""
    rtp_ports: range
    """Even-numbered RTP ports come from here, RTCP takes the odd port above each."""
    domain: str
    """The SIP realm of digest challenges; defaults to `public_host`."""
    user_agent: str
    tls: TlsConfig = TlsConfig()
    srtp: str = "optional"
    """SRTP of inbound calls from numbers, and of trunks and clients that set none."""
    ws_per_source: int = 100
    """WebSocket connections one source address may hold at once."""

    @property
    def engine_listen(self) -> tuple[Listen, ...]:
        """The listeners the SIP engine binds (udp, tcp, tls)."""
        return tuple(x for x in self.listen if x.transport in ENGINE_TRANSPORTS)

    @property
    def websocket_listen(self) -> tuple[Listen, ...]:
        """The ws/wss listeners, served by switch/sipws."""
        return tuple(x for x in self.listen if x.transport in WEBSOCKET_TRANSPORTS)


@dataclass(frozen=True)
class HttpConfig:
    host: str
    port: int
    public_url: str
    """Base URL of this switch as webhooks see it (RecordingUrl); no trailing slash."""


@dataclass(frozen=True)
class AccountConfig:
    sid: str
    auth_token: str = field(repr=False)


@dataclass(frozen=True)
class Trunk:
    """A SIP carrier that outbound calls are sent to."""

    name: str
    uri: str
    host: str
    port: int | None
    """None: the transport's default port (RFC 3263 section 4.2)."""
    transport: str | None
    """None when the URI names none: the SIP layer chooses (RFC 3263 section 4.1)."""
    prefixes: tuple[str, ...]
    username: str | None
    password: str | None = field(repr=False)
    scheme: str = "sip"
    """``sips`` for a trunk that must be reached over TLS end to end."""
    srtp: str = "optional"

    @property
    def hostport(self) -> str:
        """Host and port as written in a SIP URI: an IPv6 host in brackets (RFC 3261 25.1)."""
        return _join_hostport(self.host, self.port)


@dataclass(frozen=True)
class NumberConfig:
    """A DID of ours and the application its inbound calls run (Twilio's IncomingPhoneNumber)."""

    number: str
    voice_url: str
    voice_method: str
    voice_fallback_url: str | None
    voice_fallback_method: str
    status_callback: str | None
    status_callback_method: str


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    """Absolute: relative paths were resolved against the working directory at load."""


@dataclass(frozen=True)
class DialConfig:
    timeout_grace: int
    """Seconds added to a <Dial timeout>, as Twilio does (about 5 s)."""
    default_ringtone: str
    """Ringback country code (media/ringback.tsv) when no ringTone and no early media."""
    max_calls: int
    """Admission limit on concurrent calls; a new INVITE above it is answered 503."""


@dataclass(frozen=True)
class LimitsConfig:
    """Per-source limits on out-of-dialog INVITEs and OPTIONS (switch/floods.py)."""

    invite_rate: float = 100.0
    invite_burst: float = 200.0
    options_rate: float = 50.0
    options_burst: float = 100.0
    trusted: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiConfig:
    calls_per_second: float
    """Calls the REST API starts per second; the excess waits as ``queued`` (Twilio's CPS)."""


@dataclass(frozen=True)
class WebhookConfig:
    connect_timeout: float
    total_timeout: float
    connect_retries: int
    max_body: int
    callback_retry_interval: float = 5.0
    """Seconds before a failed status callback's first retry; doubled after each."""
    callback_retry_max_interval: float = 300.0
    callback_give_up_after: float = 3600.0
    """Seconds after it was queued that a failing status callback is given up (11200)."""
    callback_max_pending: int = 100_000
    """Undelivered status callbacks kept at most; a new one past it is refused (11200)."""


@dataclass(frozen=True)
class LogConfig:
    level: str
    format: str


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: a listener of its own for ``GET /metrics`` (switch/metrics.py)."""

    host: str = ""
    port: int = 0
    """0: none; /metrics is then served on the API's port only, behind its Basic auth."""


@dataclass(frozen=True)
class MediaConfig:
    rtp_timeout: float = 60.0
    """Seconds an answered leg may receive no RTP (unless held) before it is hung up;
    0: never."""
    relay: bool = True
    """Bridged legs with the same codec, that no third leg hears and nothing plays to,
    exchange RTP packet by packet instead of through the conference bridge (recorded
    legs also decode for their recorders)."""
    threads: int = 1
    """Threads that receive (and relay) RTP."""


@dataclass(frozen=True)
class Config:
    sip: SipConfig
    http: HttpConfig
    account: AccountConfig
    trunks: tuple[Trunk, ...]
    """The first trunk is the default route."""
    numbers: tuple[NumberConfig, ...]
    storage: StorageConfig
    dial: DialConfig
    webhooks: WebhookConfig
    log: LogConfig
    registrar: RegistrarConfig = RegistrarConfig()
    clients: tuple[ClientConfig, ...] = ()
    api: ApiConfig = ApiConfig(10.0)
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig = MetricsConfig()
    media: MediaConfig = MediaConfig()
    webrtc: WebRtcConfig = WebRtcConfig()

    def client(self, identity: str) -> ClientConfig | None:
        """A registered client's configuration, or None for an unknown identity."""
        return next((c for c in self.clients if c.identity == identity), None)

    def number(self, e164: str) -> NumberConfig | None:
        """The configuration of one of our numbers, or None when it is not ours."""
        return next((n for n in self.numbers if n.number == e164), None)


# --- loading -----------------------------------------------------------------------


def load_config(path: Path) -> Config:
    """Read and validate a configuration file; raise `ConfigError` with every problem."""
    config, problems = _read(path)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def check_config(path: Path) -> list[Problem]:
    """Every problem of `load_config`, plus those of binding and storage.

    The environment is checked for whatever parsed, even when other keys are
    wrong, so one run reports everything (a port in use included).
    """
    config, problems = _read(path)
    if config is None:
        return problems
    for i, listen in enumerate(config.sip.listen):
        message = _try_bind(listen.transport, listen.host, listen.port)
        if message:
            problems.append(Problem(f"sip.listen[{i}]", message))
    if config.http.port:
        message = _try_bind("tcp", config.http.host, config.http.port)
        if message:
            problems.append(Problem("http.listen", message))
    if config.metrics.port:
        message = _try_bind("tcp", config.metrics.host, config.metrics.port)
        if message:
            problems.append(Problem("metrics.listen", message))
    message = _check_writable_dir(config.storage.path)
    if message:
        problems.append(Problem("storage.path", message))
    return problems


def _read(path: Path) -> tuple[Config | None, list[Problem]]:
    """The config as far as it parses (placeholders where keys are wrong) and its problems.

    None when the file cannot be read as TOML at all.
    """
    problems: list[Problem] = []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        return None, [Problem(str(path), f"cannot read: {e.strerror or e}")]
    except UnicodeDecodeError:
        return None, [Problem(str(path), "not UTF-8 text")]
    except tomllib.TOMLDecodeError as e:
        return None, [Problem(str(path), f"not valid TOML: {e}")]
    return _build(_Table(data, "", problems)), problems


_T = TypeVar("_T")
_Kind: TypeAlias = type | tuple[type, ...]
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    for kind, name in _TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return type(value).__name__


class _Table:
    """A TOML table being read: typed getters that record problems instead of raising.

    On a problem a getter returns its default (or a placeholder) so reading goes on and
    later problems are found too; `load_config` raises before any placeholder escapes.
    """

    def __init__(self, data: dict[str, Any], prefix: str, problems: list[Problem]) -> None:
        self.data = data
        self.prefix = prefix
        self.problems = problems
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.key(name), message))

    def _get(self, name: str, kind: _Kind, what: str, required: bool) -> Any:
        """The value if present and of `kind`; None (after a problem) otherwise."""
        self._read.add(name)
        if name not in self.data:
            if required:
                self.problem(name, "required")
            return None
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.problem(name, f"expected {what}, got {_type_name(value)}")
            return None
        return value

    def string(self, name: str, default: str | None = None) -> str | None:
        """A string; None if absent (with `default` None) or wrong."""
        value = self._get(name, str, "a string", required=False)
        if value is None:
            return default if name not in self.data else None
        return str(value)

    def required_string(self, name: str) -> str | None:
        value = self._get(name, str, "a string", required=True)
        if value == "":
            self.problem(name, "must not be empty")
            return None
        return value if value is None else str(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._get(name, int, "an integer", required=False)
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(name, f"must be between {low} and {high}")
            return default
        return int(value)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._get(name, (int, float), "a number", required=False)
        if value is None:
            return default
        if not low < value <= high:
            self.problem(name, f"must be above {low:g} and at most {high:g}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, bool, "true or false", required=False)
        return default if value is None else bool(value)

    def choice(self, name: str, default: str, choices: Iterable[str], fold: str) -> str:
        """A string from `choices` after case folding (`fold` is "lower" or "upper")."""
        value = self.string(name, default)
        if value is None:
            return default
        folded = value.lower() if fold == "lower" else value.upper()
        options = tuple(choices)
        if folded not in options:
            self.problem(name, f"expected one of {', '.join(options)}, got {value!r}")
            return default
        return folded

    def strings(self, name: str, required: bool) -> list[tuple[str, str]] | None:
        """An array of strings as (key, value) pairs; wrong items are problems."""
        value = self._get(name, list, "an array of strings", required)
        if value is None:
            return None
        items = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                items.append((f"{self.key(name)}[{i}]", item))
            else:
                self.problems.append(
                    Problem(f"{self.key(name)}[{i}]", f"expected a string, got {_type_name(item)}")
                )
        return items

    def string_or_strings(self, name: str) -> tuple[str, ...] | None:
        """A required string or non-empty array of strings (as RTCConfiguration's
        ``urls``); None after a problem."""
        value = self._get(name, (str, list), "a string or an array of strings", True)
        if isinstance(value, str):
            return (value,)
        if value and all(isinstance(item, str) for item in value):
            return tuple(value)
        if value is not None:
            self.problem(name, "expected a string or a non-empty array of strings")
        return None

    def table(self, name: str) -> _Table:
        """A sub-table; an absent one reads as empty so its required keys are reported."""
        value = self._get(name, dict, "a table", required=False)
        return _Table(value if value is not None else {}, self.key(name), self.problems)

    def tables(self, name: str) -> list[_Table]:
        """An array of tables (``[[name]]``)."""
        value = self._get(name, list, "an array of tables", required=False)
        result = []
        for i, item in enumerate(value or []):
            key = f"{self.key(name)}[{i}]"
            if isinstance(item, dict):
                result.append(_Table(item, key, self.problems))
            else:
                self.problems.append(Problem(key, f"expected a table, got {_type_name(item)}"))
        return result

    def finish(self) -> None:
        """Report every key that no getter asked for."""
        for name in self.data:
            if name not in self._read:
                self.problem(name, "unknown key")


def _checked(table: _Table, name: str, value: str | None, check: Callable[[str], _T]) -> _T | None:
    """`check(value)`, turning its ValueError into a problem at `name`."""
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as e:
        table.problem(name, str(e))
        return None


def _build(root: _Table) -> Config:
    sip = _build_sip(root.table("sip"))
    http = _build_http(root.table("http"))
    account = _build_account(root.table("account"))
    trunks = _build_trunks(root, sip)
    numbers = _build_numbers(root)
    storage = _build_storage(root.table("storage"))
    dial = _build_dial(root.table("dial"))
    webhooks = _build_webhooks(root.table("webhooks"))
    log = _build_log(root.table("log"))
    registrar = build_registrar(root.table("registrar"))
    clients = build_clients(
        root.tables("clients"), METHODS, _parse_voice_url, _checked, srtp=sip.srtp
    )
    for i, client in enumerate(clients):
        offered = set(registrar.digest_algorithms)
        if client.digest_algorithms is not None and not set(client.digest_algorithms) <= offered:
            root.problems.append(
                Problem(
                    f"clients[{i}].digest_algorithms",
                    f"must be among the [registrar] digest_algorithms {sorted(offered)}",
                )
            )
    _check_rtp_room(root, sip, dial)
    api = _build_api(root.table("api"))
    limits = _build_limits(root.table("limits"))
    metrics = _build_metrics(root.table("metrics"), sip, http)
    media_table = root.table("media")
    media = MediaConfig(
        media_table.integer("rtp_timeout", 60, 0, 3600),
        media_table.boolean("relay", True),
        media_table.integer("threads", 1, 1, 16),
    )
    media_table.finish()
    webrtc = build_webrtc(root.table("webrtc"))
    root.finish()
    return Config(
        sip,
        http,
        account,
        trunks,
        numbers,
        storage,
        dial,
        webhooks,
        log,
        registrar,
        clients,
        api,
        limits,
        metrics=metrics,
        media=media,
        webrtc=webrtc,
    )


def _check_rtp_room(root: _Table, sip: SipConfig, dial: DialConfig) -> None:
    """Each leg takes an RTP/RTCP pair: the range must hold ``max_calls`` of them.

    Not when either key is already wrong: its placeholder would be blamed."""
    if any(p.key in ("sip.rtp_ports", "dial.max_calls") for p in root.problems):
        return
    pairs = len(sip.rtp_ports) // 2
    if pairs < dial.max_calls:
        low = sip.rtp_ports.start
        root.problems.append(
            Problem(
                "sip.rtp_ports",
                f"room for {pairs} call legs, but [dial] max_calls is {dial.max_calls}: it"
                f" needs {2 * dial.max_calls} ports, e.g."
                f' "{low}-{low + 2 * dial.max_calls - 1}"',
            )
        )


def _build_limits(t: _Table) -> LimitsConfig:
    default = LimitsConfig()
    invite_rate = t.number("invite_rate", default.invite_rate, 0.1, 100_000)
    invite_burst = t.number("invite_burst", max(default.invite_burst, invite_rate), 1, 1_000_000)
    options_rate = t.number("options_rate", default.options_rate, 0.1, 100_000)
    options_burst = t.number(
        "options_burst", max(default.options_burst, options_rate), 1, 1_000_000
    )
    trusted: list[str] = []
    for key, text in t.strings("trusted", required=False) or []:
        try:
            trusted.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            t.problems.append(Problem(key, f"{text!r} is not an IP address or network"))
    t.finish()
    return LimitsConfig(invite_rate, invite_burst, options_rate, options_burst, tuple(trusted))


def _build_api(t: _Table) -> ApiConfig:
    rate = t.number("calls_per_second", 10.0, 0.1, 10_000)
    t.finish()
    return ApiConfig(rate)


def _build_sip(t: _Table) -> SipConfig:
    listens: list[Listen] = []
    items = t.strings("listen", required=True)
    if items == []:
        t.problem("listen", "must name at least one address")
    tcp_ports: dict[tuple[str, int], str] = {}
    for key, text in items or []:
        try:
            listen = Listen.parse(text)
        except ValueError as e:
            t.problems.append(Problem(key, str(e)))
            continue
        if listen in listens:
            t.problems.append(Problem(key, f"{listen} is listed twice"))
            continue
        if listen.transport != "udp":
            # TCP, TLS and WebSocket listeners are all TCP sockets: no two share a port.
            other = tcp_ports.setdefault((listen.host, listen.port), key)
            if other != key:
                t.problems.append(Problem(key, f"shares its TCP port with {other}"))
                continue
        listens.append(listen)

    public_host = _checked(t, "public_host", t.string("public_host"), _parse_host)
    if public_host is None and "public_host" not in t.data and listens:
        if _is_wildcard(listens[0].host):
            t.problem("public_host", "required when the first listener is a wildcard address")
        public_host = listens[0].host
    domain = _checked(t, "domain", t.string("domain"), _parse_host)
    rtp_ports = _checked(t, "rtp_ports", t.string("rtp_ports", "20000-29999"), _parse_rtp_ports)
    user_agent = t.string("user_agent", "dialswitch")
    if user_agent == "":
        t.problem("user_agent", "must not be empty")
    if listens and all(listen.transport in WEBSOCKET_TRANSPORTS for listen in listens):
        t.problem("listen", "needs a udp, tcp or tls listener besides ws/wss")
    tls = build_tls(t, needed=any(listen.transport in ("tls", "wss") for listen in listens))
    srtp = srtp_mode(t, "optional")
    ws_per_source = t.integer("ws_per_source", 100, 1, 100_000)
    t.finish()
    return SipConfig(
        listen=tuple(listens),
        public_host=public_host or "",
        rtp_ports=rtp_ports or range(20000, 30000),
        domain=domain or public_host or "",
        user_agent=user_agent or "dialswitch",
        tls=tls,
        srtp=srtp,
        ws_per_source=ws_per_source,
    )


def _build_http(t: _Table) -> HttpConfig:
    listen = _checked(
        t, "listen", t.required_string("listen"), lambda s: _parse_hostport(s, port_required=True)
    )
    host, port = listen if listen else ("", 0)
    public_url = _checked(t, "public_url", t.string("public_url"), _parse_http_url)
    if public_url is None and "public_url" not in t.data and listen:
        if _is_wildcard(host):
            t.problem("public_url", "required when http.listen is a wildcard address")
        public_url = f"http://{_join_hostport(host, port)}"
    t.finish()
    return HttpConfig(host, port or 0, (public_url or "").rstrip("/"))


def _build_account(t: _Table) -> AccountConfig:
    sid = t.required_string("sid")
    if sid is not None and not _ACCOUNT_SID.match(sid):
        t.problem("sid", "expected AC followed by 32 lowercase hex digits")
    token = t.required_string("auth_token")
    if token is not None and len(token) < 32:
        t.problem("auth_token", "must be at least 32 characters")
    t.finish()
    return AccountConfig(sid or "", token or "")


def _build_trunks(root: _Table, sip: SipConfig) -> tuple[Trunk, ...]:
    trunks: list[Trunk] = []
    names: dict[str, str] = {}
    prefix_owner: dict[str, str] = {}
    for t in root.tables("trunks"):
        name = t.required_string("name")
        if name is not None:
            if not _TRUNK_NAME.match(name):
                t.problem("name", "use letters, digits, '_', '.' and '-' only")
            elif name in names:
                t.problem("name", f"duplicate trunk name (also {names[name]})")
            else:
                names[name] = t.key("name")
        uri = t.required_string("uri")
        target = _checked(t, "uri", uri, _parse_trunk_uri)
        prefixes: list[str] = []
        for key, prefix in t.strings("prefixes", required=False) or []:
            if not _PREFIX.match(prefix):
                t.problems.append(Problem(key, "expected '+' followed by digits"))
            elif prefix in prefix_owner:
                t.problems.append(Problem(key, f"prefix already belongs to {prefix_owner[prefix]}"))
            else:
                prefix_owner[prefix] = t.prefix
                prefixes.append(prefix)
        username = t.string("username")
        password = t.string("password")
        if "username" in t.data and "password" not in t.data:
            t.problem("password", "required when username is set")
        if "password" in t.data and "username" not in t.data:
            t.problem("username", "required when password is set")
        srtp = srtp_mode(t, sip.srtp)
        t.finish()
        scheme, host, port, transport = target or ("sip", "", None, None)
        if transport == "tls" and not any(x.transport == "tls" for x in sip.listen):
            t.problem("uri", "TLS needs a tls: listener in sip.listen (its settings are used)")
        trunks.append(
            Trunk(
                name or "",
                uri or "",
                host,
                port,
                transport,
                tuple(prefixes),
                username,
                password,
                scheme=scheme,
                srtp=srtp,
            )
        )
    return tuple(trunks)


def _build_numbers(root: _Table) -> tuple[NumberConfig, ...]:
    numbers: list[NumberConfig] = []
    seen: dict[str, str] = {}
    for t in root.tables("numbers"):
        number = _checked(t, "number", t.required_string("number"), _normalise_number)
        if number is not None:
            if number in seen:
                t.problem("number", f"duplicate number {number} (also {seen[number]})")
            else:
                seen[number] = t.key("number")
        voice_url = _checked(t, "voice_url", t.required_string("voice_url"), _parse_voice_url)
        voice_method = t.choice("voice_method", "POST", METHODS, "upper")
        fallback = _checked(
            t, "voice_fallback_url", t.string("voice_fallback_url"), _parse_http_url
        )
        fallback_method = t.choice("voice_fallback_method", "POST", METHODS, "upper")
        status_callback = _checked(
            t, "status_callback", t.string("status_callback"), _parse_http_url
        )
        status_method = t.choice("status_callback_method", "POST", METHODS, "upper")
        t.finish()
        numbers.append(
            NumberConfig(
                number=number or "",
                voice_url=voice_url or "",
                voice_method=voice_method,
                voice_fallback_url=fallback,
                voice_fallback_method=fallback_method,
                status_callback=status_callback,
                status_callback_method=status_method,
            )
        )
    return tuple(numbers)


def _build_storage(t: _Table) -> StorageConfig:
    text = t.string("path", "var")
    if text == "":
        t.problem("path", "must not be empty")
        text = None
    t.finish()
    return StorageConfig(Path.cwd() / Path(text or "var").expanduser())


def _build_dial(t: _Table) -> DialConfig:
    grace = t.integer("timeout_grace", 5, 0, 60)
    ringtone = (t.string("default_ringtone", "us") or "us").lower()
    if ringtone not in ringtone_codes():
        t.problem("default_ringtone", f"unknown ringtone {ringtone!r} (see media/ringback.tsv)")
    # 2 at least: a new call is let in with room for its leg and its <Dial>'s.
    max_calls = t.integer("max_calls", DEFAULT_MAX_CALLS, 2, 1_000_000)
    if max_calls > MAX_LEGS:
        t.problem(
            "max_calls",
            f"this build has {ENGINE_SLOTS} call slots, of which {MAX_LEGS} can be"
            f" admitted (the rest are for legs being torn down): at most {MAX_LEGS}",
        )
        max_calls = MAX_LEGS
    t.finish()
    return DialConfig(grace, ringtone, max_calls)


def _build_webhooks(t: _Table) -> WebhookConfig:
    connect = t.number("connect_timeout", 5.0, 0, 300)
    total = t.number("total_timeout", 15.0, 0, 3600)
    if total < connect:
        t.problem("total_timeout", "must not be shorter than connect_timeout")
    retries = t.integer("connect_retries", 1, 0, 10)
    max_body = t.integer("max_body", 65536, 1, 64 * 1024 * 1024)
    interval = t.number("callback_retry_interval", 5.0, 0, 3600)
    max_interval = t.number("callback_retry_max_interval", 300.0, 0, 86400)
    if max_interval < interval:
        t.problem("callback_retry_max_interval", "must not be shorter than callback_retry_interval")
        max_interval = interval
    give_up = t.number("callback_give_up_after", 3600.0, 0, 7 * 86400)
    max_pending = t.integer("callback_max_pending", 100_000, 1, 10_000_000)
    t.finish()
    return WebhookConfig(
        connect, total, retries, max_body, interval, max_interval, give_up, max_pending
    )


def _build_log(t: _Table) -> LogConfig:
    level = t.choice("level", "info", LOG_LEVELS, "lower")
    fmt = t.choice("format", "text", LOG_FORMATS, "lower")
    t.finish()
    return LogConfig(level, fmt)


def _build_metrics(t: _Table, sip: SipConfig, http: HttpConfig) -> MetricsConfig:
    """``listen``, when set, must not take a TCP port the HTTP server or a TCP or TLS
    SIP listener binds (a wildcard address overlaps every address)."""
    listen = _checked(
        t, "listen", t.string("listen"), lambda s: _parse_hostport(s, port_required=True)
    )
    t.finish()
    host, port = listen or ("", None)
    if port is None:
        return MetricsConfig()
    taken = [("http.listen", http.host, http.port)]
    taken += [(f"sip.listen {x}", x.host, x.port) for x in sip.listen if x.transport != "udp"]
    for key, other_host, other_port in taken:
        overlap = host == other_host or _is_wildcard(host) or _is_wildcard(other_host)
        if port == other_port and overlap:
            t.problem("listen", f"{_join_hostport(host, port)} clashes with {key}")
            return MetricsConfig()
    return MetricsConfig(host, port)


# --- value parsers: raise ValueError with the message shown to the operator ----------


def _parse_host(text: str) -> str:
    """A hostname or IP address; brackets around an IPv6 address are optional here."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise ValueError(f"bad IPv6 address {text!r}") from None
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            raise ValueError(f"bad host {text!r}") from None
    if text.replace(".", "").isdigit():
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"bad IPv4 address {text!r}") from None
    if not _HOSTNAME.match(text):
        raise ValueError(f"bad host {text!r}")
    return text.lower()


def _parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port {text!r} (expected 1-65535)")
    return int(text)


def _parse_hostport(text: str, port_required: bool) -> tuple[str, int | None]:
    """``host:port`` with an IPv6 host in brackets (RFC 3986 section 3.2.2)."""
    match = _HOSTPORT.match(text)
    if not match:
        if text.count(":") > 1 and "[" not in text:
            raise ValueError(f"IPv6 address needs brackets: {text!r}")
        raise ValueError(f"expected host:port, got {text!r}")
    host_text, port_text = match["host"], match["port"]
    if not host_text:
        raise ValueError(f"expected host:port, got {text!r}")
    host = _parse_host(host_text)
    if port_text is None:
        if port_required:
            raise ValueError(f"missing port in {text!r}")
        return host, None
    return host, _parse_port(port_text)


def _join_hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def _parse_rtp_ports(text: str) -> range:
    """``low-high``, both inclusive; RTP takes even ports (RFC 3550 section 11)."""
    match = _RTP_PORTS.match(text)
    if not match:
        raise ValueError(f"expected low-high, e.g. 20000-29999, got {text!r}")
    low, high = int(match[1]), int(match[2])
    if not 1024 <= low < high <= 65535:
        raise ValueError("expected 1024 <= low < high <= 65535")
    if low % 2:
        raise ValueError("the range must start on an even port")
    return range(low, high + 1)


def _parse_trunk_uri(text: str) -> tuple[str, str, int | None, str | None]:
    """(scheme, host, port, transport); ``sips:`` means TLS (RFC 3261 section 26.2)."""
    match = _TRUNK_URI.match(text)
    if not match:
        raise ValueError("expected sip:host[:port][;transport=udp|tcp|tls] or sips:host[:port]")
    host, port = _parse_hostport(match["hostport"], port_required=False)
    scheme = match["scheme"]
    transport = match["transport"]
    if transport is not None:
        transport = transport.lower()
        if transport not in ENGINE_TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r} (expected udp, tcp or tls)")
    if scheme == "sips":
        if transport not in (None, "tls"):
            raise ValueError("a sips: URI is reached over TLS only")
        transport = "tls"
    return scheme, host, port, transport


def _parse_http_url(text: str) -> str:
    """An absolute http or https URL with a host, else the error Twilio calls a bad URL."""
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad URL {text!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"bad URL {text!r} (expected http:// or https:// and a host)")
    return text


def _parse_voice_url(text: str) -> str:
    """An http(s) URL, or ``demo:`` for the built-in demo application."""
    if text.lower().startswith("demo:"):
        if not _DEMO_URL.match(text):
            raise ValueError(f"bad URL {text!r}")
        return text
    return _parse_http_url(text)


def _normalise_number(text: str) -> str:
    """E.164 form of one of our numbers (Twilio accepts unformatted US numbers too)."""
    try:
        from switch.numbers import InvalidNumber, to_e164
    except ImportError:
        if not _E164.match(text):
            raise ValueError(f"not an E.164 number: {text!r}") from None
        return text
    try:
        return to_e164(text)
    except InvalidNumber as e:
        raise ValueError(str(e)) from None


@functools.cache
def ringtone_codes() -> tuple[str, ...]:
    """The country codes of media/ringback.tsv that <Dial ringTone> accepts."""
    text = resources.files("media").joinpath("ringback.tsv").read_text(encoding="utf-8")
    codes = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        code = line.split("\t", 1)[0].strip()
        if code != "code":
            codes.append(code)
    return tuple(codes)


# --- environment checks ------------------------------------------------------------


def _try_bind(transport: str, host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound for `transport` now, or None if it can.

    TCP sockets are probed with SO_REUSEADDR, as the server itself binds them, so a
    port held only by connections in TIME_WAIT is not reported; UDP is probed without
    it, since on UDP it would let two servers share the port.
    """
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    where = f"{transport} {_join_hostport(host, port)}"
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    family, socktype, proto, _, address = infos[0]
    try:
        with socket.socket(family, socktype, proto) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"cannot bind {where}: port in use"
        if e.errno == errno.EACCES:
            return f"cannot bind {where}: permission denied"
        if e.errno == errno.EADDRNOTAVAIL:
            return f"cannot bind {where}: address not available on this host"
        return f"cannot bind {where}: {e.strerror or e}"
    return None


def _check_writable_dir(path: Path) -> str | None:
    """Why `path` cannot be used as a writable directory, or None; creates nothing."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "write to" if existing == path else "create directories in"
        return f"cannot {verb} {existing}: permission denied"
    return None
