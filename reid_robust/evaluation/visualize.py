"""Ranked-list pictures: a query image followed by its top-k gallery images (junk removed), true matches
framed green and false matches red. Drawn with matplotlib's Agg canvas (no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .reid import protocol_cameras
from .search import (
    as_feature_matrix,
    as_label_vector,
    build_index,
    check_positive_int,
    check_same_dim,
    prepare,
    search_topk,
)

MATCH_COLOUR, MISS_COLOUR, QUERY_COLOUR = "#1a9850", "#d73027", "#4575b4"


def pick_queries(num_queries: int, count: int) -> np.ndarray:
    """``count`` query indices spread evenly over the query set (deterministic)."""
    count = min(count, num_queries)
    return np.unique(np.linspace(0, num_queries - 1, count).round().astype(np.int64))


def ranked_lists(query_feats, gallery_feats, query_pids, gallery_pids, query_camids, gallery_camids,
                 query_indices, topk: int = 10, metric: str = "cosine", distances=None, camera_filter: bool = True):
    """Junk-free top-``topk`` gallery indices for the chosen queries, and whether each is a true match.

    Ranks come from an exact FAISS flat index over the features, or from rows of ``distances`` [Q, G]
    (lower = closer, e.g. re-ranked) when given. Junk is as in :func:`reid_robust.evaluation.evaluate_reid`
    (``camera_filter=False``: cameras may be None, same-camera items stay). Returns
    ``(indices [n, <=topk], is_match [n, <=topk])`` as lists of arrays (shorter when the gallery has fewer
    valid items).
    """
    check_positive_int(topk, "topk")
    query_indices = np.asarray(query_indices, dtype=np.int64)
    g_pids = np.asarray(gallery_pids)
    q_cams, g_cams = protocol_cameras(query_camids, gallery_camids, len(query_pids), len(g_pids), camera_filter)
    q_pids = np.asarray(query_pids)[query_indices]
    q_cams = q_cams[query_indices]
    keep = np.flatnonzero(g_pids != -1)
    if distances is not None:
        rows = np.asarray(distances)[query_indices][:, keep]
        candidates = keep[np.argsort(rows, axis=1, kind="stable")]
    else:
        qf = prepare(as_feature_matrix(query_feats, "query_feats", metric)[query_indices], metric)
        gf = prepare(as_feature_matrix(gallery_feats, "gallery_feats", metric)[keep], metric)
        check_same_dim(qf, gf)
        same_id_same_cam = max(int(((g_pids[keep] == p) & (g_cams[keep] == c)).sum()) for p, c in zip(q_pids, q_cams))
        _, found = search_topk(build_index(gf, metric), qf, topk + same_id_same_cam, metric)
        candidates = keep[found]
    indices, matches = [], []
    for row, pid, cam in zip(candidates, q_pids, q_cams):
        junk = (g_pids[row] == pid) & (g_cams[row] == cam)
        row = row[~junk][:topk]
        indices.append(row)
        matches.append((g_pids[row] == pid) & (pid > 0))
    return indices, matches


def _show(ax, path: str, colour: str, title: str) -> None:
    with Image.open(path) as image:
        ax.imshow(np.asarray(image.convert("RGB")))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    ax.set_title(title, fontsize=8, color=colour)


def save_ranked_list(query_path: str, gallery_paths, is_match, out_path, query_label: str = "query") -> Path:
    """One picture: the query, then its ranked gallery images with green (match) / red (non-match) frames."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(1.3 * (len(gallery_paths) + 1), 2.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(gallery_paths) + 1, squeeze=False)[0]
    _show(axes[0], query_path, QUERY_COLOUR, query_label)
    for rank, (ax, path, match) in enumerate(zip(axes[1:], gallery_paths, is_match), start=1):
        _show(ax, path, MATCH_COLOUR if match else MISS_COLOUR, f"{rank} {'✓' if match else '✗'}")
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    return out_path


def save_ranked_lists(out_dir, query_paths, gallery_paths, query_feats, gallery_feats, query_pids, gallery_pids,
                      query_camids, gallery_camids, num_queries: int, topk: int = 10, metric: str = "cosine",
                      distances=None, camera_filter: bool = True) -> list[Path]:
    """Pictures ``out_dir/rank_XXXXX.png`` for ``num_queries`` queries spread over the query set."""
    check_positive_int(num_queries, "num_queries")
    q_pids = as_label_vector(query_pids, "query_pids", len(query_paths))
    as_label_vector(gallery_pids, "gallery_pids", len(gallery_paths))
    chosen = pick_queries(len(query_paths), num_queries)
    indices, matches = ranked_lists(query_feats, gallery_feats, query_pids, gallery_pids, query_camids,
                                    gallery_camids, chosen, topk=topk, metric=metric, distances=distances,
                                    camera_filter=camera_filter)
    written = []
    for q, row, match in zip(chosen, indices, matches):
        out = Path(out_dir) / f"rank_{q:05d}.png"
        written.append(save_ranked_list(query_paths[q], [gallery_paths[g] for g in row], match, out,
                                        query_label=f"query {q} (id {q_pids[q]})"))
    return written
