import socket
import sys
from pathlib import Path

import pytest

from switch.config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    Listen,
    Problem,
    check_config,
    format_problems,
    load_config,
    ringtone_codes,
)
from switch.routing import select_trunk
from tests.support.certs import TestCa

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "t" * 32

SIP = 'listen = ["udp:127.0.0.1:5060"]'
HTTP = 'listen = "127.0.0.1:8080"'
ACCOUNT = f'sid = "{SID}"\nauth_token = "{TOKEN}"'


def text(
    sip: str = SIP, http: str = HTTP, account: str = ACCOUNT, extra: str = "", top: str = ""
) -> str:
    """A configuration file; `top` holds root keys, `extra` tables after [account]."""
    return f"{top}\n[sip]\n{sip}\n[http]\n{http}\n[account]\n{account}\n{extra}\n"


def tls_keys(tmp_path: Path) -> str:
    """``[sip]`` lines naming a certificate and key a test CA made."""
    issued = TestCa(tmp_path / "ca").issue("switch")
    return f'tls_certificate = "{issued.certificate}"\ntls_private_key = "{issued.private_key}"\n'


def load(tmp_path: Path, content: str) -> Config:
    path = tmp_path / "dialswitch.toml"
    path.write_text(content)
    return load_config(path)


def problems(tmp_path: Path, content: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, content)
    assert str(info.value) == format_problems(info.value.problems)
    return info.value.problems


def only_problem(tmp_path: Path, content: str) -> Problem:
    found = problems(tmp_path, content)
    assert len(found) == 1, found
    return found[0]


# --- the default file and defaults ---------------------------------------------------


def test_default_file_loads_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DEFAULT_PATH.parent.parent)
    config = load_config(DEFAULT_PATH)
    assert config.sip.listen == (
        Listen("udp", "127.0.0.1", 5060),
        Listen("tcp", "127.0.0.1", 5060),
        Listen("ws", "127.0.0.1", 5066),  # the browser phone's (GET /phone)
    )
    # The demo platform: two clients whose own calls run the demo app.
    assert [(c.identity, c.voice_url) for c in config.clients] == [
        ("alice", "demo:"),
        ("bob", "demo:"),
    ]
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.http.public_url == "http://127.0.0.1:8080"
    assert config.account.sid == SID
    assert config.trunks[0].name == "carrier"
    assert (config.trunks[0].host, config.trunks[0].port) == ("127.0.0.1", 5080)
    assert config.numbers[0].number == "+15005550100"
    assert config.numbers[0].voice_url == "demo:"
    assert config.storage.path == DEFAULT_PATH.parent.parent / "var"


def test_defaults_of_a_minimal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(tmp_path, text())
    assert config.sip.public_host == "127.0.0.1"
    assert config.sip.domain == "127.0.0.1"
    assert config.sip.rtp_ports == range(20000, 30000)
    assert config.sip.user_agent == "dialswitch"
    assert config.trunks == ()
    assert config.numbers == ()
    assert config.storage.path == tmp_path / "var"
    assert (config.dial.timeout_grace, config.dial.default_ringtone) == (5, "us")
    assert config.dial.max_calls == 2000
    assert config.webhooks.connect_timeout == 5.0
    assert config.webhooks.total_timeout == 15.0
    assert config.webhooks.connect_retries == 1
    assert config.webhooks.max_body == 65536
    assert (config.log.level, config.log.format) == ("info", "text")
    assert config.media.rtp_timeout == 60


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    trunk = '[[trunks]]\nname = "a"\nuri = "sip:a.example"\nusername = "u"\npassword = "hunter2"'
    config = load(tmp_path, text(extra=trunk))
    assert TOKEN not in repr(config)
    assert "hunter2" not in repr(config)


def test_full_values(tmp_path: Path) -> None:
    sip = """listen = ["udp:[::1]:5060", "TLS:sip.example.com:5061"]
public_host = "sip.example.com"
rtp_ports = "30000-30099"
domain = "example.com"
user_agent = "ds/1"
""" + tls_keys(tmp_path)
    extra = """
[storage]
path = "/srv/dialswitch"
[dial]
timeout_grace = 0
default_ringtone = "UK"
max_calls = 10
[webhooks]
connect_timeout = 2
total_timeout = 4.5
connect_retries = 0
max_body = 1024
[log]
level = "DEBUG"
format = "json"
[[numbers]]
number = "+14155551212"
voice_url = "https://app.example.com/voice"
voice_method = "get"
voice_fallback_url = "http://app.example.com/fallback"
voice_fallback_method = "GET"
status_callback = "https://app.example.com/status"
status_callback_method = "GET"
"""
    http = 'listen = "0.0.0.0:80"\npublic_url = "https://voice.example.com/"'
    config = load(tmp_path, text(sip=sip, http=http, extra=extra))
    assert config.sip.listen == (
        Listen("udp", "::1", 5060),
        Listen("tls", "sip.example.com", 5061),
    )
    assert config.sip.rtp_ports == range(30000, 30100)
    assert config.sip.domain == "example.com"
    assert config.sip.user_agent == "ds/1"
    assert config.http.public_url == "https://voice.example.com"
    assert config.storage.path == Path("/srv/dialswitch")
    assert config.dial.default_ringtone == "uk"
    assert config.webhooks.connect_timeout == 2.0
    assert (config.log.level, config.log.format) == ("debug", "json")
    number = config.numbers[0]
    assert (number.voice_method, number.voice_fallback_method) == ("GET", "GET")
    assert number.voice_fallback_url == "http://app.example.com/fallback"
    assert number.status_callback == "https://app.example.com/status"
    assert number.status_callback_method == "GET"


def test_listen_round_trip() -> None:
    for form in ("udp:127.0.0.1:5060", "tcp:[::1]:5080", "tls:sip.example.com:5061"):
        assert str(Listen.parse(form)) == form


def test_ringtone_codes_come_from_the_table() -> None:
    codes = ringtone_codes()
    assert "us" in codes and "uk" in codes and "code" not in codes
    assert len(codes) == 40


# --- trunks and numbers -------------------------------------------------------------

TRUNKS = """
[[trunks]]
name = "default"
uri = "sip:carrier.example"
[[trunks]]
name = "uk"
uri = "sip:[2001:db8::1]:5070;transport=TCP"
prefixes = ["+44", "+441"]
username = "me"
password = "secret"
[[trunks]]
name = "london"
uri = "sip:10.0.0.1:5060;transport=tls"
prefixes = ["+4420"]
"""


def test_trunks_parse_and_route(tmp_path: Path) -> None:
    sip = 'listen = ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]\n' + tls_keys(tmp_path)
    config = load(tmp_path, text(sip=sip, extra=TRUNKS))
    default, uk, london = config.trunks
    assert (default.host, default.port, default.transport) == ("carrier.example", None, None)
    assert (uk.host, uk.port, uk.transport) == ("2001:db8::1", 5070, "tcp")
    assert uk.prefixes == ("+44", "+441")
    assert (uk.username, uk.password) == ("me", "secret")
    assert london.transport == "tls"
    assert (default.hostport, uk.hostport) == ("carrier.example", "[2001:db8::1]:5070")
    # The configured trunks route through switch.routing as they are.
    assert select_trunk("+15551234567", config.trunks, None) is default
    assert select_trunk("+441234567890", config.trunks, None) is uk
    assert select_trunk("+442071234567", config.trunks, None) is london
    assert select_trunk("+15551234567", config.trunks, "uk") is uk


def test_no_trunks_means_no_route(tmp_path: Path) -> None:
    assert load(tmp_path, text()).trunks == ()


def test_number_lookup(tmp_path: Path) -> None:
    extra = '[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"'
    config = load(tmp_path, text(extra=extra))
    assert config.number("+15005550100") is config.numbers[0]
    assert config.number("+15005550101") is None


def test_duplicate_number(tmp_path: Path) -> None:
    extra = """
[[numbers]]
number = "+15005550100"
voice_url = "demo:"
[[numbers]]
number = "+15005550100"
voice_url = "https://example.com/"
"""
    assert only_problem(tmp_path, text(extra=extra)) == (
        "numbers[1].number",
        "duplicate number +15005550100 (also numbers[0].number)",
    )


def test_duplicate_trunk_name_and_prefix(tmp_path: Path) -> None:
    extra = """
[[trunks]]
name = "a"
uri = "sip:a.example"
prefixes = ["+1"]
[[trunks]]
name = "a"
uri = "sip:b.example"
prefixes = ["+1"]
"""
    assert problems(tmp_path, text(extra=extra)) == [
        ("trunks[1].name", "duplicate trunk name (also trunks[0].name)"),
        ("trunks[1].prefixes[0]", "prefix already belongs to trunks[0]"),
    ]


# --- every kind of problem, named by its key -----------------------------------------

BAD = [
    # unknown keys, anywhere
    (text(extra="[bogus]\nx = 1"), "bogus", "unknown key"),
    (text(sip=SIP + '\nlisten_udp = "x"'), "sip.listen_udp", "unknown key"),
    (text(extra="[log]\ncolour = true"), "log.colour", "unknown key"),
    (
        text(extra='[[trunks]]\nname = "a"\nuri = "sip:a.example"\nport = 5060'),
        "trunks[0].port",
        "unknown key",
    ),
    # required keys and types
    (text(sip=""), "sip.listen", "required"),
    (text(http=""), "http.listen", "required"),
    (text(account=f'sid = "{SID}"'), "account.auth_token", "required"),
    (text(sip='listen = "udp:127.0.0.1:5060"'), "sip.listen", "expected an array of strings"),
    (text(sip='listen = ["udp:127.0.0.1:5060", 5060]'), "sip.listen[1]", "expected a string"),
    (text(sip="listen = []"), "sip.listen", "must name at least one address"),
    (text(http="listen = 8080"), "http.listen", "expected a string, got an integer"),
    (text(extra="[dial]\nmax_calls = 1.5"), "dial.max_calls", "expected an integer"),
    (text(extra="[dial]\nmax_calls = true"), "dial.max_calls", "expected an integer"),
    (text(extra='[dial]\nmax_calls = "10"'), "dial.max_calls", "expected an integer"),
    (text(top="dial = 3"), "dial", "expected a table"),
    (text(extra='[webhooks]\ntotal_timeout = "x"'), "webhooks.total_timeout", "expected a number"),
    # SIP listeners
    (text(sip='listen = ["udp:127.0.0.1"]'), "sip.listen[0]", "missing port"),
    (text(sip='listen = ["sctp:127.0.0.1:5060"]'), "sip.listen[0]", "unknown transport"),
    (text(sip='listen = ["127.0.0.1"]'), "sip.listen[0]", "expected transport:host:port"),
    (text(sip='listen = ["udp:::1:5060"]'), "sip.listen[0]", "needs brackets"),
    (text(sip='listen = ["udp:[::g]:5060"]'), "sip.listen[0]", "bad IPv6 address"),
    (text(sip='listen = ["udp:127.0.0.1:70000"]'), "sip.listen[0]", "bad port"),
    (text(sip='listen = ["udp:300.1.1.1:5060"]'), "sip.listen[0]", "bad IPv4 address"),
    (text(sip='listen = ["udp:bad_host:5060"]'), "sip.listen[0]", "bad host"),
    (
        text(sip='listen = ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]'),
        "sip.listen[1]",
        "listed twice",
    ),
    (
        text(sip='listen = ["tcp:127.0.0.1:5060", "tls:127.0.0.1:5060"]'),
        "sip.listen[1]",
        "shares its TCP port with sip.listen[0]",
    ),
    (text(sip='listen = ["udp:0.0.0.0:5060"]'), "sip.public_host", "required when"),
    (text(sip=SIP + '\npublic_host = "a b"'), "sip.public_host", "bad host"),
    (text(sip=SIP + '\ndomain = "-x"'), "sip.domain", "bad host"),
    (text(sip=SIP + '\nuser_agent = ""'), "sip.user_agent", "must not be empty"),
    (text(sip=SIP + '\nrtp_ports = "20001-29999"'), "sip.rtp_ports", "even port"),
    (
        text(sip=SIP + '\nrtp_ports = "20000-20999"'),
        "sip.rtp_ports",
        "room for 500 call legs, but [dial] max_calls is 2000: it needs 4000 ports, e.g."
        ' "20000-23999"',
    ),
    (text(extra="[media]\nrtp_timeout = -1"), "media.rtp_timeout", "between 0 and 3600"),
    (text(extra="[media]\nthreads = 0"), "media.threads", "between 1 and 16"),
    (
        text(extra="[dial]\nmax_calls = 4049"),
        "dial.max_calls",
        "this build has 4096 call slots, of which 4048 can be admitted",
    ),
    (text(sip=SIP + '\nrtp_ports = "30000-20000"'), "sip.rtp_ports", "low < high"),
    (text(sip=SIP + '\nrtp_ports = "20000"'), "sip.rtp_ports", "expected low-high"),
    # HTTP
    (text(http='listen = "127.0.0.1"'), "http.listen", "missing port"),
    (text(http='listen = "[::]:8080"'), "http.public_url", "required when"),
    (text(http=HTTP + '\npublic_url = "ftp://x"'), "http.public_url", "bad URL"),
    # account
    (text(account=f'sid = "AB{SID[2:]}"\nauth_token = "{TOKEN}"'), "account.sid", "expected AC"),
    (text(account=f'sid = "{SID.upper()}"\nauth_token = "{TOKEN}"'), "account.sid", "hex"),
    (text(account=f'sid = "{SID}"\nauth_token = ""'), "account.auth_token", "must not be empty"),
    (text(account=f'sid = "{SID}"\nauth_token = "short"'), "account.auth_token", "at least 32"),
    # trunks
    (text(extra='[[trunks]]\nuri = "sip:a.example"'), "trunks[0].name", "required"),
    (text(extra='[[trunks]]\nname = "a b"\nuri = "sip:a"'), "trunks[0].name", "letters, digits"),
    (text(extra='[[trunks]]\nname = "a"'), "trunks[0].uri", "required"),
    (text(extra='[[trunks]]\nname = "a"\nuri = "a.example"'), "trunks[0].uri", "expected sip:"),
    (
        text(extra='[[trunks]]\nname = "a"\nuri = "sip:a.example;transport=sctp"'),
        "trunks[0].uri",
        "unknown transport",
    ),
    (text(extra='[[trunks]]\nname = "a"\nuri = "sip:a:0"'), "trunks[0].uri", "bad port"),
    (
        text(extra='[[trunks]]\nname = "a"\nuri = "sip:a"\nprefixes = ["44"]'),
        "trunks[0].prefixes[0]",
        "expected '+' followed by digits",
    ),
    (
        text(extra='[[trunks]]\nname = "a"\nuri = "sip:a"\nusername = "u"'),
        "trunks[0].password",
        "required when username is set",
    ),
    (
        text(extra='[[trunks]]\nname = "a"\nuri = "sip:a"\npassword = "p"'),
        "trunks[0].username",
        "required when password is set",
    ),
    (text(top="trunks = [1]"), "trunks[0]", "expected a table"),
    # numbers
    (text(extra='[[numbers]]\nvoice_url = "demo:"'), "numbers[0].number", "required"),
    (text(extra='[[numbers]]\nnumber = "+15005550100"'), "numbers[0].voice_url", "required"),
    (
        text(extra='[[numbers]]\nnumber = "12"\nvoice_url = "demo:"'),
        "numbers[0].number",
        "12",
    ),
    (
        text(extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "example.com/voice"'),
        "numbers[0].voice_url",
        "bad URL",
    ),
    (
        text(extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "https:///voice"'),
        "numbers[0].voice_url",
        "bad URL",
    ),
    (
        text(extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "http://h:x/"'),
        "numbers[0].voice_url",
        "bad URL",
    ),
    (
        text(extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:a b"'),
        "numbers[0].voice_url",
        "bad URL",
    ),
    (
        text(
            extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"\n'
            'voice_fallback_url = "demo:"'
        ),
        "numbers[0].voice_fallback_url",
        "bad URL",
    ),
    (
        text(
            extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"\n'
            'status_callback = "mailto:x@example.com"'
        ),
        "numbers[0].status_callback",
        "bad URL",
    ),
    (
        text(
            extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"\nvoice_method = "PUT"'
        ),
        "numbers[0].voice_method",
        "expected one of GET, POST, got 'PUT'",
    ),
    (
        text(
            extra='[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"\n'
            'status_callback_method = "DELETE"'
        ),
        "numbers[0].status_callback_method",
        "expected one of GET, POST",
    ),
    # storage, dial, webhooks, log
    (text(extra='[storage]\npath = ""'), "storage.path", "must not be empty"),
    (text(extra="[dial]\ntimeout_grace = -1"), "dial.timeout_grace", "between 0 and 60"),
    (
        text(extra='[dial]\ndefault_ringtone = "zz"'),
        "dial.default_ringtone",
        "unknown ringtone 'zz'",
    ),
    (text(extra="[dial]\nmax_calls = 1"), "dial.max_calls", "between 2 and"),
    (text(extra="[webhooks]\nconnect_timeout = 0"), "webhooks.connect_timeout", "above 0"),
    (
        text(extra="[webhooks]\nconnect_timeout = 10\ntotal_timeout = 5"),
        "webhooks.total_timeout",
        "must not be shorter than connect_timeout",
    ),
    (text(extra="[webhooks]\nconnect_retries = 11"), "webhooks.connect_retries", "between 0"),
    (text(extra="[webhooks]\nmax_body = 0"), "webhooks.max_body", "between 1"),
    (text(extra='[log]\nlevel = "verbose"'), "log.level", "expected one of debug"),
    (text(extra='[log]\nformat = "xml"'), "log.format", "expected one of text, json"),
]


@pytest.mark.parametrize(
    ("content", "key", "message"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_problem_is_named_by_its_key(tmp_path: Path, content: str, key: str, message: str) -> None:
    problem = only_problem(tmp_path, content)
    assert problem.key == key
    assert message in problem.message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    content = """
[sip]
listen = ["udp:127.0.0.1:5060", "carrier-pigeon"]
rtp_ports = "7-9"
[http]
[account]
sid = "nope"
auth_token = "x"
extra = 1
[[trunks]]
name = "a"
uri = "http://a"
[[numbers]]
number = "+15005550100"
voice_url = "ftp://x"
[log]
level = 3
"""
    keys = [p.key for p in problems(tmp_path, content)]
    assert keys == [
        "sip.listen[1]",
        "sip.rtp_ports",
        "http.listen",
        "account.sid",
        "account.auth_token",
        "account.extra",
        "trunks[0].uri",
        "numbers[0].voice_url",
        "log.level",
    ]


def test_format_problems() -> None:
    found = [Problem("a.b", "bad"), Problem("c[0]", "worse")]
    assert format_problems(found) == "a.b: bad\nc[0]: worse"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems[0].key == str(missing)
    assert "cannot read" in info.value.problems[0].message
    assert "not valid TOML" in only_problem(tmp_path, "[sip\n").message
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_us_number_is_normalised_when_switch_numbers_exists(tmp_path: Path) -> None:
    try:
        import switch.numbers  # noqa: F401
    except ImportError:
        pytest.skip("switch.numbers is not there yet")
    extra = '[[numbers]]\nnumber = "(415) 555-1212"\nvoice_url = "demo:"'
    assert load(tmp_path, text(extra=extra)).numbers[0].number == "+14155551212"


def test_number_check_without_switch_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "switch.numbers", None)  # import now fails
    extra = '[[numbers]]\nnumber = "+15005550100"\nvoice_url = "demo:"'
    assert load(tmp_path, text(extra=extra)).numbers[0].number == "+15005550100"
    bad = '[[numbers]]\nnumber = "(415) 555-1212"\nvoice_url = "demo:"'
    assert only_problem(tmp_path, text(extra=bad)) == (
        "numbers[0].number",
        "not an E.164 number: '(415) 555-1212'",
    )


# --- environment checks ---------------------------------------------------------------


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "dialswitch.toml"
    path.write_text(content)
    return path


def test_check_config_passes_on_free_ports(tmp_path: Path) -> None:
    sip = f'listen = ["udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]'
    http = f'listen = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"'
    storage = f'[storage]\npath = "{tmp_path / "new" / "var"}"'
    assert check_config(write(tmp_path, text(sip=sip, http=http, extra=storage))) == []


def test_check_config_reports_ports_in_use(tmp_path: Path) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as http_sock,
    ):
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        http_sock.bind(("127.0.0.1", 0))
        http_sock.listen()
        udp_port, tcp_port = udp.getsockname()[1], tcp.getsockname()[1]
        free = free_port(socket.SOCK_DGRAM)
        listens = [
            f"udp:127.0.0.1:{free}",
            f"udp:127.0.0.1:{udp_port}",
            f"tcp:127.0.0.1:{tcp_port}",
        ]
        sip = f"listen = {listens!r}".replace("'", '"')
        http_port = http_sock.getsockname()[1]
        http = f'listen = "127.0.0.1:{http_port}"'
        storage = f'[storage]\npath = "{tmp_path}"'
        found = check_config(write(tmp_path, text(sip=sip, http=http, extra=storage)))
    assert found == [
        ("sip.listen[1]", f"cannot bind udp 127.0.0.1:{udp_port}: port in use"),
        ("sip.listen[2]", f"cannot bind tcp 127.0.0.1:{tcp_port}: port in use"),
        ("http.listen", f"cannot bind tcp 127.0.0.1:{http_port}: port in use"),
    ]


def test_check_config_reports_unusable_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        if host == "no-such-host.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sip = 'listen = ["udp:192.0.2.1:5060", "udp:no-such-host.invalid:5060"]'
    storage = f'[storage]\npath = "{tmp_path}"'
    found = check_config(write(tmp_path, text(sip=sip, extra=storage)))
    assert [p.key for p in found[:2]] == ["sip.listen[0]", "sip.listen[1]"]
    assert "address not available" in found[0].message
    assert "cannot resolve" in found[1].message


def test_check_config_reports_unwritable_storage(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    sip = f'listen = ["udp:127.0.0.1:{free_port(socket.SOCK_DGRAM)}"]'
    http = f'listen = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"'
    storage = f'[storage]\npath = "{tmp_path / "file" / "var"}"'
    found = check_config(write(tmp_path, text(sip=sip, http=http, extra=storage)))
    assert found == [("storage.path", f"{tmp_path / 'file'} is not a directory")]
    assert not (tmp_path / "new").exists()


def test_check_config_returns_load_problems(tmp_path: Path) -> None:
    assert check_config(write(tmp_path, text(sip=""))) == [("sip.listen", "required")]


def test_digest_algorithms_default_and_per_client(tmp_path: Path) -> None:
    """MD5 alone is offered by default (stock phones give up on SHA-256); a client may
    be limited to some of what the registrar offers, never to more."""
    clients = (
        '\n[[clients]]\nidentity = "alice"\npassword = "alice-secret"\n'
        'digest_algorithms = ["sha-256"]\n'
        '\n[[clients]]\nidentity = "bob"\npassword = "bob-secret-2"\n'
    )
    offered = load(
        tmp_path, text() + '\n[registrar]\ndigest_algorithms = ["SHA-256", "MD5"]\n' + clients
    )
    assert offered.registrar.digest_algorithms == ("SHA-256", "MD5")
    assert [c.digest_algorithms for c in offered.clients] == [("SHA-256",), None]
    assert load(tmp_path, text()).registrar.digest_algorithms == ("MD5",)
    (problem,) = problems(tmp_path, text() + clients)
    assert problem.key == "clients[0].digest_algorithms"
    assert "['MD5']" in problem.message


def test_limits_table(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        text(extra='[limits]\ninvite_rate = 30\ntrusted = ["203.0.113.0/24", "2001:db8::1"]\n'),
    )
    limits = config.limits
    assert (limits.invite_rate, limits.invite_burst) == (30, 200)
    assert (limits.options_rate, limits.options_burst) == (50, 100)
    assert limits.trusted == ("203.0.113.0/24", "2001:db8::1/128")
    problem = only_problem(tmp_path, text(extra='[limits]\ntrusted = ["carrier.example"]\n'))
    assert problem.key == "limits.trusted[0]"
