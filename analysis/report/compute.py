"""The computation of a report: the per-metric effect table with the decision rule applied,
the arms, their pipelines and the sequential monitor (build.py turns them into a Report).

``summarize(con, run_id)`` -> pandas DataFrame (one row per treatment arm x metric).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from simulator.core.errors import ConfigError

from ..decision import decide
from ..estimators import DeltaRatio, EstimationError, default_estimator
from ..randomization import reference
from ..sequential import first_stop, monitorable, sequential_path
from ..truth import add_truth, truth_table
from ..views import (
    DEFAULT_METRICS,
    AnalysisConfig,
    Metric,
    batch_table,
    dataset_n_items,
    run_config,
    run_info,
    user_table,
)

SUMMARY_COLUMNS = ["metric", "role", "arm", "control_arm", "method", "control", "treatment", "abs_lift",
                   "rel_lift", "ci_low", "ci_high", "rel_ci_low", "rel_ci_high", "rel_se", "p", "p_adj",
                   "significant", "guardrail_status", "margin", "n_control", "n_treatment", "true_control",
                   "true_treatment", "true_rel_lift", "true_rel_se", "var_reduction", "se", "dof", "ci_level",
                   "note"]

EXTRA_COLUMNS = ["higher_is_better", "guardrail_violated", "unit", "ref_t"]  # ref_t: see randomization.py


# ---------------------------------------------------------------- config + table

def analysis_config(info: dict, override: AnalysisConfig | dict | None = None) -> AnalysisConfig:
    """The run's ``analysis`` config block (if its config_json has one), else defaults."""
    if isinstance(override, AnalysisConfig):
        return override
    data = override if override is not None else run_config(info).get("analysis")
    try:
        return AnalysisConfig(**(data or {}))
    except ConfigError:  # already one line (e.g. refused metric SQL)
        raise
    except Exception as e:  # pydantic ValidationError -> one line
        raise ConfigError(f"analysis config: {str(e).splitlines()[0]} ({e})".replace("\n", " ")) from None


def metric_list(cfg: AnalysisConfig) -> list[Metric]:
    """Default metrics + user-defined ones, with roles from the config (primary/guardrail)."""
    metrics = [m.model_copy() for m in DEFAULT_METRICS]
    names = {m.name for m in metrics}
    for m in cfg.metrics:
        if m.name in names:
            metrics = [x for x in metrics if x.name != m.name]
        metrics.append(m.model_copy())
    names = {m.name for m in metrics}
    for n in [cfg.primary, *cfg.guardrails]:
        if n not in names:
            raise ConfigError(f"analysis config: unknown metric {n!r} (known: {', '.join(sorted(names))})")
    for m in metrics:
        if m.name == cfg.primary:
            m.role = "primary"
        elif m.name in cfg.guardrails:
            m.role = "guardrail"
        elif m.role == "primary":
            m.role = "secondary"
    order = {"primary": 0, "guardrail": 1, "secondary": 2}
    return sorted(metrics, key=lambda m: order[m.role])


def arm_roles(con, run_id: str) -> tuple[str, list[str]]:
    rows = con.execute("SELECT arm, role FROM arms WHERE run_id = ? ORDER BY arm", [run_id]).fetchall()
    controls = [a for a, r in rows if r == "control"]
    control = controls[0] if controls else (rows[0][0] if rows else None)
    return control, [a for a, _ in rows if a != control]


def _effect(table, batches, m: Metric, control: str, arm: str, cfg: AnalysisConfig) -> dict:
    """One effect row (metric x treatment arm); estimation problems become a note, not an error."""
    est = default_estimator(m, cfg.alpha, cfg.cuped, tuple(cfg.covariates))
    data, note = (batches, "") if m.unit == "batch" else (table, "")
    if m.unit == "batch" and batches.empty:  # runs recorded before serving batches were
        est = DeltaRatio(cfg.alpha)
        data, note = table, "old run without serving batches: latency tested per user (may be anti-conservative)"
    est.control, est.treatment = control, arm
    try:
        e = est.estimate(data, m)
        row = e.as_row()
        row["note"] = "; ".join(x for x in (note, row.get("note", "")) if x)
        row["var_reduction"] = e.extra.get("var_reduction", np.nan)  # CUPED: 1 - Var(adjusted)/Var(plain)
        if m.unit == "user" and sum(e.n_by_arm.values()) <= cfg.randomization_users:
            row["ref_t"] = reference(e, data, m, cfg.randomization_draws)
            if row["ref_t"] is not None:
                row["method"] += " + randomisation"
    except EstimationError as err:
        n = table.groupby("arm").size()
        row = {"metric": m.name, "control_arm": control, "method": est.name, "note": str(err),
               "n_control": int(n.get(control, 0)), "n_treatment": int(n.get(arm, 0)), "p": np.nan}
    row.update(arm=arm, role=m.role, higher_is_better=m.higher_is_better, unit=m.unit)
    return row


def _unbounded_note(r: dict) -> str:
    """The row's note, plus why its relative CI is blank where the absolute one exists (Fieller's
    set is unbounded when the control mean itself is within noise of 0: a rare outcome)."""
    blank = not (np.isfinite(r["rel_ci_low"]) and np.isfinite(r["rel_ci_high"]))
    if not (blank and np.isfinite(r["ci_low"]) and np.isfinite(r["rel_lift"])):
        return r["note"]
    why = (f"relative CI unbounded (the control level is within noise of 0); absolute difference "
           f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]")
    return "; ".join(x for x in (r["note"], why) if x)


def summarize(con, run_id: str, config: AnalysisConfig | dict | None = None) -> pd.DataFrame:
    """Per (treatment arm, metric) effect table with the decision rule applied (see decision.py)
    and, for world runs, the oracle's true values."""
    con = getattr(con, "con", con)
    info = run_info(con, run_id)
    cfg = analysis_config(info, config)
    metrics = metric_list(cfg)
    custom = [m for m in metrics if m.name in {c.name for c in cfg.metrics}]
    table, notes = user_table(con, run_id, custom)
    batches = batch_table(con, run_id)
    control, treatments = arm_roles(con, run_id)
    rows = []
    for arm in treatments:
        for m in metrics:
            row = _effect(table, batches, m, control, arm, cfg)
            if m.name in ("novelty", "diversity") and m.name in notes:
                row["note"] = notes[m.name]
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=SUMMARY_COLUMNS + EXTRA_COLUMNS)
    df = pd.DataFrame(rows)
    for c in SUMMARY_COLUMNS + ["ref_t"]:
        if c not in df:
            df[c] = np.nan
    df = add_truth(decide(df, cfg), truth_table(con, run_id))
    df["note"] = df["note"].fillna("")
    df["note"] = [_unbounded_note(r) for r in df.to_dict("records")]
    df.attrs.update(control=control, alpha=cfg.alpha, power=cfg.power, notes=notes)
    return df[SUMMARY_COLUMNS + EXTRA_COLUMNS].reset_index(drop=True)


def arm_summary(con, run_id: str) -> pd.DataFrame:
    """v_arm_summary for the run plus catalog coverage (distinct exposed items / catalog size)."""
    con = getattr(con, "con", con)
    info = run_info(con, run_id)
    df = con.execute("SELECT * FROM v_arm_summary WHERE run_id = ? ORDER BY arm", [run_id]).df()
    n_items = dataset_n_items(con, run_id, info.get("dataset"))  # the run's snapshot when it has one
    df["coverage"] = df["distinct_items"] / n_items if n_items else np.nan
    return df


def arm_pipelines(con, run_id: str) -> dict[str, list[str]]:
    """Each arm's pipeline stage by stage (as the run recorded it in ``arms.pipeline_desc``)."""
    rows = con.execute("SELECT arm, pipeline_desc FROM arms WHERE run_id = ? ORDER BY arm", [run_id]).fetchall()
    out = {arm: json.loads(desc) if desc else [] for arm, desc in rows}  # hand-made events: none
    return out


def sequential_monitor(con, run_id: str, cfg: AnalysisConfig) -> dict:
    """The primary metric's sequential monitor per treatment arm (or why there is none)."""
    prim = next(m for m in metric_list(cfg) if m.role == "primary")
    if not monitorable(prim):
        return {"metric": prim.name, "arms": {}, "note": f"no sequential monitor for {prim.name!r} (not per look)"}
    control, treatments = arm_roles(con, run_id)
    arms = {}
    for arm in treatments:
        path = sequential_path(con, run_id, prim, control, arm, looks=cfg.looks, alpha=cfg.alpha, tau=cfg.msprt_tau)
        arms[arm] = {"path": path, "stop": first_stop(path, cfg.alpha)}
    return {"metric": prim.name, "arms": arms, "note": ""}


