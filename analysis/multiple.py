"""Multiple-testing correction across metrics and arms (statsmodels ``multipletests``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def add_adjusted(table: pd.DataFrame, p_col: str = "p") -> pd.DataFrame:
    """Add ``p_holm`` and ``p_bh`` columns: one family = every (metric, arm) row of the table."""
    out = table.copy()
    out["p_holm"] = adjust(out[p_col].to_numpy(), "holm")
    out["p_bh"] = adjust(out[p_col].to_numpy(), "bh")
    return out
