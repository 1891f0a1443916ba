"""Calibration of the product path itself: `sim run` -> event tables -> views -> summarize. Prints JSON.

    python bench/sim_calibration.py --quick                 # under 10 minutes on 2 cores
    python bench/sim_calibration.py --out results.json      # 200 A/A + 100 known-effect runs

Every replicate calls ``run_experiment`` (what `sim run` calls) on the default synthetic world
with arms trained once (only the seed and the salt change between replicates), then
``summarize`` and the sequential monitor (what `sim report` calls).

(a) A/A: two identical popularity arms (quota 50, slate 10): false-positive rate of every
    default metric at alpha, KS test of p-uniformity, the primary decision, guardrail
    violations, and the sequential monitor's "ever stopped" rate.
(b) Known effect: SASRec vs popularity (retrieval-only arms, quota 50, slate 10) over a fixed
    window of simulated time; the truth is the world oracle over that window with many
    passes. Coverage of the truth by the reported 95% CIs, mean bias of the relative lift, and
    the run-to-run SD of the estimate vs the mean reported SE, per metric the oracle knows.
(c) Power: the share of (b)'s runs whose primary test is significant vs the power predicted
    (analysis.power.power_from_se) from a pilot run's standard error.
(e) Replay A/A (--replay-aa N): the A/A of (a) on a replayed log (--cuped-data, default ml-100k),
    where most serving batches hold one arm (latency is paired by time window there).
(d) CUPED: on A/A runs of the world and of ml-100k replay, the standard error of every metric
    with the one-covariate adjustment (pre-period interaction count) and with all pre-period
    covariates, relative to no adjustment (median over runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.power import power_from_se  # noqa: E402
from analysis.report import arm_roles, metric_list, summarize  # noqa: E402
from analysis.sequential import first_stop, sequential_path  # noqa: E402
from analysis.truth import paired_lift  # noqa: E402
from analysis.views import AnalysisConfig, install_views  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.engine.config import parse_config  # noqa: E402
from simulator.engine.run import prepare, run_truth, train_arms  # noqa: E402

TRUTH_TABLES = ("assignments", "requests", "exposures", "feedback", "truth", "arms", "run_datasets", "run_items",
                "run_users", "runs")
TRAINING: dict = {}  # the policies' own defaults (SASRec trains to convergence with early stopping)


def arm(name: str, policy: str, role: str) -> dict:
    return {"name": name, "role": role, "channels": [{"policy": policy, "quota": 50}], "slate_size": 10}


DATASET = {"name": "synthetic"}  # --world-users N / --world K=V,...: another world, see main()
RUN_EXTRA: dict = {}  # --satisfaction X: run-config fields every replicate gets


def config(arms: list[dict], seed: int, salt: str, artifacts: str, **kw):
    kw.setdefault("dataset", DATASET["name"])
    kw = {**RUN_EXTRA, **kw}
    return parse_config({"name": "calib", "seed": seed, "salt": salt, "arms": arms,
                         "artifacts": artifacts, "policies": TRAINING, "oracle_reps": 0, **kw}, "bench")


def drop_run(con, run_id: str) -> None:
    for t in TRUTH_TABLES:
        con.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id])


def replicate(cat, cfg, policies: dict, sequential: bool) -> tuple[dict, dict]:
    """One run through the product path; returns per-metric results and the sequential stop."""
    from simulator.engine.run import run_experiment

    rid = run_experiment(cfg, cat, progress=False, policies=policies)
    s = summarize(cat.con, rid)
    out = {r["metric"]: {k: r[k] for k in ("p", "p_adj", "significant", "guardrail_status", "rel_lift", "rel_ci_low",
                                           "rel_ci_high", "rel_se", "abs_lift", "se", "dof", "control", "treatment",
                                           "n_control",
                                           "n_treatment", "var_reduction", "method")}
           for r in s.to_dict("records")}
    stop = {}
    if sequential:
        prim = next(m for m in metric_list(AnalysisConfig()) if m.role == "primary")
        control, (treat,) = arm_roles(cat.con, rid)
        stop = first_stop(sequential_path(cat.con, rid, prim, control, treat), 0.05)
    n = cat.con.execute("SELECT count(*), max(ts) - min(ts) FROM requests WHERE run_id = ?", [rid]).fetchone()
    drop_run(cat.con, rid)
    return out, {"stop": stop, "requests": int(n[0]), "span_s": float(n[1] or 0)}


def wilson(k: int, n: int) -> list[float]:
    from statsmodels.stats.proportion import proportion_confint

    return [float(x) for x in proportion_confint(k, n, method="wilson")]


AA_KEYS = ("p", "significant", "guardrail_status", "rel_lift", "rel_ci_low", "rel_ci_high", "var_reduction")


def run_aa(cat, policies, n_runs: int, n_requests: int, art: str, alpha: float, dataset: str | None = None,
           minutes: float | None = None, offset: int = 0) -> dict:
    """``n_runs`` A/A runs, seeds ``1000 + offset + i`` (stopping early, and saying so, after
    ``minutes``); the per-run results are kept (``per_run``) so parts can be merged."""
    arms = [arm("a", "popularity", "control"), arm("b", "popularity", "treatment")]
    res, seq = [], []
    t0 = time.perf_counter()
    for i in tqdm(range(offset, offset + n_runs), desc=f"A/A {dataset or DATASET['name']}", file=sys.stderr):
        extra = {"dataset": dataset} if dataset else {}
        r, meta = replicate(cat, config(arms, seed=1000 + i, salt=f"aa-{i}", artifacts=art, n_requests=n_requests,
                                        **extra), policies, sequential=True)
        res.append({m: {k: v[k] for k in AA_KEYS} for m, v in r.items()})
        seq.append(bool(meta["stop"]["stopped"]))
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            break
    out = aa_summary(res, seq, alpha)
    out.update(requests_per_run=n_requests, dataset=dataset or DATASET["name"], seeds=[1000 + offset, 1000 + offset + len(res) - 1])
    return out


def aa_summary(res: list[dict], seq: list[bool], alpha: float) -> dict:
    """False-positive rates (Wilson CIs), KS test of uniform p, contradictions, from per-run results."""
    n_runs = len(res)
    metrics = list(res[0])
    per = {}
    for m in metrics:
        p = np.array([r[m]["p"] for r in res], float)
        ok = np.isfinite(p)
        k = int((p[ok] < alpha).sum())
        per[m] = {"fpr": k / max(ok.sum(), 1), "fpr_ci95": wilson(k, int(ok.sum())), "runs": int(ok.sum()),
                  "ks_p_uniform": float(stats.kstest(p[ok], "uniform").pvalue),
                  "within_5pct_pm2": bool(0.03 <= k / max(ok.sum(), 1) <= 0.07)}
        if res[0][m]["guardrail_status"]:
            per[m]["violated"] = float(np.mean([r[m]["guardrail_status"] == "violated" for r in res]))
    prim = next(m.name for m in metric_list(AnalysisConfig()) if m.role == "primary")
    vr = [r[prim]["var_reduction"] for r in res if np.isfinite(r[prim]["var_reduction"] or np.nan)]
    winner_ci0 = sum(bool(r[m]["significant"]) and r[m]["rel_ci_low"] <= 0 <= r[m]["rel_ci_high"]
                     for r in res for m in r)
    return {"runs": n_runs, "alpha": alpha, "metrics": per, "per_run": res, "per_run_sequential_stop": seq,
            "significant_with_ci_containing_0": int(winner_ci0),
            "primary_significant_rate": float(np.mean([r[prim]["significant"] for r in res])),
            "any_guardrail_violated_rate": float(np.mean([any(r[m]["guardrail_status"] == "violated" for m in r)
                                                          for r in res])),
            "any_secondary_significant_rate": float(np.mean([any(r[m]["significant"] for m in r if m != prim)
                                                             for r in res])),
            "sequential_ever_stopped_rate": float(np.mean(seq)),
            "cuped_primary_se_ratio_median": float(np.median(np.sqrt(1 - np.array(vr)))) if vr else None}


def run_cuped(cat, policies, n_runs: int, n_requests: int, art: str, dataset: str) -> dict:
    """SE ratios (adjusted / plain) per metric for one and for all pre-period covariates, on A/A runs."""
    arms = [arm("a", "popularity", "control"), arm("b", "popularity", "treatment")]
    sets = {"none": {"cuped": False}, "pre": {"covariates": ["pre"]}, "all": {}}
    ratios: dict[str, dict[str, list[float]]] = {k: {} for k in ("pre", "all")}
    for i in tqdm(range(n_runs), desc=f"cuped ({dataset})", file=sys.stderr):
        cfg = config(arms, seed=3000 + i, salt=f"cuped-{i}", artifacts=art, n_requests=n_requests)
        cfg = cfg.model_copy(update={"dataset": dataset})
        from simulator.engine.run import run_experiment

        rid = run_experiment(cfg, cat, progress=False, policies=policies)
        se = {k: summarize(cat.con, rid, v).set_index("metric")["rel_se"] for k, v in sets.items()}
        for k in ratios:
            for m, v in (se[k] / se["none"]).items():
                if np.isfinite(v):
                    ratios[k].setdefault(m, []).append(float(v))
        drop_run(cat.con, rid)
    return {"dataset": dataset, "runs": n_runs, "requests_per_run": n_requests,
            "median_se_ratio": {k: {m: float(np.median(v)) for m, v in r.items()} for k, r in ratios.items()}}


def truth_for_window(cat, cfg, policies, reps: int) -> dict:
    """The world oracle over [sim_start, sim_start + duration] with ``reps`` passes per arm."""
    setup = prepare(cfg, cat)
    window = (setup.sim_start, setup.sim_start + cfg.duration_s)
    t = run_truth(cfg.model_copy(update={"oracle_reps": reps}), setup, policies, window)
    return {"values": t.values, "passes": t.passes, "reps": reps, "window_s": cfg.duration_s}


def run_effect(cat, policies, n_runs: int, duration: float, art: str, truth_reps: int,
               vary: str = "both", offset: int = 0) -> dict:
    arms = [arm("popularity", "popularity", "control"), arm("sasrec", "sasrec", "treatment")]
    base = config(arms, seed=0, salt="effect", artifacts=art, n_requests=10**9, duration_s=duration)
    t0 = time.perf_counter()
    truth = truth_for_window(cat, base, policies, truth_reps)
    t_truth = time.perf_counter() - t0
    res, reqs = [], []
    for i in tqdm(range(offset, offset + n_runs), desc=f"effect ({vary})", file=sys.stderr):
        seed = 2000 + i if vary in ("both", "seed") else 2000
        salt = f"effect-{i}" if vary in ("both", "salt") else "effect"
        r, meta = replicate(cat, config(arms, seed=seed, salt=salt, artifacts=art, n_requests=10**9,
                                        duration_s=duration), policies, sequential=False)
        res.append(r)
        reqs.append(meta["requests"])
    per = {}
    for m in truth["values"]["popularity"]:
        if m not in res[0]:
            continue
        true_rel, true_se = paired_lift(*([p[m] for p in truth["passes"][a]] for a in ("popularity", "sasrec")))
        rel = np.array([r[m]["rel_lift"] for r in res], float)
        lo = np.array([r[m]["rel_ci_low"] for r in res], float)
        hi = np.array([r[m]["rel_ci_high"] for r in res], float)
        se = np.array([r[m]["rel_se"] for r in res], float)
        defined = np.isfinite(lo) & np.isfinite(hi)  # an undefined CI (e.g. a control of 0) is no coverage
        cov = (lo <= true_rel) & (true_rel <= hi)
        raw = np.array([r[m]["treatment"] / r[m]["control"] - 1 if r[m]["control"] else np.nan for r in res], float)
        if not np.isfinite(true_rel) or not np.isfinite(rel).any():
            continue  # a metric without a relative lift in this world (e.g. a constant control)
        per[m] = {"true_rel_lift": float(true_rel), "true_rel_lift_mc_se": true_se, "coverage": float(cov.mean()),
                  "coverage_ci95": wilson(int(cov.sum()), len(cov)), "runs_with_undefined_ci": int((~defined).sum()),
                  "coverage_of_defined": float(cov[defined].mean()) if defined.any() else None,
                  "mean_rel_lift": float(np.nanmean(rel)),
                  "mc_se_of_mean": float(np.nanstd(rel, ddof=1) / np.sqrt(np.isfinite(rel).sum())),
                  "relative_bias": float(np.nanmean(rel) / true_rel - 1) if true_rel else None,
                  "mean_raw_rel_lift": float(np.nanmean(raw)),
                  "run_to_run_sd": float(np.nanstd(rel, ddof=1)), "mean_reported_se": float(np.nanmean(se)),
                  "se_over_sd": float(np.nanmean(se) / np.nanstd(rel, ddof=1)),
                  "significant_rate": float(np.mean([r[m]["significant"] for r in res]))}
    return {"runs": n_runs, "vary": vary, "window_s": duration, "mean_requests": float(np.mean(reqs)),
            "truth": truth, "truth_seconds": round(t_truth, 1), "metrics": per, "_rows": res}


def power_check(effect: dict, alpha: float) -> dict:
    """Observed power of the primary vs the power predicted from the first run (a pilot)."""
    prim = next(m.name for m in metric_list(AnalysisConfig()) if m.role == "primary")
    rows = effect.pop("_rows")
    pilot = rows[0][prim]
    true_rel = effect["metrics"][prim]["true_rel_lift"]
    predicted = power_from_se(true_rel, pilot["rel_se"], alpha)
    observed = float(np.mean([r[prim]["significant"] for r in rows[1:]]))
    return {"metric": prim, "true_rel_lift": true_rel, "pilot_rel_se": pilot["rel_se"], "predicted_power": predicted,
            "observed_power": observed, "observed_ci95": wilson(int(round(observed * (len(rows) - 1))), len(rows) - 1),
            "runs": len(rows) - 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="60 A/A + 40 effect runs of ~2,000 requests")
    ap.add_argument("--aa", type=int, default=200)
    ap.add_argument("--effect", type=int, default=100)
    ap.add_argument("--requests", type=int, default=2000, help="A/A requests per run")
    ap.add_argument("--effect-requests", type=int, default=20000, help="effect runs: window sized for ~N requests")
    ap.add_argument("--truth-reps", type=int, default=20)
    ap.add_argument("--decompose", type=int, default=0, help="also N runs varying only the seed / only the salt")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--world-users", type=int, default=None, help="a world with this many users (default world: "
                    "2,000): with many users per run-window, the finite-population effect vanishes")
    ap.add_argument("--world", default=None, help="world settings K=V,... (WorldConfig fields, e.g. "
                    "text_signal=0.5,arrivals=0.2; source=ml-100k for the semi-synthetic world)")
    ap.add_argument("--satisfaction", type=float, default=None, help="run config: satisfaction-driven "
                    "leaving and returning (0 = off)")
    ap.add_argument("--user-model", default=None, help="run config user_model (e.g. learned: a response model "
                    "fitted on --data's logs judges the arms)")
    ap.add_argument("--data", default=None, help="the dataset of sections (a)-(c) (default: the synthetic world)")
    ap.add_argument("--skip-aa", action="store_true")
    ap.add_argument("--cuped-runs", type=int, default=30, help="(d): A/A runs per dataset (0 = skip)")
    ap.add_argument("--cuped-data", default="ml-100k", help="(d): a replay dataset besides the world ('' = none)")
    ap.add_argument("--replay-aa", type=int, default=0, help="(e): A/A runs on --cuped-data replayed (0 = skip)")
    ap.add_argument("--replay-requests", type=int, default=4000)
    ap.add_argument("--minutes", type=float, default=None, help="(e): stop the replay A/A after this long")
    ap.add_argument("--offset", type=int, default=0, help="A/A seeds start at 1000 + OFFSET (parts to merge)")
    ap.add_argument("--effect-offset", type=int, default=0, help="effect runs' seeds start at 2000 + "
                    "this (more runs against the same truth: the truth's seeds do not move)")
    ap.add_argument("--merge", nargs="+", default=None, help="merge the A/A sections of these part JSONs")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.quick:
        args.aa, args.effect, args.effect_requests, args.truth_reps = 60, 40, 2000, 8
    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="simcal-"))
    cat = Catalog(str(work / "cal.duckdb"))
    if args.satisfaction is not None:
        RUN_EXTRA["satisfaction"] = args.satisfaction
    if args.user_model:
        RUN_EXTRA["user_model"] = args.user_model
    if args.world_users or args.world:
        opts = world_opts(args.world or "")
        opts.update({"n_users": args.world_users} if args.world_users else {})
        DATASET["name"] = "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(opts.items())).replace("_", "")
        ensure_dataset(DATASET["name"], cat, **opts)
    elif args.data:
        DATASET["name"] = args.data
        ensure_dataset(args.data, cat)
    else:
        ensure_dataset("synthetic", cat)
    art = str(work / "artifacts")
    arms = [arm("popularity", "popularity", "control"), arm("sasrec", "sasrec", "treatment")]
    pilot_cfg = config(arms, seed=1, salt="pilot", artifacts=art, n_requests=args.effect_requests)
    install_views(cat.con)
    t0 = time.perf_counter()
    pilot = bool(args.effect or args.cuped_runs or args.decompose)  # the effect window: from a pilot run
    if pilot or not args.skip_aa:  # (e) alone needs no world arms; the A/A alone only popularity
        cfg = pilot_cfg if pilot else config([arm("a", "popularity", "control"), arm("b", "popularity", "treatment")],
                                             seed=1, salt="pilot", artifacts=art)
        policies = train_arms(cfg, prepare(cfg, cat), progress=False)
    else:
        policies = {}
    meta = replicate(cat, pilot_cfg, policies, sequential=False)[1] if pilot else {}  # ~N requests' window
    out: dict = {"command": "python bench/sim_calibration.py " + " ".join(sys.argv[1:]), "machine": {"cpus": os.cpu_count()},
                 "dataset": DATASET["name"], "world": world_opts(args.world or ""), "run_extra": RUN_EXTRA}
    save = saver(args.out, out)  # after every section: a crash late in a long run keeps what was measured
    if not args.skip_aa:
        save("aa", run_aa(cat, policies, args.aa, args.requests, art, args.alpha, minutes=args.minutes,
                          offset=args.offset))
    if args.replay_aa and _available(args.cuped_data):
        save("replay_aa", _replay_aa(cat, args, art))
    if args.effect:
        out["effect"] = run_effect(cat, policies, args.effect, meta["span_s"], art, args.truth_reps,
                                   offset=args.effect_offset)
        save("power", power_check(out["effect"], args.alpha))
    if args.cuped_runs:
        cuped = [run_cuped(cat, policies, args.cuped_runs, args.requests, art, DATASET["name"])]
        save("cuped", cuped)
        if args.cuped_data and _available(args.cuped_data):
            save("cuped", [*cuped, _cuped_replay(cat, args, art)])
    for vary in ("seed", "salt") if args.decompose else ():
        e = run_effect(cat, policies, args.decompose, meta["span_s"], art, args.truth_reps, vary)
        e.pop("_rows")
        save(f"effect_vary_{vary}_only", e)
    save("seconds", round(time.perf_counter() - t0, 1))
    print(json.dumps(out, indent=1, default=float))


def world_opts(text: str) -> dict:
    """'text_signal=0.5,arrivals=0.2' -> {'text_signal': 0.5, 'arrivals': 0.2} (numbers where they parse)."""
    out = {}
    for part in filter(None, text.split(",")):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = int(v) if v.strip().isdigit() else float(v)
        except ValueError:
            out[k.strip()] = v.strip()
    return out


def saver(path: str | None, out: dict):
    """``save(key, value)``: store a finished section and rewrite the JSON file."""
    def save(key: str, value) -> None:
        out[key] = value
        if path:
            Path(path).write_text(json.dumps(out, indent=1, default=float))
    return save


def _available(name: str) -> bool:
    from simulator.core.paths import find_ml100k

    return name != "ml-100k" or find_ml100k() is not None


def _cuped_replay(cat, args, art: str) -> dict:
    """(d) on a replay dataset: popularity arms trained on its pre-period."""
    ensure_dataset(args.cuped_data, cat)
    cfg = config([arm("a", "popularity", "control"), arm("b", "popularity", "treatment")], 0, "x", art,
                 dataset=args.cuped_data)
    pop = train_arms(cfg, prepare(cfg, cat), progress=False)
    return run_cuped(cat, pop, args.cuped_runs, 4 * args.requests, art, args.cuped_data)


def _replay_aa(cat, args, art: str) -> dict:
    """(e) A/A on a replayed log (issue 21: latency's batches hold one arm there)."""
    ensure_dataset(args.cuped_data, cat)
    cfg = config([arm("a", "popularity", "control"), arm("b", "popularity", "treatment")], 0, "x", art,
                 dataset=args.cuped_data)
    pop = train_arms(cfg, prepare(cfg, cat), progress=False)
    return run_aa(cat, pop, args.replay_aa, args.replay_requests, art, args.alpha, args.cuped_data, args.minutes,
                  args.offset)


def merge(paths: list[str], out_path: str | None) -> None:
    """``--merge A.json B.json ...``: one A/A summary per section from parts run with --offset."""
    parts = [json.load(open(p)) for p in paths]
    out = {"command": "python bench/sim_calibration.py --merge " + " ".join(paths),
           "parts": [p["command"] for p in parts]}
    for key in ("aa", "replay_aa"):
        secs = [p[key] for p in parts if key in p]
        if secs:
            res = [r for s_ in secs for r in s_["per_run"]]
            seq = [x for s_ in secs for x in s_["per_run_sequential_stop"]]
            out[key] = aa_summary(res, seq, secs[0]["alpha"])
            out[key].update(requests_per_run=secs[0]["requests_per_run"], dataset=secs[0]["dataset"],
                            seeds=sorted(x for s_ in secs for x in s_["seeds"]))
    out["seconds"] = sum(p.get("seconds", 0) for p in parts)
    json.dump(out, open(out_path, "w"), indent=1, default=float) if out_path else None
    print(json.dumps({k: v for k, v in out.items() if k not in ("aa", "replay_aa")}, default=float))


if __name__ == "__main__":
    main()
