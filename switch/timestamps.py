"""Times as Twilio writes them in webhooks and JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime


def rfc2822(moment: datetime) -> str:
    """RFC 2822 in UTC, e.g. ``Tue, 04 Mar 2025 12:00:00 +0000`` (Twilio's ``Timestamp``)."""
    return format_datetime(moment.astimezone(UTC))
