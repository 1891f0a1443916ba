"""The typed result of every off-policy estimator, and the interval it carries.

Every estimator is a sample mean of per-unit terms psi_i (SNIPS: a ratio, linearised), so the
standard error is the one of a mean over independent units (requests or slates; rows of one unit
summed first: cluster-robust; the simulator's logs cluster by user, the unit of randomisation),
and the interval is t with units - 1 degrees of freedom (the usual small-sample correction of a
cluster-robust SE: a logger reaches ~50 users in a run). OBP's default is a bootstrap;
bench/ope_obd.py bootstraps the whole estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

HEAVY_ESS_SHARE = 0.1  # weights are "heavy" when the effective sample size is below 10% of n


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    n: int  # rounds (exposures or slates)
    units: int  # independent units the standard error is computed over (users, or the rounds)
    ess: float  # effective sample size of the rounds' importance weights, (sum w)^2 / sum w^2 (n for DM)
    max_weight: float
    mean_weight: float  # ~1 when the target's support is covered by the logging policy

    @property
    def heavy_weights(self) -> bool:
        return self.ess < HEAVY_ESS_SHARE * self.n

    def to_dict(self) -> dict:
        return {**asdict(self), "heavy_weights": self.heavy_weights}


def unit_sums(psi: np.ndarray, cluster: np.ndarray | None) -> np.ndarray:
    """Per-unit sums of row terms (each row its own unit when ``cluster`` is None)."""
    if cluster is None:
        return psi
    _, inv = np.unique(cluster, return_inverse=True)
    return np.bincount(inv, weights=psi)


@dataclass(frozen=True)
class Terms:
    """An estimator's value and per-row influence terms (centred: they sum to 0 for a plain mean;
    a ratio's are its linearisation), with the importance weights behind them (None: no weights)."""

    value: float
    centred: np.ndarray
    weight: np.ndarray | None

    @classmethod
    def of_mean(cls, psi: np.ndarray, weight: np.ndarray | None) -> Terms:
        v = float(psi.mean())
        return cls(v, psi - v, weight)

    def minus(self, other: Terms) -> Terms:
        """The difference of two estimates on the same rows (e.g. target - logging policy)."""
        return Terms(self.value - other.value, self.centred - other.centred, self.weight)


def from_terms(name: str, t: Terms, *, cluster: np.ndarray | None = None, alpha: float = 0.05) -> Estimate:
    """Estimate with a standard error over the units of ``cluster`` (rows = units by default)."""
    n_rows = len(t.centred)
    per_unit = unit_sums(t.centred, cluster)
    units = len(per_unit)
    se = float(np.sqrt((per_unit ** 2).sum() * units / max(units - 1, 1)) / n_rows) if units > 1 else float("nan")
    z = float(stats.t.ppf(1 - alpha / 2, units - 1)) if units > 1 else float("nan")  # CR1: t, units - 1 dof
    if t.weight is None:
        ess, wmax, wmean = float(n_rows), 1.0, 1.0
    else:
        w = t.weight
        ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w ** 2).sum() > 0 else 0.0
        wmax, wmean = float(w.max()), float(w.mean())
    return Estimate(name, t.value, se, t.value - z * se, t.value + z * se, n_rows, units, ess, wmax, wmean)
