"""Does an A/A on a world satisfy the sharp null? One seed, two salts, identical popularity arms:
if every user's outcomes are the same under both assignments, a relabeling test is exact.

    python bench/results/sim_calibration_2026-12-02d/sharp_null.py \
        --world n_users=300,text_signal=0.5,arrivals=0.2 --satisfaction 1 > sharp_null.txt
"""

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, "bench")
import sim_calibration as sc  # noqa: E402  (the A/A bench's arms, budgets and world options)

from analysis.views import install_views, user_table  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.engine.run import prepare, run_experiment, train_arms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", default="", help="WorldConfig K=V,... (as bench/sim_calibration.py)")
    ap.add_argument("--data", default=None, help="a dataset instead of a world (e.g. ml-100k)")
    ap.add_argument("--satisfaction", type=float, default=0.0)
    ap.add_argument("--user-model", default=None)
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="sharp-"))
    cat = Catalog(str(work / "c.duckdb"))
    opts = sc.world_opts(a.world)
    name = a.data or "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(opts.items())).replace("_", "")
    ensure_dataset(name, cat, **opts) if opts else ensure_dataset(name, cat)
    sc.DATASET["name"] = name
    sc.RUN_EXTRA.update({"satisfaction": a.satisfaction} if a.satisfaction else {})
    sc.RUN_EXTRA.update({"user_model": a.user_model} if a.user_model else {})
    install_views(cat.con)
    arms = [sc.arm("a", "popularity", "control"), sc.arm("b", "popularity", "treatment")]
    tables, pols = [], None
    for salt in ("s1", "s2"):
        cfg = sc.config(arms, seed=a.seed, salt=salt, artifacts=str(work / "art"), n_requests=4000)
        pols = pols or train_arms(cfg, prepare(cfg, cat), progress=False)
        rid = run_experiment(cfg, cat, progress=False, policies=pols)
        tables.append(user_table(cat.con, rid)[0].set_index("user_id").sort_index())
    one, two = tables
    common = one.index.intersection(two.index)
    print(f"{name}, seed {a.seed}, salts s1 / s2: users {len(one)} / {len(two)}, common {len(common)}")
    for c in one.columns:
        if c in two.columns and pd.api.types.is_numeric_dtype(one[c]):
            d = (one.loc[common, c] - two.loc[common, c]).abs()
            print(f"{c:16s} differs for {(d > 1e-9).sum():4d} users; means {one[c].mean():.4f} / {two[c].mean():.4f}")


if __name__ == "__main__":
    main()
