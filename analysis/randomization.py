"""Randomisation inference for experiments with few users: the reference distribution of a user
metric's test statistic from random relabelings of the users (a studentised permutation test).

With a few hundred users whose exposures are very unequal (a replayed log: median 14 requests a
user, the top one 262), the t approximation of ``estimators`` is off by a few points of
false-positive rate either way. Relabeling the users at random, as the experiment's own
randomisation could have, and recomputing the same estimate and SE (CUPED's regression and the
ratio's linearisation refitted every time) gives the statistic's distribution under "the arms do
not differ for any user": p and the CI's quantile read from it are exact under that null whatever
the metric's shape, and the studentisation keeps it valid for a difference in means when the arms'
variances differ (Janssen 1997; Chung & Romano 2013).

``Reference`` has the interface of ``dist.Normal`` (sf, cdf, ppf), so the decision, its CI, the
guardrails and the MDE all read the same distribution: "significant" <=> the CI excludes 0 holds
exactly (``ppf`` is the inverse of ``sf``'s rejection region). The estimate and SE are the
estimator's; only the reference changes.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .estimators import Effect, arm_values
from .views import Metric

CHUNK = 256  # relabelings per block (a block holds a few (CHUNK, users) float arrays)


class Reference:
    """The symmetrised relabeling distribution of a statistic, with sf/cdf/ppf like dist.Normal.

    sf(x) = (1 + #{s >= x}) / (n + 1) (the observed statistic counts as one draw); ppf(1 - a) is
    the smallest value above which sf < a, so p < a <=> |t| > ppf(1 - a / 2)."""

    def __init__(self, samples) -> None:
        self.s = np.sort(np.asarray(samples, float))

    def sf(self, x):
        n = self.s.size
        return (1 + n - np.searchsorted(self.s, x, side="left")) / (n + 1)

    def cdf(self, x):
        return (1 + np.searchsorted(self.s, x, side="right")) / (self.s.size + 1)

    def ppf(self, q):
        n, a = self.s.size, 1 - q
        m = int(np.ceil(a * (n + 1) - 1 - 1e-9)) - 1  # reject when at most m draws are >= x
        if m < 0:
            return float("inf")
        return float(self.s[n - m - 1]) if m < n else float("-inf")


def studentized(y: np.ndarray, x: np.ndarray | None, z: np.ndarray | None, treat: np.ndarray,
                hc2: bool = True) -> np.ndarray:
    """The estimate over its SE for each labeling (rows of ``treat``, (B, n) bool: treatment).

    y: (n,) numerators (or values), x: (n,) denominators of a ratio metric or None, z: (n, k)
    CUPED covariates or None. The same computation as ``estimators.Cuped`` / ``DeltaRatio`` /
    ``WelchT`` (HC2 variances; ``hc2=False``: each user's plain squared residual, as
    ``TwoProportion``), vectorised over labelings."""
    return np.concatenate([_block(y, x, z, treat[i:i + CHUNK], hc2) for i in range(0, len(treat), CHUNK)])


def _arm(y, x, z, m, hc2):
    """One arm's ratio r (b,), influence phi (b, n), centred covariates zc (b, n, k), their mean
    (b, k) and each user's HC2 weight 1 / (1 - leverage) (b, n), for masks m (b, n)."""
    n = m.sum(1)
    xx = np.ones_like(y) if x is None else x
    sx = m @ xx
    r = (m @ y) / sx
    phi = (y[None, :] - r[:, None] * xx[None, :]) / (sx / n)[:, None]
    lev = np.broadcast_to((1 / n)[:, None], m.shape) if x is None else np.minimum(xx[None, :] / sx[:, None], 0.99)
    w = 1 / (1 - lev) if hc2 else np.ones_like(lev)
    if z is None:
        return r, phi, None, None, w
    mz = (m @ z) / n[:, None]
    return r, phi, z[None, :, :] - mz[:, None, :], mz, w


def _block(y, x, z, treat, hc2):
    mt = treat.astype(float)
    mc = 1.0 - mt
    rt, phit, zt, mzt, wt = _arm(y, x, z, mt, hc2)
    rc, phic, zc, mzc, wc = _arm(y, x, z, mc, hc2)
    phi = np.where(treat, phit, phic)
    d = rt - rc
    if z is not None:
        zz = np.where(treat[:, :, None], zt, zc)
        a = np.einsum("bik,bil->bkl", zz, zz)
        theta = np.einsum("bkl,bl->bk", np.linalg.pinv(a), np.einsum("bik,bi->bk", zz, phi))
        phi = phi - np.einsum("bik,bk->bi", zz, theta)
        d = d - np.einsum("bk,bk->b", mzt - mzc, theta)
    var = sum(_hc2(phi, m, w) for m, w in ((mt, wt), (mc, wc)))
    return d / np.sqrt(var)


def _hc2(psi, m, w):
    n = m.sum(1)
    e = psi - ((m * psi).sum(1) / n)[:, None]
    return (m * w * e * e).sum(1) / n**2


def pair_arrays(table: pd.DataFrame, metric: Metric, c: str, t: str, covariates: list[str] | None):
    """(y, x, z, labels) over the users of arms c and t, as the estimators read them."""
    yc, xc = arm_values(table, metric, c)
    yt, xt = arm_values(table, metric, t)
    x = None if xc is None or metric.kind != "ratio" else np.concatenate([xc, xt])
    z = None
    if covariates:
        z = np.concatenate([table.loc[table["arm"] == a, covariates].fillna(0).to_numpy(float) for a in (c, t)])
    labels = np.r_[np.zeros(yc.size, bool), np.ones(yt.size, bool)]
    return np.concatenate([yc, yt]), x, z, labels


def reference(effect: Effect, table: pd.DataFrame, metric: Metric, draws: int) -> np.ndarray | None:
    """The symmetrised relabeling draws of ``effect``'s statistic (abs_lift / se), or None when the
    recomputed observed statistic does not match the estimator's (then the t reference stays)."""
    covs = effect.extra.get("covariates") if effect.method == "cuped" else None
    y, x, z, labels = pair_arrays(table, metric, effect.control_arm, effect.treatment_arm, covs)
    hc2 = not effect.method.startswith("two_proportion")
    t_obs = effect.abs_lift / effect.se
    if not np.isclose(studentized(y, x, z, labels[None, :], hc2)[0], t_obs, rtol=1e-6, atol=1e-9):
        return None
    key = f"{metric.name}|{effect.control_arm}|{effect.treatment_arm}|{labels.size}"
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    treat = rng.permuted(np.tile(labels, (draws, 1)), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = studentized(y, x, z, treat, hc2)
    t = t[np.isfinite(t)]
    return np.sort(np.r_[t, -t]) if t.size else None
