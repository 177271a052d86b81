"""``dialswitch --config FILE [--check-config]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from switch.config import (
    DEFAULT_PATH,
    ConfigError,
    check_config,
    format_problems,
    load_config,
)


class _TextFormatter(logging.Formatter):
    """A call's lines end with its CallSid (unless the message names it) and the SIP
    Call-ID of its leg, so one grep finds a call by either."""

    def format(self, record: logging.LogRecord) -> str:
        sid = getattr(record, "call_sid", None)
        base = super().format(record)
        if sid and sid not in record.getMessage():
            base += f" call_sid={sid}"
        sip_call_id = getattr(record, "sip_call_id", None)
        return f"{base} sip_call_id={sip_call_id}" if sip_call_id else base


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("call_sid", "sip_call_id"):
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dialswitch", description="Self-hosted programmable voice."
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="TOML config file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config and exit (0 ok, 2 problems)",
    )
    args = parser.parse_args(argv)
    if args.check_config:
        problems = check_config(args.config)
        if problems:
            print(format_problems(problems), file=sys.stderr)
            return 2
        print(f"{args.config}: ok")
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(format_problems(error.problems), file=sys.stderr)
        return 2
    _setup_logging(config.log.level, config.log.format)
    import uvloop

    from switch.app import Switch

    try:
        return uvloop.run(Switch(config).run())
    except OSError as error:  # a listener could not be bound (--check-config says so too)
        logging.getLogger("dialswitch").error("cannot start: %s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
