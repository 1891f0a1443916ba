"""Off-policy estimators graded against the world oracle (prints / writes JSON).

  python bench/ope.py --seeds 0:100:2 --out part0.json   # one process per seed range (a:b:step)
  python bench/ope.py --merge part0.json part1.json --out ope.json

A part file is rewritten after every run, so a stopped bench keeps the runs it finished.

Each run is one small synthetic-world A/B run (`run_experiment`, the product path) in which three
logging arms explore with epsilon-greedy slates (epsilons swept) beside two deterministic target
arms: `greedy` (the same popularity pipeline without exploration: close to a logger with a small
epsilon) and `knn` (an item-kNN pipeline: a different ranking). The run's [ope] block records the
targets' slates on every logged request; `sim ope`'s code (analysis.ope.logs / evaluate) then
estimates each target's CTR from each logger's logs with every estimator.

Truth: the world oracle's CTR of each target arm (every user served by it, expected clicks). The
oracle's passes of all runs (``--oracle-runs`` of them, each with its own seed) are pooled into one
truth per arm, since every run has the same world and configuration (the salt varies with the seed,
so each run assigns other users to the loggers; standard errors are clustered by user). Per (epsilon, target,
estimator): bias, RMSE, CI coverage (share of 95% intervals holding the truth), mean CI width and
effective sample size. Note that OPE estimates the target's value on the logging run's requests;
the oracle re-tells the whole story under the target (sessions, histories, fatigue follow it), so a
part of the "bias" is this dynamics gap, not the estimator's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.ope.evaluate import evaluate  # noqa: E402
from analysis.ope.logs import load_logs  # noqa: E402
from simulator.core import Catalog  # noqa: E402
from simulator.core.synthetic import WorldConfig, write_world  # noqa: E402
from simulator.engine.config import parse_config  # noqa: E402
from simulator.engine.run import run_experiment  # noqa: E402

WORLD = WorldConfig(n_users=400, n_items=120, n_topics=6, dim=8, days=20, sessions_per_user=3,
                    choices_per_session=4, no_click_utility=1.5, seed=7)
TARGETS = ("greedy", "knn")


def _logger(eps: float) -> str:
    return f"eps{round(eps * 100):03d}"


def _arm(name: str, policy: str, role: str, **extra) -> dict:
    chans = [{"policy": policy, "quota": 40}]
    if policy != "popularity":
        chans.append({"policy": "popularity", "quota": 20})
    return {"name": name, "role": role, "channels": chans, "fine": {"policy": policy, "keep": 30}, "slate_size": 5,
            **extra}


def config(seed: int, requests: int, epsilons: list[float], oracle: bool, art: str) -> object:
    loggers = [_arm(_logger(e), "popularity", "control" if i == 0 else "treatment", weight=1.0,
                    explore={"kind": "epsilon_greedy", "epsilon": e, "pool": 15})
               for i, e in enumerate(epsilons)]
    targets = [_arm("greedy", "popularity", "treatment", weight=0.3), _arm("knn", "itemknn", "treatment", weight=0.3)]
    return parse_config({"name": "ope-bench", "dataset": "w", "seed": seed, "salt": f"s-{seed}", "n_requests": requests,
                         "artifacts": art, "oracle_reps": 1 if oracle else 0, "abandon_prob": 0.0,
                         "arms": loggers + targets, "ope": {"targets": list(TARGETS)}}, "bench")


def one_run(cat: Catalog, seed: int, args, art: str) -> dict:
    cfg = config(seed, args.requests, args.epsilons, seed < args.oracle_runs, art)
    rid = run_experiment(cfg, cat, progress=False)
    out = {"seed": seed, "run_id": rid, "truth": {}, "estimates": []}
    for row in cat.con.execute("SELECT arm, value FROM truth WHERE run_id = ? AND metric = 'ctr'", [rid]).fetchall():
        out["truth"][row[0]] = row[1]
    for e in args.epsilons:
        for t in TARGETS:
            res = evaluate(load_logs(cat.con, rid, t, _logger(e)))
            out["estimates"].append({"epsilon": e, "target": t, "n_requests": res.n_requests,
                                     "logged_ctr": res.logged_ctr.value,
                                     "rows": [{k: getattr(r.estimate, k) for k in
                                               ("estimator", "value", "se", "ci_low", "ci_high", "ess", "n",
                                                "units")}
                                              for r in res.rows]})
    for table in ("exposures", "feedback", "ope_slates", "requests"):  # keep the catalog small
        cat.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [rid])
    return out


def aggregate(runs: list[dict]) -> dict:
    truth = {}
    for arm in {a for r in runs for a in r["truth"]}:
        vals = [r["truth"][arm] for r in runs if arm in r["truth"]]
        truth[arm] = {"ctr": float(np.mean(vals)), "mc_se": float(np.std(vals, ddof=1) / np.sqrt(len(vals))),
                      "passes": len(vals)}
    cells: dict[tuple, list] = {}
    for r in runs:
        for est in r["estimates"]:
            for row in est["rows"]:
                cells.setdefault((est["epsilon"], est["target"], row["estimator"]), []).append(row)
    table = []
    for (eps, target, name), rows in sorted(cells.items()):
        v = np.array([x["value"] for x in rows])
        lo, hi = np.array([x["ci_low"] for x in rows]), np.array([x["ci_high"] for x in rows])
        if target not in truth:
            continue
        t = truth[target]["ctr"]
        table.append({"epsilon": eps, "target": target, "estimator": name, "runs": len(rows),
                      "truth": t, "mean": float(v.mean()), "bias": float(v.mean() - t),
                      "rmse": float(np.sqrt(np.mean((v - t) ** 2))), "sd": float(v.std(ddof=1)),
                      "coverage": float(np.mean((lo <= t) & (t <= hi))), "ci_width": float(np.mean(hi - lo)),
                      "mean_ess": float(np.mean([x["ess"] for x in rows])), "mean_rounds": float(
                          np.mean([x["n"] for x in rows])), "mean_users": float(np.mean([x["units"] for x in rows]))})
    return {"truth": truth, "table": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0:100", help="run seeds a:b[:step]")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--epsilons", type=lambda s: [float(x) for x in s.split(",")], default=[0.1, 0.4, 1.0])
    ap.add_argument("--oracle-runs", type=int, default=20, help="runs (seeds below this) that run the oracle")
    ap.add_argument("--merge", nargs="*", help="aggregate these part files instead of running")
    ap.add_argument("--out", type=Path)
    ap.add_argument("-q", action="store_true")
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        runs = [r for p in parts for r in p["runs"]]
        result = {"command": "python bench/ope.py --merge " + " ".join(args.merge), "parts": [p["command"] for p in
                  parts], "settings": parts[0]["settings"], "n_runs": len(runs), **aggregate(runs)}
    else:
        seeds = range(*(int(x) for x in args.seeds.split(":")))
        t0 = time.time()
        runs: list[dict] = []
        with tempfile.TemporaryDirectory() as d:
            cat = Catalog(f"{d}/c.duckdb")
            write_world(cat, "w", WORLD)
            for s in tqdm(seeds, desc="runs", disable=args.q):
                runs.append(one_run(cat, s, args, f"{d}/art"))
                result = {"command": "python " + " ".join(sys.argv), "settings": {
                    "world": WORLD.model_dump(), "requests": args.requests, "epsilons": args.epsilons,
                    "oracle_runs": args.oracle_runs, "pool": 15, "slate_size": 5}, "seconds": time.time() - t0,
                    "n_runs": len(runs), "runs": runs, **aggregate(runs)}
                _write(result, args.out)
            cat.close()
        return
    _write(result, args.out)


def _write(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    if out is None:
        print(text)
        return
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)


if __name__ == "__main__":
    main()
