"""Replay A/A runs that keep their tables: every run's requests (batch, arm, user, latency, time)
and its `summarize` table, so the A/A rates of every metric and other latency estimators can be
computed afterwards (``bench/latency_estimators.py``). Same runs as ``bench/sim_calibration.py
--replay-aa N --replay-requests R`` (popularity arms, seeds 1000 + i, salts ``aa-i``).

    HLLM_SIM_ML100K=../shared/data/ml-100k python bench/replay_aa_tables.py --runs 200 --requests 4000 --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sim_calibration as sc  # noqa: E402

from analysis.report import summarize  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--offset", type=int, default=0, help="first run: seed 1000 + OFFSET")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--data", default="ml-100k")
    ap.add_argument("--out", required=True, help="folder for the per-run parquet files (and the catalog)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cat = Catalog(str(out / "c.duckdb"))
    ensure_dataset(args.data, cat)
    art = str(out / "art")
    arms = [sc.arm("a", "popularity", "control"), sc.arm("b", "popularity", "treatment")]
    base = sc.config(arms, 0, "x", art, dataset=args.data)
    pop = train_arms(base, prepare(base, cat), progress=False)
    for i in range(args.offset, args.offset + args.runs):
        t0 = time.perf_counter()
        cfg = sc.config(arms, seed=1000 + i, salt=f"aa-{i}", artifacts=art, n_requests=args.requests,
                        dataset=args.data)
        rid = run_experiment(cfg, cat, progress=False, policies=pop)
        cat.con.execute("SELECT batch_no, arm, user_id, latency_ms, ts FROM requests WHERE run_id = ?",
                        [rid]).df().to_parquet(out / f"rq_{i}.parquet")
        summarize(cat.con, rid).assign(run=i).to_parquet(out / f"sum_{i}.parquet")
        sc.drop_run(cat.con, rid)
        print(i, round(time.perf_counter() - t0, 1), flush=True)


if __name__ == "__main__":
    main()
