"""The one vocabulary of call statuses: final statuses and release codes."""

from __future__ import annotations

import pytest

from switch.call.status import CallStatus, final_status, release_code

C = CallStatus


@pytest.mark.parametrize(
    ("answered", "code", "cancelled_as", "status"),
    [
        (True, 200, None, C.COMPLETED),
        (True, None, C.CANCELED, C.COMPLETED),
        (False, 486, None, C.BUSY),
        (False, 600, None, C.BUSY),
        (False, 603, None, C.BUSY),
        (False, 408, None, C.NO_ANSWER),
        (False, 480, None, C.NO_ANSWER),
        # 487 without our CANCEL: the request was given up downstream (or the
        # caller of an inbound leg gave up): nobody answered.
        (False, 487, None, C.NO_ANSWER),
        # Withdrawn by us: the canceller's status, whatever the far end said.
        (False, 487, C.CANCELED, C.CANCELED),
        (False, 486, C.CANCELED, C.CANCELED),
        (False, 487, C.NO_ANSWER, C.NO_ANSWER),
        (False, 404, None, C.FAILED),
        (False, 500, None, C.FAILED),
        (False, None, None, C.FAILED),
        (False, 0, None, C.FAILED),
    ],
)
def test_final_status(
    answered: bool, code: int | None, cancelled_as: CallStatus | None, status: CallStatus
) -> None:
    assert final_status(answered, code, cancelled_as) is status


@pytest.mark.parametrize(
    ("status", "code", "reason", "released"),
    [
        ("busy", 404, "x", (486, "Busy Here")),
        ("no-answer", None, "", (480, "Temporarily Unavailable")),
        ("failed", 404, "Not Found", (404, "Not Found")),
        ("failed", 603, "Decline", (603, "Decline")),
        ("failed", 200, "OK", (503, "Service Unavailable")),
        ("failed", None, "", (503, "Service Unavailable")),
        ("canceled", None, "", (503, "Service Unavailable")),
    ],
)
def test_release_code(
    status: str, code: int | None, reason: str, released: tuple[int, str]
) -> None:
    assert release_code(status, code, reason) == released


def test_final_statuses_are_final() -> None:
    assert {s for s in CallStatus if s.final} == {
        C.COMPLETED,
        C.BUSY,
        C.NO_ANSWER,
        C.CANCELED,
        C.FAILED,
    }


def test_the_store_keeps_the_same_final_statuses() -> None:
    from switch.store import FINAL_STATUSES as STORED

    assert {s.value for s in CallStatus if s.final} == STORED
