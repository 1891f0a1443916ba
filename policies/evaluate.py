"""Full-ranking offline evaluation (leave-one-out): every item is a candidate, no sampling.

For each user with a target, the policy scores all items from the history that precedes the
target, at the target's time (``UserBatch.now``: the request the recommendation answers, which
HSTU's time bias reads, as in the official code); history items are excluded by default (the
HSTU / HLLM protocol), the target never is.
Metrics per user: HR@k (= Recall@k with one target), NDCG@k, MRR; the per-user table lets
analysis test differences between models with significance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from policies.base import UserBatch


@dataclass
class EvalResult:
    summary: dict[str, float]
    per_user: pd.DataFrame  # user_id, rank, hr@k, ndcg@k, mrr

    def table(self) -> str:
        return "  ".join(f"{k}={v:.4f}" for k, v in self.summary.items())


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = (10, 50, 200)) -> dict[str, np.ndarray]:
    """Per-user metrics from 0-based ranks of the single target (rank r: r items scored higher)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    out["mrr"] = 1.0 / (ranks + 1.0)
    return out


def target_ranks(scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray] | None) -> np.ndarray:
    """0-based rank of each target among all items (ties count against the target: pessimistic)."""
    scores = scores.astype(np.float32, copy=True)
    if np.isnan(scores).any():
        raise ValueError("evaluate: the policy returned NaN scores")
    B = len(targets)
    if exclude is not None:
        rows = np.repeat(np.arange(B), [len(e) for e in exclude])
        cols = np.concatenate(exclude) if len(rows) else np.zeros(0, np.int64)
        scores[rows, cols.astype(np.int64)] = -np.inf
    t = scores[np.arange(B), targets][:, None]
    return ((scores > t).sum(axis=1) + (scores == t).sum(axis=1) - 1).astype(np.int64)


def evaluate(policy, split, which: str = "test", ks: tuple[int, ...] = (10, 50, 200),
             exclude_history: bool = True, batch_size: int = 256, users: np.ndarray | None = None) -> EvalResult:
    """Evaluate ``policy`` (anything with ``score_all``) on the ``which`` targets of ``split``."""
    hist = split.eval_histories(which)
    targets = split.targets(which)
    times = split.target_times(which)  # (U,) request time of each target
    cand = np.flatnonzero(targets >= 0) if users is None else np.asarray(users, np.int64)
    cand = cand[targets[cand] >= 0]
    ranks = np.empty(len(cand), dtype=np.int64)
    for s in range(0, len(cand), batch_size):
        u = cand[s:s + batch_size]
        batch = UserBatch.from_sequences(hist, u, times[u])
        sc = np.asarray(policy.score_all(batch), dtype=np.float32)
        ex = None
        if exclude_history:
            tg = targets[u]
            ex = [h[h != t] for h, t in zip(batch.histories, tg, strict=True)]
        ranks[s:s + len(u)] = target_ranks(sc, targets[u], ex)
    per = metrics_from_ranks(ranks, ks)
    df = pd.DataFrame({"user_id": cand, "rank": ranks, **per})
    summary = {k: float(v.mean()) if len(v) else float("nan") for k, v in per.items()}
    summary["n_users"] = float(len(cand))
    return EvalResult(summary, df)
