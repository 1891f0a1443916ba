"""Popularity at catalog scale: retrieval from its precomputed ranking vs the exact top-k over
``score_all`` (what a pipeline did for every request before), side by side in one process; the same
ids and scores are checked. Prints JSON.

    python bench/popularity_scale.py --items 1000 50000 500000 --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.base import UserBatch, topk_excluding  # noqa: E402
from policies.baselines import PopularityPolicy  # noqa: E402


def per_request_ms(fn, users: int, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps / users * 1e3


def one(n: int, batch: int, k: int, hist_len: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pol = PopularityPolicy()
    pol.counts = (rng.pareto(1.2, n) * 3).astype(np.float32) - np.arange(n, dtype=np.float32) * 1e-6
    hist = [rng.choice(n, min(hist_len, n - 1), replace=False) for _ in range(batch)]
    users = UserBatch(np.arange(batch), hist, None, np.zeros(batch))
    fast = pol.retrieve(users, k, hist)
    ids, scores = topk_excluding(pol.score_all(users), k, hist)
    ranking = per_request_ms(lambda: pol.retrieve(users, k, hist), batch, 20)
    full = per_request_ms(lambda: topk_excluding(pol.score_all(users), k, hist), batch, 5)
    return {"items": n, "ranking_ms_per_request": round(ranking, 5), "full_ms_per_request": round(full, 4),
            "speedup": round(full / ranking, 1), "full_scoring_in_a_pipeline": pol.full_scoring(),
            "identical": bool(np.array_equal(fast.item_ids, ids) and np.array_equal(fast.scores, scores))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[1000, 50_000, 500_000])
    ap.add_argument("--batch", type=int, default=64, help="requests per serving batch")
    ap.add_argument("--k", type=int, default=100, help="candidates retrieved per request")
    ap.add_argument("--history", type=int, default=30, help="history items excluded per request")
    ap.add_argument("--out")
    args = ap.parse_args()
    out = {"command": "python bench/popularity_scale.py " + " ".join(sys.argv[1:]), "batch": args.batch,
           "k": args.k, "history": args.history,
           "rows": [one(n, args.batch, args.k, args.history, seed=i) for i, n in enumerate(args.items)]}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
