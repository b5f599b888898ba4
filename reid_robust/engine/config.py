"""The config lives in :mod:`reid_robust.config` (frozen dataclasses, one per section); this module re-exports
it under its former import path for existing imports."""
from reid_robust.config import *  # noqa: F403
from reid_robust.config import __all__  # noqa: F401
