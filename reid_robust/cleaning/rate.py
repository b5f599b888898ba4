"""The share of wrong labels, estimated from the distribution of one raw suspicion component.

A two-component Gaussian mixture is fitted to the component's values (higher = more suspect), as DivideMix
(Li et al., ICLR 2020, Sec. 3.1) fits one to the per-sample losses; Arazo et al. (ICML 2019) fit a beta
mixture to the same end. The weight of the component with the higher mean is the estimated rate, and each
image's posterior of that component says how likely its label is wrong. A raw component, not the combined
score: each normalised rank is uniform whatever the data, so the average of ranks has a shape that says how
far the components agree, not what share of the labels is wrong.

A unimodal distribution is still split by a mixture; the split counts as two populations only when Ashman's
D = sqrt(2) |mu_1 - mu_2| / sqrt(s_1^2 + s_2^2) (Ashman et al., J. Classification 1994: D > 2 for a clean
separation) reaches ``min_separation``; otherwise the estimate is 0 and nothing is flagged. A well separated
split can still cut one population of clean labels into its core and its tail (late in training, a clean
set's hard images form a tail): with a ``boundary`` (the component's value where the evidence starts to
prefer another label, :data:`reid_robust.cleaning.scoring.WRONG_SIDE`), the split also counts only when the
suspect component's mean lies beyond it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RateEstimate:
    """``rate``: estimated share of wrong labels (0 when not separated); ``posterior`` [N]: each image's
    probability of the high (suspect) component; ``separation``: Ashman's D; ``means``: (low, high)."""

    rate: float
    posterior: np.ndarray
    separation: float
    means: tuple[float, float]


def ashman_d(means: np.ndarray, variances: np.ndarray) -> float:
    """Ashman's D of two 1-D Gaussians: sqrt(2) |mu_1 - mu_2| / sqrt(var_1 + var_2)."""
    return float(math.sqrt(2.0) * abs(means[1] - means[0]) / math.sqrt(max(variances.sum(), 1e-300)))


def estimate_rate(values: np.ndarray, min_separation: float = 2.0, max_rate: float = 1.0,
                  seed: int = 0, boundary: float | None = None) -> RateEstimate:
    """Fit a 2-component GMM to ``values`` [N] (finite; higher = more suspect) and return its suspect share.

    Deterministic for a given ``seed`` (k-means initialisation with a fixed random state). Values that are
    all equal, components closer than ``min_separation``, or (with ``boundary``) a suspect component whose
    mean is not above ``boundary`` give rate 0 and posterior 0.
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"estimate_rate: need at least 2 values, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError("estimate_rate: the component holds NaN or infinite values")
    spread = float(x.std())
    if spread == 0.0:
        return RateEstimate(0.0, np.zeros_like(x), 0.0, (float(x[0]), float(x[0])))
    z = (x - x.mean()) / spread  # the fit sees unit scale: reg_covar means the same for any component
    gmm = GaussianMixture(2, covariance_type="full", reg_covar=1e-4, max_iter=200, n_init=1, random_state=seed)
    gmm.fit(z[:, None])
    means, variances = gmm.means_.reshape(-1), gmm.covariances_.reshape(-1)
    high = int(np.argmax(means))
    d = ashman_d(means, variances)
    means_raw = (float(means[1 - high] * spread + x.mean()), float(means[high] * spread + x.mean()))
    if d < min_separation or (boundary is not None and means_raw[1] <= boundary):
        return RateEstimate(0.0, np.zeros_like(x), d, means_raw)
    posterior = gmm.predict_proba(z[:, None])[:, high]
    rate = min(float(gmm.weights_[high]), float(max_rate))
    return RateEstimate(rate, posterior, d, means_raw)
