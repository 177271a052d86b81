"""The address each SIP listener writes in Via and Contact."""

import pytest

pytest.importorskip("pjsua2")

from switch.engine.core import Listener, _public_address  # noqa: E402


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
