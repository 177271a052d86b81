"""The ``[webhooks]`` keys of durable status callbacks: defaults, the shipped file, and
the problems ``--check-config`` names by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import DEFAULT_PATH, check_config, load_config

BASE = """
[sip]
listen = ["udp:127.0.0.1:5060"]
[http]
listen = "127.0.0.1:8080"
[account]
sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "tttttttttttttttttttttttttttttttt"
"""


def write(tmp_path: Path, webhooks: str) -> Path:
    path = tmp_path / "dialswitch.toml"
    path.write_text(f'{BASE}\n[storage]\npath = "{tmp_path / "var"}"\n[webhooks]\n{webhooks}\n')
    return path


def test_defaults_retry_for_an_hour_and_cap_at_100000(tmp_path: Path) -> None:
    hooks = load_config(write(tmp_path, "")).webhooks
    assert hooks.callback_retry_interval == 5.0
    assert hooks.callback_retry_max_interval == 300.0
    assert hooks.callback_give_up_after == 3600.0
    assert hooks.callback_max_pending == 100_000


def test_the_shipped_file_spells_out_the_defaults() -> None:
    hooks = load_config(DEFAULT_PATH).webhooks
    assert (
        hooks.callback_retry_interval,
        hooks.callback_retry_max_interval,
        hooks.callback_give_up_after,
        hooks.callback_max_pending,
    ) == (5.0, 300.0, 3600.0, 100_000)


def test_short_settings_for_tests_are_accepted(tmp_path: Path) -> None:
    settings = (
        "callback_retry_interval = 0.2\ncallback_retry_max_interval = 0.5\n"
        "callback_give_up_after = 1.5\ncallback_max_pending = 1"
    )
    hooks = load_config(write(tmp_path, settings)).webhooks
    assert (hooks.callback_retry_interval, hooks.callback_give_up_after) == (0.2, 1.5)
    assert hooks.callback_max_pending == 1


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("callback_retry_interval = 0", "callback_retry_interval", "above 0"),
        ("callback_retry_interval = 'soon'", "callback_retry_interval", "expected a number"),
        (
            "callback_retry_interval = 60\ncallback_retry_max_interval = 10",
            "callback_retry_max_interval",
            "must not be shorter than callback_retry_interval",
        ),
        ("callback_give_up_after = -1", "callback_give_up_after", "above 0"),
        ("callback_give_up_after = 1e9", "callback_give_up_after", "at most 604800"),
        ("callback_max_pending = 0", "callback_max_pending", "between 1 and 10000000"),
        ("callback_max_pending = 1.5", "callback_max_pending", "expected an integer"),
        ("callback_queue = 5", "callback_queue", "unknown key"),
    ],
)
def test_check_config_names_the_key(tmp_path: Path, line: str, key: str, message: str) -> None:
    found = [p for p in check_config(write(tmp_path, line)) if p.key.startswith("webhooks.")]
    assert [p.key for p in found] == [f"webhooks.{key}"]
    assert message in found[0].message
