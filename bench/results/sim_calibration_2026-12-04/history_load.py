"""The diagnosis behind the history-load covariate of the latency test (issue 24), re-runnable.

    export HLLM_SIM_ML100K=../shared/data/ml-100k
    python bench/results/sim_calibration_2026-12-04/history_load.py collect 3000 80 /tmp/hl
    python bench/results/sim_calibration_2026-12-04/history_load.py analyse /tmp/hl

``collect`` runs the learned ML-100K popularity A/A (two identical arms, 16,000 requests, seeds
1000 + i as ``bench/sim_calibration.py``) and saves, per pipeline call, every request's user and
history length with the call's wall time; ``analyse`` estimates each run's latency difference with
``BatchRatio`` on that table, with and without the history load, and prints the variance ratio
var(d) / mean(SE^2) and the rejection rate at 0.05 (both should be ~1 and ~5%).
"""
import glob
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def collect(first: int, n: int, out: Path) -> None:
    import sim_calibration as sc
    from analysis.report import summarize
    from analysis.views import install_views
    from simulator.core import Catalog, ensure_dataset
    from simulator.engine import runtime as rt
    from simulator.engine.run import prepare, run_experiment, train_arms

    log, batch = [], [0]
    serve, run_pipeline = rt.LocalRuntime.serve, rt._run_pipeline

    def counted(self, work):
        batch[0] += 1
        return serve(self, work)

    def logged(pipe, users):  # the call's time as the runtime measures it (parts[4]), with its users
        parts = run_pipeline(pipe, users)
        log.extend((batch[0], pipe.arm.name, int(u), len(h), parts[4], len(users.user_ids))
                   for u, h in zip(users.user_ids, users.histories))
        return parts

    rt.LocalRuntime.serve, rt._run_pipeline = counted, logged
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hl-"))
    cat = Catalog(str(work / "c.duckdb"))
    sc.DATASET["name"], sc.RUN_EXTRA["user_model"] = "ml-100k", "learned"
    ensure_dataset("ml-100k", cat)
    install_views(cat.con)
    arms = [sc.arm("a", "popularity", "control"), sc.arm("b", "popularity", "treatment")]
    cfg0 = sc.config(arms, seed=1, salt="pilot", artifacts=str(work / "art"))
    pols = train_arms(cfg0, prepare(cfg0, cat), progress=False)
    for i in range(first, first + n):
        log.clear()
        batch[0] = 0
        cfg = sc.config(arms, seed=1000 + i, salt=f"aa-{i}", artifacts=str(work / "art"), n_requests=16000)
        rid = run_experiment(cfg, cat, progress=False, policies=pols)
        s = summarize(cat.con, rid)
        row = s[s.metric == "latency_ms"].iloc[0]
        cols = ["batch_no", "arm", "user_id", "hlen", "call_ms", "n"]
        pd.DataFrame(log, columns=cols).to_parquet(out / f"ms_{i}.parquet")
        (out / f"row_{i}.json").write_text(json.dumps({k: float(row[k]) for k in ("abs_lift", "se", "p")}))
        sc.drop_run(cat.con, rid)
        print(i, float(row["p"]), flush=True)


def analyse(out: Path) -> None:
    from analysis.estimators import BatchRatio
    from analysis.views import Metric

    metric = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")
    res = []
    for f in sorted(glob.glob(str(out / "ms_*.parquet"))):
        r = pd.read_parquet(f)
        t = (r.assign(latency_sum=r.call_ms / r.n, requests=1, history_items=r.hlen)
             .groupby(["batch_no", "arm", "user_id"])[["latency_sum", "requests", "history_items"]]
             .sum().reset_index())
        est = BatchRatio(control="a", treatment="b")
        e1, e0 = est.estimate(t, metric), est.estimate(t.drop(columns="history_items"), metric)
        res.append((e1.abs_lift, e1.se, e1.p, e0.abs_lift, e0.se, e0.p))
    o = np.array(res)
    summary = {"runs": len(o)}
    for name, k in (("call_size_and_history", 0), ("call_size_only", 3)):
        d, se, p = o[:, k], o[:, k + 1], o[:, k + 2]
        summary[name] = {"var_ratio": float(d.var() / np.mean(se ** 2)), "rejections": float(np.mean(p < 0.05)),
                         "sd_d": float(d.std())}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        analyse(Path(sys.argv[2]))
