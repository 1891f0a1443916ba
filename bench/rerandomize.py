"""Re-randomisation check of the A/B test on one stored run: keep one A/A run's per-user table
(through the product path: ``run_experiment`` -> events -> ``user_table``), re-split its users into
the two arms many times, and count how often each metric's test rejects at alpha 0.05.

Under re-splitting of fixed users the null holds exactly, so the rate isolates the test's
small-sample behaviour from anything that varies between runs (seeds, shared state). Both the
product's decision statistic (CUPED difference, HC2 variance, small-sample dof) and the relative
delta-method z test it replaced (rel_lift / rel_se) are counted.

    python bench/rerandomize.py --data ml-100k --requests 4000 --reps 400 --out OUT.json
    python bench/rerandomize.py --data synthetic --requests 2000 --reps 400
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sim_calibration as sc  # noqa: E402  (its config helpers: the same arms and budgets)

from analysis.decision import p_value  # noqa: E402
from analysis.dist import norm  # noqa: E402
from analysis.estimators import Cuped, EstimationError  # noqa: E402
from analysis.report.compute import metric_list  # noqa: E402
from analysis.views import AnalysisConfig, user_table  # noqa: E402
from simulator.core.catalog import Catalog  # noqa: E402


def one_run(data: str, n_requests: int, user_model: str | None):
    """The user table of one A/A run of two popularity arms."""
    from simulator.engine.run import run_experiment

    work = Path(tempfile.mkdtemp(prefix="rerand-"))
    cat, art = Catalog(str(work / "c.duckdb")), str(work / "a")
    sc.ensure_dataset(data, cat)
    if user_model:
        sc.RUN_EXTRA["user_model"] = user_model
    cfg = sc.config([sc.arm("a", "popularity", "control"), sc.arm("b", "popularity", "treatment")],
                    0, "x", art, dataset=data, n_requests=n_requests)
    rid = run_experiment(cfg, cat, progress=False, policies=sc.train_arms(cfg, sc.prepare(cfg, cat),
                                                                         progress=False))
    metrics = [m for m in metric_list(AnalysisConfig()) if m.unit == "user"]
    return user_table(cat.con, rid, metrics)[0], metrics


def rates(table, metrics, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    hits = {m.name: {"new": [], "old": []} for m in metrics}
    for _ in range(reps):
        t = table.assign(arm=np.where(rng.random(len(table)) < 0.5, "a", "b"))
        t.attrs["control"] = "a"
        for m in metrics:
            try:
                r = Cuped(covariates=("pre",)).estimate(t, m).as_row()
            except EstimationError:
                continue
            hits[m.name]["new"].append(p_value(r) < 0.05)
            if np.isfinite(r["rel_lift"]) and r["rel_se"] > 0:
                hits[m.name]["old"].append(2 * norm.sf(abs(r["rel_lift"]) / r["rel_se"]) < 0.05)
    return {m: {k: (float(np.mean(v)) if v else None) for k, v in h.items()} | {"splits": len(h["new"])}
            for m, h in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="ml-100k")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--user-model", default=None)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    table, metrics = one_run(args.data, args.requests, args.user_model)
    req = table["requests"].to_numpy(float)
    out = {"command": "python bench/rerandomize.py " + " ".join(sys.argv[1:]), "users": len(table),
           "requests_per_user_quantiles_0_50_90_100": np.quantile(req, [0, 0.5, 0.9, 1]).tolist(),
           "alpha": 0.05, "rejection_rate": rates(table, metrics, args.reps, args.seed)}
    text = json.dumps(out, indent=1)
    args.out.write_text(text) if args.out else print(text)


if __name__ == "__main__":
    main()
