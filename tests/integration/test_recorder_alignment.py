"""Recorders started together stay sample-aligned even when one of them hears nothing.

This is what keeps the two channels of a dual recording in step: the side recorders
are started in the same loop iteration and each writes one frame per bridge tick,
silence when nothing reaches it (patch 0009 of deploy/pjsua2). Closing a recorder
returns at once; a background thread finishes its file (patch 0010). Runs the real
engine in a process of its own (tests/support/recorder_alignment.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path

import numpy as np

from tests.integration.conftest import bounded, free_port_pair

ROOT = Path(__file__).resolve().parents[2]
FRAME = 160  # samples per 20 ms bridge tick at 8 kHz


@bounded(60)
async def test_a_recorder_that_hears_nothing_records_silence_in_step(tmp_path: Path) -> None:
    script = ROOT / "tests" / "support" / "recorder_alignment.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path),
        str(free_port_pair()),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 45)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    lengths = json.loads(out.decode().strip().splitlines()[-1])
    heard, unheard = lengths["heard"], lengths["unheard"]
    assert heard >= 0.8 * 8000, lengths  # about the second the script recorded
    assert abs(heard - unheard) <= FRAME, lengths  # at most one tick apart
    with wave.open(str(tmp_path / "unheard.wav"), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert not samples.any(), "the recorder that heard nothing holds sound"
    with wave.open(str(tmp_path / "heard.wav"), "rb") as w:
        tone = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.abs(tone).max() > 1000, "the tone did not reach the first recorder"
    # close() returned before the files were finished (patch 0010: a background thread
    # finishes them) and its future was done only once they were.
    assert lengths["closing"] == 2, lengths
    assert lengths["left"] == 0, lengths
