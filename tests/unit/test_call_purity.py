"""The call domain (switch/call) imports no engine, web, XML or WebRTC library."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import switch.call

FORBIDDEN = ("pjsua2", "aiohttp", "lxml", "aiortc")


def test_switch_call_imports_none_of_the_io_libraries() -> None:
    modules = [f"switch.call.{m.name}" for m in pkgutil.iter_modules(switch.call.__path__)]
    assert {"switch.call.fork", "switch.call.leg", "switch.call.protocol"} <= set(modules)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    loaded = json.loads(out)
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []
