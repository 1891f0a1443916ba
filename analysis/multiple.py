"""Multiple-testing correction (statsmodels ``multipletests``); the report's families are in decision.py."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

METHODS = {"holm": "holm", "bh": "fdr_bh"}


def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """Adjusted p-values (Holm FWER or Benjamini-Hochberg FDR); NaNs stay NaN."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; use one of {sorted(METHODS)}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=METHODS[method])[1]
    return out
