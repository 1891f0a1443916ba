"""Experiment report: the per-metric effect table, plots, Markdown and self-contained HTML.

``summarize(con, run_id)`` -> pandas DataFrame (one row per treatment arm x metric);
``write_report(catalog_path_or_con, run_id, out_dir)`` -> {"md": path, "html": path}.
"""

from __future__ import annotations

import base64
import io
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.errors import ConfigError

from .estimators import EstimationError, default_estimator
from .multiple import add_adjusted
from .provenance import run_warnings
from .render import render_html, render_markdown
from .srm import SRMResult, srm_for_run
from .views import (
    DEFAULT_METRICS,
    AnalysisConfig,
    Metric,
    dataset_n_items,
    install_views,
    run_info,
    user_table,
)

SUMMARY_COLUMNS = ["metric", "role", "arm", "control_arm", "method", "control", "treatment", "abs_lift",
                   "rel_lift", "ci_low", "ci_high", "rel_ci_low", "rel_ci_high", "p", "p_holm", "p_bh",
                   "significant", "n_control", "n_treatment", "note"]


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


def summarize(con, run_id: str, config: AnalysisConfig | dict | None = None) -> pd.DataFrame:
    """Per (treatment arm, metric) effect table with Holm/BH-adjusted p-values."""
    con = getattr(con, "con", con)
    info = run_info(con, run_id)
    cfg = analysis_config(info, config)
    metrics = metric_list(cfg)
    custom = [m for m in metrics if m.name in {c.name for c in cfg.metrics}]
    table, notes = user_table(con, run_id, custom)
    control, treatments = arm_roles(con, run_id)
    rows = []
    for arm in treatments:
        for m in metrics:
            est = default_estimator(m, cfg.alpha, cfg.cuped)
            est.control, est.treatment = control, arm
            try:
                e = est.estimate(table, m)
                row = e.as_row()
                row["arm"] = arm
            except EstimationError as err:
                n = table.groupby("arm").size()
                row = {"metric": m.name, "arm": arm, "control_arm": control, "method": est.name, "note": str(err),
                       "n_control": int(n.get(control, 0)), "n_treatment": int(n.get(arm, 0)), "p": np.nan}
            if m.name == "novelty" and "novelty" in notes:
                row["note"] = notes["novelty"]
            if m.name == "diversity" and "diversity" in notes:
                row["note"] = notes["diversity"]
            row["role"] = m.role
            row["higher_is_better"] = m.higher_is_better
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *SUMMARY_COLUMNS])))  # rows that could not be estimated
    df = add_adjusted(df)
    df["significant"] = df["p_holm"] < cfg.alpha
    worse = np.where(df["higher_is_better"], df["abs_lift"] < 0, df["abs_lift"] > 0)
    df["guardrail_violated"] = (df["role"] == "guardrail") & df["significant"] & worse
    for c in SUMMARY_COLUMNS:
        if c not in df:
            df[c] = np.nan
    df["note"] = df["note"].fillna("")
    df.attrs.update(control=control, alpha=cfg.alpha, notes=notes)
    return df[SUMMARY_COLUMNS + ["higher_is_better", "guardrail_violated"]].reset_index(drop=True)


def _na(fmt):
    """A cell formatter that shows '-' for a value that could not be estimated (see the note)."""
    return lambda v: fmt(v) if pd.notna(v) else "-"


def format_summary(summary: pd.DataFrame) -> str:
    """Compact text table of an effect table (what `sim report` / `sim run` print)."""
    if summary.empty:
        return "(no metrics)"
    d = pd.DataFrame({
        "metric": summary["metric"] + summary["role"].map({"primary": " *", "guardrail": " (g)"}).fillna(""),
        "arm": summary["arm"],
        "control": summary["control"].map(_na(lambda v: f"{v:.4g}")),
        "treatment": summary["treatment"].map(_na(lambda v: f"{v:.4g}")),
        "rel_lift": summary["rel_lift"].map(_na(lambda v: f"{v * 100:+.2f}%")),
        "95% CI": [f"[{lo * 100:+.1f}%, {hi * 100:+.1f}%]" if pd.notna(lo) and pd.notna(hi) else "-" for lo, hi in
                   zip(summary["rel_ci_low"], summary["rel_ci_high"], strict=True)],
        "p": summary["p"].map(_na(lambda v: f"{v:.3g}")),
        "p_holm": summary["p_holm"].map(_na(lambda v: f"{v:.3g}")),
        "sig": summary["significant"].map(lambda v: "yes" if v else ""),
        "note": summary["note"].fillna(""),
    })
    return d.to_string(index=False) + "\n(* primary, (g) guardrail; p_holm adjusted across metrics and arms)"


def arm_summary(con, run_id: str) -> pd.DataFrame:
    """v_arm_summary for the run plus catalog coverage (distinct exposed items / catalog size)."""
    con = getattr(con, "con", con)
    info = run_info(con, run_id)
    df = con.execute("SELECT * FROM v_arm_summary WHERE run_id = ? ORDER BY arm", [run_id]).df()
    n_items = dataset_n_items(con, run_id, info.get("dataset"))  # the run's snapshot when it has one
    df["coverage"] = df["distinct_items"] / n_items if n_items else np.nan
    return df


# ---------------------------------------------------------------- plots

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def make_plots(con, run_id: str, summary: pd.DataFrame) -> dict[str, bytes]:
    """PNG bytes: forest (relative lifts), cumulative CTR, channel contribution, latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    s = summary.dropna(subset=["rel_lift"]).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * max(len(s), 3) + 1.2))
    if len(s):
        y = np.arange(len(s))
        colors = ["#1f77b4" if r == "primary" else "#d62728" if r == "guardrail" else "#555555" for r in s["role"]]
        ax.hlines(y, s["rel_ci_low"] * 100, s["rel_ci_high"] * 100, colors=colors, lw=2)
        ax.scatter(s["rel_lift"] * 100, y, c=colors, zorder=3)
        ax.set_yticks(y, [f"{m} ({a})" if summary["arm"].nunique() > 1 else m for m, a in zip(s["metric"], s["arm"], strict=True)])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("relative lift vs control (%), 95% CI")
    ax.set_title("Relative lift by metric (blue = primary, red = guardrail)")
    ax.grid(axis="x", alpha=0.3)
    plots["forest"] = _png(fig)

    cum = con.execute("SELECT arm, hour, cum_ctr FROM v_cumulative WHERE run_id = ? ORDER BY arm, hour",
                      [run_id]).df()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for arm, g in cum.groupby("arm"):
        ax.plot(g["hour"], g["cum_ctr"], marker=".", label=arm)
    ax.set_xlabel("simulated hours since run start")
    ax.set_ylabel("cumulative CTR")
    ax.set_title("Cumulative CTR over simulated time")
    ax.grid(alpha=0.3)
    ax.legend()
    plots["cumulative"] = _png(fig)

    ch = con.execute("SELECT arm, channel, sum(exposures) AS exposures, sum(clicks) AS clicks, "
                     "sum(consumes) AS consumes FROM v_channel_contribution WHERE run_id = ? GROUP BY ALL "
                     "ORDER BY arm, channel", [run_id]).df()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, col in zip(axes, ("exposures", "consumes"), strict=True):
        piv = ch.pivot_table(index="arm", columns="channel", values=col, aggfunc="sum", fill_value=0)
        share = piv.div(piv.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
        share.plot.barh(stacked=True, ax=ax, legend=(col == "consumes"), width=0.6)
        ax.set_title(f"share of {col} by channel")
        ax.set_xlim(0, 1)
        ax.set_ylabel("")
    if axes[1].get_legend():
        axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    plots["channels"] = _png(fig)

    lat = con.execute("SELECT arm, latency_ms FROM requests WHERE run_id = ? AND latency_ms IS NOT NULL "
                      "USING SAMPLE reservoir(200000 ROWS) REPEATABLE (0)", [run_id]).df()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for arm, g in lat.groupby("arm"):
        v = np.sort(g["latency_ms"].to_numpy())
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{arm}: p50 {np.percentile(v, 50):.3g} ms, "
                f"p99 {np.percentile(v, 99):.3g} ms")
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("request latency (ms, log scale)")
    ax.set_ylabel("share of requests <= x")
    ax.set_title("Latency distribution per arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plots["latency"] = _png(fig)
    return plots


def write_report(catalog_path_or_con, run_id: str, out_dir, config: AnalysisConfig | dict | None = None) -> dict:
    """Write ``<out_dir>/<run_id>/report.md`` (+ PNGs) and self-contained ``report.html``."""
    with _with_connection(catalog_path_or_con) as con:
        install_views(con)
        info = run_info(con, run_id)
        summary = summarize(con, run_id, config)
        arms = arm_summary(con, run_id)
        try:
            srm = srm_for_run(con, run_id)
        except Exception as e:  # noqa: BLE001 - bad weights: report it rather than crash
            srm = SRMResult({}, {}, float("nan"), float("nan"))
            srm.error = str(e)
        plots = make_plots(con, run_id, summary)
        channels = con.execute("SELECT * FROM v_channel_contribution WHERE run_id = ? ORDER BY arm, channel",
                               [run_id]).df()
        warnings = run_warnings(con, info)  # unfinished run, changed data (analysis/provenance.py)
    out = Path(out_dir) / str(run_id)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    ctx = dict(info=info, summary=summary, arms=arms, srm=srm, channels=channels, config=analysis_config(info, config),
               warnings=warnings)
    md = out / "report.md"
    md.write_text(render_markdown(ctx, {k: f"{k}.png" for k in plots}))
    html = out / "report.html"
    html.write_text(render_html(ctx, {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in plots.items()}))
    return {"md": str(md), "html": str(html)}
