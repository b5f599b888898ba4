"""The protocols on feature sets: :class:`~reid_robust.evaluation.report.FeatureSet` in, metrics out.

The array forms (:func:`~reid_robust.evaluation.reid.evaluate_reid`,
:func:`~reid_robust.evaluation.retrieval.evaluate_retrieval`) stay for library users; these forms take the
feature bundle that the embedding API, the trainer's evaluation and the ``.npz`` files share.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .reid import evaluate_reid
from .report import FeatureSet
from .retrieval import evaluate_retrieval


def with_shared_pids(query: FeatureSet, gallery: FeatureSet) -> tuple[FeatureSet, FeatureSet]:
    """Query and gallery whose pids come from one mapping of their identity names when both carry names
    (identity folders with non-integer names are numbered per folder, so the pids alone do not match)."""
    if query.identities is None and gallery.identities is None:
        return query, gallery
    if query.identities is None or gallery.identities is None:
        named, plain = (query, gallery) if gallery.identities is None else (gallery, query)
        raise ValueError(f"{named.source} name their identities (folder names) but {plain.source} have only "
                         "integer pids, so the two cannot be matched; embed both from identity folders")
    names = sorted(set(query.identities) | set(gallery.identities))
    pid_of = {name: k + 1 for k, name in enumerate(names)}

    def renumbered(fs: FeatureSet) -> FeatureSet:
        pids = np.array([pid_of[name] for name in fs.identities or []], dtype=np.int64)
        return FeatureSet(fs.feats, pids, fs.camids, fs.paths, fs.identities, fs.source)

    return renumbered(query), renumbered(gallery)


def evaluate_reid_features(query: FeatureSet, gallery: FeatureSet, **options: Any) -> dict:
    """Market-1501 protocol of ``query`` against ``gallery`` (``options``: those of ``evaluate_reid``,
    e.g. ``metric``, ``camera_filter``, ``rerank``). Sets without pids are refused in one line naming them."""
    query.labelled(), gallery.labelled()
    query, gallery = with_shared_pids(query, gallery)
    return evaluate_reid(query.feats, gallery.feats, query.pids, gallery.pids, query.camids, gallery.camids,
                         **options)


def evaluate_retrieval_features(features: FeatureSet, **options: Any) -> dict:
    """Leave-one-out retrieval (CUB protocol) over ``features`` (``options``: those of ``evaluate_retrieval``)."""
    return evaluate_retrieval(features.feats, features.labelled(), **options)
