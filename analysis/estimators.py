"""A/B estimators with one contract: ``Estimator().estimate(table, metric) -> Effect``.

``table`` is the per-user DataFrame (column ``arm`` plus metric columns, see views.user_table);
``metric`` a :class:`analysis.views.Metric`. The control arm is ``table.attrs['control']`` (else
the first arm in sorted order) and the treatment the other arm (pass ``control=``/``treatment=``
to choose among several). Estimators:

  WelchT        Welch t-test on per-user values (statsmodels), mean/proportion metrics
  TwoProportion pooled two-proportion z-test (statsmodels) on a per-user 0/1 metric
  DeltaRatio    ratio metric sum(num)/sum(den) per arm, delta-method variance, z-test
  Cuped         CUPED with the pre-experiment covariate column ``pre``; falls back to the plain
                estimator with a stated reason when the covariate is missing or constant
  Bootstrap     percentile bootstrap CI (scipy.stats.bootstrap), p from the null-shifted replicate
  MSPRT         mixture sequential probability ratio test: always-valid p and confidence sequence

Relative lift CIs always use the delta method: Var(T/C) ~ Vt/C^2 + T^2 Vc/C^4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from simulator.errors import SimError

from .views import Metric


class EstimationError(SimError):
    """The data cannot support the requested test (empty arm, zero variance...)."""


@dataclass
class Effect:
    metric: str
    method: str
    control_arm: str
    treatment_arm: str
    control: float  # control mean (or ratio)
    treatment: float
    abs_lift: float
    rel_lift: float
    ci: tuple[float, float]  # CI of abs_lift
    rel_ci: tuple[float, float]
    p: float
    n_by_arm: dict[str, int]
    se: float = float("nan")
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_row(self) -> dict:
        d = asdict(self)
        d["ci_low"], d["ci_high"] = self.ci
        d["rel_ci_low"], d["rel_ci_high"] = self.rel_ci
        for k in ("ci", "rel_ci", "extra"):
            d.pop(k)
        d["n_control"] = self.n_by_arm.get(self.control_arm, 0)
        d["n_treatment"] = self.n_by_arm.get(self.treatment_arm, 0)
        d.pop("n_by_arm")
        return d


# ---------------------------------------------------------------- helpers

def pick_arms(table: pd.DataFrame, control: str | None = None, treatment: str | None = None) -> tuple[str, str]:
    arms = sorted(map(str, pd.unique(table["arm"]))) if len(table) else []
    control = control or table.attrs.get("control") or (arms[0] if arms else None)
    if treatment is None:
        others = [a for a in arms if a != control]
        if len(others) != 1:
            raise EstimationError(f"need exactly one treatment arm besides {control!r}, found {others}; pass treatment=")
        treatment = others[0]
    return control, treatment


def arm_values(table: pd.DataFrame, metric: Metric, arm: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(num, den) per user of one arm; raises for an arm with no users."""
    sub = table[table["arm"] == arm]
    if len(sub) == 0:
        raise EstimationError(f"metric {metric.name!r}: arm {arm!r} has zero users")
    num_col = f"{metric.name}__num" if f"{metric.name}__num" in sub else metric.num
    den_col = f"{metric.name}__den" if f"{metric.name}__den" in sub else metric.den
    if num_col not in sub:
        raise EstimationError(f"metric {metric.name!r}: column {num_col!r} not in the user table")
    y = sub[num_col].to_numpy(dtype=float)
    x = sub[den_col].to_numpy(dtype=float) if metric.kind == "ratio" else None
    return y, x


def rel_delta(t: float, c: float, vt: float, vc: float, z: float) -> tuple[float, tuple[float, float]]:
    """Relative lift T/C - 1 and its delta-method CI (vt, vc: variances of the arm estimates)."""
    if c == 0:
        return float("nan"), (float("nan"), float("nan"))
    rel = t / c - 1.0
    se = np.sqrt(vt / c**2 + t**2 * vc / c**4)
    return rel, (rel - z * se, rel + z * se)


def ratio_stats(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Ratio sum(y)/sum(x) and its delta-method variance over i.i.d. users."""
    n = y.size
    if n < 2:
        raise EstimationError("ratio metric needs at least 2 users per arm")
    my, mx = y.mean(), x.mean()
    if mx == 0:
        raise EstimationError("ratio metric has a zero denominator in one arm")
    vy, vx = y.var(ddof=1), x.var(ddof=1)
    cov = np.cov(y, x, ddof=1)[0, 1]
    r = my / mx
    var = (vy / mx**2 - 2 * my * cov / mx**3 + my**2 * vx / mx**4) / n
    return r, var


class Estimator:
    name = "base"

    def __init__(self, alpha: float = 0.05, control: str | None = None, treatment: str | None = None) -> None:
        self.alpha, self.control, self.treatment = alpha, control, treatment

    def estimate(self, table: pd.DataFrame, metric: Metric) -> Effect:
        c, t = pick_arms(table, self.control, self.treatment)
        return self._estimate(table, metric, c, t)

    def _estimate(self, table, metric, c, t) -> Effect:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- tests

class WelchT(Estimator):
    """Welch's unequal-variance t-test on per-user values (ratio metrics: per-user num only)."""

    name = "welch"

    def _estimate(self, table, metric, c, t) -> Effect:
        yc, _ = arm_values(table, metric, c)
        yt, _ = arm_values(table, metric, t)
        return welch_effect(yt, yc, metric.name, c, t, self.alpha, self.name)


def welch_effect(yt, yc, name, c, t, alpha, method, note="") -> Effect:
    if yc.size < 2 or yt.size < 2:
        raise EstimationError(f"metric {name!r}: Welch needs at least 2 users per arm")
    vt, vc = yt.var(ddof=1) / yt.size, yc.var(ddof=1) / yc.size
    if vt + vc == 0:
        raise EstimationError(f"metric {name!r} has zero variance in both arms: no test possible")
    cm = CompareMeans(DescrStatsW(yt), DescrStatsW(yc))
    _, p, _ = cm.ttest_ind(usevar="unequal")
    lo, hi = cm.tconfint_diff(alpha=alpha, usevar="unequal")
    mt, mc = yt.mean(), yc.mean()
    z = stats.norm.ppf(1 - alpha / 2)
    rel, rel_ci = rel_delta(mt, mc, vt, vc, z)
    return Effect(name, method, c, t, mc, mt, mt - mc, rel, (lo, hi), rel_ci, float(p),
                  {c: int(yc.size), t: int(yt.size)}, se=float(np.sqrt(vt + vc)), note=note)


class TwoProportion(Estimator):
    """Pooled two-proportion z-test (statsmodels) on a per-user 0/1 metric; Wald CI."""

    name = "two_proportion"

    def _estimate(self, table, metric, c, t) -> Effect:
        yc, _ = arm_values(table, metric, c)
        yt, _ = arm_values(table, metric, t)
        if not (np.isin(yc, (0, 1)).all() and np.isin(yt, (0, 1)).all()):
            raise EstimationError(f"metric {metric.name!r}: two-proportion test needs 0/1 per-user values")
        kc, kt, nc, nt = yc.sum(), yt.sum(), yc.size, yt.size
        pc, pt = kc / nc, kt / nt
        if (kc + kt) in (0, nc + nt):
            raise EstimationError(f"metric {metric.name!r} has zero variance in both arms: no test possible")
        _, p = proportions_ztest([kt, kc], [nt, nc])
        vt, vc = pt * (1 - pt) / nt, pc * (1 - pc) / nc
        z = stats.norm.ppf(1 - self.alpha / 2)
        se = np.sqrt(vt + vc)
        rel, rel_ci = rel_delta(pt, pc, vt, vc, z)
        return Effect(metric.name, self.name, c, t, pc, pt, pt - pc, rel, (pt - pc - z * se, pt - pc + z * se),
                      rel_ci, float(p), {c: int(nc), t: int(nt)}, se=float(se))


class DeltaRatio(Estimator):
    """Ratio metric sum(num)/sum(den) per arm; delta-method variance; two-sided z-test."""

    name = "delta"

    def _estimate(self, table, metric, c, t) -> Effect:
        if metric.kind != "ratio":
            return WelchT(self.alpha, c, t).estimate(table, metric)
        yc, xc = arm_values(table, metric, c)
        yt, xt = arm_values(table, metric, t)
        rc, vc = ratio_stats(yc, xc)
        rt, vt = ratio_stats(yt, xt)
        return z_effect(rt, rc, vt, vc, metric.name, c, t, self.alpha, self.name, {c: yc.size, t: yt.size})


def z_effect(mt, mc, vt, vc, name, c, t, alpha, method, n, note="") -> Effect:
    se = float(np.sqrt(vt + vc))
    if not se > 0:
        raise EstimationError(f"metric {name!r} has zero variance in both arms: no test possible")
    z = stats.norm.ppf(1 - alpha / 2)
    d = mt - mc
    p = 2 * stats.norm.sf(abs(d) / se)
    rel, rel_ci = rel_delta(mt, mc, vt, vc, z)
    return Effect(name, method, c, t, float(mc), float(mt), float(d), rel, (d - z * se, d + z * se), rel_ci,
                  float(p), {k: int(v) for k, v in n.items()}, se=se, note=note)


def linearize(y: np.ndarray, x: np.ndarray | None, r: float, mx: float) -> np.ndarray:
    """Per-user linearisation of a ratio metric around (r, mx): mean equals the ratio to first order."""
    if x is None:
        return y
    return r + (y - r * x) / mx


class Cuped(Estimator):
    """CUPED: Y - theta (X - mean X), theta = cov(Y, X)/var(X) pooled; X = column ``pre``.

    Ratio metrics are linearised first. Falls back (note says why) to DeltaRatio/WelchT when
    the covariate is missing, all-NaN or constant.
    """

    name = "cuped"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None, covariate: str = "pre") -> None:
        super().__init__(alpha, control, treatment)
        self.covariate = covariate

    def fallback_reason(self, table: pd.DataFrame) -> str | None:
        if self.covariate not in table:
            return f"CUPED fallback: no pre-experiment covariate column {self.covariate!r}"
        x = table[self.covariate]
        if x.isna().all():
            note = table.attrs.get("notes", {}).get("pre", "no pre-experiment data")
            return f"CUPED fallback: {note}"
        if x.fillna(0).var() == 0:
            return "CUPED fallback: pre-experiment covariate is constant"
        return None

    def _estimate(self, table, metric, c, t) -> Effect:
        reason = self.fallback_reason(table)
        if reason:
            base = DeltaRatio if metric.kind == "ratio" else WelchT
            eff = base(self.alpha, c, t).estimate(table, metric)
            eff.method, eff.note = f"{eff.method} (cuped fallback)", reason
            return eff
        yc, xc = arm_values(table, metric, c)
        yt, xt = arm_values(table, metric, t)
        cov_c = table.loc[table["arm"] == c, self.covariate].fillna(0).to_numpy(float)
        cov_t = table.loc[table["arm"] == t, self.covariate].fillna(0).to_numpy(float)
        if metric.kind == "ratio":
            yall, xall = np.concatenate([yc, yt]), np.concatenate([xc, xt])
            mx = xall.mean()
            if mx == 0:
                raise EstimationError(f"metric {metric.name!r}: zero denominator")
            r = yall.sum() / xall.sum()
            lc, lt = linearize(yc, xc, r, mx), linearize(yt, xt, r, mx)
        else:
            lc, lt = yc, yt
        X = np.concatenate([cov_c, cov_t])
        Y = np.concatenate([lc, lt])
        theta = np.cov(Y, X, ddof=1)[0, 1] / X.var(ddof=1)
        mxx = X.mean()
        ac, at = lc - theta * (cov_c - mxx), lt - theta * (cov_t - mxx)
        eff = welch_effect(at, ac, metric.name, c, t, self.alpha, self.name)
        rho = np.corrcoef(Y, X)[0, 1]
        eff.extra = {"theta": float(theta), "rho": float(rho), "var_reduction": float(rho**2)}
        return eff


class Bootstrap(Estimator):
    """Percentile bootstrap (scipy.stats.bootstrap, resampling users within arm).

    Statistic: difference of means (ratio metrics: difference of sum/sum). p-value: share of
    null-shifted replicates at least as extreme as the observed difference.
    """

    name = "bootstrap"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None, n_resamples: int = 2000, seed: int = 0):
        super().__init__(alpha, control, treatment)
        self.n_resamples, self.seed = n_resamples, seed

    def _estimate(self, table, metric, c, t) -> Effect:
        yc, xc = arm_values(table, metric, c)
        yt, xt = arm_values(table, metric, t)
        if metric.kind == "ratio":
            idx_c, idx_t = np.arange(yc.size), np.arange(yt.size)

            def stat(ic, it, axis=-1):
                ic, it = ic.astype(int), it.astype(int)
                return yt[it].sum(axis) / xt[it].sum(axis) - yc[ic].sum(axis) / xc[ic].sum(axis)

            data = (idx_c, idx_t)
            mc, mt = yc.sum() / xc.sum(), yt.sum() / xt.sum()
        else:
            def stat(a, b, axis=-1):
                return b.mean(axis) - a.mean(axis)

            data = (yc, yt)
            mc, mt = yc.mean(), yt.mean()
        if np.var(np.concatenate([yc, yt])) == 0:
            raise EstimationError(f"metric {metric.name!r} has zero variance in both arms: no test possible")
        res = stats.bootstrap(data, stat, n_resamples=self.n_resamples, confidence_level=1 - self.alpha,
                              method="percentile", vectorized=True, rng=np.random.default_rng(self.seed))
        boot = res.bootstrap_distribution
        d = mt - mc
        p = float(np.mean(np.abs(boot - d) >= abs(d)))
        p = max(p, 1.0 / (self.n_resamples + 1))
        se = float(res.standard_error)
        z = stats.norm.ppf(1 - self.alpha / 2)
        vc = (yc.var(ddof=1) / yc.size) if metric.kind != "ratio" else ratio_stats(yc, xc)[1]
        vt = (yt.var(ddof=1) / yt.size) if metric.kind != "ratio" else ratio_stats(yt, xt)[1]
        rel, rel_ci = rel_delta(mt, mc, vt, vc, z)
        lo, hi = res.confidence_interval
        return Effect(metric.name, self.name, c, t, float(mc), float(mt), float(d), rel, (float(lo), float(hi)),
                      rel_ci, p, {c: int(yc.size), t: int(yt.size)}, se=se)


# ---------------------------------------------------------------- sequential

def msprt_lambda(d: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """Normal-mixture likelihood ratio for H0: delta = 0, estimate d with variance v (vectorised)."""
    return np.sqrt(v / (v + tau2)) * np.exp(tau2 * d**2 / (2 * v * (v + tau2)))


def msprt_log_lambda(d: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """log of :func:`msprt_lambda` (no overflow for huge effects)."""
    return 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))


def msprt_pvalues(d: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """Always-valid p-values along the last axis (looks): running min of min(1, 1/Lambda)."""
    p = np.exp(-np.maximum(msprt_log_lambda(d, v, tau2), 0.0))
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence_halfwidth(v: np.ndarray, tau2: float, alpha: float) -> np.ndarray:
    """Half-width of the mSPRT confidence sequence (valid simultaneously over all looks)."""
    return np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * np.log(alpha)))


class MSPRT(Estimator):
    """Mixture SPRT (Johari et al.): always-valid p and a confidence sequence at this look.

    ``tau`` is the mixing scale as a fraction of the control mean (fixed before the run).
    The estimate and its variance come from DeltaRatio (ratio) or Welch (mean) statistics.
    """

    name = "msprt"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None, tau: float = 0.05) -> None:
        super().__init__(alpha, control, treatment)
        self.tau = tau

    def _estimate(self, table, metric, c, t) -> Effect:
        base = DeltaRatio if metric.kind == "ratio" else WelchT
        e = base(self.alpha, c, t).estimate(table, metric)
        v = e.se**2
        tau2 = (self.tau * abs(e.control)) ** 2 if e.control else self.tau**2
        p = float(msprt_pvalues(np.array([e.abs_lift]), np.array([v]), tau2)[-1])
        hw = float(confidence_sequence_halfwidth(np.array([v]), tau2, self.alpha)[0])
        rel = e.rel_lift
        rel_hw = hw / abs(e.control) if e.control else float("nan")
        return Effect(metric.name, self.name, c, t, e.control, e.treatment, e.abs_lift, rel,
                      (e.abs_lift - hw, e.abs_lift + hw), (rel - rel_hw, rel + rel_hw), p, e.n_by_arm,
                      se=e.se, note="always-valid p / confidence sequence", extra={"tau2": tau2})


ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (WelchT, TwoProportion, DeltaRatio, Cuped, Bootstrap, MSPRT)
}


def default_estimator(metric: Metric, alpha: float = 0.05, cuped: bool = True) -> Estimator:
    """The estimator the report uses for a metric kind."""
    if cuped:
        return Cuped(alpha)
    if metric.kind == "proportion":
        return TwoProportion(alpha)
    return DeltaRatio(alpha) if metric.kind == "ratio" else WelchT(alpha)
