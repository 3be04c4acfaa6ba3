"""Small helpers shared by the datasets and the engine (no imports of
either)."""
from .deferred_switch import DeferredSwitch

__all__ = ['DeferredSwitch']
