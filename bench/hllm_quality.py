"""HLLM vs SASRec / HSTU on any catalog dataset: quality, ablations and cold start, in one run. Prints JSON.

    python bench/hllm_quality.py                       # ml-100k, default variants + cold start
    python bench/hllm_quality.py --data my-logs --variants sasrec,hstu,hllm_fast --no-cold
    python bench/hllm_quality.py --variants sasrec,hstu,hllm_fast --no-cold --train-users 0.2 --seed 1 --out s1.json

``--data NAME``: any dataset in the catalog (``--catalog``, default ``$SIM_CATALOG`` or
/tmp/hllm-bench.duckdb; load yours with ``sim data load``); ``ml-100k`` (the default) and
``synthetic*`` are created on first use. HLLM reads each item's text, so the dataset needs item text.

Protocol: leave-one-out, full ranking over all items, history items excluded
(``policies.evaluate.evaluate``); validation (early stopping of every model) on every user's
seq[:-2] -> seq[-2], test on seq[:-1] -> seq[-1]. Every model: the same split, the same
early stopping, negatives only from items of the training data. Variants (``VARIANTS``):
  random               reference row (never the bar)
  popularity, textknn  not trained on sequences; part of the bar (text-kNN: HLLM's frozen item encoder,
                       user = mean of the history's item vectors, cosine)
  sasrec, hstu         ID models (all history windows); ``*_last``: only the last 50 items per user
  hllm_fast            preset fast = frozen MiniLM sentence encoder + MLP adapter + user transformer;
                       NOT the paper's HLLM (whose item LLM is fine-tuned end to end)
  hllm_fast_*          one change each (ablations): see ``LABELS``
  hllm_paper           preset paper = the paper's recipe scaled to CPU: stage 1 fine-tunes all of
                       MiniLM end to end with the user transformer (item token), then stage 2
Sparse: ``--train-users F`` trains on a random fraction F of the users' histories (drawn with
``--split-seed``); every user is still validated and tested with the whole history as input.
Tail: metrics on the test users whose target item has at most ``--tail`` training interactions.
Several invocations can be merged into one table: ``--merge a.json b.json``; runs of the same
variant with different ``--seed`` are averaged (metrics, and per-user NDCG@10 before the bootstrap).
The headline (``headline``): every HLLM variant over the best non-HLLM model of the table (ID models,
popularity, text-kNN), as a ratio and a difference of NDCG@10, each with a paired bootstrap 95%
interval that resamples seeds (merged files sharing seeds) and test users; the ratio's interval is
undefined (None, with a note) when the denominator hits fewer than MIN_HITS test users. Every row
records ``steps``, ``epochs``, ``best_step`` and ``capped`` (a maximum bound ended its training).
Tuning (``--tune``): every trained variant (ID models and HLLM alike) runs the same ``TUNING`` trials
(lr x0.3 / x3, the other dropout, width x0.5 / x2, and the defaults) and keeps the trial best on
validation NDCG@10; the row records every trial and ``tuned_settings``. ``--tuned FILE`` trains each
variant with the settings FILE chose (the other seeds of a tuned table). With ``--out OUT`` every trial
is saved to ``OUT.trials.json`` when it ends; ``--resume OUT.trials.json ...`` skips the trials those
logs hold (a stopped grid, or one split over processes with ``--trials 'width x2'``) and refits the
chosen one if it was measured elsewhere.
Cold start: 10% of items (``--split-seed``) never appear in training (inputs or targets) and no
model trains them as negatives; Recall@10/50 over the test users whose target is one of them,
with random and popularity beside the models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from statsmodels.stats.proportion import proportion_confint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hllm.textknn  # noqa: E402, F401  (registers textknn where the installed entry points predate it)
from hllm.recipe import PRESET_LABELS  # noqa: E402
from policies import registry  # noqa: E402
from policies.evaluate import evaluate  # noqa: E402
from policies.train import training_record  # noqa: E402
from simulator.core import get_dataset  # noqa: E402
from simulator.core.errors import DataError, SimError  # noqa: E402
from simulator.core.splits import cold_items, sparse_users  # noqa: E402

PROTOCOL = ("leave-one-out, full ranking, history excluded; every model early-stopped on every user's "
            "seq[:-2] -> seq[-2]; negatives from training items only")

# "fast" = frozen MiniLM + residual-MLP adapter + all history windows (the strongest CPU recipe)
TOP1 = {"preset": "fast", "item_trainable_layers": 1, "stage1_epochs": 3, "stage1_max_len": 50,
        "stage1_batch_size": 128, "stage1_negatives": 512, "item_lr": 1e-4}
EQUAL_STEPS, EQUAL_STAGE1 = 300, 150
EQUAL = {"min_steps": EQUAL_STEPS, "max_steps": EQUAL_STEPS, "eval_every_steps": 30}
HLLM_VARIANTS = {
    "hllm_fast": {"preset": "fast"},  # the policy default (sim run trains it on the quick budget)
    "hllm_fast_bs128": {"preset": "fast", "batch_size": 128},  # the previous preset (half the steps)
    "hllm_fast_linear": {"preset": "fast", "proj": "linear"},  # ablation: no MLP adapter
    "hllm_fast_linear_last": {"preset": "fast", "proj": "linear", "windows": "last"},  # + last-50 windows only
    "hllm_fast_random_item": {"preset": "fast", "item_llm_pretrained": False},  # random (frozen) item LLM
    "hllm_fast_item_token": {"preset": "fast", "pooling": "item_token"},  # the paper's item token (frozen LLM)
    "hllm_fast_time": {"preset": "fast", "use_time": True},  # time-gap embedding (paper Table 12)
    "hllm_fast_len10": {"preset": "fast", "max_len": 10},  # shorter user sequences (paper: longer help)
    "hllm_fast_fixed_temp": {"preset": "fast", "init_temperature": 0.05, "learn_temperature": False},
    "hllm_fast_no_inbatch": {"preset": "fast", "in_batch_negatives": False},
    "hllm_fast_dot": {"preset": "fast", "similarity": "dot"},  # inner product instead of the paper's cosine
    "hllm_fast_smollm2": {"preset": "fast", "item_llm": "smollm2"},  # frozen SmolLM2-135M decoder, mean pooling
    "hllm_fast_ids": {"preset": "fast", "item_id_embeddings": True},
    "hllm_fast_full": {"preset": "fast", "negatives": "all"},  # full softmax over every trained item  # hybrid: text + id vectors (not the paper)
    "hllm_top1_finetuned": TOP1,  # item LLM fine-tuned: stage 1 trains its top layer (lower layers cached)
    "hllm_top1_random_item": {**TOP1, "item_llm_pretrained": False},
    "hllm_paper": {"preset": "paper"},  # stage 1 fine-tunes all of MiniLM (1 epoch, short windows)
    "hllm_paper_frozen": {"preset": "paper", "stage1_epochs": 0},  # the same recipe with the item LLM frozen
    "hllm_paper_random_item": {"preset": "paper", "item_llm_pretrained": False},  # fine-tuned from random weights
    "hllm_paper_mean_pool": {"preset": "paper", "pooling": "mean"},
    # at equal steps: stage 2 runs exactly EQUAL_STEPS steps (min = max; the best validated weights kept),
    # paper's stage 1 adds EQUAL_STAGE1 steps of end-to-end fine-tuning (the official lr scheme)
    "hllm_fast_eq": {"preset": "fast", **EQUAL},
    "hllm_paper_eq": {"preset": "paper", **EQUAL, "stage1_max_steps": EQUAL_STAGE1},
    "hllm_paper_frozen_eq": {"preset": "paper", **EQUAL, "stage1_epochs": 0},
}
PER_USER = "per_user_ndcg@10"  # test users' NDCG@10 in user-id order (paired bootstrap, seed averaging)
PER_SEED_USER = "per_seed_per_user_ndcg@10"  # (seeds, users): what the bootstrap resamples
ID_VARIANTS = {"sasrec": ("sasrec", {}), "hstu": ("hstu", {}),
               "sasrec_last": ("sasrec", {"windows": "last"}), "hstu_last": ("hstu", {"windows": "last"}),
               # the HLLM recipe's smaller batch, given to the ID models too (the best ID variant is the bar)
               "sasrec_bs64": ("sasrec", {"batch_size": 64}), "hstu_bs64": ("hstu", {"batch_size": 64}),
               "hstu_no_time": ("hstu", {"use_time_bias": False}),
               # objective (ii): sampled softmax over popularity-drawn negatives with the logQ correction
               "sasrec_sampled": ("sasrec", {"loss": "sampled_ce", "negative_sampler": "popularity"}),
               "hstu_sampled": ("hstu", {"loss": "sampled_ce", "negative_sampler": "popularity"})}
# not trained on sequences; popularity and textknn (HLLM's frozen item encoder, user = mean of the history's
# item vectors) count as the bar ("best non-HLLM model"), random does not
REFERENCES = {"random": ("random", {}), "popularity": ("popularity", {}), "textknn": ("textknn", {})}
MIN_HITS = 10  # a ratio's CI needs the denominator to hit at least this many test users
LABELS = {
    "random": "random scores", "popularity": "training-interaction counts",
    "textknn": "text-kNN: HLLM's frozen item encoder, user = mean of history item vectors, cosine",
    "sasrec": "SASRec (ID)", "hstu": "HSTU (ID)",
    "sasrec_sampled": "SASRec, sampled softmax (popularity negatives, logQ)",
    "hstu_sampled": "HSTU, sampled softmax (popularity negatives, logQ)",
    "hllm_fast_full": "fast with a full softmax over every trained item (the ID models' objective)", "hstu_no_time": "HSTU without the time bias (ID)",
    "hllm_fast": f"HLLM fast: {PRESET_LABELS['fast']}",
    "hllm_fast_random_item": "fast with a randomly initialised (frozen) MiniLM",
    "hllm_fast_item_token": "fast with an (untrained) item token instead of mean pooling",
    "hllm_fast_time": "fast + time-gap embedding", "hllm_fast_len10": "fast with user sequences of 10 (not 50)",
    "hllm_fast_smollm2": "fast with frozen SmolLM2-135M instead of MiniLM",
    "hllm_fast_ids": "fast + a learned id vector per item (a hybrid, not the paper)",
    "hllm_paper": f"HLLM paper: {PRESET_LABELS['paper']}",
    "hllm_paper_frozen": "paper recipe with the item LLM frozen (no stage 1)",
    "hllm_paper_random_item": "paper recipe fine-tuned from a randomly initialised MiniLM",
}


def variant(name: str) -> tuple[str, dict]:
    """(registered policy, overrides) of a bench variant; one-line exit for an unknown name."""
    for table in (ID_VARIANTS, REFERENCES):
        if name in table:
            return table[name]
    if name in HLLM_VARIANTS:
        return "hllm", HLLM_VARIANTS[name]
    raise SystemExit(f"unknown variant {name!r}; known: {', '.join([*REFERENCES, *ID_VARIANTS, *HLLM_VARIANTS])}")


# --tune: the same trials for every family (SASRec, HSTU, HLLM), relative to each one's defaults; the
# trial with the best validation NDCG@10 is kept (test metrics never choose)
TUNING = (("default", {}), ("lr x0.3", {"lr": 0.3}), ("lr x3", {"lr": 3.0}), ("other dropout", {"dropout": None}),
          ("width x0.5", {"width": 0.5}), ("width x2", {"width": 2.0}))
WIDTH = {"hllm": "user_hidden", "sasrec": "hidden", "hstu": "hidden"}  # the family's model width setting


def trial_overrides(name: str, knobs: dict) -> dict:
    """One tuning trial's settings for a variant: lr and width scaled from the family's defaults,
    dropout switched between 0.1 and 0.3."""
    policy, over = variant(name)
    cfg = registry.create(policy, over).cfg
    out = {}
    if "lr" in knobs:
        out["lr"] = cfg.lr * knobs["lr"]
    if "dropout" in knobs:
        out["dropout"] = 0.3 if cfg.dropout < 0.2 else 0.1
    if "width" in knobs:
        out[WIDTH[policy]] = int(getattr(cfg, WIDTH[policy]) * knobs["width"])
    return out


class TrialLog:
    """The trials measured so far ({variant: [trial record]}), saved after each trial to ``path`` so a
    stopped grid keeps what it measured; ``--resume`` files (from runs of the same data and seed,
    e.g. trials split over processes with ``--trials``) are read in and not rerun."""

    def __init__(self, path: str | None, key: dict, resume: list[str]):
        self.path, self.key, self.trials = path, key, {}
        for f in resume:
            try:
                saved = json.loads(Path(f).read_text())
                if saved["key"] != key:
                    raise SystemExit(f"error: --resume {f}: measured on {saved['key']}, this run is {key}")
                for v, rows in saved["trials"].items():
                    known = {r["trial"] for r in self.trials.get(v, [])}
                    self.trials.setdefault(v, []).extend(r for r in rows if r["trial"] not in known)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"error: --resume {f}: not a trial log of this bench ({e})") from None

    def done(self, name: str, label: str) -> dict | None:
        return next((r for r in self.trials.get(name, []) if r["trial"] == label), None)

    def add(self, name: str, record: dict) -> None:
        self.trials.setdefault(name, []).append(record)
        print(json.dumps({f"tune {name}": record}), file=sys.stderr, flush=True)
        if self.path:
            Path(self.path).write_text(json.dumps({"key": self.key, "trials": self.trials}, indent=1))


def best_valid(pol) -> float:
    return max([h["valid_ndcg@10"] for h in (getattr(pol, "history", None) or []) if "valid_ndcg@10" in h],
               default=float("nan"))


def tune(name: str, dataset, split, seed: int, log: TrialLog, only: set[str] | None = None):
    """The TUNING trials of a variant (``only``: these labels), skipping those ``log`` already holds;
    (best policy, its seconds, the trials' record, its settings). The chosen trial is refit when an
    earlier process measured it (same seed: the same model)."""
    fitted = {}
    for label, knobs in TUNING:
        if (only is not None and label not in only) or log.done(name, label):
            continue
        extra = trial_overrides(name, knobs)
        pol, secs = fit(name, dataset, split, seed, extra)
        fitted[label] = (pol, secs)
        log.add(name, {"trial": label, "settings": extra, "best_valid_ndcg@10": round(best_valid(pol), 5),
                       "fit_seconds": round(secs, 1)})
    trials = [r for r in (log.done(name, label) for label, _ in TUNING) if r is not None]
    if not trials:
        raise SystemExit(f"error: {name}: no tuning trial measured (--trials / --resume)")
    best = max(trials, key=lambda r: r["best_valid_ndcg@10"])  # first of equals: TUNING order
    if best["trial"] not in fitted:
        fitted[best["trial"]] = fit(name, dataset, split, seed, best["settings"])
        refit_valid = round(best_valid(fitted[best["trial"]][0]), 5)
        print(json.dumps({f"refit {name}": best["trial"], "best_valid_ndcg@10": refit_valid,
                          "logged": best["best_valid_ndcg@10"]}), file=sys.stderr, flush=True)
    pol, secs = fitted[best["trial"]]
    return pol, secs, trials, best["settings"]


def fit(name: str, dataset, split, seed: int = 0, extra: dict | None = None):
    policy, over = variant(name)
    over = {**over, **(extra or {})}
    pol = registry.create(policy, {**over, "seed": seed} if seed else over)
    t0 = time.perf_counter()
    try:
        pol.fit(dataset, split)
    except SimError as e:  # e.g. a dataset without item text for HLLM: one line, not a traceback
        raise SystemExit(f"error: {name}: {e}") from None
    return pol, time.perf_counter() - t0


def seed_user_matrix(m: dict) -> tuple[list, np.ndarray]:
    """(seeds, (S, U) per-user NDCG@10 of each seed) of a model entry (one seed: one row)."""
    if PER_SEED_USER in m:
        return list(m["seeds"]), np.asarray(m[PER_SEED_USER], np.float64)
    return [m.get("seed", 0)], np.asarray(m[PER_USER], np.float64)[None]


def paired_compare(a: dict, b: dict, users: np.ndarray | None = None, reps: int = 2000, seed: int = 0) -> dict:
    """mean(a) / mean(b) and mean(a) - mean(b) of per-user NDCG@10, with 95% percentile intervals
    from a paired bootstrap that resamples seeds (when both models share them) and test users.
    The ratio's interval is None (undefined) when ``b`` hits fewer than MIN_HITS users."""
    sa, A = seed_user_matrix(a)
    sb, B = seed_user_matrix(b)
    if sa == sb:
        pass
    else:  # different seeds: pair the seed means (users only are resampled)
        A, B = A.mean(0, keepdims=True), B.mean(0, keepdims=True)
    if users is not None:
        A, B = A[:, users], B[:, users]
    rng = np.random.default_rng(seed)
    S, U = A.shape
    u_idx = rng.integers(0, U, (reps, U))
    s_idx = rng.integers(0, S, (reps, S))
    ma = np.take_along_axis(A[:, u_idx].mean(2).T, s_idx, 1).mean(1)  # (reps,) seeds and users resampled
    mb = np.take_along_axis(B[:, u_idx].mean(2).T, s_idx, 1).mean(1)
    hits = int((B.mean(0) > 0).sum())
    out = {"ratio": round(float(A.mean() / B.mean()), 3) if B.mean() > 0 else None,
           "diff": round(float(A.mean() - B.mean()), 5),
           "diff_ci95": [round(float(x), 5) for x in np.percentile(ma - mb, [2.5, 97.5])],
           "denominator_hits": hits, "seeds_resampled": S, "users": U}
    if hits < MIN_HITS or out["ratio"] is None:
        out["ratio_ci95"] = None
        out["ratio_ci_note"] = f"undefined: the denominator hits {hits} test users (< {MIN_HITS})"
    else:
        out["ratio_ci95"] = [round(float(x), 3) for x in np.percentile(ma / mb, [2.5, 97.5])]
    return out


def add_ratios(res: dict) -> None:
    """The headline: NDCG@10 of every HLLM variant over the best non-HLLM model of the same table
    (ID models, popularity, text-kNN; not random), ratio and difference with paired 95% intervals
    that resample seeds and test users; the same on the tail."""
    m = res["models"]
    hllm = [k for k in m if k.startswith("hllm")]
    bars = [k for k in m if not k.startswith("hllm") and k != "random"]
    if not bars:
        return
    best = max(bars, key=lambda k: m[k]["ndcg@10"])
    res["best_non_hllm_model"] = best
    res["headline"] = {k: paired_compare(m[k], m[best]) for k in hllm if PER_USER in m[k] and PER_USER in m[best]}
    users = res.get("tail", {}).get("users")
    have = [k for k in bars if "tail_ndcg@10" in m[k]]
    if users and have:
        tbest = max(have, key=lambda k: m[k]["tail_ndcg@10"])
        res["tail"]["best_non_hllm_model"] = tbest
        res["tail"]["headline"] = {k: paired_compare(m[k], m[tbest], np.asarray(users)) for k in hllm
                                   if PER_USER in m[k]}


def add_base_ratios(res: dict, base: str) -> None:
    """NDCG@10 of every other variant relative to ``base`` (an ablation's reference), paired 95% CI."""
    m = res["models"]
    if base not in m:
        raise SystemExit(f"--vs {base}: not in this table ({', '.join(m)})")
    res[f"vs_{base}"] = {k: paired_compare(m[k], m[base]) for k in m if k != base and k != "random"}


def average_seeds(runs: list[dict], seeds: list[int]) -> dict:
    """One model entry from the same variant run with several seeds: metric means (``capped``: the
    fraction of seeds whose cap bound), per-seed NDCG@10 and steps, per-user NDCG@10 averaged over
    seeds and kept per seed (the bootstrap resamples both)."""
    out = {k: round(float(np.mean([r[k] for r in runs])), 5) for k, v in runs[0].items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in r for r in runs)}
    out["capped"] = round(float(np.mean([bool(r.get("capped")) for r in runs])), 3)
    out["per_seed_ndcg@10"] = [r["ndcg@10"] for r in runs]
    out["per_seed_steps"] = [r.get("steps") for r in runs]
    out["seeds"] = list(seeds)
    out["overrides"], out["label"] = runs[0].get("overrides"), runs[0].get("label")
    if any("item_llm_movement" in r for r in runs):
        out["item_llm_movement"] = [r.get("item_llm_movement") for r in runs]
    if all(PER_USER in r for r in runs):
        out[PER_USER] = [round(float(x), 5) for x in np.mean([r[PER_USER] for r in runs], axis=0)]
        out[PER_SEED_USER] = [r[PER_USER] for r in runs]
    return out


SAME_EXPERIMENT = ("dataset", "train_users", "split_seed", "n_users", "n_items", "protocol")


def wilson(p: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion ``p`` measured on ``n`` users."""
    if n == 0:
        return (float("nan"), float("nan"))
    lo, hi = proportion_confint(p * n, n, method="wilson")
    return round(float(lo), 4), round(float(hi), 4)


def merge_cold(parts: list[dict]) -> dict:
    """Cold-start results of several seeds (each its own held-out items): recalls pooled over all their
    test users, with a 95% Wilson interval; per-seed values kept."""
    parts = [p for p in parts if p.get("n_test_users")]
    if not parts:
        return {}
    n = sum(p["n_test_users"] for p in parts)
    out: dict = {"n_cold_items": parts[0]["n_cold_items"], "n_test_users": n,
                 "held_out_seeds": [p.get("held_out_seed") for p in parts]}
    names = [k for k, v in parts[0].items() if isinstance(v, dict)]
    for k in names:
        have = [p for p in parts if k in p]
        m = sum(p["n_test_users"] for p in have)
        row = {r: round(sum(p[k][r] * p["n_test_users"] for p in have) / m, 5) for r in ("recall@10", "recall@50")}
        out[k] = {**row, "recall@50_ci95": wilson(row["recall@50"], m), "n_test_users": m,
                  "per_seed_recall@50": [p[k]["recall@50"] for p in have], "label": have[0][k].get("label", k)}
    return out


def merge(files: list[str], out: str | None, vs: str | None = None, catalog: str | None = None) -> None:
    """One table from several result files; the same variant under several seeds is averaged.

    The files must describe the same experiment (dataset, training fraction, protocol), and a
    variant may appear once per seed: anything else stops with a one-line error naming the file.
    """
    res: dict = {"models": {}, "cold_start": {}}
    runs: dict[str, dict[int, dict]] = {}
    colds: list[dict] = []
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
        if d.get("cold_start"):
            colds.append(d["cold_start"])
        for k, v in d.items():
            if k not in ("models", "cold_start", "best_id_model", "best_non_hllm_model", "headline", "seed",
                         "commit") and not k.startswith(("ratio_vs_", "vs_")):
                res.setdefault(k, v)
    res["commits"] = sorted({json.loads(Path(f).read_text()).get("commit", "") for f in files})
    res["seeds"] = sorted({seed for by_seed in runs.values() for seed in by_seed})
    res["models"] = {k: {**next(iter(v.values())), "seed": next(iter(v))} if len(v) == 1
                     else average_seeds([v[s] for s in sorted(v)], sorted(v)) for k, v in runs.items()}
    res["cold_start"] = merge_cold(colds)
    if res.get("tail") and "users" not in res["tail"] and catalog:
        ds = get_dataset(res["dataset"], catalog)  # older files: the same split, recomputed
        split = make_split(ds, res["train_users"], res["split_seed"])
        res["tail"]["users"] = tail_users(split, ds.n_items, res["tail"]["max_train_interactions"]).tolist()
        if len(res["tail"]["users"]) != res["tail"]["n_test_users"]:
            raise DataError(f"--merge: the recomputed tail users ({len(res['tail']['users'])}) differ from the "
                            f"files' count ({res['tail']['n_test_users']}): another split or dataset", field="tail")
    add_ratios(res)
    if vs:
        add_base_ratios(res, vs)
    emit(res, out)


def without_per_user(model: dict) -> dict:
    return {k: x for k, x in model.items() if k not in (PER_USER, PER_SEED_USER, "history")}


def emit(res: dict, out: str | None) -> None:
    """Print the table (per-user arrays left out); ``out`` gets everything (they make merges comparable)."""
    short = {**res, "models": {k: without_per_user(m) for k, m in res["models"].items()}}
    if "users" in res.get("tail", {}):
        short["tail"] = {k: v for k, v in res["tail"].items() if k != "users"}
    short["command"] = res["command"] = "python " + " ".join(sys.argv)
    print(json.dumps(short, indent=2))
    if out:
        Path(out).write_text(json.dumps(res))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        return ""


def make_split(ds, train_users: float, split_seed: int):
    """Leave-one-out, with only a ``train_users`` fraction of the users' histories trained on."""
    split = ds.leave_one_out()
    return sparse_users(split, train_users, seed=split_seed) if train_users < 1 else split


def tail_users(split, n_items: int, tail: int) -> np.ndarray:
    """Test users (= positions in per-user arrays) whose target has at most ``tail`` training interactions."""
    counts = np.bincount(split.train.items, minlength=n_items)
    tgt = split.test_targets
    return np.flatnonzero((tgt >= 0) & (counts[np.clip(tgt, 0, None)] <= tail))


def model_row(name: str, pol, secs: float, ds, split, tail_users: np.ndarray) -> dict:
    """Test metrics (all users and tail targets), fit time and per-user NDCG@10 of one fitted variant."""
    full = evaluate(pol, split, which="test", ks=(10, 50, 200))
    per_user = full.per_user.sort_values("user_id")
    tail = per_user[per_user["user_id"].isin(tail_users)].mean() if len(tail_users) else {}
    row = {**{k: round(x, 5) for k, x in full.summary.items()}, "fit_seconds": round(secs, 1),
           "overrides": variant(name)[1], "label": LABELS.get(name, name),
           **{f"tail_{k}": round(float(tail[k]), 5) for k in ("ndcg@10", "hr@10", "hr@50") if k in tail},
           PER_USER: [round(float(x), 5) for x in per_user["ndcg@10"]]}
    hist = getattr(pol, "history", None) or []
    rec = training_record(hist)  # every model: how long it trained and whether a cap bound
    row.update(steps=rec["steps"], epochs=rec["epochs"], best_step=rec["best_step"], capped=rec["capped"],
               training=rec["stages"])
    moved = [h["item_llm_movement"] for h in hist if "item_llm_movement" in h]
    if moved:
        row["item_llm_movement"] = moved[-1]
    if name.startswith("hllm"):
        for stage in (1, 2):
            row[f"stage{stage}_seconds"] = round(sum(h["seconds"] for h in hist if h["stage"] == f"hllm stage {stage}"), 1)
        row["final_temperature"] = round(hist[-1]["temperature"], 4)
    keep = ("stage", "epoch", "loss", "valid_ndcg@10", "unmasked_negatives", "temperature", "seconds")
    row["history"] = [{k: round(v, 5) if isinstance(v, float) else v for k, v in h.items() if k in keep} for h in hist]
    valid = [h["valid_ndcg@10"] for h in hist if "valid_ndcg@10" in h]
    if valid:
        row["best_valid_ndcg@10"] = round(max(valid), 5)
    return row


def cold_start(names: list[str], ds, seed: int) -> dict:
    """Recall@10/50 on test users whose target is one of 10% held-out items (drawn with ``seed``)."""
    csplit, cold = cold_items(ds.leave_one_out(), ds.n_items, 0.1, seed=seed)
    users = np.flatnonzero(np.isin(csplit.test_targets, cold))
    out: dict = {"n_cold_items": int(len(cold)), "n_test_users": int(len(users)), "held_out_seed": seed}
    for v in names:
        pol, secs = fit(v, ds, csplit, seed)
        ev = evaluate(pol, csplit, which="test", ks=(10, 50), users=users).summary
        out[v] = {"recall@50": round(ev["hr@50"], 5), "recall@10": round(ev["hr@10"], 5), "fit_seconds": round(secs, 1),
                  "label": LABELS.get(v, v)}
        print(json.dumps({"cold_" + v: out[v]}), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="ml-100k", help="dataset name in the catalog (needs item text for HLLM)")
    ap.add_argument("--catalog", default=None, help="catalog path (default $SIM_CATALOG or /tmp/hllm-bench.duckdb)")
    ap.add_argument("--variants", default="random,popularity,sasrec,hstu,hllm_fast")
    ap.add_argument("--cold", default="random,popularity,sasrec,hstu,hllm_fast",
                    help="variants for the cold-start test ('' = skip)")
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--tail", type=int, default=20, help="tail = test targets with at most this many training interactions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-users", type=float, default=1.0,
                    help="train on this fraction of users' histories (sparser data; all users still tested)")
    ap.add_argument("--split-seed", type=int, default=0, help="which users --train-users keeps")
    ap.add_argument("--seed", type=int, default=0, help="seed of every model (init, batches, negatives) and of the "
                    "cold-start held-out items")
    ap.add_argument("--out", default=None, help="also write the JSON here, with per-user NDCG@10 (for --merge)")
    ap.add_argument("--merge", nargs="*", default=None, help="merge these result JSONs into one table and exit")
    ap.add_argument("--tune", action="store_true", help="try every TUNING trial of each trained variant and keep "
                    "the one best on validation (the same trials for every family)")
    ap.add_argument("--tuned", default=None, help="a --tune result JSON: train each variant with the settings "
                    "it chose there (other seeds)")
    ap.add_argument("--trials", default=None, help="with --tune: only these TUNING trials (comma-separated "
                    "labels, e.g. 'width x2'), to split a grid over processes")
    ap.add_argument("--resume", nargs="*", default=[], help="with --tune: trial logs (OUT.trials.json) of "
                    "earlier runs on the same data and seed; their trials are not rerun")
    ap.add_argument("--vs", default=None, help="also give every variant's NDCG@10 relative to this one (ablations)")
    args = ap.parse_args()
    if not 0 < args.train_users <= 1:
        ap.error(f"--train-users {args.train_users}: expected a fraction in (0, 1]")
    catalog = args.catalog or os.environ.get("SIM_CATALOG", "/tmp/hllm-bench.duckdb")
    if args.merge:
        try:
            return merge(args.merge, args.out, args.vs, catalog)
        except SimError as e:
            raise SystemExit(f"error: {e}") from None
    torch.set_num_threads(args.threads)
    try:
        ds = get_dataset(args.data, catalog)
    except SimError as e:
        raise SystemExit(f"error: {e}") from None
    names = [v for v in args.variants.split(",") if v]
    cold = [] if args.no_cold else [v for v in args.cold.split(",") if v]
    for v in names + cold:
        variant(v)  # an unknown name stops before any training
    split = make_split(ds, args.train_users, args.split_seed)
    res: dict = {"dataset": ds.name, "train_users": args.train_users, "split_seed": args.split_seed,
                 "n_users": ds.n_users, "n_items": ds.n_items, "seed": args.seed, "protocol": PROTOCOL,
                 "commit": git_commit(), "models": {}, "cold_start": {}}
    tails = tail_users(split, ds.n_items, args.tail)
    res["tail"] = {"max_train_interactions": args.tail, "n_test_users": int(len(tails)), "users": tails.tolist()}
    res["n_items_never_trained"] = int((np.bincount(split.train.items, minlength=ds.n_items) == 0).sum())
    try:
        tuned = json.loads(Path(args.tuned).read_text())["models"] if args.tuned else {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: --tuned {args.tuned}: not a readable hllm_quality result ({e})") from None
    if (args.trials or args.resume) and not args.tune:
        raise SystemExit("error: --trials / --resume select tuning trials: they need --tune")
    only = set(t.strip() for t in args.trials.split(",")) if args.trials else None
    if only and only - {label for label, _ in TUNING}:
        raise SystemExit(f"error: --trials: unknown {sorted(only - {label for label, _ in TUNING})}; known: "
                         f"{', '.join(label for label, _ in TUNING)}")
    key = {"dataset": ds.name, "seed": args.seed, "train_users": args.train_users, "split_seed": args.split_seed}
    log = TrialLog(args.out + ".trials.json" if args.out and args.tune else None, key, args.resume)
    for v in names:
        trained_by = variant(v)[0] in WIDTH
        if args.tune and trained_by:
            pol, secs, trials, extra = tune(v, ds, split, args.seed, log, only)
        else:
            extra = tuned.get(v, {}).get("tuned_settings") if trained_by else None
            pol, secs = fit(v, ds, split, args.seed, extra)
            trials = None
        res["models"][v] = model_row(v, pol, secs, ds, split, tails)
        if trials is not None or extra is not None:
            res["models"][v].update(tuned_settings=extra or {}, **({"tuning": trials} if trials else {}))
        print(json.dumps({v: without_per_user(res["models"][v])}), file=sys.stderr, flush=True)
    add_ratios(res)
    if args.vs:
        add_base_ratios(res, args.vs)
    if cold:
        res["cold_start"] = cold_start(cold, ds, args.seed)
    emit(res, args.out)


if __name__ == "__main__":
    main()
