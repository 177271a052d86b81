"""The deployment files: the systemd unit verifies and is hardened, the container file
runs what the Makefile installs, as a non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "dialswitch.service"
CONTAINERFILE = REPO / "deploy" / "container" / "Containerfile"
EXECUTABLE = "/opt/dialswitch/.venv/bin/dialswitch"
CONFIG = "/etc/dialswitch/dialswitch.toml"


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """``section -> [(key, value), ...]`` of a unit file, in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"entry outside a section: {raw!r}"
        assert not line.endswith("\\"), f"continued lines are not expected: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, str]:
    """The [Service] section as a dict; the last assignment of a key wins."""
    return dict(unit_entries(UNIT.read_text())["Service"])


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on a copy whose commands point at an existing stub, so
    the check is about the unit, not about whether this machine has /opt/dialswitch."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    assert text.count(EXECUTABLE) == 2  # ExecStartPre and ExecStart
    stub = tmp_path / "bin" / "dialswitch"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / "dialswitch.service"
    copy.write_text(text.replace(EXECUTABLE, str(stub)))
    result = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    about_unit = [
        line for line in output.splitlines() if "dialswitch" in line or str(tmp_path) in line
    ]
    assert result.returncode == 0, output
    assert about_unit == [], output


def test_unit_runs_the_switch_as_its_own_user_on_the_etc_config() -> None:
    s = service()
    assert s["Type"] == "simple"  # the switch does not speak sd_notify
    assert s["User"] == s["Group"] == "dialswitch"
    assert s["ExecStart"] == f"{EXECUTABLE} --config {CONFIG}"
    assert s["ExecStartPre"] == f"{EXECUTABLE} --config {CONFIG} --check-config"
    assert s["StateDirectory"] == "dialswitch"  # /var/lib/dialswitch, the storage path
    assert s["Restart"] == "on-failure"
    assert float(s["RestartSec"]) > 0


def test_unit_stops_the_whole_group_with_sigterm_and_time_to_finish() -> None:
    s = service()
    assert s["KillMode"] == "control-group"
    assert s["KillSignal"] == "SIGTERM"
    # The switch waits up to 10 s for calls, then finishes recordings and drains
    # webhooks for up to 5 s.
    assert int(s["TimeoutStopSec"]) >= 30


def test_unit_open_file_limit_fits_max_calls() -> None:
    """pjsua's ioqueue watches up to 8 sockets per call slot; the limit must fit that
    for the default max_calls."""
    defaults = tomllib.loads((REPO / "config" / "dialswitch.toml").read_text())
    max_calls = defaults["dial"]["max_calls"]
    assert int(service()["LimitNOFILE"]) >= 8 * max_calls


def test_unit_is_hardened() -> None:
    s = service()
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "SystemCallFilter": "@system-service",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {key: s.get(key) for key in expected} == expected
    assert set(s["RestrictAddressFamilies"].split()) == {
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
        "AF_NETLINK",
    }
    # 5060 and 8080 need no privilege: no capability unless someone opts in.
    assert "AmbientCapabilities" not in s


def test_container_runs_the_makefile_runtime_packages_as_non_root() -> None:
    text = CONTAINERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    assert len(stages) == 2
    build, runtime = stages
    assert "deploy/pjsua2/build.sh" in build
    assert "build.sh" not in runtime and "COPY --from=build" in runtime
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^RUNTIME_DEBS := (.+)$", makefile, flags=re.MULTILINE)
    assert match is not None
    install = re.search(r"apt-get install [^\n]*--no-install-recommends ([^\\\n]+)", runtime)
    assert install is not None
    assert set(install.group(1).split()) == set(match.group(1).split())
    directives = [line.split(None, 1) for line in runtime.splitlines() if line[:1].isupper()]
    last = {d[0]: d[1].strip() if len(d) > 1 else "" for d in directives}
    assert last["USER"].split(":")[0] == "dialswitch"
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert last["VOLUME"] == "/var/lib/dialswitch"
    assert last["ENTRYPOINT"] == f'["{EXECUTABLE}", "--config", "{CONFIG}"]'
