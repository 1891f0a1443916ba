"""The decision rule of a report, and its answer in one sentence.

- Primary metric: two-sided test at ``alpha`` (Holm across treatment arms when there are
  several); its verdict is the answer to "does the treatment win?".
- Secondary metrics: adjusted among themselves (Benjamini-Hochberg by default, or Holm), so
  many secondaries cannot turn the primary's test into a fishing trip, nor vice versa.
- Guardrails: one-sided non-inferiority at ``alpha`` with a relative margin per guardrail:
  ``ok`` when the data show the treatment is not worse than the margin, ``violated`` when they
  show it is worse than the margin, ``inconclusive`` otherwise.
Power: the minimum detectable effect of this run, (z_{1-alpha/2} + z_power) x SE, and the users
per arm needed to detect the observed lift at that power (the SE shrinks as 1/sqrt(n)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .multiple import adjust
from .views import AnalysisConfig


def decide(df: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Add p_adj, significant, margin, guardrail_status and guardrail_violated to an effect table."""
    df = df.copy()
    df["p_adj"] = np.nan
    for role, method in (("primary", "holm"), ("secondary", cfg.secondary_correction)):
        rows = df["role"] == role
        df.loc[rows, "p_adj"] = adjust(df.loc[rows, "p"].to_numpy(float), method)
    df["significant"] = (df["role"] != "guardrail") & (df["p_adj"] < cfg.alpha)
    g = df["role"] == "guardrail"
    df["margin"] = np.where(g, [cfg.margin(m) for m in df["metric"]], np.nan)
    df["guardrail_status"] = ""
    df.loc[g, "guardrail_status"] = [guardrail_status(r, cfg.alpha) for r in df[g].to_dict("records")]
    df["guardrail_violated"] = df["guardrail_status"] == "violated"
    return df


def guardrail_status(row: dict, alpha: float) -> str:
    """ok / inconclusive / violated from the relative lift, its SE and the margin (one-sided tests)."""
    rel, se, m = row.get("rel_lift"), row.get("rel_se"), row["margin"]
    if rel is None or se is None or not np.isfinite(rel) or not np.isfinite(se) or se <= 0:
        return "inconclusive"
    harm = -rel if row.get("higher_is_better", True) else rel  # > 0: the treatment is worse
    if stats.norm.sf((m - harm) / se) < alpha:  # H0 harm >= m rejected: not worse than the margin
        return "ok"
    if stats.norm.sf((harm - m) / se) < alpha:  # H0 harm <= m rejected: worse than the margin
        return "violated"
    return "inconclusive"


def power_numbers(row: dict, alpha: float, power: float) -> dict:
    """MDE (relative) of this run and users per arm needed to detect the observed lift."""
    se, rel = row.get("rel_se"), row.get("rel_lift")
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    out = {"mde_rel": float("nan"), "users_needed_per_arm": float("nan"), "power": power}
    if se is None or not np.isfinite(se) or se <= 0:
        return out
    out["mde_rel"] = float(k * se)
    n_now = min(row.get("n_control") or 0, row.get("n_treatment") or 0)
    if rel is not None and np.isfinite(rel) and rel != 0 and n_now:
        out["users_needed_per_arm"] = float(np.ceil(n_now * (k * se / abs(rel)) ** 2))
    return out


def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v * 100:+.1f}%"


def headline(summary: pd.DataFrame, alpha: float, power: float) -> list[str]:
    """One plain sentence per treatment arm: winner or no detectable difference, lift, CI, truth, power."""
    out = []
    for r in summary[summary["role"] == "primary"].to_dict("records"):
        t, c, m = r["arm"], r["control_arm"], r["metric"]
        if not np.isfinite(r.get("p", np.nan)):
            out.append(f"{m}: no test possible for {t} vs {c} ({r.get('note') or 'not enough data'}).")
            continue
        ci = f"{_pct(r['rel_lift'])} [{_pct(r['rel_ci_low'])}, {_pct(r['rel_ci_high'])}]"
        if not np.isfinite(r["rel_lift"]):
            ci = f"{r['abs_lift']:+.4g} (absolute; {r.get('note')})"
        better = (r["abs_lift"] > 0) == bool(r.get("higher_is_better", True))
        if r["significant"]:
            verdict = f"{t} {'beats' if better else 'loses to'} {c} on {m}: {ci}, p={r['p_adj']:.2g}"
        else:
            verdict = f"No detectable difference in {m} between {t} and {c}: {ci}, p={r['p_adj']:.2g}"
        parts = [verdict]
        if np.isfinite(r.get("true_rel_lift", np.nan)):
            parts.append(f"world oracle's true lift {_pct(r['true_rel_lift'])}")
        pw = power_numbers(r, alpha, power)
        if np.isfinite(pw["mde_rel"]):
            need = pw["users_needed_per_arm"]
            parts.append(f"this run detects ±{pw['mde_rel'] * 100:.1f}% at {power:.0%} power"
                         + (f"; {need:,.0f} users per arm would detect {_pct(r['rel_lift'])}" if np.isfinite(need) else ""))
        out.append("; ".join(parts) + ".")
    bad = summary[summary["guardrail_status"] != ""]
    for r in bad.to_dict("records"):
        if r["guardrail_status"] != "ok":
            out.append(f"Guardrail {r['metric']} ({r['arm']}): {r['guardrail_status']} "
                       f"({_pct(r['rel_lift'])}, margin {r['margin']:.0%}).")
    return out
