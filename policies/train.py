"""Training: the one loop every model uses (:func:`fit_loop`: epochs, validation, early stopping,
best weights) and the ID sequence models' next-item training on every position.

Losses (``cfg.loss``): ``ce`` full softmax cross-entropy over all items, ``sampled_ce``
softmax over the target + ``cfg.n_negatives`` items shared by the batch, drawn uniformly or by
popularity with the logQ correction (``cfg.negative_sampler``; it trains on 100k+ item catalogs
where the full softmax cannot), ``bce`` binary
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
from pydantic import BaseModel, ConfigDict, Field
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


@dataclass(frozen=True)
class Negatives:
    """Where sampled negatives come from: the trained items (shifted ids ``pool``), uniformly or
    with probability ``q`` (popularity); ``log_q`` (N+1,) is the logQ correction subtracted from
    every logit (the positive's included: Yi et al., RecSys 2019), None for uniform draws (a
    constant shift, which softmax ignores)."""

    pool: torch.Tensor
    q: torch.Tensor | None = None
    log_q: torch.Tensor | None = None

    @classmethod
    def of(cls, train, known: torch.Tensor, sampler: str) -> Negatives:
        pool = known.nonzero().squeeze(1) + 1  # (K,) shifted ids of the trained items
        if sampler == "uniform":
            return cls(pool)
        counts = torch.from_numpy(np.bincount(train.items, minlength=len(known))[:len(known)]).double()
        q = counts[pool - 1] / counts[pool - 1].sum()  # (K,) popularity of each trained item
        log_q = torch.zeros(len(known) + 1, dtype=torch.float64)
        log_q[pool] = q.log()
        return cls(pool, q, log_q.float())

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.q is None:
            return sample(self.pool, (n,), gen)
        return self.pool[torch.multinomial(self.q, n, replacement=True, generator=gen)]


def sequence_loss(policy, h: torch.Tensor, tgt: torch.Tensor, gen: torch.Generator,
                  known: torch.Tensor | None = None, negatives: Negatives | None = None) -> torch.Tensor:
    """h (B, T, D) states, tgt (B, T) shifted target ids (0 = no target); ``known`` (N,) bool: the
    trained items (negatives come from these only; None = every item); ``negatives``: how
    ``sampled_ce`` draws them (None: uniformly from ``known``)."""
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
    negatives = negatives or Negatives(known.nonzero().squeeze(1) + 1)
    if cfg.loss == "sampled_ce":
        neg = negatives.draw(cfg.n_negatives, gen).to(h.device)
        pos_logit = (hs * emb[ts]).sum(-1, keepdim=True)  # (M, 1)
        neg_logit = hs @ emb[neg].T  # (M, n_neg)
        if negatives.log_q is not None:  # popularity draws: logQ correction
            lq = negatives.log_q.to(h.device)
            pos_logit, neg_logit = pos_logit - lq[ts][:, None], neg_logit - lq[neg][None]
        neg_logit = neg_logit.masked_fill(neg[None, :] == ts[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1)
        return F.cross_entropy(logits, torch.zeros(len(ts), dtype=torch.long, device=h.device))
    # bce
    neg = sample(negatives.pool, ts.shape, gen).to(h.device)
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
    negatives = Negatives.of(split.train, known, cfg.negative_sampler)

    def step(b: torch.Tensor) -> dict[str, float]:
        x, t = ids_t[b].to(dev), ts_t[b].to(dev)
        h = model(x[:, :-1], t[:, :-1], t[:, 1:])  # (B, T, D); t[:, 1:]: each target's time
        return {"loss": optimizer_step(opt, sequence_loss(policy, h, x[:, 1:], gen, known, negatives))}

    def batches(epoch: int) -> Iterator:
        return minibatches(torch.randperm(len(ids_t), generator=gen), cfg.batch_size)

    valid = ndcg_validation(policy, split, every=cfg.eval_every, patience=cfg.patience,
                            every_steps=cfg.eval_every_steps)
    return fit_loop(model, batches, step, bounds=Bounds.of(cfg.epochs, cfg), validation=valid,
                    desc=f"train {policy.name}", progress=progress)


# ----------------------------------------------------------------- the training loop every model uses
VALID_METRIC = "valid_ndcg@10"
CAPS = ("max_epochs", "max_steps")  # the stop reasons that mean a maximum bound, not early stopping


class StepBudget(BaseModel):
    """How long a trainer runs, in optimizer steps, one rule for every model: up to ``epochs``
    passes (the model's own field), stopped early after ``patience`` validations without
    improvement, never before ``min_steps`` steps, never after ``max_steps``; validation every
    ``eval_every`` epochs, or every ``eval_every_steps`` steps when that is set."""

    model_config = ConfigDict(extra="forbid")
    min_steps: int = Field(0, ge=0, description="no early stop before this many optimizer steps")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (None: no bound)")
    eval_every_steps: int | None = Field(None, ge=1, description="validate every N steps (None: every "
                                                                 "eval_every epochs)")


def keep_all(name: str) -> bool:
    return True


@dataclass(frozen=True)
class Validation:
    """Early stopping: ``score()`` (higher is better) every ``every`` epochs (or ``every_steps``
    steps); training stops after ``patience`` scores without improvement. The best weights
    (state-dict entries whose name ``keep`` accepts: a frozen item LLM need not be copied) are
    restored at the end."""

    score: Callable[[], float]
    every: int
    patience: int
    keep: Callable[[str], bool] = keep_all
    every_steps: int | None = None


def ndcg_validation(policy, split, *, every: int, patience: int, before: Callable[[], None] | None = None,
                    keep: Callable[[str], bool] = keep_all, every_steps: int | None = None) -> Validation | None:
    """Validation NDCG@10 of ``policy`` (full ranking; ``before()`` runs first, e.g. to refresh an
    item table); None when the split has no validation targets."""
    if not bool((split.valid_targets >= 0).any()):
        return None

    def score() -> float:
        if before is not None:
            before()
        return evaluate(policy, split, which="valid", ks=(10,)).summary["ndcg@10"]

    return Validation(score, every, patience, keep, every_steps)


@dataclass(frozen=True)
class Bounds:
    """The loop's bounds: at most ``epochs`` passes and ``max_steps`` steps, no early stop before
    ``min_steps``."""

    epochs: int
    min_steps: int = 0
    max_steps: int | None = None

    @classmethod
    def of(cls, epochs: int, budget: StepBudget | None) -> Bounds:
        return cls(epochs) if budget is None else cls(epochs, budget.min_steps, budget.max_steps)


class _Tracker:
    """Best validation score, its weights and step, and the count of validations without gain."""

    def __init__(self, model: torch.nn.Module, validation: Validation, min_steps: int) -> None:
        self.model, self.v, self.min_steps = model, validation, min_steps
        self.best, self.best_state, self.best_step, self.bad = -1.0, None, None, 0

    def check(self, step: int) -> float:
        score = self.v.score()
        if score > self.best:
            self.best, self.bad, self.best_step = score, 0, step
            self.best_state = copy.deepcopy({k: v for k, v in self.model.state_dict().items() if self.v.keep(k)})
        else:
            self.bad += 1
        return score

    def stop(self, step: int) -> bool:
        return self.bad >= self.v.patience and step >= self.min_steps


def fit_loop(model: torch.nn.Module, batches: Callable[[int], Iterable], step: Callable[[Any], dict[str, float]],
             *, bounds: Bounds, validation: Validation | None, desc: str, progress: bool,
             end_epoch: Callable[[dict[str, float]], dict[str, float]] | None = None) -> list[dict]:
    """``step(batch) -> metrics`` (one optimizer step) on every batch of ``batches(epoch)``, epoch
    after epoch, with ``model`` in train mode, within ``bounds``; validation and early stopping as
    ``validation`` says (None: every epoch runs), the best weights restored, ``model`` left in eval
    mode, a tqdm bar unless ``progress`` is False. ``end_epoch(means)`` adds epoch-level metrics.

    Returns the history: one ``{"epoch", **mean metrics, "seconds", "step"[, "valid_ndcg@10"],
    "best_step"}`` per epoch run (``step``: optimizer steps so far); the last record also has
    ``"stop"``: why training ended (``patience``, ``max_epochs``, ``max_steps``).
    """
    track = None if validation is None else _Tracker(model, validation, bounds.min_steps)
    every_steps = None if validation is None else validation.every_steps
    steps, hist, stop = 0, [], "max_epochs"
    bar = tqdm(range(bounds.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        tot: dict[str, float] = {}
        n, score = 0, None
        for b in batches(epoch):
            for k, v in step(b).items():
                tot[k] = tot.get(k, 0.0) + v
            n, steps = n + 1, steps + 1
            if every_steps is not None and steps % every_steps == 0:
                score = track.check(steps)
                model.train()
                if track.stop(steps):
                    stop = "patience"
                    break
            if bounds.max_steps is not None and steps >= bounds.max_steps:
                stop = "max_steps" if stop != "patience" else stop
                break
        rec = {"epoch": epoch, **{k: v / n for k, v in tot.items()}}
        if end_epoch is not None:
            rec.update(end_epoch(rec))
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["step"] = steps
        if track is not None and every_steps is None and (epoch + 1) % validation.every == 0:
            score = track.check(steps)
            if track.stop(steps):
                stop = "patience"
        if score is not None:
            rec[VALID_METRIC] = score
        if track is not None:
            rec["best_step"] = track.best_step
        hist.append(rec)
        bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch" and isinstance(v, float)})
        if stop != "max_epochs":
            break
    if hist:
        hist[-1]["stop"] = stop
    if track is not None and track.best_state is not None:
        model.load_state_dict(track.best_state, strict=False)
    model.eval()
    return hist


def fit_summaries(history: list[dict]) -> list[dict]:
    """One summary per training stage of a policy's history (stage order kept): ``steps``,
    ``epochs``, ``best_step`` (None: no validation), ``capped`` (a maximum bound ended it, not
    early stopping) and ``stop``."""
    out: dict[str, dict] = {}
    for rec in history:
        s = out.setdefault(rec.get("stage", "train"), {"stage": rec.get("stage", "train"), "epochs": 0})
        s.update(epochs=s["epochs"] + 1, steps=rec.get("step"), best_step=rec.get("best_step"))
        if "stop" in rec:
            s.update(stop=rec["stop"], capped=rec["stop"] in CAPS)
    return list(out.values())


def training_record(history: list[dict]) -> dict:
    """A model's training in one record: ``steps`` and ``epochs`` summed over its stages,
    ``best_step`` and ``capped`` of its last validated stage (else its last stage), ``stages`` the
    per-stage summaries; a model that does not train (popularity, item-kNN) has 0 steps, uncapped."""
    stages = fit_summaries(history)
    if not stages:
        return {"steps": 0, "epochs": 0, "best_step": None, "capped": False, "stages": []}
    last = ([s for s in stages if s.get("best_step") is not None] or stages)[-1]
    return {"steps": sum(s.get("steps") or 0 for s in stages), "epochs": sum(s["epochs"] for s in stages),
            "best_step": last.get("best_step"), "capped": bool(last.get("capped", False)), "stages": stages}


def minibatches(perm, batch_size: int) -> Iterator:
    """Consecutive slices of ``batch_size`` of a permutation (torch or numpy)."""
    return (perm[s:s + batch_size] for s in range(0, len(perm), batch_size))


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
