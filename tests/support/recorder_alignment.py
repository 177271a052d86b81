"""Run by tests/integration/test_recorder_alignment.py in a process of its own.

Starts the real engine (pjsua2) on loopback, starts two recorders in the same loop
iteration, lets a looping tone reach only the first, closes both after ``SECONDS``,
waits until their files are complete and prints as JSON each file's length in samples
and the recorders the engine counted just after closing and once closed. Usage:
``recorder_alignment.py DIR PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path

import numpy as np

from switch.engine import Engine
from switch.engine.core import EngineSettings, Listener

SECONDS = 1.0
RATE = 8000


def tone_file(path: Path) -> Path:
    t = np.arange(RATE // 2) / RATE
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((8000 * np.sin(2 * np.pi * 600 * t)).astype("<i2").tobytes())
    return path


def frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


async def main(directory: Path, port: int) -> None:
    settings = EngineSettings(
        listeners=[Listener("udp", "127.0.0.1", port)],
        public_host="127.0.0.1",
        rtp_port_min=port + 2,
        rtp_port_max=port + 101,
        max_calls=4,
    )
    engine = Engine(settings, lambda leg: None)
    engine.start(lambda: "CA" + "0" * 32)
    heard, unheard = directory / "heard.wav", directory / "unheard.wav"
    player = engine.player(tone_file(directory / "tone.wav"), loop=True)
    recorders = [engine.recorder(heard), engine.recorder(unheard)]
    recorders[0].hear_player(player)
    await asyncio.sleep(SECONDS)  # recording time: the bridge clock has to run
    closed = [recorder.close() for recorder in recorders]
    closing = engine.counts()["recorders"]  # handed to the background closer, not done
    await asyncio.gather(*closed)
    # Done means complete: the headers are written while the engine still runs.
    lengths = {"heard": frames(heard), "unheard": frames(unheard)}
    report = {**lengths, "closing": closing, "left": engine.counts()["recorders"]}
    player.close()
    await engine.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
