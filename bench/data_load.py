"""Data-layer timings, printed as JSON: ML-100K load (RecBole atomic, into a fresh file
catalog), dataset read back into memory, and the synthetic world at default size and at
``--scale`` (1M+ interactions at scale 20).

    python bench/data_load.py [--scale 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from simulator.core import Catalog
    from simulator.core.loaders import load_into_catalog
    from simulator.core.paths import find_ml100k
    from simulator.core.synthetic import WorldConfig, write_world

    res: dict = {}
    with tempfile.TemporaryDirectory() as d:
        cat = Catalog(str(Path(d) / "bench.duckdb"))
        ml = find_ml100k()
        if ml is not None:
            res["ml100k_load_s"], info = _best(lambda: load_into_catalog(cat, "recbole", ml, "ml-100k", replace=True),
                                                 args.repeat)
            res["ml100k_interactions"] = info.n_interactions
            res["ml100k_read_s"], _ = _best(lambda: cat.load_dataset("ml-100k"), args.repeat)
        res["synthetic_default_s"], info = _best(lambda: write_world(cat, "syn", WorldConfig(), replace=True), args.repeat)
        res["synthetic_default_interactions"] = info.n_interactions
        t = time.perf_counter()
        info = write_world(cat, "syn-big", WorldConfig(scale=args.scale))
        res[f"synthetic_scale{args.scale:g}_s"] = round(time.perf_counter() - t, 3)
        res[f"synthetic_scale{args.scale:g}_interactions"] = info.n_interactions
        res[f"synthetic_scale{args.scale:g}_users_items"] = [info.n_users, info.n_items]
        t = time.perf_counter()
        cat.load_dataset("syn-big")
        res[f"synthetic_scale{args.scale:g}_read_s"] = round(time.perf_counter() - t, 3)
        cat.close()
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
