"""Which bridged pairs are relayed (switch/call/media_paths.py)."""

from __future__ import annotations

from switch.call.media_paths import Decode, MediaPaths, Relay, Unrelay


def bridged(paths: MediaPaths, a: str = "caller", b: str = "child") -> list[object]:
    """Both legs have sent RTP, then are connected both ways."""
    paths.heard(a)
    paths.heard(b)
    return [*paths.connected(a, b), *paths.connected(b, a)]


def test_two_legs_hearing_each_other_and_nothing_else_are_relayed() -> None:
    paths = MediaPaths()
    paths.heard("caller")
    paths.heard("child")
    assert paths.connected("caller", "child") == []  # one way: early media
    assert paths.connected("child", "caller") == [Relay("child", "caller")]
    assert paths.relayed == 1
    assert paths.peer("caller") == "child"


def test_a_pair_waits_for_both_legs_first_rtp() -> None:
    paths = MediaPaths()
    paths.heard("caller")
    assert [*paths.connected("caller", "child"), *paths.connected("child", "caller")] == []
    assert paths.unheard() == {"child"}  # what the engine looks for
    assert paths.waiting
    assert paths.relayed == 0
    assert paths.heard("child") == [Relay("child", "caller")]
    assert paths.unheard() == set()
    assert not paths.waiting


def test_a_leg_that_never_sends_is_no_longer_looked_for_once_it_ends() -> None:
    paths = MediaPaths()
    paths.connected("caller", "child")
    paths.connected("child", "caller")
    assert paths.unheard() == {"caller", "child"}
    paths.ended("child")
    assert paths.unheard() == set()


def test_a_tapped_pair_is_not_waited_for() -> None:
    paths = MediaPaths()
    paths.tapped("caller")  # a prompt: the bridge whatever they send
    paths.connected("caller", "child")
    paths.connected("child", "caller")
    assert paths.unheard() == set()


def test_a_player_puts_the_pair_on_the_bridge_until_it_is_gone() -> None:
    paths = MediaPaths()
    bridged(paths)
    assert paths.tapped("caller") == [Unrelay("caller", "child")]
    assert paths.relayed == 0
    assert paths.tapped("child") == []  # already on the bridge
    assert paths.untapped("caller") == []  # the child still hears a prompt
    assert paths.untapped("child") == [Relay("child", "caller")]


def test_a_recorded_pair_stays_relayed_and_decodes_while_recorded() -> None:
    paths = MediaPaths()
    bridged(paths)
    assert paths.recorded("caller") == [Decode("caller", True)]
    assert paths.recorded("child") == [Decode("child", True)]
    assert paths.recorded("caller") == []  # a second recorder: already decoding
    assert paths.relayed == 1
    assert paths.unrecorded("caller") == []  # one recorder is left
    assert paths.unrecorded("caller") == [Decode("caller", False)]
    assert paths.unrecorded("child") == [Decode("child", False)]
    assert paths.relayed == 1


def test_a_leg_recorded_before_the_bridge_decodes_from_its_relay_on() -> None:
    paths = MediaPaths()
    assert paths.recorded("caller") == []  # nothing relayed: the bridge decodes
    assert bridged(paths) == [Relay("child", "caller"), Decode("caller", True)]


def test_a_relay_made_again_decodes_again_and_its_end_needs_no_action() -> None:
    paths = MediaPaths()
    bridged(paths)
    paths.recorded("child")
    assert paths.tapped("caller") == [Unrelay("caller", "child")]  # a prompt
    assert paths.untapped("caller") == [Relay("caller", "child"), Decode("child", True)]
    assert paths.media_changed("child") == [
        Unrelay("child", "caller"),
        Relay("child", "caller"),
        Decode("child", True),
    ]
    assert paths.ended("caller") == [Unrelay("child", "caller", gone="caller")]
    assert paths.unrecorded("child") == []  # no relay, nothing to stop


def test_a_leg_with_a_player_before_the_bridge_is_relayed_once_the_player_closes() -> None:
    paths = MediaPaths()
    paths.tapped("caller")  # ringback
    assert bridged(paths) == []
    assert paths.untapped("caller") == [Relay("caller", "child")]


def test_a_third_leg_hearing_one_side_ends_the_relay() -> None:
    paths = MediaPaths()
    bridged(paths)
    assert paths.connected("caller", "monitor") == [Unrelay("caller", "child")]
    assert paths.ended("monitor") == [Relay("caller", "child")]


def test_the_end_of_one_side_unrelays_the_other_with_the_gone_side_named() -> None:
    paths = MediaPaths()
    bridged(paths)
    assert paths.ended("child") == [Unrelay("caller", "child", gone="child")]
    assert paths.relayed == 0
    assert paths.peer("caller") is None
    # the caller is bridged to a second child later: relayed again
    assert bridged(paths, "caller", "child2") == [Relay("child2", "caller")]


def test_a_refused_pair_stays_on_the_bridge_until_its_media_changes() -> None:
    paths = MediaPaths()
    assert bridged(paths) == [Relay("child", "caller")]
    paths.refused("child", "caller")  # PCMU against PCMA
    assert paths.relayed == 0
    assert paths.tapped("caller") == []
    assert paths.untapped("caller") == []  # still refused
    assert paths.media_changed("child") == [Relay("child", "caller")]


def test_a_relayed_leg_whose_media_changes_is_relayed_again() -> None:
    paths = MediaPaths()
    bridged(paths)
    assert paths.media_changed("caller") == [
        Unrelay("caller", "child"),
        Relay("caller", "child"),
    ]


def test_nothing_is_relayed_when_the_relay_is_off() -> None:
    paths = MediaPaths(enabled=False)
    assert bridged(paths) == []
    assert paths.relayed == 0


def test_a_tap_on_a_leg_that_ended_is_forgotten() -> None:
    paths = MediaPaths()
    paths.tapped("caller")
    paths.ended("caller")
    assert paths.untapped("caller") == []
    assert bridged(paths) == [Relay("child", "caller")]


def test_a_refused_relay_forgets_that_its_legs_decode() -> None:
    paths = MediaPaths()
    paths.recorded("caller")
    assert bridged(paths) == [Relay("child", "caller"), Decode("caller", True)]
    paths.refused("child", "caller")  # the engine could not relay them
    assert paths.peer("caller") is None  # the engine skips the Decode
    assert paths.unrecorded("caller") == []  # nothing to stop
