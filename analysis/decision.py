"""The decision rule of a report, and its answer in one sentence.

- Primary metric: two-sided test at ``alpha`` (Holm across treatment arms when there are
  several); its verdict is the answer to "does the treatment win?".
- Secondary metrics: adjusted among themselves (Benjamini-Hochberg by default, or Holm), so
  many secondaries cannot turn the primary's test into a fishing trip, nor vice versa.
- Guardrails: one-sided non-inferiority at ``alpha`` with a relative margin per guardrail:
  ``ok`` when the data show the treatment is not worse than the margin, ``violated`` when they
  show it is worse than the margin, ``inconclusive`` otherwise.
One statistic per decision: the (CUPED-adjusted) absolute difference over its SE, in its own
distribution (t with the serving batches' dof for latency; for user metrics, the users' random
relabelings up to ``randomization_users`` users, see randomization.py, and t with small-sample dof,
``estimators.working_dof``, beyond), gives p and the label; the relative CI is Fieller's interval for the
same test, and the guardrails test the same difference against the margin times the control level.
The CI's level is the one the multiple-testing adjustment implies (``multiple.levels``), so
"significant" <=> the CI excludes 0, in absolute and relative terms alike.
Power: the minimum detectable effect of this run, (z_{1-alpha/2} + z_power) x SE under no
effect (absolute SE / control level), and the users per arm needed to detect the observed lift
at that power (the SE shrinks as 1/sqrt(n)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import dist as stats
from .estimators import fieller
from .multiple import adjust, levels
from .randomization import Reference
from .views import AnalysisConfig



def dist(row: dict):
    """The test statistic's distribution: the users' random relabelings where the row has them
    (``ref_t``, see randomization.py), else t with the row's dof, or normal."""
    ref = row.get("ref_t")
    if isinstance(ref, np.ndarray | list) and len(ref):
        return Reference(ref)
    return stats.for_dof(_f(row, "dof", np.inf))


def _f(row: dict, key: str, default: float = np.nan) -> float:
    v = row.get(key, default)
    return default if v is None or not np.isfinite(v) else float(v)


def decision_stat(row: dict) -> tuple[float, float, object]:
    """(estimate, SE, distribution) the decision is made on: the absolute difference over its SE in
    :func:`dist`. The label, p, the absolute CI and the relative (Fieller) CI all come from it."""
    return _f(row, "abs_lift"), _f(row, "se"), dist(row)


def p_value(row: dict) -> float:
    """Two-sided p of the decision statistic (:func:`decision_stat`)."""
    est, se, ref = decision_stat(row)
    if not (np.isfinite(est) and np.isfinite(se) and se > 0):
        return float("nan")
    return float(min(2 * ref.sf(abs(est) / se), 1.0))


def decide(df: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Apply the decision rule to an effect table: p (of the decision statistic), p_adj, its CI at
    the level the adjustment implies (``ci_level``), significant, margin, guardrail status."""
    df = df.copy()
    for col in ("se", "dof"):
        if col not in df:
            df[col] = np.nan if col == "se" else np.inf
    df["p"] = [p_value(r) for r in df.to_dict("records")]
    df["p_adj"], df["ci_level"] = np.nan, 1 - cfg.alpha
    for role, method in (("primary", "holm"), ("secondary", cfg.secondary_correction)):
        rows = df["role"] == role
        df.loc[rows, "p_adj"] = adjust(df.loc[rows, "p"].to_numpy(float), method)
        df.loc[rows, "ci_level"] = 1 - levels(df.loc[rows, "p"].to_numpy(float), method, cfg.alpha)
    _intervals(df)
    df["significant"] = (df["role"] != "guardrail") & (df["p_adj"] < cfg.alpha)
    g = df["role"] == "guardrail"
    df["margin"] = np.where(g, [cfg.margin(m) for m in df["metric"]], np.nan)
    df["guardrail_status"] = ""
    df.loc[g, "guardrail_status"] = [guardrail_status(r, cfg.alpha) for r in df[g].to_dict("records")]
    df["guardrail_violated"] = df["guardrail_status"] == "violated"
    return df


def _intervals(df: pd.DataFrame) -> None:
    """Absolute and relative (Fieller) CIs at each row's ``ci_level``, from the same difference,
    SE and distribution as p."""
    for i, r in zip(df.index, df.to_dict("records"), strict=True):
        d, se, ref = decision_stat(r)
        q = ref.ppf(1 - (1 - r["ci_level"]) / 2)
        ok = np.isfinite(d) and np.isfinite(se) and np.isfinite(q)
        df.loc[i, "ci_low"], df.loc[i, "ci_high"] = (d - q * se, d + q * se) if ok else (np.nan, np.nan)
        df.loc[i, "rel_ci_low"], df.loc[i, "rel_ci_high"] = rel_interval(r, r["ci_level"])


def rel_interval(row: dict, level: float) -> tuple[float, float]:
    """Fieller's relative CI at ``level`` for a row (an effect's fields), from the decision statistic."""
    d, se, ref = decision_stat(row)
    q = ref.ppf(1 - (1 - level) / 2)
    if not (np.isfinite(d) and np.isfinite(se) and np.isfinite(_f(row, "rel_lift")) and np.isfinite(q)):
        return np.nan, np.nan
    return fieller(d, _f(row, "control"), se * se, _f(row, "control_var"), _f(row, "cov_dc"), q)


def null_rel_se(row: dict) -> float:
    """SE of the relative lift under no effect: the absolute SE over the control level."""
    se, c = row.get("se", np.nan), row.get("control", np.nan)
    if se is None or c is None or not (np.isfinite(se) and np.isfinite(c)) or c <= 0 or se <= 0:
        return float("nan")
    return float(se / c)


def guardrail_status(row: dict, alpha: float) -> str:
    """ok / inconclusive / violated: one-sided tests, in the guardrail's own distribution, of the
    difference against the margin times the control level (d - rho0 c, rho0 = -margin when higher is
    better, +margin when lower is; Var = Var(d) - 2 rho0 Cov(d, c) + rho0^2 Var(c)): the tests
    Fieller's relative CI inverts, so the status and the printed CI agree."""
    d, se, ref = decision_stat(row)
    c, m = _f(row, "control"), row["margin"]
    if not (np.isfinite(d) and np.isfinite(se) and se > 0 and c > 0 and np.isfinite(_f(row, "rel_lift"))):
        return "inconclusive"
    hib = row.get("higher_is_better", True)
    rho0 = -m if hib else m
    var = se * se - 2 * rho0 * _f(row, "cov_dc", 0.0) + rho0 * rho0 * _f(row, "control_var", 0.0)
    z = (d - rho0 * c) / np.sqrt(max(var, 1e-300))  # > 0: better than the margin when hib
    better = z if hib else -z  # > 0: the treatment is better than "worse by the margin"
    if ref.sf(better) < alpha:  # H0 "worse by at least the margin" rejected
        return "ok"
    if ref.cdf(better) < alpha:  # H0 "not worse than the margin" rejected
        return "violated"
    return "inconclusive"


def guardrail_units_needed(row: dict, alpha: float, power: float) -> float:
    """Units per arm (users, or serving batches) at which this guardrail's non-inferiority test
    would show "not worse than the margin" with ``power`` if the treatment does no harm."""
    se0, m = null_rel_se(row), row.get("margin", np.nan)
    n_now = min(row.get("n_control") or 0, row.get("n_treatment") or 0)
    if not (np.isfinite(se0) and m and np.isfinite(m) and n_now):
        return float("nan")
    k = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    return float(np.ceil(n_now * (k * se0 / m) ** 2))


def power_numbers(row: dict, alpha: float, power: float) -> dict:
    """MDE (relative, from the SE under no effect) of this run and users per arm needed to detect
    the observed lift at ``power``."""
    se0, rel = null_rel_se(row), row.get("rel_lift")
    d = decision_stat(row)[2]
    k = d.ppf(1 - alpha / 2) + d.ppf(power)
    out = {"mde_rel": float("nan"), "users_needed_per_arm": float("nan"), "power": power}
    if not (np.isfinite(se0) and np.isfinite(k)):
        return out
    out["mde_rel"] = float(k * se0)
    n_now = min(row.get("n_control") or 0, row.get("n_treatment") or 0)
    if rel is not None and np.isfinite(rel) and rel != 0 and n_now:
        out["users_needed_per_arm"] = float(np.ceil(n_now * (k * se0 / abs(rel)) ** 2))
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
        if "differ in sign" in str(r.get("note", "")):
            parts.append(f"CUPED-adjusted: the raw difference {r['treatment'] - r['control']:+.4g} has the other sign")
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
                       f"({_pct(r['rel_lift'])}, margin {r['margin']:.0%}{_needed(r, alpha, power)}).")
    return out


def _needed(r: dict, alpha: float, power: float) -> str:
    """For an inconclusive guardrail: the size that would make it conclusive if there is no harm."""
    if r["guardrail_status"] != "inconclusive":
        return ""
    n = guardrail_units_needed(r, alpha, power)
    unit = "serving batches" if "batches" in str(r.get("note", "")) else "users"
    return f"; ~{n:,.0f} {unit} per arm would show it at {power:.0%} power" if np.isfinite(n) else ""
