"""RTP port ranges per pjsua account (the busy default account gets the most), and the
address each SIP listener writes in Via and Contact."""

import pytest

pytest.importorskip("pjsua2")

from switch.engine.core import Listener, _port_slices, _public_address  # noqa: E402


def test_default_account_gets_all_but_the_extras_without_trunk_accounts() -> None:
    ranges = _port_slices(20000, 29999, 0, 8)
    assert ranges[0] == (20000, 28399)
    assert len(ranges) == 9


def test_ranges_are_even_disjoint_and_inside_the_configured_range() -> None:
    for trunks in (0, 1, 3):
        ranges = _port_slices(40000, 41999, trunks, 8)
        assert len(ranges) == 1 + trunks + 8
        for (low, high), (next_low, _) in zip(ranges, ranges[1:], strict=False):
            assert low % 2 == 0 and high < next_low
        assert ranges[0][0] == 40000 and ranges[-1][1] <= 41999


def test_default_account_gets_half_when_trunks_have_accounts() -> None:
    default, *trunks = _port_slices(20000, 29999, 2, 0)
    assert default == (20000, 24999)
    assert trunks == [(25000, 27499), (27500, 29999)]


@pytest.mark.parametrize(
    ("public", "listener", "written"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "::1", "::1"),  # another family: the listener's own address
        ("[2001:db8::1]", "::", "[2001:db8::1]"),
        ("2001:db8::1", "0.0.0.0", "0.0.0.0"),
        ("sip.example.com", "::1", "sip.example.com"),  # a name: as configured
    ],
)
def test_public_address_of_each_listener(public: str, listener: str, written: str) -> None:
    assert _public_address(public, Listener("udp", listener, 5060)) == written
