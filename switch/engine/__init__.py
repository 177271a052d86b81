"""The call engine: the only package that imports pjsua2."""

from switch.engine.core import Engine, EngineSettings, Listener, Player, TrunkAccount
from switch.engine.legs import Leg

__all__ = ["Engine", "EngineSettings", "Leg", "Listener", "Player", "TrunkAccount"]
