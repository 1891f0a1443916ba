"""The world oracle's side of a report: each arm's true values and the true lifts.

The simulator stores one row per (run, arm, metric, pass) in ``truth`` (simulator/engine/oracle.py);
passes of the same index are paired across arms (common random numbers), so with several passes a
lift's Monte-Carlo standard error comes from the paired passes. With one pass (the default) it comes
from each pass's own SE over its users (``se``, a grouped jackknife), the arms taken as independent:
conservative twice, as that SE also counts how users differ and the common random numbers make the
two arms' errors move together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def truth_table(con, run_id: str) -> pd.DataFrame:
    """The world oracle's passes of the run (arm, metric, rep, value, se); empty when there is none."""
    return con.execute("SELECT arm, metric, rep, value, se FROM truth WHERE run_id = ? "
                       "ORDER BY arm, metric, rep", [run_id]).df()


def truth_summary(truth: pd.DataFrame) -> pd.DataFrame:
    """Per arm and metric: mean over passes, Monte-Carlo SE (over passes; one pass: its own), passes."""
    g = truth.groupby(["arm", "metric"])
    out = g["value"].agg(["mean", "std", "count"]).reset_index()
    own = g["se"].first().to_numpy(float) if "se" in truth else np.full(len(out), np.nan)
    out["se"] = np.where(out["count"] >= 2, out["std"] / np.sqrt(out["count"]), own)
    return out.rename(columns={"mean": "value", "count": "reps"})[["arm", "metric", "value", "se", "reps"]]


def add_truth(df: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """World-oracle columns: true arm values and the true relative lift (Monte-Carlo SE from paired passes)."""
    ordered = {k: g.sort_values("rep") for k, g in truth.groupby(["arm", "metric"])}
    per = {k: g["value"].to_numpy() for k, g in ordered.items()}
    own = {k: g["se"].to_numpy(float) for k, g in ordered.items()} if "se" in truth else {}
    cols = {"true_control": [], "true_treatment": [], "true_rel_lift": [], "true_rel_se": []}
    for r in df.itertuples():
        c, t = per.get((r.control_arm, r.metric)), per.get((r.arm, r.metric))
        vals = (np.nan,) * 4
        if c is not None and t is not None and len(c) == len(t):
            vals = (c.mean(), t.mean(), *paired_lift(c, t, own.get((r.control_arm, r.metric)),
                                                     own.get((r.arm, r.metric))))
        for k, v in zip(cols, vals, strict=True):
            cols[k].append(v)
    return df.assign(**cols)


def paired_lift(control: np.ndarray, treatment: np.ndarray, control_se: np.ndarray | None = None,
                treatment_se: np.ndarray | None = None) -> tuple[float, float]:
    """Relative lift mean(T)/mean(C) - 1 over paired passes, and its Monte-Carlo SE (delta method):
    from the paired passes' spread, or for one pass from its own SEs (``*_se``, arms independent;
    NaN when they are not known)."""
    c, t = np.asarray(control, float), np.asarray(treatment, float)
    mc, mt = c.mean(), t.mean()
    if not mc > 0:
        return float("nan"), float("nan")
    if len(c) < 2:
        own = [np.nan if x is None or not len(x) else float(np.asarray(x, float)[0])
               for x in (treatment_se, control_se)]
        cov = np.diag(np.square(own))  # one pass: the arms' own SEs, taken as independent
    else:
        cov = np.cov(t, c, ddof=1) / len(c)
    var = cov[0, 0] / mc**2 + mt**2 * cov[1, 1] / mc**4 - 2 * mt * cov[0, 1] / mc**3
    return float(mt / mc - 1), float(np.sqrt(max(var, 0.0)))
