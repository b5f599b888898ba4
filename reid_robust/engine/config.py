"""The config lives in :mod:`reid_robust.config` (frozen dataclasses, one per section); this module re-exports
it under its former import path."""
from reid_robust.config import (
    PATH_KEYS,
    PROTOCOL_METRICS,
    RESUME_APPLIED,
    RESUME_IGNORED,
    VALID_KEYS,
    Config,
    ConfigError,
    config_from_mapping,
    load_config,
    parse_overrides,
    resume_changes,
    save_config,
    to_yaml,
    with_absolute_paths,
    with_overrides,
)

__all__ = [
    "PATH_KEYS", "PROTOCOL_METRICS", "RESUME_APPLIED", "RESUME_IGNORED", "VALID_KEYS", "Config", "ConfigError",
    "config_from_mapping", "load_config", "parse_overrides", "resume_changes", "save_config", "to_yaml",
    "with_absolute_paths", "with_overrides",
]
