"""Effects by user segment: new users (no interaction before the run's start) vs returning users.

In a replay most requests can come from users the arms never saw in training; an overall lift then
mixes two questions (how an arm serves a user it knows, and one it does not). Every run whose users
fall in both segments gets each user-level metric's effect per segment and treatment arm, with
Holm's correction over the segment x arm tests of each metric (one family per metric: the
segments of one metric are the multiple looks at one question). Segment estimates are plain
(no CUPED: the covariate is the pre-period count that defines the segments).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from .decision import p_value as decision_p
from .decision import rel_interval
from .estimators import EstimationError, default_estimator
from .multiple import adjust, levels
from .views import Metric, user_table

SEGMENTS = {"new": "no interaction before the run's start", "returning": "at least one interaction before it"}


class SegmentEffect(BaseModel):
    segment: str
    metric: str
    role: str
    arm: str
    control_arm: str
    n_control: int
    n_treatment: int
    control: float | None = None
    treatment: float | None = None
    rel_lift: float | None = None
    rel_ci_low: float | None = None
    rel_ci_high: float | None = None
    rel_se: float | None = None
    abs_lift: float | None = None
    se: float | None = None
    control_var: float | None = None
    cov_dc: float | None = None
    dof: float | None = None
    p: float | None = None
    p_adj: float | None = None  # Holm over this metric's segment x arm tests
    significant: bool = False
    note: str = ""


class SegmentReport(BaseModel):
    """Per segment: its definition and users per arm; the effects; the correction used."""

    definitions: dict[str, str]
    users: dict[str, dict[str, int]]
    effects: list[SegmentEffect]
    correction: str = "holm over segments x treatment arms, per metric"


def segment_of(table: pd.DataFrame) -> pd.Series:
    """'new' for users with no pre-period interaction (``pre`` missing or 0), else 'returning'."""
    pre = pd.to_numeric(table["pre"], errors="coerce").fillna(0) if "pre" in table else pd.Series(0, table.index)
    return pd.Series(np.where(pre > 0, "returning", "new"), index=table.index)


def _num(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _effect(part: pd.DataFrame, m: Metric, seg: str, control: str, arm: str, alpha: float) -> SegmentEffect:
    est = default_estimator(m, alpha, cuped=False)
    est.control, est.treatment = control, arm
    n = part.groupby("arm").size()
    base = dict(segment=seg, metric=m.name, role=m.role, arm=arm, control_arm=control,
                n_control=int(n.get(control, 0)), n_treatment=int(n.get(arm, 0)))
    try:
        e = est.estimate(part, m)
    except EstimationError as err:
        return SegmentEffect(**base, note=str(err))
    row = {"abs_lift": e.abs_lift, "se": e.se, "dof": e.dof}
    nums = {k: _num(getattr(e, k)) for k in ("control", "treatment", "rel_lift", "rel_se", "abs_lift", "se",
                                              "control_var", "cov_dc", "dof")}
    return SegmentEffect(**base, **nums, p=_num(decision_p(row)), note=e.note)


def segment_effects(con, run_id: str, metrics: list[Metric], control: str, treatments: list[str],
                    alpha: float = 0.05) -> SegmentReport | None:
    """The per-segment effects of a run, or None when its users are all in one segment."""
    table, _ = user_table(con, run_id, [m for m in metrics if m.unit == "user"])
    if table.empty:
        return None
    seg = segment_of(table)
    if seg.nunique() < 2:
        return None
    users = {s: {str(a): int(c) for a, c in table[seg == s].groupby("arm").size().items()} for s in SEGMENTS}
    effects = [_effect(table[seg == s], m, s, control, arm, alpha)
               for m in metrics if m.unit == "user" for s in SEGMENTS for arm in treatments]
    for name in {e.metric for e in effects}:
        fam = [e for e in effects if e.metric == name]
        p = [np.nan if e.p is None else e.p for e in fam]
        for e, q, lv in zip(fam, adjust(p, "holm"), levels(p, "holm", alpha), strict=True):
            e.p_adj = _num(q)
            e.significant = bool(e.p_adj is not None and e.p_adj < alpha)
            lo, hi = rel_interval(e.model_dump(), 1 - lv)  # the CI the Holm decision implies
            e.rel_ci_low, e.rel_ci_high = _num(lo), _num(hi)
    return SegmentReport(definitions=SEGMENTS, users=users, effects=effects)


def segment_text(rep: SegmentReport | None, metric: str) -> str:
    """A few console lines: the metric's effect per segment (empty when there are no segments)."""
    if rep is None:
        return ""
    lines = [f"by segment ({metric}; new = no interaction before the start; p_adj: Holm over segments x arms):"]
    for e in (x for x in rep.effects if x.metric == metric):
        lift = "n/a" if e.rel_lift is None else f"{e.rel_lift * 100:+.2f}%"
        ci = "" if e.rel_ci_low is None else f" [{e.rel_ci_low * 100:+.1f}%, {e.rel_ci_high * 100:+.1f}%]"
        padj = "" if e.p_adj is None else f" p_adj={e.p_adj:.3g}"
        lines.append(f"  {e.segment:9s} {e.arm} vs {e.control_arm}: {lift}{ci}{padj} "
                     f"(users {e.n_control}/{e.n_treatment})")
    return "\n".join(lines)
