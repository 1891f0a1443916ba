"""The candidate funnel on one world: off-policy estimate (OPE) from logs, interleaving, A/B test,
side by side for the same arm pairs, graded by the world oracle's true lift (prints / writes JSON).

  python bench/funnel.py --runs 6 --out funnel.json

For each pair (control -> treatment), ``--runs`` runs of each stage (seed and salt varied), all in
bench/ope.py's world with its arm shapes (slate 5):
- OPE: the control explores (epsilon-greedy, ``--epsilon``, pool 15) and the treatment is an [ope]
  target; the treatment's CTR lift over the logging policy by SNIPS and DR (`sim ope`'s code), its
  CI, and the logged requests it used;
- interleaving: team draft of the two rankers; the preference share (analysis.interleave);
- A/B: the relative CTR lift (analysis.report.summarize), its CI and users;
- truth: the world oracle's CTR of each arm (one counterfactual pass per A/B run, pooled).
Per stage: the mean estimate and SE, how often its sign agrees with the true lift's and its interval
excludes 0 on the right side, and the units needed to detect the observed mean effect at 80% power
and alpha 0.05 (n * (2.8 SE / effect)^2: users for A/B and interleaving, logged requests for OPE).
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
from analysis.ope.evaluate import evaluate  # noqa: E402
from analysis.ope.logs import load_logs  # noqa: E402
from analysis.report import summarize  # noqa: E402
from simulator.core import Catalog  # noqa: E402
from simulator.core.synthetic import write_world  # noqa: E402
from simulator.engine.config import parse_config  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402

K = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))
PAIRS = (("popularity", "itemknn"), ("itemknn", "popularity"), ("random", "popularity"))


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


def _ope(cat, pols, c, t, seed, args, art) -> dict:
    logger = _arm("c", c, "control", explore={"kind": "epsilon_greedy", "epsilon": args.epsilon, "pool": 15})
    cfg = _config([logger, _arm("t", t, "treatment", weight=0.2)], seed, args.requests, art,
                  ope={"targets": ["t"]})
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    res = evaluate(load_logs(cat.con, rid, "t", "c"))
    base = res.logged_ctr.value
    out = {"n": float(res.n_requests)}
    for row in res.rows:
        if row.estimate.estimator in ("snips", "dr"):  # relative lift over the logging policy
            out[row.estimate.estimator] = {"effect": row.lift.value / base, "se": row.lift.se / base}
    return out


def _stage(results: list[dict], true_lift: float, key: str | None = None) -> dict:
    vals = [r[key] if key else r for r in results]
    eff, se = np.array([v["effect"] for v in vals]), np.array([v["se"] for v in vals])
    n = float(np.mean([r["n"] for r in results]))
    agree = np.sign(eff) == np.sign(true_lift)
    decisive = agree & (np.abs(eff) > 1.96 * se)
    mean, mse = float(eff.mean()), float(np.mean(se))
    return {"mean_effect": mean, "mean_se": mse, "run_to_run_sd": float(eff.std(ddof=1)) if len(eff) > 1 else None,
            "sign_agrees": float(agree.mean()), "significant_and_agrees": float(decisive.mean()),
            "units": n, "units_needed": float(n * (K * mse / abs(mean)) ** 2) if mean else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--epsilon", type=float, default=0.3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
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
            for s in tqdm(range(args.runs), desc=f"{c} -> {t}", file=sys.stderr):
                for name, fn in (("ab", _ab), ("interleave", _interleave), ("ope", _ope)):
                    runs[name].append(fn(cat, pols, c, t, 100 + s, args, f"{d}/art"))
            tc = np.mean([r["truth"]["c"] for r in runs["ab"]])
            tt = np.mean([r["truth"]["t"] for r in runs["ab"]])
            true_lift = float(tt / tc - 1)
            out["pairs"].append({"control": c, "treatment": t, "true_ctr": {"control": tc, "treatment": tt},
                                 "true_rel_lift": true_lift, "ab": _stage(runs["ab"], true_lift),
                                 "interleave": _stage(runs["interleave"], true_lift),
                                 "ope_snips": _stage(runs["ope"], true_lift, "snips"),
                                 "ope_dr": _stage(runs["ope"], true_lift, "dr")})
            out["seconds"] = time.time() - t0
            if args.out:
                args.out.write_text(json.dumps(out, indent=1, default=float))
        cat.close()
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
