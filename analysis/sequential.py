"""The sequential monitor of a run: the primary metric looked at over simulated time.

At ``looks`` equally spaced simulated times, every user's metric is recomputed from the events
seen so far (the same columns as ``v_user_metrics``), and a stateful :class:`MSPRT` monitor
updates its always-valid p (never increases) and confidence sequence (never widens). Stopping
the experiment at the first look where the always-valid p < alpha keeps the false-positive
rate at alpha, which the fixed-horizon p (also shown) does not.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .estimators import NAN2, DeltaRatio, Effect, EstimationError, Estimator, WelchT
from .views import COVARIATES, Metric


def msprt_log_lambda(d: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """log of the normal-mixture likelihood ratio for H0: delta = 0, estimate d with variance v
    (vectorised; the log form does not overflow for huge effects)."""
    return 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))


def msprt_pvalues(d: np.ndarray, v: np.ndarray, tau2: float) -> np.ndarray:
    """Always-valid p-values along the last axis (looks): running min of min(1, 1/Lambda)."""
    p = np.exp(-np.maximum(msprt_log_lambda(d, v, tau2), 0.0))
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence_halfwidth(v: np.ndarray, tau2: float, alpha: float) -> np.ndarray:
    """Half-width of the mSPRT confidence sequence (valid simultaneously over all looks)."""
    return np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * np.log(alpha)))


class MSPRT(Estimator):
    """Mixture SPRT (Johari et al.) as a monitor: each ``estimate`` call is one more look.

    The always-valid p is the running minimum over looks (never increases) and the confidence
    sequence the running intersection (never widens), so stopping at any look is valid. ``tau``
    is the mixing scale as a fraction of the control mean at the first look (then fixed). The
    estimate and its variance come from DeltaRatio (ratio) or Welch (mean) statistics.
    """

    name = "msprt"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None, tau: float = 0.05) -> None:
        super().__init__(alpha, control, treatment)
        self.tau = tau
        self.reset()

    def reset(self) -> None:
        self.looks, self.tau2, self.p, self.cs = 0, None, 1.0, (-np.inf, np.inf)

    def _estimate(self, table, metric, c, t) -> Effect:
        base = DeltaRatio if metric.kind == "ratio" else WelchT
        e = base(self.alpha, c, t).estimate(table, metric)
        v = e.se**2
        if self.tau2 is None:
            self.tau2 = (self.tau * abs(e.control)) ** 2 if e.control else self.tau**2
        self.looks += 1
        self.p = min(self.p, float(np.exp(-max(msprt_log_lambda(np.array(e.abs_lift), np.array(v), self.tau2), 0.0))))
        hw = float(confidence_sequence_halfwidth(np.array([v]), self.tau2, self.alpha)[0])
        self.cs = (max(self.cs[0], e.abs_lift - hw), min(self.cs[1], e.abs_lift + hw))
        rel_cs = (self.cs[0] / e.control, self.cs[1] / e.control) if e.control > 0 else NAN2
        return Effect(metric=metric.name, method=self.name, control_arm=c, treatment_arm=t, control=e.control,
                      treatment=e.treatment, abs_lift=e.abs_lift, rel_lift=e.rel_lift, ci=self.cs, rel_ci=rel_cs,
                      p=self.p, n_by_arm=e.n_by_arm, se=e.se, rel_se=e.rel_se,
                      control_var=e.control_var, cov_dc=e.cov_dc,
                      note=f"always-valid p / confidence sequence after {self.looks} look(s)",
                      extra={"tau2": self.tau2, "looks": self.looks})


# v_user_metrics' columns, per look (metric SQL uses these names)
_PER_LOOK = """
WITH looks AS (SELECT k, $start + (k + 1) * ($end - $start) / $looks AS t FROM range($looks) r(k)),
u AS (
  SELECT l.k, l.t, r.user_id, r.arm,
         count(*) AS requests, count(DISTINCT r.session_id) AS sessions, sum(r.exposures) AS exposures,
         sum(r.clicks) AS clicks, sum(r.consumes) AS consumes, sum(r.consumption) AS consumption,
         sum(r.hit) AS hits, sum(r.ndcg) AS ndcg_sum, sum(r.latency_ms) AS latency_sum,
         CASE WHEN sum(r.clicks) > 0 THEN 1 ELSE 0 END AS any_click
  FROM v_request_metrics r JOIN looks l ON r.ts <= l.t
  WHERE r.run_id = $run_id GROUP BY ALL)
SELECT k, t, arm, user_id, ({num}) AS "{name}__num"{den} FROM u ORDER BY k, user_id"""
_UNAVAILABLE = {"novelty_sum", "ild_sum", *COVARIATES}  # user_table columns that are not per look


def monitorable(metric: Metric) -> bool:
    """Metrics built from v_user_metrics columns only (not dataset-dependent ones, not batch metrics)."""
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", f"{metric.num} {metric.den or ''}"))
    return metric.unit == "user" and not names & _UNAVAILABLE


def sequential_path(con, run_id: str, metric: Metric, control: str, treatment: str, *, looks: int = 20,
                    alpha: float = 0.05, tau: float = 0.05) -> pd.DataFrame:
    """One row per look: estimate, fixed-horizon CI and p, confidence sequence, always-valid p."""
    start, end = con.execute("SELECT sim_start, coalesce(sim_end, sim_start) FROM runs WHERE run_id = ?",
                             [run_id]).fetchone()
    den = f', ({metric.den}) AS "{metric.name}__den"' if metric.den else ""
    sql = _PER_LOOK.format(num=metric.num, den=den, name=metric.name)
    per = con.execute(sql, {"run_id": run_id, "start": float(start), "end": float(max(end, start + 1.0)),
                            "looks": looks}).df()
    monitor = MSPRT(alpha, control, treatment, tau=tau)
    fixed = (DeltaRatio if metric.kind == "ratio" else WelchT)(alpha, control, treatment)
    rows = []
    for (k, t), tab in per.groupby(["k", "t"], sort=True):
        try:
            f, s = fixed.estimate(tab, metric), monitor.estimate(tab, metric)
        except EstimationError:
            continue  # too few users at this look
        rows.append({"look": int(k) + 1, "hours": (float(t) - start) / 3600.0, "n_control": f.n_by_arm[control],
                     "n_treatment": f.n_by_arm[treatment], "abs_lift": f.abs_lift, "rel_lift": f.rel_lift,
                     "ci_low": f.ci[0], "ci_high": f.ci[1], "p_fixed": f.p, "cs_low": s.ci[0], "cs_high": s.ci[1],
                     "p_always_valid": s.p, "control": f.control})
    return pd.DataFrame(rows)


def first_stop(path: pd.DataFrame, alpha: float) -> dict:
    """Where a monitor of this run would have stopped (first look with always-valid p < alpha)."""
    if path.empty:
        return {"stopped": False, "look": None, "hours": None}
    hit = np.flatnonzero(path["p_always_valid"].to_numpy() < alpha)
    if not len(hit):
        return {"stopped": False, "look": None, "hours": None}
    r = path.iloc[int(hit[0])]
    return {"stopped": True, "look": int(r["look"]), "hours": float(r["hours"])}
