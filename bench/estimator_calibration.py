"""Unit check of the analysis estimators on i.i.d. numpy tables (not the product path: that is
bench/sim_calibration.py, which runs `sim run` itself); prints JSON.

  python bench/estimator_calibration.py [--experiments 1000] [--users 2000] [--perf] [--seed 0]

1. A/A: false-positive rate of every estimator x metric at alpha 0.05 (bar: 5% +/- 1.5).
2. Injected lift: measured power vs statsmodels' power calculation (bar: within 3 points).
3. CUPED: variance of the CUPED estimate / plain estimate across experiments vs 1 - rho^2.
4. Peeking: 20 looks per A/A experiment; naive t-test "stop when p < alpha" vs mSPRT.
5. (--perf) summarize + write_report on a generated 1M-exposure run (bar: < 10 s).
Each experiment runs the real estimator classes on a per-user table (same code as reports).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.estimators import (  # noqa: E402
    Cuped,
    DeltaRatio,
    Effect,
    EstimationError,
    Estimator,
    TwoProportion,
    WelchT,
    arm_values,
    ratio_stats,
    rel_delta,
)
from analysis.sequential import MSPRT, msprt_pvalues  # noqa: E402
from analysis.views import Metric  # noqa: E402

CTR = Metric(name="ctr", kind="ratio", num="clicks", den="exposures")
CONS = Metric(name="consumption", kind="mean", num="consumption")
ANY = Metric(name="click_any", kind="proportion", num="any_click")


class Bootstrap(Estimator):
    """Percentile bootstrap (scipy.stats.bootstrap, resampling users within arm): a comparison
    estimator of this bench only, not in the product.

    Statistic: difference of means (ratio metrics: difference of sum/sum). p-value: share of
    null-shifted replicates at least as extreme as the observed difference.
    """

    name = "bootstrap"

    def __init__(self, alpha: float = 0.05, control=None, treatment=None, n_resamples: int = 2000,
                 seed: int = 0):
        super().__init__(alpha, control, treatment)
        self.n_resamples, self.seed = n_resamples, seed

    def _estimate(self, table, metric, c, t) -> Effect:
        yc, xc = arm_values(table, metric, c)
        yt, xt = arm_values(table, metric, t)
        if metric.kind == "ratio":
            idx_c, idx_t = np.arange(yc.size), np.arange(yt.size)

            def stat(ic, it, axis=-1):
                ic, it = ic.astype(int), it.astype(int)
                return yt[it].sum(axis) / xt[it].sum(axis) - yc[ic].sum(axis) / xc[ic].sum(axis)

            data = (idx_c, idx_t)
            mc, mt = yc.sum() / xc.sum(), yt.sum() / xt.sum()
        else:
            def stat(a, b, axis=-1):
                return b.mean(axis) - a.mean(axis)

            data = (yc, yt)
            mc, mt = yc.mean(), yt.mean()
        if np.var(np.concatenate([yc, yt])) == 0:
            raise EstimationError(f"metric {metric.name!r} has zero variance in both arms: no test possible")
        res = stats.bootstrap(data, stat, n_resamples=self.n_resamples, confidence_level=1 - self.alpha,
                              method="percentile", vectorized=True, rng=np.random.default_rng(self.seed))
        boot = res.bootstrap_distribution
        d = mt - mc
        p = float(np.mean(np.abs(boot - d) >= abs(d)))
        p = max(p, 1.0 / (self.n_resamples + 1))
        se = float(res.standard_error)
        z = stats.norm.ppf(1 - self.alpha / 2)
        vc = (yc.var(ddof=1) / yc.size) if metric.kind != "ratio" else ratio_stats(yc, xc)[1]
        vt = (yt.var(ddof=1) / yt.size) if metric.kind != "ratio" else ratio_stats(yt, xt)[1]
        rel, rel_ci, rel_se = rel_delta(mt, mc, vt, vc, z)
        lo, hi = res.confidence_interval
        return Effect(metric=metric.name, method=self.name, control_arm=c, treatment_arm=t, control=mc,
                      treatment=mt, abs_lift=d, rel_lift=rel, ci=(lo, hi), rel_ci=rel_ci, p=p,
                      n_by_arm={c: yc.size, t: yt.size}, se=se, rel_se=rel_se)


def user_table(rng: np.random.Generator, n: int, lift: float = 0.0, add: float = 0.0) -> pd.DataFrame:
    """One experiment's per-user table: skewed propensity, pre-period covariate, 50/50 arms.

    ``lift``: multiplicative CTR lift in treatment; ``add``: additive consumption lift.
    """
    a = rng.lognormal(0.0, 0.5, n)
    arm = rng.random(n) < 0.5
    pre = rng.poisson(5.0 * a)
    exposures = 1 + rng.poisson(20.0, n)
    p = np.minimum(0.05 * a * np.where(arm, 1 + lift, 1.0), 0.9)
    clicks = rng.binomial(exposures, p)
    consumption = 0.3 * a + rng.normal(0, 0.3, n) + np.where(arm, add, 0.0)
    return pd.DataFrame({"arm": np.where(arm, "treatment", "control"), "clicks": clicks, "exposures": exposures,
                         "consumption": consumption, "any_click": (clicks > 0).astype(int), "pre": pre})


CASES = [  # (label, estimator factory, metric)
    ("welch/consumption", lambda: WelchT(), CONS),
    ("cuped/consumption", lambda: Cuped(), CONS),
    ("bootstrap/consumption", lambda: Bootstrap(n_resamples=500), CONS),
    ("delta/ctr", lambda: DeltaRatio(), CTR),
    ("cuped/ctr", lambda: Cuped(), CTR),
    ("bootstrap/ctr", lambda: Bootstrap(n_resamples=500), CTR),
    ("msprt/ctr", lambda: MSPRT(), CTR),
    ("two_proportion/click_any", lambda: TwoProportion(), ANY),
    ("welch/click_any", lambda: WelchT(), ANY),
]


def run_aa(E: int, n: int, seed: int, alpha: float) -> dict:
    rng = np.random.default_rng(seed)
    rej = {k: 0 for k, _, _ in CASES}
    est_var = {"welch": [], "cuped": []}
    reductions = []
    for _ in tqdm(range(E), desc="A/A", file=sys.stderr):
        t = user_table(rng, n)
        t.attrs["control"] = "control"
        for label, make, metric in CASES:
            e = make().estimate(t, metric)
            rej[label] += e.p < alpha
            if label == "welch/consumption":
                est_var["welch"].append(e.abs_lift)
            if label == "cuped/consumption":
                est_var["cuped"].append(e.abs_lift)
                if "var_reduction" in e.extra:  # else the adjustment would have flipped the raw sign
                    reductions.append(e.extra["var_reduction"])
    fpr = {k: v / E for k, v in rej.items()}
    fixed = {k: v for k, v in fpr.items() if not k.startswith("msprt")}
    ratio = float(np.var(est_var["cuped"]) / np.var(est_var["welch"]))
    rho2 = float(np.mean(reductions))
    # sampling error of a variance ratio over E experiments ~ sqrt(2/E) * ratio (upper bound, correlated)
    return {"experiments": E, "users": n, "alpha": alpha, "fpr": fpr,
            "fpr_pass": all(abs(v - alpha) <= 0.015 for v in fixed.values()),
            "fpr_binomial_se": float(np.sqrt(alpha * (1 - alpha) / E)),
            "msprt_note": "always-valid p is conservative at one look by design: bar is <= alpha (see peeking)",
            "msprt_pass": bool(fpr["msprt/ctr"] <= alpha + 0.015),
            "cuped": {"var_ratio_observed": ratio, "one_minus_rho2": 1 - rho2,
                      "tolerance": float(2 * np.sqrt(2 / E) * ratio),
                      "pass": bool(abs(ratio - (1 - rho2)) <= 2 * np.sqrt(2 / E) * ratio)}}


def run_power(E: int, n: int, seed: int, alpha: float) -> dict:
    rng = np.random.default_rng(seed + 1)
    big = user_table(np.random.default_rng(seed + 99), 400_000)
    sd = float(big["consumption"].std())
    rho = float(np.corrcoef(big["consumption"], big["pre"])[0, 1])
    p0 = float(big["any_click"].mean())
    add, lift = 0.025, 0.12
    n_arm = n / 2
    # treatment any-click proportion under the lift, from a big population too
    big_t = user_table(np.random.default_rng(seed + 98), 400_000, lift=lift)
    p1 = float(big_t.loc[big_t["arm"] == "treatment", "any_click"].mean())
    p0 = float(big_t.loc[big_t["arm"] == "control", "any_click"].mean())
    theory = {
        "welch/consumption": TTestIndPower().power(add / sd, nobs1=n_arm, alpha=alpha),
        "cuped/consumption": TTestIndPower().power(add / (sd * np.sqrt(1 - rho**2)), nobs1=n_arm, alpha=alpha),
        "two_proportion/click_any": NormalIndPower().power(proportion_effectsize(p1, p0), nobs1=n_arm, alpha=alpha),
    }
    hits = {k: 0 for k in theory}
    for _ in tqdm(range(E), desc="power", file=sys.stderr):
        t = user_table(rng, n, lift=lift, add=add)
        t.attrs["control"] = "control"
        hits["welch/consumption"] += WelchT().estimate(t, CONS).p < alpha
        hits["cuped/consumption"] += Cuped().estimate(t, CONS).p < alpha
        hits["two_proportion/click_any"] += TwoProportion().estimate(t, ANY).p < alpha
    measured = {k: v / E for k, v in hits.items()}
    diff = {k: measured[k] - float(theory[k]) for k in theory}
    return {"experiments": E, "users": n, "effect": {"consumption_add": add, "ctr_lift": lift, "sd": sd, "rho": rho,
                                                     "p0": p0, "p1": p1},
            "measured": measured, "statsmodels": {k: float(v) for k, v in theory.items()},
            "diff_points": {k: 100 * v for k, v in diff.items()},
            "pass": all(abs(v) <= 0.03 for v in diff.values())}


def run_peeking(E: int, n: int, seed: int, alpha: float, looks: int = 20, tau: float = 0.05) -> dict:
    """A/A, users arrive one by one; test after every n/looks users (vectorised over experiments)."""
    rng = np.random.default_rng(seed + 2)
    a = rng.lognormal(0.0, 0.5, (E, n))
    y = 0.3 * a + rng.normal(0, 0.3, (E, n))
    arm = rng.random((E, n)) < 0.5
    at = np.linspace(n / looks, n, looks).astype(int)
    cs = lambda v: np.cumsum(v, axis=1)[:, at - 1]  # noqa: E731
    nt, nc = cs(arm), cs(~arm)
    st, sc = cs(np.where(arm, y, 0)), cs(np.where(arm, 0, y))
    qt, qc = cs(np.where(arm, y * y, 0)), cs(np.where(arm, 0, y * y))
    mt, mc = st / nt, sc / nc
    vt = (qt - nt * mt**2) / (nt - 1) / nt
    vc = (qc - nc * mc**2) / (nc - 1) / nc
    d, v = mt - mc, vt + vc
    # naive: Welch t-test at every look, stop at the first p < alpha
    df = v**2 / (vt**2 / (nt - 1) + vc**2 / (nc - 1))
    p_naive = 2 * stats.t.sf(np.abs(d) / np.sqrt(v), df)
    tau2 = (tau * 0.3 * np.exp(0.125)) ** 2  # tau x the (known in advance) control mean
    p_av = msprt_pvalues(d, v, tau2)
    return {"experiments": E, "users": n, "looks": looks, "alpha": alpha, "msprt_tau2": tau2,
            "naive_t_any_look_fpr": float((p_naive < alpha).any(axis=1).mean()),
            "naive_t_final_look_fpr": float((p_naive[:, -1] < alpha).mean()),
            "msprt_any_look_fpr": float((p_av < alpha).any(axis=1).mean()),
            "pass": bool((p_av < alpha).any(axis=1).mean() <= alpha + 0.015)}


def run_perf(users: int = 20_000) -> dict:
    import duckdb

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _fake_events import make_fake_run  # the tests' generator of event tables with a known lift

    from analysis.report import summarize, write_report

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "perf.duckdb"))
        t0 = time.perf_counter()
        info = make_fake_run(con, "perf", n_users=users, n_items=5000, requests_per_user=5.0, slate=10, seed=0)
        t_gen = time.perf_counter() - t0
        con.close()
        con = duckdb.connect(str(Path(tmp) / "perf.duckdb"))
        t0 = time.perf_counter()
        s = summarize(con, "perf")
        t_sum = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_report(con, "perf", Path(tmp) / "reports")
        t_rep = time.perf_counter() - t0
    return {"exposures": info["n_exposures"], "users": info["n_users"], "generate_s": round(t_gen, 2),
            "summarize_s": round(t_sum, 2), "write_report_s": round(t_rep, 2), "metrics": int(len(s)),
            "pass": t_rep < 10.0, "note": "write_report_s = full analysis (views, estimators, SRM) + 4 plots + files"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=2000, help="A/A experiments (>= 1000)")
    ap.add_argument("--power-experiments", type=int, default=4000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--perf", action="store_true", help="also time a 1M-exposure run")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip: aa power peeking")
    args = ap.parse_args()
    out: dict = {}
    t0 = time.perf_counter()
    if "aa" not in args.skip:
        out["aa"] = run_aa(args.experiments, args.users, args.seed, args.alpha)
    if "power" not in args.skip:
        out["power"] = run_power(args.power_experiments, args.users, args.seed, args.alpha)
    if "peeking" not in args.skip:
        out["peeking"] = run_peeking(args.experiments, args.users, args.seed, args.alpha)
    if args.perf:
        out["perf_1m_exposures"] = run_perf()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1, default=lambda o: o.item() if hasattr(o, 'item') else str(o)))


if __name__ == "__main__":
    main()
