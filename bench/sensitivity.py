"""Interleaving vs A/B in the synthetic world: users needed for the same power, and sign agreement.

    python bench/sensitivity.py --quick             # ~15 minutes on 2 cores (no HLLM pair)
    python bench/sensitivity.py --out sens.json     # every pair and world variant

For each pair of rankers (control -> treatment) and world setting, over a fixed window of
simulated time (the same users for both designs):
- truth: the world oracle's A/B lift of CTR over the window (paired counterfactual passes);
- A/B: ``--runs`` runs of `sim run` (seed and salt varied): the reported SE of the CTR lift at the
  users per arm the window holds -> users needed (both arms) to detect the true lift at 80% power;
- interleaving: ``--runs`` runs of `sim run --design interleave`: the SE of the preference share
  and its mean effect (share - 0.5) -> users needed at 80% power;
- the ratio of the two, and how often interleaving's winner has the sign of the true A/B lift;
- the measured share of significant runs of each design beside the power their SEs predict.
An A/A section runs identical arms through interleaving: false-positive rate and p-uniformity.
The abandonment probability (a run setting) and the world's position decay are varied for the
SASRec-vs-popularity pair; arms are trained once (position decay does not change the logs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_calibration import arm, config, drop_run, saver, truth_for_window, wilson  # noqa: E402

from analysis.interleave import preference, user_outcomes  # noqa: E402
from analysis.power import power_from_se  # noqa: E402
from analysis.report import summarize  # noqa: E402
from analysis.truth import paired_lift  # noqa: E402
from analysis.views import install_views  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402

K = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))  # two-sided 5%, 80% power
PAIRS = {"sasrec_vs_popularity": ("popularity", "sasrec"), "hstu_vs_sasrec": ("sasrec", "hstu"),
         "hllm_vs_sasrec": ("sasrec", "hllm")}
TRAINING = {"hllm": {"preset": "quick"}}  # the other policies train with their own defaults
SEEDS = {"base": 4000}  # run i uses seed base + i (--seed-base)


def arms_of(control: str, treatment: str) -> list[dict]:
    return [arm("c_" + control, control, "control"), arm("t_" + treatment, treatment, "treatment")]


def ab_runs(cat, pols, arms, window: float, runs: int, dataset: str, **kw) -> dict:
    rel, se, n, sig = [], [], [], []
    for i in tqdm(range(runs), desc="A/B", file=sys.stderr):
        cfg = config(arms, seed=SEEDS["base"] + i, salt=f"s-{i}", artifacts="", n_requests=10**9, duration_s=window,
                     **kw)
        rid = run_experiment(cfg.model_copy(update={"dataset": dataset, "policies": TRAINING}), cat, progress=False,
                             policies=pols)
        r = summarize(cat.con, rid).set_index("metric").loc["ctr"]
        rel.append(r.rel_lift), se.append(r.rel_se), n.append(min(r.n_control, r.n_treatment)), sig.append(r.significant)
        drop_run(cat.con, rid)
    return {"rel": np.array(rel), "se": np.array(se), "n_per_arm": float(np.mean(n)), "significant": np.array(sig)}


def interleave_runs(cat, pols, arms, window: float, runs: int, dataset: str, **kw) -> dict:
    share, se, n, sig, sign_p, pv = [], [], [], [], [], []
    c, t = arms[0]["name"], arms[1]["name"]
    for i in tqdm(range(runs), desc="interleave", file=sys.stderr):
        cfg = config(arms, seed=SEEDS["base"] + i, salt=f"s-{i}", artifacts="", n_requests=10**9, duration_s=window,
                     design="interleave", **kw)
        rid = run_experiment(cfg.model_copy(update={"dataset": dataset, "policies": TRAINING}), cat, progress=False,
                             policies=pols)
        p = preference(user_outcomes(cat.con, rid, c, t), c, t)
        share.append(p.share), se.append(p.se), n.append(p.users), sig.append(p.significant), sign_p.append(p.sign_test_p)
        pv.append(p.p)
        drop_run(cat.con, rid)
    return {"share": np.array(share), "se": np.array(se), "users": float(np.mean(n)), "significant": np.array(sig),
            "sign_test_p": np.array(sign_p), "p": np.array(pv)}


def compare(cat, pols, control: str, treatment: str, window: float, runs: int, truth_reps: int,
            dataset: str = "synthetic", **kw) -> dict:
    """One pair in one world setting: truth, both designs' runs, users needed, sign agreement."""
    arms = arms_of(control, treatment)
    base = config(arms, seed=0, salt="t", artifacts="", n_requests=10**9, duration_s=window, **kw)
    truth = truth_for_window(cat, base.model_copy(update={"dataset": dataset}), pols, truth_reps)
    true_lift, true_se = paired_lift(*([p["ctr"] for p in truth["passes"][a["name"]]] for a in arms))
    ab = ab_runs(cat, pols, arms, window, runs, dataset, **kw)
    il = interleave_runs(cat, pols, arms, window, runs, dataset, **kw)
    ab_se, il_se, il_effect = float(np.mean(ab["se"])), float(np.mean(il["se"])), float(np.mean(il["share"]) - 0.5)
    need_ab = 2 * ab["n_per_arm"] * (K * ab_se / abs(true_lift)) ** 2 if true_lift else float("inf")
    need_il = il["users"] * (K * il_se / abs(il_effect)) ** 2 if il_effect else float("inf")
    agree = np.sign(il["share"] - 0.5) == np.sign(true_lift)
    return {"control": control, "treatment": treatment, "window_s": window, "setting": kw,
            "true_ctr_lift": true_lift, "true_ctr_lift_mc_se": true_se,
            "ab": {"runs": runs, "users_per_arm": ab["n_per_arm"], "mean_rel_lift": float(ab["rel"].mean()),
                   "mean_reported_se": ab_se, "run_to_run_sd": float(ab["rel"].std(ddof=1)),
                   "significant_rate": float(ab["significant"].mean()),
                   "predicted_power": power_from_se(true_lift, ab_se), "users_needed_total": float(need_ab)},
            "interleave": {"runs": runs, "users": il["users"], "mean_share": float(il["share"].mean()),
                           "mean_reported_se": il_se, "run_to_run_sd": float(il["share"].std(ddof=1)),
                           "significant_rate": float(il["significant"].mean()),
                           "predicted_power": power_from_se(il_effect, il_se), "users_needed": float(need_il),
                           "sign_agrees_with_true_lift": float(agree.mean()),
                           "significant_and_agrees": float((agree & il["significant"]).mean())},
            "users_ratio_ab_over_interleave": float(need_ab / need_il) if need_il else None}


def interleave_aa(cat, pols, window: float, runs: int) -> dict:
    arms = [arm("a", "popularity", "control"), arm("b", "popularity", "treatment")]
    res = interleave_runs(cat, pols, arms, window, runs, "synthetic")
    p = res["p"]
    k, k_sign = int((p < 0.05).sum()), int((res["sign_test_p"] < 0.05).sum())
    z = (res["share"] - 0.5) / res["se"]
    return {"runs": runs, "fpr": k / runs, "fpr_ci95": wilson(k, runs), "ks_p_uniform": float(stats.kstest(p, "uniform").pvalue),
            "z_sd": float(z.std(ddof=1)), "sign_test_fpr": k_sign / runs, "sign_test_fpr_ci95": wilson(k_sign, runs),
            "mean_share": float(res["share"].mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs, no HLLM pair")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--aa", type=int, default=200)
    ap.add_argument("--truth-reps", type=int, default=8)
    ap.add_argument("--window-requests", type=int, default=2000, help="window sized for ~N requests")
    ap.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, among {', '.join(PAIRS)}")
    ap.add_argument("--no-variants", action="store_true", help="skip the abandonment / position-decay settings")
    ap.add_argument("--satisfaction", type=float, nargs="*", default=[],
                    help="also SASRec vs popularity with satisfaction-driven leaving at these settings (run config)")
    ap.add_argument("--seed-base", type=int, default=4000, help="run i uses seed base + i")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    SEEDS["base"] = args.seed_base
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    if args.quick:
        args.runs, args.aa, pairs = 15, 60, ["sasrec_vs_popularity", "hstu_vs_sasrec"]
    import tempfile

    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sens-"))
    cat = Catalog(str(work / "sens.duckdb"))
    ensure_dataset("synthetic", cat)
    variants = bool(args.satisfaction) or not args.no_variants  # SASRec vs popularity in other settings
    names = sorted({p for k in pairs for p in PAIRS[k]} | {"popularity"} | ({"sasrec"} if variants else set()))
    cfg = config([arm(n, n, "control" if i == 0 else "treatment") for i, n in enumerate(names)], 0, "x",
                 str(work / "art"), n_requests=args.window_requests)
    pols = train_arms(cfg.model_copy(update={"policies": TRAINING}), prepare(cfg, cat), progress=False)
    install_views(cat.con)
    window = _window(cat, pols, args.window_requests)
    out: dict = {"command": "python bench/sensitivity.py " + " ".join(sys.argv[1:]), "machine": {"cpus": os.cpu_count()},
                 "window_s": window, "pairs": {}, "abandonment": {}, "position_decay": {}, "satisfaction": {}}
    t0 = time.perf_counter()
    save = saver(args.out, out)
    if args.aa:
        save("interleave_aa", interleave_aa(cat, pols, window, args.aa))
    for key in pairs:
        out["pairs"][key] = compare(cat, pols, *PAIRS[key], window, args.runs, args.truth_reps)
        save("pairs", out["pairs"])
    for ab in () if args.no_variants else (0.1, 0.6):
        out["abandonment"][str(ab)] = compare(cat, pols, "popularity", "sasrec", window, args.runs, args.truth_reps,
                                              abandon_prob=ab)
        save("abandonment", out["abandonment"])
    for sat in args.satisfaction:  # leaving and returning driven by what was shown (issue 23)
        out["satisfaction"][f"{sat:g}"] = compare(cat, pols, "popularity", "sasrec", window, args.runs,
                                                  args.truth_reps, satisfaction=sat)
        save("satisfaction", out["satisfaction"])
    for decay in () if args.no_variants else (0.0, 0.8):
        name = f"synthetic-decay{decay}"
        ensure_dataset(name, cat, position_decay=decay)
        out["position_decay"][str(decay)] = compare(cat, pols, "popularity", "sasrec", window, args.runs,
                                                    args.truth_reps, dataset=name)
        save("position_decay", out["position_decay"])
    save("seconds", round(time.perf_counter() - t0, 1))
    print(json.dumps(out, indent=1, default=float))


def _window(cat, pols, n: int) -> float:
    """Seconds of simulated time that hold about ``n`` requests (one A/B run of popularity arms)."""
    cfg = config([arm("a", "popularity", "control"), arm("b", "popularity", "treatment")], 1, "w", "", n_requests=n)
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    span = cat.con.execute("SELECT max(ts) - min(ts) FROM requests WHERE run_id = ?", [rid]).fetchall()[0][0]
    drop_run(cat.con, rid)
    return float(span)


if __name__ == "__main__":
    main()
