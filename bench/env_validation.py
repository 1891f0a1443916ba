"""Is the learned world (user_model = "learned") a good model of held-out logs?

Leave-one-out on a dataset: every response model is fitted on each user's log minus the last two
interactions and predicts the last one from the rest (the history the arms would see). Models:
the learned world's response model (simulator/engine/learned.py: user + recent history + item text
factorisation), plain matrix factorisation (the same fit with no history and no text), popularity
(training counts + 1). Per model: mean next-interaction log-likelihood over the catalog, AUC (share of
items scored below the held-out one, ties half), hit@10; calibration of the predicted next-choice
rates (reliability bins, expected calibration error); for the learned world, the slate-level
no-click calibration (achieved click rate on random slates against the log's interaction rate).
Sim-to-real agreement (does an A/B in the learned world rank the arms as offline metrics do?):
bench/sim_to_real.py.

    nice -n 10 python bench/env_validation.py --catalog /tmp/c.duckdb --data ml-100k --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np

from simulator.core import Catalog, ensure_dataset
from simulator.engine.learned import LearnedConfig, fit
from simulator.engine.users import LearnedUser, calibrate_no_click, interaction_rate


def scores(logits: np.ndarray, target: np.ndarray) -> dict:
    """Log-likelihood (softmax over the catalog), AUC and hit@10 of the held-out items."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    rows = np.arange(len(target))
    t = logits[rows, target][:, None]
    below, ties = (logits < t).sum(1), (logits == t).sum(1) - 1
    auc = (below + 0.5 * ties) / (logits.shape[1] - 1)
    rank = (logits > t).sum(1)
    return {"log_likelihood": float(logp[rows, target].mean()), "auc": float(auc.mean()),
            "hit@10": float((rank < 10).mean()), "users": int(len(target))}


def calibration(logits: np.ndarray, target: np.ndarray, bins: int = 10) -> dict:
    """Reliability of the predicted next-choice probabilities: per bin of predicted p (quantiles over
    every user x item pair), mean predicted p against the share of pairs that were the next choice."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    hit = np.zeros_like(p, dtype=bool)
    hit[np.arange(len(target)), target] = True
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p.ravel(), side="right") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            pred, obs = float(p.ravel()[m].mean()), float(hit.ravel()[m].mean())
            out.append({"pred": pred, "observed": obs, "pairs": int(m.sum())})
            ece += m.mean() * abs(pred - obs)
    return {"bins": out, "ece": float(ece), "mean_pred": float(p.mean()), "mean_observed": float(hit.mean())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--data", default="ml-100k")
    ap.add_argument("--slate", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    cat = Catalog(a.catalog)
    ensure_dataset(a.data, cat)
    ds = cat.load_dataset(a.data)
    split = ds.leave_one_out()
    users = np.flatnonzero(split.test_targets >= 0)
    target = split.test_targets[users]
    hist = [ds.sequences.seq(u)[:-1] for u in users]  # train + the validation item: what precedes the target
    t0 = time.perf_counter()
    learned_cfg = LearnedConfig()
    models = {"learned": learned_cfg, "mf": replace(learned_cfg, context=0, text_buckets=0)}
    res, params = {}, {}
    for name, cfg in models.items():
        t = time.perf_counter()
        params[name] = fit(split.train, ds.n_users, ds.n_items, ds.item_text, cfg, progress=True)
        lg = params[name].logits(users, hist)
        res[name] = {**scores(lg, target), "calibration": calibration(lg, target), "config": asdict(cfg),
                     "temperature": round(params[name].temperature, 4), "fit_s": round(time.perf_counter() - t, 1)}
    pop = np.log(np.bincount(split.train.items, minlength=ds.n_items) + 1.0)
    lg = np.broadcast_to(pop, (len(users), ds.n_items)).copy()
    res["popularity"] = {**scores(lg, target), "calibration": calibration(lg, target)}
    all_hist = [ds.sequences.seq(u)[:-2] for u in range(ds.n_users)]
    rate = interaction_rate(split.train.lengths, ds.n_items, a.slate)
    c = calibrate_no_click(params["learned"], all_hist, ds.n_items, a.slate, rate)
    probe = LearnedUser(params["learned"], [np.zeros(0, np.int64)] * ds.n_users, c)
    probe.hist = [list(h) for h in all_hist]
    rng = np.random.default_rng(1)  # fresh slates, not the calibration's sample
    su = rng.integers(0, ds.n_users, 3000)
    sl = np.stack([rng.choice(ds.n_items, a.slate, replace=False) for _ in su])
    res["learned"]["no_click"] = {"utility": c, "target_click_rate": rate,
                                  "achieved_click_rate_fresh_random_slates":
                                  float(probe.click_probs(su, sl, None).sum(1).mean())}
    out = {"bench": "env_validation", "dataset": a.data, "split": "leave-one-out (fit on seq[:-2], predict seq[-1])",
           "command": "python bench/env_validation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "models": res, "seconds": round(time.perf_counter() - t0, 1),
           "not_measured": "sim-to-real agreement (A/B ranking in the learned world vs held-out offline "
                           "metrics): bench/sim_to_real.py"}
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
