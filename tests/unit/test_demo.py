"""The built-in demo app: what each call of the shipped platform runs."""

from __future__ import annotations

from lxml import etree

from switch.demo import DemoApp

DEMO = DemoApp(frozenset({"+15005550100"}), ("alice", "bob"))


def verbs(document: str) -> list[tuple[str, str]]:
    root = etree.fromstring(document.encode())
    return [(e.tag, (e.text or "") + "".join(c.text or "" for c in e)) for e in root]


def test_a_call_to_the_number_is_greeted_and_rings_the_first_client() -> None:
    got = verbs(DEMO.document({"From": "+14155550100", "To": "+15005550100"}))
    assert got == [
        ("Say", "Welcome to dialswitch. Connecting you to alice."),
        ("Dial", "alice"),
        ("Say", "alice did not answer. Goodbye."),
    ]


def test_a_client_calls_another_client_or_the_number() -> None:
    assert verbs(DEMO.document({"From": "client:alice", "To": "client:bob"}))[0] == ("Dial", "bob")
    to_number = verbs(DEMO.document({"From": "client:bob", "To": "+15005550100"}))
    assert [v[0] for v in to_number] == ["Say", "Dial", "Say"]
    unknown = verbs(DEMO.document({"From": "client:alice", "To": "client:mallory"}))
    assert unknown == [("Say", "There is no client called mallory.")]
    elsewhere = verbs(DEMO.document({"From": "client:alice", "To": "+442071838750"}))
    assert elsewhere[0][0] == "Say" and "own number and its clients" in elsewhere[0][1]


def test_without_clients_the_number_speaks_and_hangs_up() -> None:
    bare = DemoApp(frozenset({"+15005550100"}), ())
    got = verbs(bare.document({"From": "+14155550100", "To": "+15005550100"}))
    assert [v[0] for v in got] == ["Say", "Pause", "Say", "Hangup"]
