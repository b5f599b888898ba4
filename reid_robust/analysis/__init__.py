"""Noise-robustness benchmark (loss x noise sweep) and label audit (suspected wrong labels)."""
from reid_robust.cleaning.scoring import (
    audit_metrics,
    combine,
    neighbourhood_scores,
    reliability_weights,
    suspicion_scores,
)

from .sweep import Cell, build_cells, cell_config, collect_results, run_sweep, summarize, write_results

__all__ = [
    "Cell",
    "audit_metrics",
    "build_cells",
    "cell_config",
    "collect_results",
    "combine",
    "neighbourhood_scores",
    "reliability_weights",
    "run_sweep",
    "summarize",
    "suspicion_scores",
    "write_results",
]
