"""The normal and Student-t distributions the decisions use (cdf, sf, ppf), from scipy.special.

scipy.stats computes these with the same special functions (ndtr, ndtri, stdtr, stdtrit), so the
numbers are identical; importing scipy.stats costs about a second at start-up (it builds every
distribution's docstring), which `sim report --format json` should not pay.
"""

from __future__ import annotations

import numpy as np
from scipy import special


class Normal:
    """The standard normal."""

    @staticmethod
    def cdf(x):
        return special.ndtr(x)

    @staticmethod
    def sf(x):
        return special.ndtr(np.negative(x))

    @staticmethod
    def ppf(q):
        return special.ndtri(q)


class StudentT:
    """Student's t with ``df`` degrees of freedom."""

    def __init__(self, df: float) -> None:
        self.df = df

    def cdf(self, x):
        return special.stdtr(self.df, x)

    def sf(self, x):
        return special.stdtr(self.df, np.negative(x))

    def ppf(self, q):
        return special.stdtrit(self.df, q)


norm = Normal()


def for_dof(dof: float):
    """A test statistic's distribution: t with ``dof`` degrees of freedom, normal when infinite."""
    return norm if dof is None or not np.isfinite(dof) else StudentT(dof)


def chi2_sf(x, df):
    """P(X > x) for a chi-squared variable with ``df`` degrees of freedom."""
    return special.chdtrc(df, x)


def sign_test_p(k: int, n: int) -> float:
    """Two-sided exact binomial test of ``k`` successes in ``n`` against 1/2 (scipy.stats.binomtest's
    p-value: the symmetric null makes it twice the smaller tail, capped at 1)."""
    lo = min(k, n - k)
    return 1.0 if 2 * lo == n else float(min(1.0, 2 * special.bdtr(lo, n, 0.5)))
