"""A call's log lines carry its CallSid and its leg's SIP Call-ID, in both formats."""

from __future__ import annotations

import json
import logging

from switch.cli import _JsonFormatter, _TextFormatter


def record(message: str, **extra: str) -> logging.LogRecord:
    rec = logging.LogRecord("dialswitch.call", logging.INFO, __file__, 1, message, None, None)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_text_lines_end_with_call_sid_and_sip_call_id() -> None:
    formatter = _TextFormatter("%(levelname)s %(message)s")
    line = formatter.format(record("answered", call_sid="CA1", sip_call_id="abc@10.0.0.1"))
    assert line == "INFO answered call_sid=CA1 sip_call_id=abc@10.0.0.1"
    named = formatter.format(record("CA1: answered", call_sid="CA1", sip_call_id="x@y"))
    assert named == "INFO CA1: answered sip_call_id=x@y"  # the CallSid is not repeated
    assert formatter.format(record("started")) == "INFO started"


def test_json_lines_carry_both_fields() -> None:
    entry = json.loads(_JsonFormatter().format(record("m", call_sid="CA1", sip_call_id="s@h")))
    assert (entry["call_sid"], entry["sip_call_id"]) == ("CA1", "s@h")
    assert "sip_call_id" not in json.loads(_JsonFormatter().format(record("m", call_sid="CA1")))
