"""Trunk selection: byoc, longest prefix, catch-alls, the default and ties."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from switch.routing import NoRoute, check_trunks, select_trunk


@dataclass(frozen=True)
class Trunk:
    name: str
    prefixes: tuple[str, ...] = ()


NORTH_AMERICA = Trunk("na", ("+1",))
BAY_AREA = Trunk("bay", ("+1415", "+1650"))
EUROPE = Trunk("eu", ("+44", "+33", "+49"))
LONDON = Trunk("london", ("4420",))
ANYWHERE = Trunk("anywhere")


def pick(number: str, trunks: Sequence[Trunk], byoc: str | None = None) -> str:
    return select_trunk(number, trunks, byoc).name


def test_longest_prefix_wins_across_trunks() -> None:
    trunks = [NORTH_AMERICA, BAY_AREA, EUROPE, LONDON]
    assert pick("+14155551212", trunks) == "bay"
    assert pick("+12125551212", trunks) == "na"
    assert pick("+442079460958", trunks) == "london"
    assert pick("+441619460958", trunks) == "eu"
    assert pick("+33142685300", trunks) == "eu"


def test_order_does_not_beat_length() -> None:
    assert pick("+16505551212", [BAY_AREA, NORTH_AMERICA]) == "bay"
    assert pick("+16505551212", [NORTH_AMERICA, BAY_AREA]) == "bay"


def test_first_trunk_is_the_default_when_nothing_matches() -> None:
    assert pick("+81312345678", [EUROPE, NORTH_AMERICA]) == "eu"
    assert pick("+81312345678", [NORTH_AMERICA, EUROPE]) == "na"


def test_catch_all_beats_the_default_but_not_a_prefix() -> None:
    trunks = [EUROPE, NORTH_AMERICA, ANYWHERE]
    assert pick("+81312345678", trunks) == "anywhere"
    assert pick("+12125551212", trunks) == "na"


def test_ties_go_to_configuration_order() -> None:
    first = Trunk("first", ("+44",))
    second = Trunk("second", ("44",))
    assert pick("+442079460958", [first, second]) == "first"
    assert pick("+442079460958", [second, first]) == "second"
    assert pick("+81312345678", [EUROPE, ANYWHERE, Trunk("also-anywhere")]) == "anywhere"


def test_single_trunk_takes_everything() -> None:
    assert pick("+81312345678", [EUROPE]) == "eu"
    assert pick("+81312345678", [ANYWHERE]) == "anywhere"


def test_plus_alone_is_a_catch_all_prefix() -> None:
    assert pick("+81312345678", [EUROPE, Trunk("plus", ("+",))]) == "plus"


def test_byoc_names_the_trunk_whatever_the_prefixes() -> None:
    trunks = [NORTH_AMERICA, BAY_AREA, EUROPE]
    assert pick("+14155551212", trunks, byoc="eu") == "eu"
    assert pick("+442079460958", trunks, byoc="na") == "na"


def test_empty_byoc_counts_as_absent() -> None:
    assert pick("+14155551212", [NORTH_AMERICA, BAY_AREA], byoc="") == "bay"


def test_unknown_byoc_is_no_route() -> None:
    with pytest.raises(NoRoute, match="byoc names no configured trunk: 'mars'") as caught:
        select_trunk("+14155551212", [NORTH_AMERICA], "mars")
    assert caught.value.number == "+14155551212"
    assert "mars" in caught.value.reason


def test_byoc_is_case_sensitive() -> None:
    with pytest.raises(NoRoute):
        select_trunk("+14155551212", [NORTH_AMERICA], "NA")


def test_no_trunks_is_no_route() -> None:
    with pytest.raises(NoRoute, match="no trunks are configured"):
        select_trunk("+14155551212", [], None)
    with pytest.raises(NoRoute):
        select_trunk("+14155551212", [], "na")


def test_returns_the_callers_own_object() -> None:
    trunks = [NORTH_AMERICA, BAY_AREA]
    assert select_trunk("+14155551212", trunks, None) is BAY_AREA


@pytest.mark.parametrize("number", ["14155551212", "+1 415 555 1212", "", "+", "+1415x"])
def test_number_must_be_e164(number: str) -> None:
    with pytest.raises(ValueError, match="not an E.164 number"):
        select_trunk(number, [NORTH_AMERICA], None)


def test_bad_prefix_is_reported_with_the_trunk() -> None:
    with pytest.raises(ValueError, match="trunk 'bad': prefix '\\+1-415'"):
        select_trunk("+14155551212", [Trunk("bad", ("+1-415",))], None)


def test_check_trunks_accepts_a_good_configuration() -> None:
    check_trunks([NORTH_AMERICA, BAY_AREA, EUROPE, LONDON, ANYWHERE])
    check_trunks([])


@pytest.mark.parametrize(
    ("trunks", "message"),
    [
        ([Trunk("na"), Trunk("na", ("+1",))], "duplicate trunk name 'na'"),
        ([Trunk("")], "empty name"),
        ([Trunk("x", ("+44", "uk"))], "prefix 'uk'"),
    ],
)
def test_check_trunks_rejects(trunks: list[Trunk], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_trunks(trunks)
