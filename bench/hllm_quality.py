"""HLLM quality on ML-100K vs SASRec / HSTU, ablations and cold start, in one run. Prints JSON.

    python bench/hllm_quality.py                       # everything (tens of minutes on 2 cores)
    python bench/hllm_quality.py --variants sasrec,hstu,hllm_fast --no-cold
    python bench/hllm_quality.py --variants sasrec,hstu,hllm_fast --no-cold --train-users 0.2 --seed 1 --out s1.json

Protocol: leave-one-out, full ranking over all items, history items excluded
(``policies.evaluate.evaluate``). ID models: ``sasrec``, ``hstu`` (defaults: all history
windows) and ``*_last`` (only the last 50 items per user, the original recipe). HLLM variants
(policy overrides in ``HLLM_VARIANTS``):
  hllm_fast            preset fast: frozen pretrained MiniLM, mean pooling, MLP adapter, stage 2
  hllm_fast_*          one change each: linear projection, last windows, random item LLM, item
                       token, time embedding, fixed temperature, no in-batch negatives, dot product,
                       SmolLM2 item LLM, hybrid id vectors
  hllm_top1_finetuned  item LLM fine-tuned: stage 1 trains MiniLM's top layer end-to-end
  hllm_paper           stage 1 fine-tunes all of MiniLM (1 epoch, short windows), then stage 2
Sparse: ``--train-users F`` trains on a random fraction F of the users' histories; every user is
still tested (the regime of the paper's datasets, where item text should matter most).
Tail: metrics on the test users whose target item has at most ``--tail`` training interactions.
Several invocations can be merged into one table: ``--merge a.json b.json``; runs of the same
variant with different ``--seed`` are averaged (metrics, and per-user NDCG@10 before the bootstrap).
Every HLLM/ID ratio comes with a paired bootstrap 95% interval over test users.
Cold start: 10% of items (seeded) are removed from training entirely (inputs, targets and
negatives); Recall@50 is measured on the test interactions whose target is a held-out item.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import registry  # noqa: E402
from policies.evaluate import evaluate  # noqa: E402
from simulator.data import LeaveOneOut, Sequences, get_dataset  # noqa: E402

# "fast" = frozen MiniLM + residual-MLP adapter + all history windows (the strongest CPU recipe)
TOP1 = {"preset": "fast", "item_trainable_layers": 1, "stage1_epochs": 3, "stage1_max_len": 50,
        "stage1_batch_size": 128, "stage1_negatives": 512, "item_lr": 1e-4}
HLLM_VARIANTS = {
    "hllm_fast": {"preset": "fast"},  # the simulation default
    "hllm_fast_bs128": {"preset": "fast", "batch_size": 128},  # the previous preset (half the steps)
    "hllm_fast_linear": {"preset": "fast", "proj": "linear"},  # ablation: no MLP adapter
    "hllm_fast_linear_last": {"preset": "fast", "proj": "linear", "windows": "last"},  # + last-50 windows only
    "hllm_fast_random_item": {"preset": "fast", "item_llm_pretrained": False},  # random (frozen) item LLM
    "hllm_fast_item_token": {"preset": "fast", "pooling": "item_token"},  # the paper's item token (frozen LLM)
    "hllm_fast_time": {"preset": "fast", "use_time": True},  # time-gap embedding (paper Table 12)
    "hllm_fast_fixed_temp": {"preset": "fast", "init_temperature": 0.05, "learn_temperature": False},
    "hllm_fast_no_inbatch": {"preset": "fast", "in_batch_negatives": False},
    "hllm_fast_dot": {"preset": "fast", "similarity": "dot"},  # inner product instead of the paper's cosine
    "hllm_fast_smollm2": {"preset": "fast", "item_llm": "smollm2"},  # frozen SmolLM2-135M decoder, mean pooling
    "hllm_fast_ids": {"preset": "fast", "item_id_embeddings": True},  # hybrid: text + id vectors (not the paper)
    "hllm_top1_finetuned": TOP1,  # item LLM fine-tuned: stage 1 trains its top layer (lower layers cached)
    "hllm_top1_random_item": {**TOP1, "item_llm_pretrained": False},
    "hllm_paper": {"preset": "paper"},  # stage 1 fine-tunes all of MiniLM (1 epoch, short windows)
    "hllm_paper_mean_pool": {"preset": "paper", "pooling": "mean"},
}
PER_USER = "per_user_ndcg@10"  # test users' NDCG@10 in user-id order (paired bootstrap, seed averaging)
ID_VARIANTS = {"sasrec": ("sasrec", {}), "hstu": ("hstu", {}),
               "sasrec_last": ("sasrec", {"windows": "last"}), "hstu_last": ("hstu", {"windows": "last"}),
               # the HLLM recipe's smaller batch, given to the ID models too (the best ID variant is the bar)
               "sasrec_bs64": ("sasrec", {"batch_size": 64}), "hstu_bs64": ("hstu", {"batch_size": 64})}


def fit(variant: str, dataset, split, seed: int = 0):
    name, over = ID_VARIANTS.get(variant, ("hllm", HLLM_VARIANTS.get(variant)))
    if over is None:
        raise SystemExit(f"unknown variant {variant!r}")
    pol = registry.create(name, {**over, "seed": seed} if seed else over)
    t0 = time.perf_counter()
    pol.fit(dataset, split)
    return pol, time.perf_counter() - t0


def cold_split(dataset, frac: float = 0.1, seed: int = 0) -> tuple[LeaveOneOut, np.ndarray]:
    """Leave-one-out split whose training part never contains a held-out item."""
    split = dataset.leave_one_out()
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(dataset.n_items, int(round(frac * dataset.n_items)), replace=False))
    tr = split.train
    keep = ~np.isin(tr.items, cold)
    lengths = np.add.reduceat(keep.astype(np.int64), tr.indptr[:-1]) * (np.diff(tr.indptr) > 0)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    train = Sequences(indptr, tr.items[keep], tr.ts[keep])
    valid = np.where(np.isin(split.valid_targets, cold), -1, split.valid_targets)
    return LeaveOneOut(split.full, train, valid, split.test_targets), cold


def sparse_split(dataset, frac: float, seed: int = 0) -> LeaveOneOut:
    """Leave-one-out split trained on the histories of a random ``frac`` of users only.

    Every user is still validated and tested with the full history as input: only the training
    data is sparser (fewer interactions per item, some items never seen in training), which is
    where item text should matter most.
    """
    split = dataset.leave_one_out()
    tr = split.train
    n_users = len(tr.indptr) - 1
    keep_user = np.zeros(n_users, bool)
    keep_user[np.random.default_rng(seed).choice(n_users, int(round(frac * n_users)), replace=False)] = True
    lengths = np.diff(tr.indptr) * keep_user
    keep = np.repeat(keep_user, np.diff(tr.indptr))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return LeaveOneOut(split.full, Sequences(indptr, tr.items[keep], tr.ts[keep]), split.valid_targets,
                       split.test_targets)


def paired_ratio_ci(a: list[float], b: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(a) / mean(b), resampling the same users for both."""
    res = stats.bootstrap((np.asarray(a, np.float64), np.asarray(b, np.float64)),
                          lambda x, y, axis=-1: x.mean(axis) / np.maximum(y.mean(axis), 1e-12),
                          paired=True, vectorized=True, n_resamples=reps, method="percentile",
                          rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return round(float(lo), 3), round(float(hi), 3)


def add_ratios(res: dict) -> None:
    """NDCG@10 of every HLLM variant relative to the best ID-based model of the same table.

    With per-user NDCG@10 stored (``per_user_ndcg@10``, test users in one order), each ratio gets a
    paired bootstrap 95% interval: with 943 test users, NDCG@10 differences under ~7% are noise.
    """
    m = res["models"]
    ids = [k for k in ID_VARIANTS if k in m]
    if ids:
        best = max(ids, key=lambda k: m[k]["ndcg@10"])
        res["best_id_model"] = best
        hllm = [k for k in m if k.startswith("hllm")]
        res["ratio_vs_best_id"] = {k: round(m[k]["ndcg@10"] / m[best]["ndcg@10"], 3) for k in hllm}
        res["ratio_vs_best_id_ci95"] = {k: paired_ratio_ci(m[k][PER_USER], m[best][PER_USER]) for k in hllm
                                        if PER_USER in m[k] and PER_USER in m[best]
                                        and len(m[k][PER_USER]) == len(m[best][PER_USER])}


def average_seeds(runs: list[dict]) -> dict:
    """One model entry from the same variant run with several seeds: metric means, per-seed NDCG@10,
    and per-user NDCG@10 averaged over seeds (what the paired bootstrap then resamples)."""
    out = {k: round(float(np.mean([r[k] for r in runs])), 5) for k, v in runs[0].items()
           if isinstance(v, (int, float)) and all(k in r for r in runs)}
    out["per_seed_ndcg@10"] = [r["ndcg@10"] for r in runs]
    out["overrides"] = runs[0].get("overrides")
    if all(PER_USER in r for r in runs):
        out[PER_USER] = [round(float(x), 5) for x in np.mean([r[PER_USER] for r in runs], axis=0)]
    return out


SAME_EXPERIMENT = ("dataset", "train_users", "n_users", "n_items", "protocol")


def merge(files: list[str], out: str | None) -> None:
    """One table from several result files; the same variant under several seeds is averaged.

    The files must describe the same experiment (dataset, training fraction, protocol), and a
    variant may appear once per seed: anything else stops with a one-line error naming the file.
    """
    res: dict = {"models": {}, "cold_start": {}}
    runs: dict[str, dict[int, dict]] = {}
    for f in files:
        d = json.loads(Path(f).read_text())
        seed = d.get("seed", 0)
        for k in SAME_EXPERIMENT:
            if k in d and k in res and d[k] != res[k]:
                raise SystemExit(f"--merge: {f} has {k}={d[k]!r} but an earlier file has {res[k]!r}")
        for name, m in d.get("models", {}).items():
            if seed in runs.setdefault(name, {}):
                raise SystemExit(f"--merge: {f} repeats {name!r} with seed {seed}; average different seeds only")
            runs[name][seed] = m
        res["cold_start"].update(d.get("cold_start", {}))
        for k, v in d.items():
            if k not in ("models", "cold_start", "ratio_vs_best_id", "ratio_vs_best_id_ci95", "best_id_model", "seed"):
                res.setdefault(k, v)
    res["seeds"] = sorted({seed for by_seed in runs.values() for seed in by_seed})
    res["models"] = {k: next(iter(v.values())) if len(v) == 1 else average_seeds([v[s] for s in sorted(v)])
                     for k, v in runs.items()}
    add_ratios(res)
    emit(res, out)


def without_per_user(model: dict) -> dict:
    return {k: x for k, x in model.items() if k != PER_USER}


def emit(res: dict, out: str | None) -> None:
    """Print the table (per-user arrays left out); ``out`` gets everything (they make merges comparable)."""
    short = {**res, "models": {k: without_per_user(m) for k, m in res["models"].items()}}
    print(json.dumps(short, indent=2))
    if out:
        Path(out).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="sasrec,hstu,hllm_fast,hllm_fast_linear_last,hllm_fast_random_item,"
                    "hllm_fast_item_token,hllm_top1_finetuned")
    ap.add_argument("--cold", default="sasrec,hllm_fast", help="variants for the cold-start test ('' = skip)")
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--tail", type=int, default=20, help="tail = test targets with at most this many training interactions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-users", type=float, default=1.0,
                    help="train on this fraction of users' histories (sparser data; all users still tested)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every model (init, batches, negatives)")
    ap.add_argument("--out", default=None, help="also write the JSON here, with per-user NDCG@10 (for --merge)")
    ap.add_argument("--merge", nargs="*", default=None, help="merge these result JSONs into one table and exit")
    args = ap.parse_args()
    if not 0 < args.train_users <= 1:
        ap.error(f"--train-users {args.train_users}: expected a fraction in (0, 1]")
    if args.merge:
        return merge(args.merge, args.out)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SIM_CATALOG", "/tmp/hllm-bench.duckdb")
    ds = get_dataset("ml-100k", os.environ["SIM_CATALOG"])
    split = ds.leave_one_out() if args.train_users >= 1 else sparse_split(ds, args.train_users)
    res: dict = {"dataset": ds.name, "train_users": args.train_users, "n_users": ds.n_users, "n_items": ds.n_items,
                 "seed": args.seed, "protocol":
                 "leave-one-out, full ranking, history excluded", "models": {}, "cold_start": {}}
    counts = np.bincount(split.train.items, minlength=ds.n_items)
    tgt = split.test_targets
    tail_users = np.flatnonzero((tgt >= 0) & (counts[np.clip(tgt, 0, None)] <= args.tail))
    res["tail"] = {"max_train_interactions": args.tail, "n_test_users": int(len(tail_users))}
    for v in [v for v in args.variants.split(",") if v]:
        pol, secs = fit(v, ds, split, args.seed)
        full = evaluate(pol, ds, split, which="test", ks=(10, 50, 200))
        ev = full.summary
        per_user = full.per_user.sort_values("user_id")
        tail = per_user[per_user["user_id"].isin(tail_users)].mean() if len(tail_users) else {}
        res["models"][v] = {**{k: round(x, 5) for k, x in ev.items()}, "fit_seconds": round(secs, 1),
                            "overrides": ID_VARIANTS[v][1] if v in ID_VARIANTS else HLLM_VARIANTS[v],
                            **{f"tail_{k}": round(float(tail[k]), 5) for k in ("ndcg@10", "hr@10", "hr@50") if k in tail},
                            PER_USER: [round(float(x), 5) for x in per_user["ndcg@10"]]}
        if v.startswith("hllm"):
            for stage in (1, 2):
                secs_st = sum(h["seconds"] for h in pol.history if h["stage"] == f"hllm stage {stage}")
                res["models"][v][f"stage{stage}_seconds"] = round(secs_st, 1)
            res["models"][v]["final_temperature"] = round(pol.history[-1]["temperature"], 4)
        print(json.dumps({v: without_per_user(res["models"][v])}), file=sys.stderr, flush=True)
    add_ratios(res)
    if not args.no_cold and args.cold:
        csplit, cold = cold_split(ds)
        users = np.flatnonzero(np.isin(csplit.test_targets, cold))
        res["cold_start"]["n_cold_items"], res["cold_start"]["n_test_users"] = int(len(cold)), int(len(users))
        for v in args.cold.split(","):
            pol, secs = fit(v, ds, csplit, args.seed)
            ev = evaluate(pol, ds, csplit, which="test", ks=(10, 50), users=users).summary
            res["cold_start"][v] = {"recall@50": round(ev["hr@50"], 5), "recall@10": round(ev["hr@10"], 5),
                                    "fit_seconds": round(secs, 1)}
            print(json.dumps({"cold_" + v: res["cold_start"][v]}), file=sys.stderr, flush=True)
    emit(res, args.out)


if __name__ == "__main__":
    main()
