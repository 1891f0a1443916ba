"""Shared training loop for sequence models: next-item prediction on every position.

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

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from policies.tensors import device, pad_left


def training_windows(train, max_len: int, windows: str = "last") -> tuple[np.ndarray, np.ndarray]:
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


def train_sequence_model(policy, dataset, split, progress: bool = True) -> list[dict]:
    """Train ``policy.model`` in place; returns the per-epoch history."""
    from policies.evaluate import evaluate

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
    best, best_state, bad, hist = -1.0, None, 0, []
    has_valid = bool((split.valid_targets >= 0).any())
    bar = tqdm(range(cfg.epochs), desc=f"train {policy.name}", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ids_t), generator=gen)
        total, nb = 0.0, 0
        for s in range(0, len(perm), cfg.batch_size):
            b = perm[s:s + cfg.batch_size]
            x, t = ids_t[b].to(dev), ts_t[b].to(dev)
            h = model(x[:, :-1], t[:, :-1], t[:, 1:])  # (B, T, D); t[:, 1:]: each target's time
            loss = sequence_loss(policy, h, x[:, 1:], gen, known)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            nb += 1
        rec = {"epoch": epoch, "loss": total / max(nb, 1), "seconds": round(time.perf_counter() - t0, 2)}
        if has_valid and (epoch + 1) % cfg.eval_every == 0:
            rec["valid_ndcg@10"] = evaluate(policy, dataset, split, which="valid", ks=(10,)).summary["ndcg@10"]
            if rec["valid_ndcg@10"] > best:
                best, bad = rec["valid_ndcg@10"], 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        hist.append(rec)
        bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch"})
        if bad >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return hist
