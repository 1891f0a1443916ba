"""HLLM training stages.

Stage 1 (end-to-end): item LLM + projection + user LLM trained jointly on short sequences;
each step encodes the unique items of the batch and of a random negative pool.
Stage 2 (long sequences): the item LLM is frozen, its features cached once
(``encode_items``), and projection + user LLM train on long sequences from the cache.
Both use InfoNCE with a shared negative pool (in-batch positives + random ids; in stage 2 with
``negatives="all"`` every trained item, i.e. a full softmax), same-id negatives masked; the
number of unmasked negatives is logged as a collapse guard. The warm-up + cosine schedule spans
the stage's bounds (its epochs, or ``max_steps`` when smaller): under early stopping with the ID
models' 200-epoch bound the learning rate stays near its peak, as the ID models' constant one.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tqdm.auto import tqdm

from policies.tensors import device
from policies.train import Validation, fit_loop, minibatches, optimizer_step, training_windows


@torch.no_grad()
def encode_items(model, tokens: dict[str, torch.Tensor], batch_size: int = 256, progress: bool = False,
                 ids: np.ndarray | None = None) -> torch.Tensor:
    """Item LLM features (N, H) for all items (or ``ids``), in eval mode, batched."""
    model.eval()
    dev = next(model.parameters()).device
    idx = np.arange(len(tokens["input_ids"])) if ids is None else np.asarray(ids)
    out = []
    for s in tqdm(range(0, len(idx), batch_size), desc="embed items", disable=not progress, leave=False):
        b = torch.from_numpy(idx[s:s + batch_size])
        out.append(model.item_features(tokens["input_ids"][b].to(dev), tokens["attention_mask"][b].to(dev)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.item_encoder.hidden)


def _step_loss(model, emb_of, x: torch.Tensor, ts: torch.Tensor, pool_ids: torch.Tensor, in_batch: bool):
    """x (B, T+1) shifted ids; emb_of(ids 0-based (K,)) -> (K, D); ``in_batch``: the batch's other
    items are negatives too (else only ``pool_ids``). Returns InfoNCEOutput."""
    inp, tgt = x[:, :-1], x[:, 1:]
    mask = inp > 0
    uniq, inv = torch.unique(torch.cat([x.flatten(), pool_ids + 1]), return_inverse=True)
    table = emb_of(uniq.clamp(min=1) - 1)  # (U, D)
    n_seq = x.numel()
    inv_x = inv[:n_seq].view_as(x)
    seq_emb = table[inv_x[:, :-1]] * mask[..., None]  # (B, T, D)
    h = model.user_states(seq_emb, mask, ts[:, :-1])  # (B, T, D)
    sel = (tgt > 0) & mask
    pred, pos_ids = h[sel], tgt[sel] - 1
    pos = table[inv_x[:, 1:][sel]]
    neg_ids = uniq[uniq > 0] - 1
    neg = table[(uniq > 0).nonzero().squeeze(1)]
    if not in_batch:
        keep = torch.isin(neg_ids, pool_ids)
        neg_ids, neg = neg_ids[keep], neg[keep]
    return model.info_nce(pred, pos, pos_ids, neg, neg_ids)


def autocast(bf16: bool):
    """bf16 autocast on CUDA devices that support it (when ``bf16``); a no-op context on CPU."""
    on = bf16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on) if on else contextlib.nullcontext()


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 10% of ``total_steps``, then cosine decay to zero."""
    warm = max(1, total_steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / total_steps))))


def run_stage(model, split, emb_of, params, cfg, stage: int, *, validation: Validation | None = None,
              progress: bool) -> list[dict]:
    """HLLM stage ``stage`` (1 or 2) of recipe ``cfg`` (``hllm.recipe.HLLMPolicyConfig``) in the shared
    loop (``policies.train.fit_loop``): InfoNCE over training windows, AdamW on ``params`` with
    warm-up + cosine decay, gradients clipped at norm 1."""
    budget, desc = cfg.stage(stage), f"hllm stage {stage}"
    dev = device()
    ids, ts = training_windows(split.train, budget.max_len, cfg.windows)
    x_all, ts_all = torch.from_numpy(ids), torch.from_numpy(ts)  # shifted ids: 0 = pad; ts float64 seconds
    gen = torch.Generator().manual_seed(cfg.seed)
    seen = torch.from_numpy(np.unique(split.train.items))  # negatives come from training items only
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    flat = [q for g in opt.param_groups for q in g["params"]]
    per_epoch = (len(x_all) + budget.batch_size - 1) // budget.batch_size
    total = budget.bounds.epochs * per_epoch
    if budget.bounds.max_steps is not None:
        total = min(total, budget.bounds.max_steps)
    sched = warmup_cosine(opt, max(1, total))

    def step(b: torch.Tensor) -> dict[str, float]:
        pool = seen if budget.all_negatives else seen[torch.randint(0, len(seen), (budget.n_negatives,),
                                                                     generator=gen)]
        with autocast(cfg.bf16):
            out = _step_loss(model, emb_of, x_all[b].to(dev), ts_all[b].to(dev), pool.to(dev), cfg.in_batch_negatives)
        return {"loss": optimizer_step(opt, out.loss, clip=(flat, 1.0), sched=sched),
                "unmasked_negatives": out.unmasked_negatives, "guarded_rows": out.guarded_rows}

    def batches(epoch: int):
        return minibatches(torch.randperm(len(x_all), generator=gen), budget.batch_size)

    def end_epoch(rec: dict[str, float]) -> dict[str, float]:
        if rec.get("unmasked_negatives", 0.0) < 1.0:
            raise RuntimeError("HLLM: almost every negative is masked (embedding collapse); "
                               "lower the learning rate or raise false_negative_cos")
        return {"temperature": float(1 / model.scale().detach())}

    hist = fit_loop(model, batches, step, bounds=budget.bounds, validation=validation, desc=desc,
                    progress=progress, end_epoch=end_epoch)
    return [{"stage": desc, **rec} for rec in hist]
