"""Figures of the noise benchmark and the label audit (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, png without one) through the one atomic write."""
    from reid_robust.atomic import atomic_write

    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format=path.suffix[1:] or "png", dpi=100, bbox_inches="tight"))
    return path


def plot_noise_curves(summary: Sequence[dict], metric: str, path: str | os.PathLike) -> Path:
    """``metric`` (percent) against the noise rate, one line per loss with ±1 std error bars, one panel per mode.

    summary: entries of ``reid_robust.analysis.sweep.summarize`` (keys loss, mode, rate, ``<metric>_mean/_std``).
    """
    plt = _pyplot()
    modes = sorted({e["mode"] for e in summary})
    losses = list(dict.fromkeys(e["loss"] for e in summary))
    fig, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.6), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        for loss in losses:
            pts = sorted((e["rate"], e[f"{metric}_mean"], e[f"{metric}_std"]) for e in summary
                         if e["mode"] == mode and e["loss"] == loss)
            if not pts:
                continue
            x, y, s = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(100 * x, 100 * y, yerr=100 * s, marker="o", capsize=3, label=loss)
        ax.set_title(f"{mode} noise")
        ax.set_xlabel("noise rate (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (%)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def plot_precision_recall(precision: np.ndarray, recall: np.ndarray, path: str | os.PathLike,
                          title: str = "") -> Path:
    """Precision against recall of the ranked suspects (the injected errors as positives)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot(recall, precision)
    ax.set_xlabel("recall (share of wrong labels found)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def contact_sheet(rows: Sequence[tuple[np.ndarray, str, Sequence[np.ndarray]]], path: str | os.PathLike,
                  title: str = "") -> Path:
    """One row per suspect: its image (red frame), its caption, then typical images of its labelled identity.

    rows: ``(suspect image HxWx3 uint8, caption, [typical images HxWx3 uint8])``.
    """
    plt = _pyplot()
    if not rows:
        raise ValueError("contact_sheet: no rows to draw")
    ncols = 1 + max(len(r[2]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.1 * ncols + 2.2, 1.9 * len(rows)), squeeze=False)
    for i, (image, caption, typical) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.imshow(image)
                for side in ax.spines.values():
                    side.set_edgecolor("red")
                    side.set_linewidth(2.5)
                ax.set_ylabel(caption, fontsize=7, rotation=0, ha="right", va="center")
            elif j - 1 < len(typical):
                ax.imshow(typical[j - 1])
            else:
                ax.axis("off")
    height = fig.get_size_inches()[1]
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height) if title else None)
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
