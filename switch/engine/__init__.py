"""The call engine: the only package that imports pjsua2."""

from switch.engine.core import (
    Engine,
    EngineError,
    EngineSettings,
    Listener,
    Player,
    Recorder,
    TrunkAccount,
)
from switch.engine.legs import Leg

__all__ = [
    "Engine",
    "EngineError",
    "EngineSettings",
    "Leg",
    "Listener",
    "Player",
    "Recorder",
    "TrunkAccount",
]
