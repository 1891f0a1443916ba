"""The candidate funnel on one world: off-policy estimate (OPE) from logs, interleaving, A/B test,
side by side for the same arm pairs, graded by the world oracle's true lift (prints / writes JSON).

  python bench/funnel.py --seeds 0:20 --out funnel.json              # all runs in one process
  python bench/funnel.py --seeds 0:10 --out part0.json               # or in parts (a:b seed ranges)
  python bench/funnel.py --merge part0.json part1.json --out funnel.json

A part file is rewritten after every pair, so a stopped bench keeps the pairs it finished.

For each pair (control -> treatment), one run of each stage per seed (the seed and the salt vary),
all in bench/ope.py's world with its arm shapes (slate 5):
- OPE: a third arm explores (the control's pipeline, epsilon-greedy, ``--epsilon``, pool 15) and logs;
  the deterministic control and the treatment are both [ope] targets, so each is estimated on the
  same logged requests and their relative lift (treatment / control - 1, delta-method SE clustered
  by user) is comparable with the true lift; by SNIPS and DR (`sim ope`'s estimators); units: the
  logged requests used;
- interleaving: team draft of the two rankers; the preference share - 0.5 (analysis.interleave);
- A/B: the relative CTR lift (analysis.report.summarize), its CI and users;
- truth: the world oracle's CTR of each arm (one counterfactual pass per A/B run, pooled).
Per stage: the mean estimate with a 95% CI over runs, the mean per-run SE, how often its sign agrees
with the true lift's and how often its 95% interval also excludes 0, and the units needed to detect
the observed mean effect at 80% power and alpha 0.05 (n * (2.8 SE / effect)^2: users for A/B and
interleaving, logged requests for OPE).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ope import WORLD, _arm  # noqa: E402  (bench/ope.py: the same world and arm shapes)

from analysis.interleave import preference, user_outcomes  # noqa: E402
from analysis.ope.estimate import Terms, from_terms  # noqa: E402
from analysis.ope.logs import load_logs  # noqa: E402
from analysis.ope.registry import get  # noqa: E402
from analysis.report import summarize  # noqa: E402
from simulator.core import Catalog  # noqa: E402
from simulator.core.synthetic import write_world  # noqa: E402
from simulator.engine.config import parse_config  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402

K = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))
PAIRS = (("popularity", "itemknn"), ("itemknn", "popularity"), ("random", "popularity"))
OPE_ESTIMATORS = ("snips", "dr")
STAGES = ("ope_snips", "ope_dr", "interleave", "ab")


def _config(arms: list[dict], seed: int, requests: int, art: str, **kw):
    return parse_config({"name": "funnel", "dataset": "w", "seed": seed, "salt": f"f-{seed}", "n_requests": requests,
                         "artifacts": art, "abandon_prob": 0.0, "oracle_reps": 0, "arms": arms, **kw}, "bench")


def _ab(cat, pols, c, t, seed, args, art) -> dict:
    cfg = _config([_arm("c", c, "control"), _arm("t", t, "treatment")], seed, args.requests, art, oracle_reps=1)
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    r = summarize(cat.con, rid).set_index("metric").loc["ctr"]
    truth = dict(cat.con.execute("SELECT arm, value FROM truth WHERE run_id = ? AND metric = 'ctr'", [rid]).fetchall())
    return {"effect": float(r.rel_lift), "se": float(r.rel_se), "n": float(r.n_control + r.n_treatment),
            "truth": truth}


def _interleave(cat, pols, c, t, seed, args, art) -> dict:
    cfg = _config([_arm("c", c, "control"), _arm("t", t, "treatment")], seed, args.requests, art, design="interleave")
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    p = preference(user_outcomes(cat.con, rid, "c", "t"), "c", "t")
    return {"effect": float(p.share - 0.5), "se": float(p.se), "n": float(p.users)}


def _rel_lift(tt: Terms, tc: Terms) -> Terms:
    """treatment / control - 1 on the same rows, linearised (delta method)."""
    v = tt.value / tc.value
    return Terms(v - 1, tt.centred / tc.value - v * tc.centred / tc.value, None)


def _ope(cat, pols, c, t, seed, args, art) -> dict:
    logger = _arm("log", c, "control", explore={"kind": "epsilon_greedy", "epsilon": args.epsilon, "pool": 15})
    cfg = _config([logger, _arm("c", c, "treatment", weight=0.2), _arm("t", t, "treatment", weight=0.2)], seed,
                  args.requests, art, ope={"targets": ["c", "t"]})
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    lc, lt = load_logs(cat.con, rid, "c", "log"), load_logs(cat.con, rid, "t", "log")
    fc, ft = lc.exposures, lt.exposures
    if len(fc.reward) != len(ft.reward) or not np.array_equal(fc.cluster, ft.cluster):
        raise RuntimeError(f"run {rid}: the two targets' logged rows differ (a short slate was dropped for one)")
    out = {"n": float(lt.slates.n)}
    for name in OPE_ESTIMATORS:
        est = get(name)
        e = from_terms(name, _rel_lift(est.terms(ft), est.terms(fc)), cluster=ft.cluster)
        out[name] = {"effect": e.value, "se": e.se}
    return out


def _stage(vals: list[dict], true_lift: float) -> dict:
    eff, se = np.array([v["effect"] for v in vals]), np.array([v["se"] for v in vals])
    n = float(np.mean([v["n"] for v in vals]))
    agree = np.sign(eff) == np.sign(true_lift)
    decisive = agree & (np.abs(eff) > 1.96 * se)
    mean, mse = float(eff.mean()), float(np.mean(se))
    sd = float(eff.std(ddof=1)) if len(eff) > 1 else float("nan")
    half = float(stats.t.ppf(0.975, len(eff) - 1) * sd / np.sqrt(len(eff))) if len(eff) > 1 else float("nan")
    return {"runs": len(eff), "mean_effect": mean, "mean_ci95": [mean - half, mean + half], "mean_se": mse,
            "run_to_run_sd": sd, "sign_agrees": float(agree.mean()), "significant_and_agrees": float(decisive.mean()),
            "units": n, "units_needed": float(n * (K * mse / abs(mean)) ** 2) if mean else None}


def summarise_pair(c: str, t: str, runs: dict[str, list[dict]]) -> dict:
    tc = float(np.mean([r["truth"]["c"] for r in runs["ab"]]))
    tt = float(np.mean([r["truth"]["t"] for r in runs["ab"]]))
    true_lift = tt / tc - 1
    per_stage = {"ab": runs["ab"], "interleave": runs["interleave"],
                 **{f"ope_{e}": [{**r[e], "n": r["n"]} for r in runs["ope"]] for e in OPE_ESTIMATORS}}
    return {"control": c, "treatment": t, "true_ctr": {"control": tc, "treatment": tt}, "true_rel_lift": true_lift,
            **{s: _stage(per_stage[s], true_lift) for s in STAGES}, "raw": runs}


def _seeds(text: str) -> list[int]:
    a, b = (int(x) for x in text.split(":"))
    return list(range(a, b))


def run(args) -> dict:
    out = {"command": "python " + " ".join(sys.argv), "settings": vars(args) | {"out": str(args.out)}, "pairs": []}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        cat = Catalog(f"{d}/c.duckdb")
        write_world(cat, "w", WORLD)
        names = sorted({p for pair in PAIRS for p in pair})
        base = _config([_arm(n, n, "control" if i == 0 else "treatment") for i, n in enumerate(names)], 0, 10,
                       f"{d}/art")
        pols = train_arms(base, prepare(base, cat), progress=False)
        for c, t in PAIRS:
            runs = {"ab": [], "interleave": [], "ope": []}
            for s in tqdm(_seeds(args.seeds), desc=f"{c} -> {t}", file=sys.stderr, disable=args.q):
                for name, fn in (("ab", _ab), ("interleave", _interleave), ("ope", _ope)):
                    runs[name].append({"seed": 100 + s, **fn(cat, pols, c, t, 100 + s, args, f"{d}/art")})
            out["pairs"].append(summarise_pair(c, t, runs))
            out["seconds"] = time.time() - t0
            if args.out:
                args.out.write_text(json.dumps(out, indent=1, default=float))
        cat.close()
    return out


def merge(paths: list[Path]) -> dict:
    parts = [json.loads(p.read_text()) for p in paths]
    out = {"command": "python " + " ".join(sys.argv), "parts": [p["command"] for p in parts],
           "settings": parts[0]["settings"], "seconds": sum(p["seconds"] for p in parts), "pairs": []}
    for i, pair in enumerate(parts[0]["pairs"]):
        runs = {k: [r for p in parts for r in p["pairs"][i]["raw"][k]] for k in pair["raw"]}
        seeds = [r["seed"] for r in runs["ab"]]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"error: the parts repeat seeds for {pair['control']} -> {pair['treatment']}")
        out["pairs"].append(summarise_pair(pair["control"], pair["treatment"], runs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0:6", help="seed range a:b (run seeds 100+a .. 100+b-1)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--epsilon", type=float, default=0.3)
    ap.add_argument("--merge", type=Path, nargs="+", help="merge part files written by --out")
    ap.add_argument("--out", type=Path)
    ap.add_argument("-q", action="store_true", help="no progress bars")
    args = ap.parse_args()
    out = merge(args.merge) if args.merge else run(args)
    text = json.dumps(out, indent=1, default=float)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
