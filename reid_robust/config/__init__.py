"""Typed configuration: one frozen dataclass per section (``sections``), loaded from YAML with ``_BASE_``
inheritance and ``key=value`` overrides (``loader``).

This package sits below ``data``, ``models`` and ``engine``: each consumer imports only the section it needs
(``TrainConfig`` for the optimiser, ``TransformConfig`` for the augmentations, ...).
"""
from reid_robust.config.fields import ConfigError
from reid_robust.config.loader import (
    PATH_KEYS,
    VALID_KEYS,
    config_from_mapping,
    load_config,
    parse_overrides,
    save_config,
    to_yaml,
    with_absolute_paths,
    with_overrides,
)
from reid_robust.config.resume import RESUME_APPLIED, RESUME_IGNORED, resume_changes
from reid_robust.config.sections import (
    PROTOCOL_METRICS,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    LossTermConfig,
    ModelConfig,
    NoiseConfig,
    SamplerConfig,
    SweepConfig,
    TrainConfig,
    TransformConfig,
)

__all__ = [
    "PATH_KEYS", "PROTOCOL_METRICS", "RESUME_APPLIED", "RESUME_IGNORED", "VALID_KEYS", "Config", "ConfigError",
    "DataConfig", "EvalConfig", "LossConfig", "LossTermConfig", "ModelConfig", "NoiseConfig", "SamplerConfig",
    "SweepConfig", "TrainConfig", "TransformConfig", "config_from_mapping", "load_config", "parse_overrides",
    "resume_changes", "save_config", "to_yaml", "with_absolute_paths", "with_overrides",
]
