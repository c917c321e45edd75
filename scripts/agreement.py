"""Agreement statistics for the evaluation scripts: ICC of volumes and host-bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


def icc_absolute_agreement(ratings: np.ndarray) -> float:
    """ICC(A,1) (McGraw & Wong; Shrout & Fleiss ICC(2,1)) of ``ratings`` (n subjects x k raters):
    two-way model, absolute agreement, single measurement: a constant offset between raters lowers it."""
    x = np.asarray(ratings, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = x.mean()
    ms_rows = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    ms_err = (resid ** 2).sum() / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denom) if denom > 0 else float("nan")


def bootstrap_mean(values: np.ndarray, groups: np.ndarray, n: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean of ``values`` by resampling whole groups (insertions into one host share it)."""
    values, groups = np.asarray(values, dtype=float), np.asarray(groups)
    uniq = np.unique(groups)
    if uniq.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = [np.flatnonzero(groups == g) for g in uniq]
    means = [values[np.concatenate([index[i] for i in rng.integers(uniq.size, size=uniq.size)])].mean()
             for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
