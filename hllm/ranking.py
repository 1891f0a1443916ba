"""HLLM ranking heads (paper section 3.3): early fusion and late fusion, item LLM frozen.

Both read item embeddings from the cached table of a fitted :class:`~hllm.policy.HLLMPolicy`
(projection applied, item LLM frozen) and predict several binary tasks (e.g. click, like).

- Early fusion: the target item's embedding is appended to the user's history and the user
  LLM reads both; the state at the target's position feeds an MLP -> task logits. Most
  accurate, one user-LLM pass per (user, candidate).
- Late fusion: the user LLM reads the history once (last state = user embedding); the MLP
  reads [user, target, user * target] -> task logits. One pass per user: cheap to serve.

Loss = sum of per-task BCE + lambda * InfoNCE (the generative next-item loss keeps the user
LLM's embedding space, as in the paper). ``fit_ranker`` trains on next-item positives and
random negatives (items of the training data only) from the leave-one-out training split; labels for the extra tasks come from
``dataset.values`` (e.g. like = rating >= ``like_threshold``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import ConfigDict, Field

from policies.train import Bounds, StepBudget, fit_loop, minibatches, optimizer_step, trained_items


class RankerConfig(StepBudget):
    model_config = ConfigDict(extra="forbid")
    fusion: Literal["early", "late"] = "late"
    tasks: tuple[str, ...] = ("click", "like")
    like_threshold: float = 4.0
    hidden: int = Field(128, ge=4)
    lam: float = Field(0.1, ge=0, description="weight of the InfoNCE (generative) loss")
    negatives_per_positive: int = Field(4, ge=1)
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    seed: int = 0

    @classmethod
    def tiny(cls) -> RankerConfig:
        return cls(hidden=16, epochs=2, batch_size=32)


class RankingHead(nn.Module):
    """MLP over fused features -> (.., n_tasks) logits."""

    def __init__(self, d_in: int, hidden: int, n_tasks: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, n_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class HLLMRanker(nn.Module):
    """Scores (user history, candidate) pairs with early or late fusion on top of a fitted HLLM policy."""

    def __init__(self, policy, cfg: RankerConfig | None = None) -> None:
        super().__init__()
        self.policy, self.cfg = policy, cfg or RankerConfig()
        D = policy.hf_config.user_hidden
        self.head = RankingHead(D if self.cfg.fusion == "early" else 3 * D, self.cfg.hidden, len(self.cfg.tasks))
        self.head.to(policy.features.device)  # same device as the HLLM tables (CPU or CUDA)

    def _seq(self, histories: list[np.ndarray], extra: int = 0):
        from policies.tensors import pad_left

        T = self.policy.hf_config.max_len - extra
        ids, _ = pad_left(histories, T)
        ids_t = torch.from_numpy(ids).to(self.policy.features.device)
        mask = ids_t > 0
        items = (ids_t - 1).clamp(min=0)
        return self.policy.model.project(self.policy.features[items], items) * mask[..., None], mask

    def forward(self, histories: list[np.ndarray], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """histories: B ragged id arrays; targets (B, C) item ids -> (task logits (B, C, n_tasks), user states (B, T, D))."""
        model = self.policy.model
        targets = targets.to(self.policy.features.device)
        tgt = model.project(self.policy.features[targets], targets)  # (B, C, D)
        if self.cfg.fusion == "late":
            seq, mask = self._seq(histories)
            h = model.user_states(seq, mask)  # (B, T, D)
            u = h[:, -1:].expand_as(tgt)  # (B, C, D)
            return self.head(torch.cat([u, tgt, u * tgt], -1)), h
        seq, mask = self._seq(histories, extra=1)  # early: [history, candidate] per candidate
        B, C, D = tgt.shape
        x = torch.cat([seq[:, None].expand(B, C, -1, D), tgt[:, :, None]], 2).reshape(B * C, -1, D)
        m = torch.cat([mask[:, None].expand(B, C, -1), mask.new_ones(B, C, 1)], 2).reshape(B * C, -1)
        h = model.user_states(x, m)  # (B*C, T, D)
        return self.head(h[:, -1]).view(B, C, -1), h.view(B, C, -1, D)[:, 0, :-1]

    @torch.no_grad()
    def score(self, histories: list[np.ndarray], items: np.ndarray, task: int = 0) -> np.ndarray:
        """(B, C) probabilities of ``tasks[task]`` for candidate ids ``items`` (B, C)."""
        self.eval()
        self.policy.model.eval()
        logits, _ = self(histories, torch.as_tensor(np.asarray(items), dtype=torch.long))
        return torch.sigmoid(logits[..., task]).cpu().numpy()


def _examples(dataset, split, cfg: RankerConfig):
    """(user, position) examples from the training split: history prefix, next item, task labels."""
    tr = split.train
    vals = dataset.values
    counts = np.maximum(np.diff(tr.indptr) - 1, 0)  # every position after the first is a target
    rows = np.repeat(np.arange(tr.n_users, dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    hist_end = np.repeat(tr.indptr[:-1] + 1, counts) + (np.arange(counts.sum()) - first)
    tgt = tr.items[hist_end]
    like = np.ones(len(tgt)) if vals is None else np.zeros(len(tgt))
    if vals is not None:  # values are aligned with the full sequences: map train positions back
        full = split.full
        off = hist_end - tr.indptr[rows] + full.indptr[rows]
        like = (vals[off] >= cfg.like_threshold).astype(np.float64)
    labels = np.stack([np.ones(len(tgt)), like], 1)[:, : len(cfg.tasks)]
    return rows, hist_end, tgt, labels


def fit_ranker(policy, dataset, split, cfg: RankerConfig | None = None, progress: bool = True) -> tuple[HLLMRanker, list[dict]]:
    """Train a ranking head (item LLM frozen; user LLM + projection fine-tuned with lambda * InfoNCE)."""
    cfg = cfg or RankerConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ranker = HLLMRanker(policy, cfg)
    rows, ends, tgt, labels = _examples(dataset, split, cfg)
    tr = split.train
    params = list(ranker.head.parameters()) + [p for n, p in policy.model.named_parameters()
                                                if not n.startswith("item_encoder.")]  # item LLM stays frozen
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    K = cfg.negatives_per_positive
    pool = np.flatnonzero(trained_items(tr, policy.n_items))  # untrained (held-out) items get no gradient

    def step(b: np.ndarray) -> dict[str, float]:
        histories = [tr.items[tr.indptr[rows[i]]:ends[i]] for i in b]
        neg = pool[rng.integers(0, len(pool), (len(b), K))]
        dev = policy.features.device
        cand = torch.from_numpy(np.concatenate([tgt[b][:, None], neg], 1)).to(dev)  # (B, 1+K)
        y = torch.zeros(len(b), 1 + K, len(cfg.tasks), device=dev)
        y[:, 0] = torch.from_numpy(labels[b]).float().to(dev)
        logits, h = ranker(histories, cand)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        if cfg.lam > 0:  # generative loss: last state predicts the positive against the candidates
            u = h[:, -1]
            emb = policy.model.project(policy.features[cand], cand)  # (B, 1+K, D)
            nce = policy.model.info_nce(u, emb[:, 0], cand[:, 0], emb[:, 1:].reshape(-1, emb.shape[-1]),
                                        cand[:, 1:].reshape(-1))
            loss = loss + cfg.lam * nce.loss
        return {"loss": optimizer_step(opt, loss)}

    def batches(epoch: int):
        return minibatches(rng.permutation(len(rows)), cfg.batch_size)

    hist = fit_loop(ranker, batches, step, bounds=Bounds.of(cfg.epochs, cfg), validation=None, desc="hllm ranker",
                    progress=progress)
    policy.refresh_table()
    return ranker, hist
