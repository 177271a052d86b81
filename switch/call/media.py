"""The audio paths of one call, through the media engine.

Everything the call path sends to the call's own leg (a prompt, a tone, a
bridged party) goes through ``CallMedia``, so whatever listens to that leg (a
whole-call recording) is fed the same sources without the verbs knowing. A
source connected before a listener arrives is not replayed to it: listeners
start when the call is answered, before any document runs.
"""

from __future__ import annotations

from pathlib import Path

from switch.call.protocol import Leg, MediaEngine, Player, Recorder


class CallMedia:
    def __init__(self, engine: MediaEngine, leg: Leg):
        self.engine = engine
        self.leg = leg
        self._listeners: list[Recorder] = []

    def listen(self, recorder: Recorder) -> None:
        """Feed ``recorder`` everything the call's leg hears from now on."""
        self._listeners.append(recorder)

    def unlisten(self, recorder: Recorder) -> None:
        if recorder in self._listeners:
            self._listeners.remove(recorder)

    def play(self, path: Path, loop: bool, to: Leg | None = None) -> Player:
        """A WAV file played to ``to`` (the call's leg by default); close it when done."""
        sink = to or self.leg
        player = self.engine.player(path, loop)
        if player.start(sink) and sink is self.leg:
            for recorder in self._listeners:
                recorder.hear_player(player)
        return player

    def connect(self, source: Leg, sink: Leg) -> bool:
        """Let ``sink`` hear ``source`` (one direction)."""
        connected = self.engine.connect(source, sink)
        if connected and sink is self.leg:
            for recorder in self._listeners:
                recorder.hear(source)
        return connected
