"""Small pure helpers of the call session: sendDigits runs and callback timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest

pytest.importorskip("pjsua2")

from switch.script import _digit_runs  # noqa: E402
from switch.timestamps import rfc2822 as _rfc2822


@pytest.mark.parametrize(
    ("digits", "runs"),
    [
        ("12w34ww5", ["12", "w", "34", "w", "w", "5"]),
        ("", []),
        ("w", ["w"]),
        ("ww", ["w", "w"]),
        ("w1", ["w", "1"]),
        ("1w", ["1", "w"]),
        ("0123456789*#", ["0123456789*#"]),
        ("ww#1234w", ["w", "w", "#1234", "w"]),
    ],
)
def test_digit_runs(digits: str, runs: list[str]) -> None:
    assert _digit_runs(digits) == runs


def test_digit_runs_round_trip() -> None:
    digits = "1w2ww345w#*"
    assert "".join(_digit_runs(digits)) == digits


def test_rfc2822_utc() -> None:
    moment = datetime(2024, 3, 5, 14, 7, 9, tzinfo=UTC)
    text = _rfc2822(moment)
    assert text == "Tue, 05 Mar 2024 14:07:09 +0000"
    assert parsedate_to_datetime(text) == moment


def test_rfc2822_converts_other_zones_to_utc() -> None:
    moment = datetime(2024, 3, 5, 23, 30, 0, tzinfo=timezone(timedelta(hours=-8)))
    text = _rfc2822(moment)
    assert text.endswith(" +0000")
    assert text.startswith("Wed, 06 Mar 2024 07:30:00")
    parsed = parsedate_to_datetime(text)
    assert parsed == moment
    assert parsed.utcoffset() == timedelta(0)
