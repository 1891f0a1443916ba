"""Training: the one loop every model uses (:func:`fit_loop`: epochs, validation, early stopping,
best weights) and the ID sequence models' next-item training on every position.

Losses (``cfg.loss``): ``ce`` full softmax cross-entropy over all items, ``sampled_ce``
softmax over the target + ``cfg.n_negatives`` uniformly sampled items, ``bce`` binary
cross-entropy with one sampled negative per position (the original SASRec). AdamW, early
stopping on validation NDCG@10 (full ranking), best weights kept, seeded, tqdm progress.

Negatives are the items of the training data only (``trained_items``), as in HLLM: an item the
training data never shows (a held-out cold-start item) gets no gradient in any model; its
embedding stays as initialised instead of being pushed down as every step's negative. (An ID
model still cannot rank such items: their near-zero scores fall below most trained items.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from policies.evaluate import evaluate
from policies.tensors import device, pad_left


def training_windows(train, max_len: int, windows: str) -> tuple[np.ndarray, np.ndarray]:
    """(W, max_len+1) right-aligned training windows (ids shifted, 0 = pad) and their timestamps.

    ``windows="last"``: one window per user, the last ``max_len + 1`` items (SASRec's recipe).
    ``windows="all"``: every training interaction is a target exactly once: each sequence is cut
    from its end into windows of ``max_len + 1`` items overlapping by one (the last input of a
    window is the first of the next), so long histories are not truncated to their tail.
    """
    seqs, tss = [], []
    for s, t in zip(train.as_lists(), np.split(train.ts, train.indptr[1:-1]), strict=True):
        if len(s) < 2:
            continue
        ends = range(len(s), 1, -max_len) if windows == "all" else (len(s),)
        for e in ends:
            seqs.append(s[max(0, e - max_len - 1):e])
            tss.append(t[max(0, e - max_len - 1):e])
    return pad_left(seqs, max_len + 1, tss)


def trained_items(train, n_items: int) -> np.ndarray:
    """(n_items,) bool: the items that occur in the training sequences (the only negatives)."""
    return np.bincount(train.items, minlength=n_items)[:n_items] > 0


def sample(pool: torch.Tensor, shape, gen: torch.Generator) -> torch.Tensor:
    """Uniform draws (with replacement) of ``shape`` from the 1-D tensor ``pool``."""
    return pool[torch.randint(0, len(pool), shape, generator=gen)]


def sequence_loss(policy, h: torch.Tensor, tgt: torch.Tensor, gen: torch.Generator,
                  known: torch.Tensor | None = None) -> torch.Tensor:
    """h (B, T, D) states, tgt (B, T) shifted target ids (0 = no target); ``known`` (N,) bool: the
    trained items (negatives come from these only; None = every item)."""
    cfg = policy.cfg
    emb = policy.model.item_embeddings()  # (N+1, D)
    n_items = emb.shape[0] - 1
    known = torch.ones(n_items, dtype=torch.bool) if known is None else known.cpu()
    mask = tgt > 0
    hs, ts = h[mask], tgt[mask]  # (M, D), (M,)
    if cfg.loss == "ce":
        logits = hs @ emb[1:].T  # (M, N)
        logits = logits.masked_fill(~known.to(h.device)[None], float("-inf"))  # untrained items: no gradient
        return F.cross_entropy(logits, ts - 1)
    pool = known.nonzero().squeeze(1) + 1  # (K,) shifted ids of the trained items
    if cfg.loss == "sampled_ce":
        neg = sample(pool, (cfg.n_negatives,), gen).to(h.device)
        pos_logit = (hs * emb[ts]).sum(-1, keepdim=True)  # (M, 1)
        neg_logit = hs @ emb[neg].T  # (M, n_neg)
        neg_logit = neg_logit.masked_fill(neg[None, :] == ts[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1)
        return F.cross_entropy(logits, torch.zeros(len(ts), dtype=torch.long, device=h.device))
    # bce
    neg = sample(pool, ts.shape, gen).to(h.device)
    pos = (hs * emb[ts]).sum(-1)
    ng = (hs * emb[neg]).sum(-1)
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
        F.binary_cross_entropy_with_logits(ng, torch.zeros_like(ng))


def train_sequence_model(policy, split, progress: bool = True) -> list[dict]:
    """Train ``policy.model`` in place (best validation weights kept); returns the per-epoch history."""
    cfg = policy.cfg
    dev = device()
    model = policy.model.to(dev)
    ids, ts = training_windows(split.train, cfg.max_len, cfg.windows)
    if len(ids) == 0:
        return []
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ids_t, ts_t = torch.from_numpy(ids), torch.from_numpy(ts)  # ts float64: second resolution kept
    known = torch.from_numpy(trained_items(split.train, policy.n_items))

    def step(b: torch.Tensor) -> dict[str, float]:
        x, t = ids_t[b].to(dev), ts_t[b].to(dev)
        h = model(x[:, :-1], t[:, :-1], t[:, 1:])  # (B, T, D); t[:, 1:]: each target's time
        return {"loss": optimizer_step(opt, sequence_loss(policy, h, x[:, 1:], gen, known))}

    def train_epoch(epoch: int) -> dict[str, float]:
        return epoch_means(minibatches(torch.randperm(len(ids_t), generator=gen), cfg.batch_size), step)

    valid = ndcg_validation(policy, split, every=cfg.eval_every, patience=cfg.patience)
    return fit_loop(model, train_epoch, epochs=cfg.epochs, validation=valid, desc=f"train {policy.name}",
                    progress=progress)


# ----------------------------------------------------------------- the training loop every model uses
VALID_METRIC = "valid_ndcg@10"


def keep_all(name: str) -> bool:
    return True


@dataclass(frozen=True)
class Validation:
    """Early stopping: ``score()`` (higher is better) every ``every`` epochs; training stops after
    ``patience`` scores without improvement. The best weights (state-dict entries whose name
    ``keep`` accepts: a frozen item LLM need not be copied) are restored at the end."""

    score: Callable[[], float]
    every: int
    patience: int
    keep: Callable[[str], bool] = keep_all


def ndcg_validation(policy, split, *, every: int, patience: int, before: Callable[[], None] | None = None,
                    keep: Callable[[str], bool] = keep_all) -> Validation | None:
    """Validation NDCG@10 of ``policy`` (full ranking; ``before()`` runs first, e.g. to refresh an
    item table); None when the split has no validation targets."""
    if not bool((split.valid_targets >= 0).any()):
        return None

    def score() -> float:
        if before is not None:
            before()
        return evaluate(policy, split, which="valid", ks=(10,)).summary["ndcg@10"]

    return Validation(score, every, patience, keep)


def fit_loop(model: torch.nn.Module, train_epoch: Callable[[int], dict[str, float]], *, epochs: int,
             validation: Validation | None, desc: str, progress: bool) -> list[dict]:
    """Up to ``epochs`` calls of ``train_epoch(epoch) -> metrics`` with ``model`` in train mode,
    validation and early stopping as ``validation`` says (None: every epoch runs), the best weights
    restored, ``model`` left in eval mode, a tqdm bar unless ``progress`` is False.

    Returns the history: one ``{"epoch", **metrics, "seconds"[, "valid_ndcg@10"]}`` per epoch run.
    """
    best, best_state, bad, hist = -1.0, None, 0, []
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        rec = {"epoch": epoch, **train_epoch(epoch)}
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        if validation is not None and (epoch + 1) % validation.every == 0:
            rec[VALID_METRIC] = score = validation.score()
            if score > best:
                best, bad = score, 0
                best_state = copy.deepcopy({k: v for k, v in model.state_dict().items() if validation.keep(k)})
            else:
                bad += 1
        hist.append(rec)
        shown = [k for k in rec if k not in ("epoch", "seconds")][:1] + [k for k in (VALID_METRIC,) if k in rec]
        bar.set_postfix_str(" ".join(f"{k}={rec[k]:.3g}" for k in shown))  # short: the bar keeps its width
        if validation is not None and bad >= validation.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return hist


def minibatches(perm, batch_size: int) -> Iterator:
    """Consecutive slices of ``batch_size`` of a permutation (torch or numpy)."""
    return (perm[s:s + batch_size] for s in range(0, len(perm), batch_size))


def epoch_means(batches: Iterable, step: Callable[[Any], dict[str, float]]) -> dict[str, float]:
    """``step`` on every batch; the mean of each metric it returns (empty without batches)."""
    tot: dict[str, float] = {}
    n = 0
    for b in batches:
        for k, v in step(b).items():
            tot[k] = tot.get(k, 0.0) + v
        n += 1
    return {k: v / n for k, v in tot.items()}


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, *, clip: tuple[list, float] | None = None,
                   sched=None) -> float:
    """One descent step on ``loss`` (``clip``: (parameters, max grad norm)); returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(*clip)
    opt.step()
    if sched is not None:
        sched.step()
    return float(loss.detach())
