"""A/B estimators with one contract: ``Estimator().estimate(table, metric) -> Effect``.

``table`` is the per-user DataFrame (column ``arm`` plus metric columns, see views.user_table);
``metric`` a :class:`analysis.views.Metric`. The control arm is ``table.attrs['control']`` (else
the first arm in sorted order) and the treatment the other arm (pass ``control=``/``treatment=``
to choose among several). Estimators:

  WelchT        Welch t-test on per-user values (statsmodels' formulas), mean/proportion metrics
  TwoProportion pooled two-proportion z-test (statsmodels' formulas) on a per-user 0/1 metric
  DeltaRatio    ratio metric sum(num)/sum(den) per arm, delta-method variance (HC2), t test with
                small-sample dof (working_dof)
  Cuped         regression adjustment on pre-experiment covariates (CUPED; several covariates =
                CUPED++), ratio metrics linearised per arm; falls back to the plain estimator
                with a stated reason when no covariate varies (never by the data's outcome: a
                choice by the sign of the result inflated A/A rejections, 9.7% where applied)
  BatchRatio    a system metric measured per serving call (latency): both arms read at the same
                load (call size, history items), paired within serving batches, clustered by
                batch and by user
  MSPRT         mixture sequential probability ratio test, stateful over looks: always-valid p
                (never increases) and a confidence sequence (never widens)

Levels (``control``/``treatment``) are always the raw arm means; the relative lift is the
(possibly adjusted) absolute lift over the raw control mean, with Fieller's CI, and is
left undefined (NaN, with a note) when the control mean is not positive. So a relative lift
never has another sign than treatment - control.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from simulator.core.errors import SimError

from . import dist as stats
from .views import BATCH_LOAD, Metric


class EstimationError(SimError):
    """The data cannot support the requested test (empty arm, zero variance...)."""


NOT_POSITIVE = "relative lift undefined: the control mean is not positive"


@dataclass(kw_only=True)
class Effect:
    """One comparison of a treatment arm with the control on one metric (build it with keywords).

    Numbers are stored as plain floats/ints; a relative lift over a control that is not positive is
    undefined, and the note says so."""

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
    rel_se: float = float("nan")  # delta-method SE of rel_lift (the MDE and power read se / control)
    dof: float = float("inf")  # degrees of freedom of the test statistic (inf: normal)
    control_var: float = float("nan")  # Var of the control level: Fieller's relative CI
    cov_dc: float = float("nan")  # Cov(abs_lift, control level)

    def __post_init__(self) -> None:
        for k in ("control", "treatment", "abs_lift", "rel_lift", "p", "se", "rel_se", "dof",
                  "control_var", "cov_dc"):
            setattr(self, k, float(getattr(self, k)))
        self.ci = tuple(map(float, self.ci))
        self.rel_ci = tuple(map(float, self.rel_ci))
        self.n_by_arm = {k: int(v) for k, v in self.n_by_arm.items()}
        if not self.control > 0 and NOT_POSITIVE not in self.note:
            self.note = "; ".join(x for x in (self.note, NOT_POSITIVE) if x)

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


NAN2 = (float("nan"), float("nan"))


def fieller(d: float, c: float, var_d: float, var_c: float, cov_dc: float, q: float) -> tuple[float, float]:
    """Fieller's interval for the relative lift d / c at quantile ``q``.

    The ratios rho for which "d - rho c = 0" is not rejected, Var(d - rho c) = var_d - 2 rho cov_dc +
    rho^2 var_c. It excludes 0 exactly when |d| / sqrt(var_d) > q, so the relative CI and the test of
    the difference are one decision (the delta-method interval is not: it is symmetric where the
    ratio is skewed, and anti-conservative in small samples). NaN bounds when c is not positive or
    not distinguishable from 0 at this level (the set is then unbounded). Missing var_c / cov_dc
    count as 0 (a known control level)."""
    var_c = var_c if np.isfinite(var_c) else 0.0
    cov_dc = cov_dc if np.isfinite(cov_dc) else 0.0
    a = c * c - q * q * var_c
    if not (c > 0 and a > 0 and np.isfinite(d) and np.isfinite(var_d)):
        return NAN2
    b, k = d * c - q * q * cov_dc, d * d - q * q * var_d
    r = float(np.sqrt(max(b * b - a * k, 0.0)))
    return float((b - r) / a), float((b + r) / a)


def relative(d: float, c: float, var_d: float, var_c: float, cov_dc: float, z: float) -> tuple[float, tuple, float]:
    """Relative lift d / c (d = absolute lift, c = raw control mean), its Fieller CI and its
    delta-method SE, sqrt(Var(d)/c^2 + d^2 Var(c)/c^4 - 2 d Cov(d, c)/c^3). NaN when c <= 0: a
    relative change of a non-positive level means nothing (the caller adds the note)."""
    if not c > 0:
        return float("nan"), NAN2, float("nan")
    rel = d / c
    se = float(np.sqrt(max(var_d / c**2 + d**2 * var_c / c**4 - 2 * d * cov_dc / c**3, 0.0)))
    return rel, fieller(d, c, var_d, var_c, cov_dc, z), se


def rel_delta(t: float, c: float, vt: float, vc: float, z: float) -> tuple[float, tuple[float, float], float]:
    """Relative lift T/C - 1 of two independent arm estimates (variances vt, vc), CI and SE."""
    return relative(t - c, c, vt + vc, vc, -vc, z)


def working_dof(xc: np.ndarray | None, xt: np.ndarray | None, nc: int, nt: int, n_cov: int = 0) -> float:
    """Degrees of freedom of a difference of two arms' user-level estimates (Satterthwaite under a
    working model in which a user's variance grows with its denominator x, as Bell & McCaffrey's
    small-sample correction does for clustered data). With equal users it is n_c + n_t - 2 (minus
    the CUPED covariates); when a few heavy users carry most of the denominator it is far smaller,
    which keeps a replay with a few hundred very unequal users at its nominal false-positive rate."""
    xc = np.ones(nc) if xc is None else np.asarray(xc, float)
    xt = np.ones(nt) if xt is None else np.asarray(xt, float)
    if xc.sum() <= 0 or xt.sum() <= 0:
        return float(nc + nt - 2 - n_cov)
    w = np.concatenate([xc / xc.sum() ** 2, xt / xt.sum() ** 2])
    return float(max(w.sum() ** 2 / (w**2).sum() - 2 - n_cov, 1.0))


def hc2_var(psi: np.ndarray, x: np.ndarray | None = None) -> float:
    """Variance of an arm's mean influence, each user's squared residual over 1 - its leverage
    (HC2; the leverage of a ratio metric's user is its share x / sum(x) of the denominator, of a
    mean metric's 1/n, where this is the usual var(ddof=1) / n). A user who carries a large share of
    an arm's exposures pulls its estimate towards himself and hides his own residual: the plain
    variance is too small then."""
    n = psi.size
    h = np.full(n, 1.0 / n) if x is None else np.minimum(np.asarray(x, float) / np.sum(x), 0.99)
    e = psi - psi.mean()
    return float((e**2 / (1 - h)).sum() / n**2)


def ratio_stats(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Ratio sum(y)/sum(x) and its delta-method variance over i.i.d. users (HC2, see hc2_var)."""
    if y.size < 2:
        raise EstimationError("ratio metric needs at least 2 users per arm")
    r, phi = influence(y, x)
    return r, hc2_var(phi, x)


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
    # statsmodels' CompareMeans.ttest_ind / tconfint_diff(usevar="unequal"), written out: importing
    # statsmodels (and with it scipy.stats) would cost `sim report` a second (tests check the formulas)
    dof = (vt + vc) ** 2 / (vt ** 2 / (yt.size - 1) + vc ** 2 / (yc.size - 1))  # Welch-Satterthwaite
    mt, mc = yt.mean(), yc.mean()
    se, td = np.sqrt(vt + vc), stats.StudentT(dof)
    p = float(2 * td.sf(abs(mt - mc) / se))
    lo, hi = mt - mc - td.ppf(1 - alpha / 2) * se, mt - mc + td.ppf(1 - alpha / 2) * se
    rel, rel_ci, rel_se = rel_delta(mt, mc, vt, vc, td.ppf(1 - alpha / 2))
    return Effect(metric=name, method=method, control_arm=c, treatment_arm=t, control=mc, treatment=mt,
                  abs_lift=mt - mc, rel_lift=rel, ci=(lo, hi), rel_ci=rel_ci, p=p,
                  n_by_arm={c: yc.size, t: yt.size}, se=se, rel_se=rel_se, note=note,
                  dof=dof, control_var=vc, cov_dc=-vc)


class TwoProportion(Estimator):
    """Pooled two-proportion z-test (statsmodels' proportions_ztest) on a per-user 0/1 metric; Wald CI."""

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
        pool = (kt + kc) / (nt + nc)  # statsmodels' proportions_ztest (pooled variance), written out
        p = float(2 * stats.norm.sf(abs(pt - pc) / np.sqrt(pool * (1 - pool) * (1 / nt + 1 / nc))))
        vt, vc = pt * (1 - pt) / nt, pc * (1 - pc) / nc
        z = stats.norm.ppf(1 - self.alpha / 2)
        se = np.sqrt(vt + vc)
        rel, rel_ci, rel_se = rel_delta(pt, pc, vt, vc, z)
        return Effect(metric=metric.name, method=self.name, control_arm=c, treatment_arm=t, control=pc,
                      treatment=pt, abs_lift=pt - pc, rel_lift=rel, ci=(pt - pc - z * se, pt - pc + z * se),
                      rel_ci=rel_ci, p=p, n_by_arm={c: nc, t: nt}, se=se, rel_se=rel_se,
                      control_var=vc, cov_dc=-vc)


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
        return z_effect(rt, rc, vt, vc, metric.name, c, t, self.alpha, self.name, {c: yc.size, t: yt.size},
                        dof=working_dof(xc, xt, yc.size, yt.size))


def z_effect(mt, mc, vt, vc, name, c, t, alpha, method, n, note="", dof: float = np.inf) -> Effect:
    """Two independent arm estimates (variances vt, vc): a t test with ``dof`` (normal if infinite)."""
    se = float(np.sqrt(vt + vc))
    if not se > 0:
        raise EstimationError(f"metric {name!r} has zero variance in both arms: no test possible")
    dist = stats.for_dof(dof)
    z = dist.ppf(1 - alpha / 2)
    d = mt - mc
    p = 2 * dist.sf(abs(d) / se)
    rel, rel_ci, rel_se = rel_delta(mt, mc, vt, vc, z)
    return Effect(metric=name, method=method, control_arm=c, treatment_arm=t, control=mc, treatment=mt,
                  abs_lift=d, rel_lift=rel, ci=(d - z * se, d + z * se), rel_ci=rel_ci, p=p, n_by_arm=n, se=se,
                  rel_se=rel_se, note=note, dof=dof, control_var=vc, cov_dc=-vc)


def influence(y: np.ndarray, x: np.ndarray | None) -> tuple[float, np.ndarray]:
    """An arm's estimate (mean of y, or sum(y)/sum(x)) and each user's influence on it.

    The influence values have mean 0 and Var(estimate) ~ var(influence) / n (the delta method
    for a ratio: (y - R x) / mean(x), linearised around this arm's own R and mean(x)).
    """
    if x is None:
        return float(y.mean()), y - y.mean()
    mx = x.mean()
    if mx == 0:
        raise EstimationError("ratio metric has a zero denominator in one arm")
    r = y.sum() / x.sum()
    return float(r), (y - r * x) / mx


class Cuped(Estimator):
    """Regression adjustment on pre-experiment covariates (CUPED; several columns = CUPED++).

    Per arm, each user's influence on the arm estimate (ratio metrics: linearised around the
    arm's own ratio) is regressed, within arms, on the covariates; the adjusted lift is
    (R_t - R_c) - theta'(mean Z_t - mean Z_c), its variance from the residuals. Levels stay the
    raw arm values and the relative lift is the adjusted lift over the raw control value.
    Falls back (the note says why) to DeltaRatio/WelchT when no covariate varies. When the adjusted
    lift and the raw difference differ in sign, the adjusted one stands and the note says so:
    switching estimators on the sign of the result is a data-dependent choice of test (on a
    replayed A/A it rejected 9.7% of the runs it kept CUPED for, 8.2% overall).
    """

    name = "cuped"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None,
                 covariates: tuple[str, ...] | str = "pre") -> None:
        super().__init__(alpha, control, treatment)
        self.covariates = (covariates,) if isinstance(covariates, str) else tuple(covariates)

    def usable(self, table: pd.DataFrame) -> tuple[list[str], str | None]:
        """Covariate columns that exist and vary, or a fallback reason."""
        cols = [c for c in self.covariates if c in table]
        if not cols:
            return [], f"CUPED fallback: no pre-experiment covariate column {self.covariates[0]!r}"
        if all(table[c].isna().all() for c in cols):
            return [], "CUPED fallback: " + table.attrs.get("notes", {}).get("pre", "no pre-experiment data")
        cols = [c for c in cols if table[c].fillna(0).var() > 0]
        return (cols, None) if cols else ([], "CUPED fallback: pre-experiment covariates are constant")

    def _plain(self, table, metric, c, t, reason: str) -> Effect:
        base = DeltaRatio if metric.kind == "ratio" else WelchT
        eff = base(self.alpha, c, t).estimate(table, metric)
        eff.method, eff.note = f"{eff.method} (cuped fallback)", "; ".join(x for x in (reason, eff.note) if x)
        return eff

    def _estimate(self, table, metric, c, t) -> Effect:
        cols, reason = self.usable(table)
        if reason:
            return self._plain(table, metric, c, t, reason)
        arms, dens = {}, {}
        for a in (c, t):
            y, x = arm_values(table, metric, a)
            if y.size < 2:
                raise EstimationError(f"metric {metric.name!r}: CUPED needs at least 2 users per arm")
            r, phi = influence(y, x if metric.kind == "ratio" else None)
            zc = table.loc[table["arm"] == a, cols].fillna(0).to_numpy(float)
            arms[a], dens[a] = (r, phi, zc - zc.mean(0), zc.mean(0)), x
        phi_all = np.concatenate([arms[c][1], arms[t][1]])
        z_all = np.concatenate([arms[c][2], arms[t][2]])
        theta = np.linalg.lstsq(z_all, phi_all, rcond=None)[0]  # within-arm regression (k,)
        (rc, phic, zcc, mzc), (rt, phit, zct, mzt) = arms[c], arms[t]
        psic, psit = phic - zcc @ theta, phit - zct @ theta  # residual influence per user
        nc, nt = phic.size, phit.size
        d = (rt - rc) - float((mzt - mzc) @ theta)
        raw = rt - rc
        note = "" if np.sign(d) == np.sign(raw) or raw == 0 else (
            f"CUPED-adjusted lift and the raw difference ({raw:+.3g}) differ in sign: the pre-period "
            "imbalance the adjustment removes is larger than the raw difference")
        vd = hc2_var(psic, dens[c]) + hc2_var(psit, dens[t])
        se = float(np.sqrt(vd))
        if not se > 0:
            raise EstimationError(f"metric {metric.name!r} has zero variance in both arms: no test possible")
        dof = working_dof(dens[c], dens[t], nc, nt, len(cols))
        z = stats.StudentT(dof).ppf(1 - self.alpha / 2)
        cov_dc = -float(np.cov(psic, phic, ddof=1)[0, 1]) / nc  # d contains -R_c(adjusted)
        var_c = hc2_var(phic, dens[c])
        rel, rel_ci, rel_se = relative(d, rc, vd, var_c, cov_dc, z)
        plain_var = var_c + hc2_var(phit, dens[t])
        return Effect(metric=metric.name, method=self.name, control_arm=c, treatment_arm=t, control=rc,
                      treatment=rt, abs_lift=d, rel_lift=rel, ci=(d - z * se, d + z * se), rel_ci=rel_ci,
                      p=2 * stats.StudentT(dof).sf(abs(d) / se), n_by_arm={c: nc, t: nt}, se=se, rel_se=rel_se,
                      dof=dof, control_var=var_c, cov_dc=cov_dc, note=note,
                      extra={"theta": dict(zip(cols, map(float, theta), strict=True)), "covariates": cols,
                             "var_reduction": float(1 - vd / plain_var) if plain_var > 0 else 0.0})


class BatchRatio(Estimator):
    """A system metric measured per serving call (latency): per-request time at the same load.

    Latency is measured once per pipeline call (one call per arm and serving batch, its time
    amortised over the call's requests), so requests served together share it, and the machine's
    load drifts over time; and a user's requests share their cost (their history's length), so
    neither users nor batches are independent units alone. A call costs a fixed part plus a part
    per request, so an arm that happens to get more of the traffic (the user split is random) has
    larger calls and a lower per-request time: in an A/A with 16,000 requests that imbalance alone
    made the raw per-request ratios differ 1.6x more than their variance said (20% rejections).
    So each arm's least-squares line of call time on the call's load is read at the pooled mean
    call (``at_pooled_load``): both arms compared at the same load. The load is the call's
    requests and, where recorded (``requests.history_len``), the history items the arms were given
    with them: a request's cost grows with its user's history (seen-item filters), histories
    differ 30-fold between users, and the user split gives one arm the longer ones; that imbalance
    moved the difference more than the clustered SE said (learned ML-100K A/A, 80 seeds: 12.5%
    rejections at the same call size, 3.7% at the same call size and history). Treatments that
    lengthen histories (more consumption) are compared at the same history too: the difference is
    the serving cost of the same work. The lines' residuals are HC3 (``at_pooled_load``): in a short
    run with few calls a fitted line follows its own calls. Levels are the raw sum(y)/sum(requests)
    per arm. The table has one row per (batch, arm, user) (``batch_table``). Both arms are paired
    within a batch, or, where batches hold one arm (a replay), within time windows of consecutive
    batches (``paired_windows``). The variance of the difference is clustered two ways, by pairing
    unit and by user (Cameron, Gelbach and Miller 2011: V_unit +
    V_user - V_unit&user), from each row's influence on the difference (a call's influence shared
    among its rows by their requests); t test with min(units, users) - 1 degrees of freedom. A
    table without users is clustered by pairing unit alone. The arm order within a batch is
    randomised by the simulator, so neither arm is systematically served first.
    """

    name = "batch"

    def _estimate(self, table, metric, c, t) -> Effect:
        num, den = metric.num, metric.den
        rows = table[table.arm.isin([c, t])].reset_index(drop=True)
        extra = [k for k in BATCH_LOAD if k in rows and rows[k].notna().all()]  # not for runs before it
        calls = rows.groupby(["batch_no", "arm"], sort=True)[[num, den, *extra]].sum().reset_index()
        for a in (c, t):
            if calls.loc[calls.arm == a, den].sum() == 0:
                raise EstimationError(f"metric {metric.name!r}: arm {a!r} has no measured batches")
        wide = calls.pivot_table(index="batch_no", columns="arm", values=den, fill_value=0.0)
        has_c, has_t = (wide[c] > 0).to_numpy(), (wide[t] > 0).to_numpy()
        windowed = not (has_c & has_t).all()
        unit = dict(zip(wide.index, window_ids(has_c, has_t) if windowed else np.arange(len(wide)), strict=True))
        B = len(set(unit.values()))
        if B < 3:
            raise EstimationError(f"metric {metric.name!r}: {B} serving batches are too few to test")
        load = load_columns(calls, den, c, t)
        d, call_inf, r = adjusted_difference(calls[num].to_numpy(float), calls[load].to_numpy(float),
                                             calls.arm.to_numpy(), c, t)
        pos = pd.MultiIndex.from_frame(calls[["batch_no", "arm"]]).get_indexer(
            pd.MultiIndex.from_frame(rows[["batch_no", "arm"]]))  # each row's call
        share = np.divide(rows[den].to_numpy(float), calls[den].to_numpy(float)[pos],
                          out=np.zeros(len(rows)), where=calls[den].to_numpy(float)[pos] > 0)
        inf = call_inf[pos] * share[:, None]  # a call's influence shared among its rows by requests
        V, dof = two_way_cov(inf, rows.batch_no.map(unit).to_numpy(),
                             rows["user_id"].to_numpy() if "user_id" in rows else None)
        vd, vc, cov_dc = float(V[0, 0]), float(V[1, 1]), float(V[0, 1])
        se = float(np.sqrt(vd))
        if not se > 0:
            raise EstimationError(f"metric {metric.name!r} has zero variance: no test possible")
        q = stats.StudentT(dof).ppf(1 - self.alpha / 2)
        rel, rel_ci, rel_se = relative(d, r[c], vd, vc, cov_dc, q)
        n = {c: int(has_c.sum()), t: int(has_t.sum())}
        where = (f"n = serving batches ({B}), not users" if not windowed else
                 f"n = {B} time windows of consecutive serving batches holding both arms ({len(wide)} batches), "
                 "not users")
        return Effect(metric=metric.name, method=self.name, control_arm=c, treatment_arm=t, control=r[c],
                      treatment=r[t], abs_lift=d, rel_lift=rel, ci=(d - q * se, d + q * se), rel_ci=rel_ci,
                      p=2 * stats.StudentT(dof).sf(abs(d) / se), n_by_arm=n, se=se, rel_se=rel_se, dof=dof,
                      control_var=vc, cov_dc=cov_dc,
                      note=f"{where}; arms compared at the same call size" + (
                          " and history items per call" if len(load) > 1 else ""))


def load_columns(calls: pd.DataFrame, den: str, c: str, t: str) -> list[str]:
    """The calls' load the arms are compared at: their requests (``den``), and each of
    ``BATCH_LOAD`` the table has where both arms' calls can fit a line on it (it varies, and not
    in step with the requests)."""
    cols = [den]
    for k in BATCH_LOAD:
        if k not in calls:
            continue
        fits = []
        for a in (c, t):
            fits.append(_can_fit(np.column_stack([np.ones((calls.arm == a).sum()),
                                                  calls.loc[calls.arm == a, [*cols, k]]])))
        if all(fits):
            cols.append(k)
    return cols


def _can_fit(X: np.ndarray) -> bool:
    """Whether a least-squares line on design X (calls, parameters) is determined with a residual
    left: more calls than parameters and no constant or collinear column."""
    return len(X) > X.shape[1] and np.linalg.matrix_rank(X) == X.shape[1]


def adjusted_difference(y: np.ndarray, Z: np.ndarray, arm: np.ndarray, c: str, t: str
                        ) -> tuple[float, np.ndarray, dict[str, float]]:
    """The treatment's per-request time minus the control's, each arm's line of call time on the
    calls' load read at the pooled mean call (``at_pooled_load``), from calls' times ``y`` and loads
    ``Z`` (calls, k; column 0 the call's requests, then e.g. its history items); with each call's
    influence on (that difference, the control's raw ratio) as a (calls, 2) array, and the raw
    ratios sum(y)/sum(requests) per arm."""
    zbar = Z.mean(0)  # the pooled mean call over both arms
    val, inf, grad, raw = {}, {}, {}, {}
    for a in (c, t):
        m = arm == a
        raw[a] = float(y[m].sum() / Z[m, 0].sum())
        val[a], inf[a], grad[a] = at_pooled_load(y[m], Z[m], zbar)
    inf_d = (Z - zbar) @ (grad[t] - grad[c]) / len(y)  # through the pooled mean call
    inf_d[arm == t] += inf[t]
    inf_d[arm == c] -= inf[c]
    inf_c = np.where(arm == c, (y - raw[c] * Z[:, 0]) / Z[arm == c, 0].sum(), 0.0)
    return val[t] - val[c], np.column_stack([inf_d, inf_c]), raw


def at_pooled_load(y: np.ndarray, Z: np.ndarray, zbar: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """One arm's per-request time at the pooled mean call ``zbar``: its least-squares line of call
    time on the call's load, y = a + Z b, read at zbar and divided by zbar's requests (zbar[0]);
    with each call's influence on it and its gradient in zbar. An arm whose calls cannot fit the
    line (fewer calls than parameters + 1, or a constant or collinear load) keeps its ratio
    sum(y)/sum(requests), which does not depend on zbar.

    Each call's residual is divided by 1 - its leverage (HC3, MacKinnon and White 1985): a line
    fitted to few calls (a short run: ~27 calls an arm) follows its own calls, and the plain
    residuals understated the variance (default-world A/A, 200 recorded runs: 9.0% rejections
    with the history load, 5.5% with HC3; with many calls the leverages are ~0 and nothing moves)."""
    X = np.column_stack([np.ones(len(y)), Z])  # (calls, 1 + k)
    if not _can_fit(X):
        r = float(y.sum() / Z[:, 0].sum())
        return r, (y - r * Z[:, 0]) / Z[:, 0].sum(), np.zeros(Z.shape[1])
    XtX_inv = np.linalg.inv(X.T @ X)
    theta = XtX_inv @ X.T @ y  # (a, b...)
    g = np.r_[1.0, zbar] / zbar[0]
    value = float(g @ theta)
    grad = theta[1:] / zbar[0]
    grad[0] -= value / zbar[0]
    lev = np.einsum("ij,jk,ik->i", X, XtX_inv, X)  # (calls,) each call's leverage
    resid = (y - X @ theta) / np.maximum(1 - lev, 1e-6)  # a call with leverage 1 has residual 0
    return value, (X @ XtX_inv @ g) * resid, grad


def two_way_cov(inf: np.ndarray, units: np.ndarray, users: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Covariance of the column sums of ``inf`` (rows x k influence values) clustered by ``units``
    and, when given, by ``users`` too (V_units + V_users - V_both, the larger one-way matrix where
    that is not positive); with its dof, min(clusters) - 1."""
    def one_way(codes: np.ndarray) -> tuple[np.ndarray, int]:
        sums = np.zeros((codes.max() + 1, inf.shape[1]))
        np.add.at(sums, codes, inf)
        G = len(sums)
        return G / (G - 1) * sums.T @ sums, G

    v_unit, n_unit = one_way(pd.factorize(units)[0])
    if users is None:
        return v_unit, n_unit - 1
    v_user, n_user = one_way(pd.factorize(users)[0])
    v_both, _ = one_way(pd.factorize(pd.MultiIndex.from_arrays([units, users]))[0])
    v = v_unit + v_user - v_both
    if not np.all(np.linalg.eigvalsh(v) > 0):
        v = v_unit if v_unit[0, 0] >= v_user[0, 0] else v_user
    return v, min(n_unit, n_user) - 1


def paired_windows(wide: pd.DataFrame, den: str, c: str, t: str) -> pd.DataFrame:
    """Consecutive serving batches summed into time windows that each hold both arms.

    Where every batch serves both arms (a world's batches), the windows are the batches. In a replay
    most batches hold one arm (few users request at the same moment), so pairing the arms within a
    batch would compare an arm with nothing; a window closes as soon as both arms have served in it,
    and a last window missing an arm joins the one before."""
    has_c, has_t = (wide[(den, c)] > 0).to_numpy(), (wide[(den, t)] > 0).to_numpy()
    if (has_c & has_t).all():
        return wide
    return wide.groupby(window_ids(has_c, has_t)).sum()


def window_ids(has_c: np.ndarray, has_t: np.ndarray) -> np.ndarray:
    """Each batch's window (``paired_windows``), from whether each batch served each arm."""
    window, w, seen_c, seen_t = np.zeros(len(has_c), np.int64), 0, False, False
    for i in range(len(has_c)):
        window[i] = w
        seen_c, seen_t = seen_c or has_c[i], seen_t or has_t[i]
        if seen_c and seen_t:
            w, seen_c, seen_t = w + 1, False, False
    if seen_c or seen_t:  # an unfinished last window
        window[window == w] = max(w - 1, 0)
    return window


def default_estimator(metric: Metric, alpha: float = 0.05, cuped: bool = True,
                      covariates: tuple[str, ...] = ("pre",)) -> Estimator:
    """The estimator the report uses for a metric."""
    if metric.unit == "batch":
        return BatchRatio(alpha)
    if cuped:
        return Cuped(alpha, covariates=covariates)
    if metric.kind == "proportion":
        return TwoProportion(alpha)
    return DeltaRatio(alpha) if metric.kind == "ratio" else WelchT(alpha)
