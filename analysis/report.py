"""Experiment report: the per-metric effect table, plots, Markdown and self-contained HTML.

``summarize(con, run_id)`` -> pandas DataFrame (one row per treatment arm x metric);
``write_report(catalog_path_or_con, run_id, out_dir)`` -> {"md": path, "html": path}.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.core.errors import ConfigError

from . import interleave
from . import plots as plots_mod
from .decision import decide, headline, power_numbers
from .estimators import DeltaRatio, EstimationError, default_estimator
from .plots import make_plots
from .provenance import run_warnings
from .render import render_html, render_markdown
from .segments import segment_effects, segment_text
from .sequential import first_stop, monitorable, sequential_path
from .srm import SRMResult, srm_for_run
from .truth import add_truth, truth_summary, truth_table
from .views import (
    DEFAULT_METRICS,
    AnalysisConfig,
    Metric,
    batch_table,
    dataset_n_items,
    install_views,
    run_info,
    user_table,
)

SUMMARY_COLUMNS = ["metric", "role", "arm", "control_arm", "method", "control", "treatment", "abs_lift",
                   "rel_lift", "ci_low", "ci_high", "rel_ci_low", "rel_ci_high", "rel_se", "p", "p_adj",
                   "significant", "guardrail_status", "margin", "n_control", "n_treatment", "true_control",
                   "true_treatment", "true_rel_lift", "true_rel_se", "var_reduction", "se", "dof", "ci_level",
                   "note"]


# ---------------------------------------------------------------- config + table

def analysis_config(info: dict, override: AnalysisConfig | dict | None = None) -> AnalysisConfig:
    """The run's ``analysis`` config block (if its config_json has one), else defaults."""
    if isinstance(override, AnalysisConfig):
        return override
    data = override
    if data is None:
        try:
            data = (json.loads(info.get("config_json") or "{}") or {}).get("analysis")
        except (json.JSONDecodeError, AttributeError):
            data = None
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


def _with_connection(catalog_or_con):
    @contextmanager
    def cm():
        if isinstance(catalog_or_con, (str, Path)):
            import duckdb

            con = duckdb.connect(str(catalog_or_con))
            try:
                yield con
            finally:
                con.close()
        else:
            yield getattr(catalog_or_con, "con", catalog_or_con)
    return cm()


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
    except EstimationError as err:
        n = table.groupby("arm").size()
        row = {"metric": m.name, "control_arm": control, "method": est.name, "note": str(err),
               "n_control": int(n.get(control, 0)), "n_treatment": int(n.get(arm, 0)), "p": np.nan}
    row.update(arm=arm, role=m.role, higher_is_better=m.higher_is_better)
    return row


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
        return pd.DataFrame(columns=SUMMARY_COLUMNS + ["higher_is_better", "guardrail_violated"])
    df = pd.DataFrame(rows)
    for c in SUMMARY_COLUMNS:
        if c not in df:
            df[c] = np.nan
    df = add_truth(decide(df, cfg), truth_table(con, run_id))
    df["note"] = df["note"].fillna("")
    df.attrs.update(control=control, alpha=cfg.alpha, power=cfg.power, notes=notes)
    return df[SUMMARY_COLUMNS + ["higher_is_better", "guardrail_violated"]].reset_index(drop=True)


def _result(r) -> str:
    if r.role == "guardrail":
        return r.guardrail_status
    return "significant" if r.significant else ""


def _na(fmt):
    """A cell formatter that shows '-' for a value that could not be estimated (see the note)."""
    return lambda v: fmt(v) if pd.notna(v) else "-"


def _ci_cell(lo: float, hi: float, level: float, default: float) -> str:
    """A relative CI; its level is shown when the multiple-testing adjustment widened it."""
    if not np.isfinite(lo):
        return ""
    return f"[{lo * 100:+.1f}%, {hi * 100:+.1f}%]" + (f" ({level:.1%})" if abs(level - default) > 1e-9 else "")


def format_summary(summary: pd.DataFrame) -> str:
    """The answer first (one line per treatment arm), then the effect table (what `sim run`/`sim report` print)."""
    if summary.empty:
        return "(no metrics)"
    lines = headline(summary, summary.attrs.get("alpha", 0.05), summary.attrs.get("power", 0.8))
    pct = lambda v: "n/a" if not np.isfinite(v) else f"{v * 100:+.2f}%"  # noqa: E731
    d = pd.DataFrame({
        "metric": summary["metric"] + summary["role"].map({"primary": " *", "guardrail": " (g)"}).fillna(""),
        "arm": summary["arm"],
        "users c/t": [f"{int(c or 0)}/{int(t or 0)}" for c, t in zip(summary["n_control"].fillna(0),
                                                                     summary["n_treatment"].fillna(0), strict=True)],
        "control": summary["control"].map(_na(lambda v: f"{v:.4g}")),
        "treatment": summary["treatment"].map(_na(lambda v: f"{v:.4g}")),
        "rel_lift": summary["rel_lift"].map(pct),
        "CI": [_ci_cell(lo, hi, lv, 1 - summary.attrs.get("alpha", 0.05)) for lo, hi, lv in
               zip(summary["rel_ci_low"], summary["rel_ci_high"], summary["ci_level"], strict=True)],
        "p_adj": summary["p_adj"].map(lambda v: f"{v:.3g}" if np.isfinite(v) else ""),
        "result": [_result(r) for r in summary.itertuples()],
        "true lift": summary["true_rel_lift"].map(lambda v: pct(v) if np.isfinite(v) else ""),
        "note": summary["note"].fillna(""),
    })
    if not summary["true_rel_lift"].notna().any():
        d = d.drop(columns=["true lift"])
    legend = ("(* primary, tested at alpha; secondary p_adj corrected among the secondaries; CI: 95% unless the "
              "correction widens it (level shown), so a result is significant exactly when its CI excludes 0; "
              "(g) guardrail: non-inferiority test with its margin; users c/t = units per arm, serving batches "
              "for latency)")
    return "\n".join(lines) + "\n\n" + d.to_string(index=False) + "\n" + legend


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


def _sequential(con, run_id: str, cfg: AnalysisConfig) -> dict:
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


def run_design(info: dict) -> str:
    """'ab' or 'interleave': the design the run was made with (its stored config)."""
    try:
        return (json.loads(info.get("config_json") or "{}") or {}).get("design", "ab")
    except (json.JSONDecodeError, AttributeError):
        return "ab"


def report_context(con, run_id: str, config: AnalysisConfig | dict | None = None) -> dict:
    """Everything a report shows (the Markdown, the HTML and report.json render this one dict)."""
    install_views(con)
    info = run_info(con, run_id)
    cfg = analysis_config(info, config)
    try:
        srm = srm_for_run(con, run_id)
    except Exception as e:  # noqa: BLE001 - bad weights: report it rather than crash
        srm = SRMResult({}, {}, float("nan"), float("nan"))
        srm.error = str(e)
    common = dict(info=info, config=cfg, design=run_design(info), srm=srm, truth=truth_table(con, run_id),
                  channels=con.execute("SELECT * FROM v_channel_contribution WHERE run_id = ? ORDER BY arm, channel",
                                       [run_id]).df(),
                  pipelines=arm_pipelines(con, run_id),
                  warnings=run_warnings(con, info))  # unfinished run, changed data (analysis/provenance.py)
    if common["design"] == "interleave":
        control, (treatment,) = arm_roles(con, run_id)
        return {**common, "summary": pd.DataFrame(columns=SUMMARY_COLUMNS),
                **interleave.context(con, run_id, control, treatment, cfg.alpha, common["truth"])}
    summary = summarize(con, run_id, cfg)
    power = {r["arm"]: power_numbers(r, cfg.alpha, cfg.power) for r in summary.to_dict("records")
             if r["role"] == "primary"}
    control, treatments = arm_roles(con, run_id)
    segments = segment_effects(con, run_id, metric_list(cfg), control, treatments, cfg.alpha)  # new vs returning
    return {**common, "summary": summary, "arms": arm_summary(con, run_id), "power": power, "segments": segments,
            "sequential": _sequential(con, run_id, cfg), "headline": headline(summary, cfg.alpha, cfg.power)}


def console_text(ctx: dict) -> str:
    """What `sim run` and `sim report` print: the answer first, then the table."""
    if ctx["design"] == "interleave":
        return interleave.console_text(ctx)
    seg = segment_text(ctx.get("segments"), ctx["sequential"]["metric"])  # the primary metric by segment
    return format_summary(ctx["summary"]) + ("\n\n" + seg if seg else "")


def _jsonable(v):
    if v is pd.NaT:
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, pd.DataFrame):
        return _jsonable(v.to_dict("records"))
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    return v


def report_json(ctx: dict) -> dict:
    """Every number of the report, machine-readable (NaN -> null)."""
    info, srm = ctx["info"], ctx["srm"]
    try:
        config = json.loads(info.get("config_json") or "{}")
    except json.JSONDecodeError:
        config = info.get("config_json")
    seq = ctx["sequential"]
    return _jsonable({
        "run": {k: info.get(k) for k in ("run_id", "dataset", "status", "seed", "config_hash", "git_rev", "started_at",
                                         "finished_at", "sim_start", "sim_end", "n_requests")},
        "design": ctx["design"],
        "headline": ctx["headline"],
        "interleave": ({**ctx["interleave"], "preference": dataclasses.asdict(ctx["interleave"]["preference"])}
                       if "interleave" in ctx else None),
        "warnings": ctx["warnings"],
        "effects": ctx["summary"],
        "power": ctx["power"],
        "srm": {"counts": srm.counts, "expected": srm.expected, "chi2": srm.chi2, "p": srm.p, "failed": srm.failed,
                "error": getattr(srm, "error", None)},
        "segments": ctx["segments"].model_dump(mode="json") if ctx.get("segments") is not None else None,
        "truth": truth_summary(ctx["truth"]) if not ctx["truth"].empty else [],
        "truth_passes": ctx["truth"],
        "sequential": {"metric": seq["metric"], "note": seq["note"],
                       "arms": {a: {"stop": v["stop"], "path": v["path"]} for a, v in seq["arms"].items()}},
        "arms": ctx["arms"], "pipelines": ctx["pipelines"], "channels": ctx["channels"].drop(columns=["run_id"], errors="ignore"),
        "analysis_config": ctx["config"].model_dump(mode="json"), "config": config,
    })


def write_report(catalog_path_or_con, run_id: str, out_dir, config: AnalysisConfig | dict | None = None) -> dict:
    """Write ``<out_dir>/<run_id>/``: report.md (+ PNGs), a self-contained report.html and report.json."""
    with _with_connection(catalog_path_or_con) as con:
        ctx = report_context(con, run_id, config)
        seq = ctx["sequential"]
        first = next(iter(seq["arms"].values()), None)
        plots = make_plots(con, run_id, ctx["summary"], first["path"] if first else None, seq["metric"],
                           ctx["config"].alpha)
        if ctx["design"] == "interleave":
            plots["credit"] = plots_mod.credit(ctx["interleave"]["credit"])
    out = Path(out_dir) / str(run_id)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    md = out / "report.md"
    md.write_text(render_markdown(ctx, {k: f"{k}.png" for k in plots}))
    html = out / "report.html"
    html.write_text(render_html(ctx, {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in plots.items()}))
    js = out / "report.json"
    js.write_text(json.dumps(report_json(ctx), indent=1))
    return {"md": str(md), "html": str(html), "json": str(js), "text": console_text(ctx)}
