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

from .estimators import MSPRT, DeltaRatio, EstimationError, WelchT
from .views import COVARIATES, Metric

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
