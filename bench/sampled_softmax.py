"""SASRec epoch time on large synthetic catalogs: full softmax vs sampled softmax (logQ-corrected
popularity negatives), printed as JSON. Each setting trains ``--steps`` optimizer steps (the step
budget, ``max_steps``; the full softmax) or one whole epoch (sampled softmax) and reports seconds
per step and per epoch (seconds per step x steps per epoch; measured for the sampled runs).

    nice -n 10 python bench/sampled_softmax.py --items 10000 100000 --out bench/results/...json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def synthetic(n_users: int, n_items: int, seed: int = 0):
    """Zipf-popular items, users walking a shuffled item chain with jumps (learnable order)."""
    from simulator.core.sequences import Dataset, Sequences

    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    nxt = rng.permutation(n_items)
    lengths = rng.integers(10, 40, n_users)
    draws = iter(rng.choice(n_items, size=int(lengths.sum()), p=pop).tolist())  # one draw per position
    jumps = iter((rng.random(int(lengths.sum())) < 0.3).tolist())
    seqs = []
    for n in lengths:
        s = [next(draws)]
        for _ in range(n - 1):
            s.append(next(draws) if next(jumps) else int(nxt[s[-1]]))
        seqs.append(s)
    tss = [np.arange(len(s), dtype=np.float64) * 60 + 1e9 for s in seqs]
    return Dataset(name=f"synthetic-{n_items}", n_users=n_users, n_items=n_items,
                   sequences=Sequences.from_lists(seqs, tss), item_text=[""] * n_items)


def measure(ds, split, over: dict, steps: int | None) -> dict:
    """Train ``steps`` optimizer steps (None: one whole epoch) without validation; time them."""
    from policies import registry
    from policies.train import training_windows

    cfg = dict(over, epochs=1 if steps is None else 10**6, eval_every=10**6)  # no validation: timing only
    if steps is not None:
        cfg["max_steps"] = steps
    pol = registry.create("sasrec", cfg)
    t0 = time.perf_counter()
    pol.fit(ds, split, progress=False)
    total = time.perf_counter() - t0
    done = pol.history[-1]["step"]
    per_epoch = -(-len(training_windows(split.train, pol.cfg.max_len, pol.cfg.windows)[0]) // pol.cfg.batch_size)
    sec_step = total / done
    return {"config": over, "steps_timed": done, "whole_epoch": steps is None, "seconds": round(total, 2),
            "seconds_per_step": round(sec_step, 4), "steps_per_epoch": per_epoch,
            "epoch_seconds": round(sec_step * per_epoch, 1), "last_epoch_loss": round(pol.history[-1]["loss"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--negatives", type=int, default=512)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = dict(max_len=50, hidden=64, n_layers=2, batch_size=128)
    rows = []
    for n in args.items:
        ds = synthetic(args.users, n)
        split = ds.leave_one_out()
        for loss in ("ce", "sampled_ce"):
            over = dict(base, loss=loss) if loss == "ce" else dict(base, loss=loss, n_negatives=args.negatives,
                                                                    negative_sampler="popularity")
            steps = None if loss == "sampled_ce" else args.steps  # sampled: a whole epoch is cheap
            r = {"n_items": n, "n_users": args.users, "loss": loss, **measure(ds, split, over, steps)}
            rows.append(r)
            print(json.dumps(r), file=sys.stderr)
    ratios = {}
    for n in args.items:
        by = {r["loss"]: r for r in rows if r["n_items"] == n}
        ratios[str(n)] = round(by["ce"]["seconds_per_step"] / by["sampled_ce"]["seconds_per_step"], 2)
    out = {"command": "python " + " ".join(sys.argv), "torch_threads": 2, "rows": rows,
           "full_over_sampled_step_time": ratios}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
