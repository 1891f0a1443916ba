"""Multiple-testing correction, with the per-hypothesis level that makes a confidence interval
agree with the decision (the report's families are in decision.py).

``adjust`` gives adjusted p-values (Holm FWER, Benjamini-Hochberg FDR); ``levels`` gives, for each
hypothesis, the significance level ``a_i`` with ``p_adj_i < alpha  <=>  p_i < a_i``, so that the
two-sided ``1 - a_i`` interval excludes 0 exactly when the hypothesis is rejected:

- Holm (step-down): a rejected hypothesis of rank j has ``alpha / (m - j + 1)``; every other one
  the level of the step where the procedure stopped (Holm-compatible intervals);
- Benjamini-Hochberg: ``max(R, 1) * alpha / m`` for all, with R rejections (the FCR-adjusted
  intervals of Benjamini & Yekutieli 2005).
"""

from __future__ import annotations

import numpy as np

METHODS = ("holm", "bh")


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; use one of {sorted(METHODS)}")


def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """Adjusted p-values (Holm FWER or Benjamini-Hochberg FDR); NaNs stay NaN and do not count."""
    _check(method)
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate((m * ranked / np.arange(1, m + 1))[::-1])[::-1]
        adj = np.minimum(adj, 1.0)
    out[order] = adj
    return out


def levels(pvalues, method: str, alpha: float) -> np.ndarray:
    """Per-hypothesis level ``a_i`` (see the module doc): ``p_i < a_i`` exactly when
    ``adjust(p)_i < alpha``. NaN p-values get the unadjusted ``alpha``."""
    _check(method)
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, alpha)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    rejected = adjust(p, method)[ok] < alpha
    if method == "bh":
        out[ok] = max(int(rejected.sum()), 1) * alpha / m
        return out
    order = np.argsort(p[ok], kind="stable")
    step = alpha / (m - np.arange(m))  # Holm's level at each rank
    n_rej = int(rejected.sum())
    lv = np.where(np.arange(m) < n_rej, step, step[min(n_rej, m - 1)])
    out[ok[order]] = lv
    return out
