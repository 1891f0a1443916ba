"""A user-response model learned from a dataset's logs (the "learned world").

Of another kind than the arms it judges (no transformer, no item LLM): a factorisation model over
users, items and item text (FISM/FPMC-like). A user's taste at a moment is

    taste(u, h) = p_u + mean(c_j for the last ``context`` items j of history h)
    utility(u, h, i) = taste(u, h) . q_i + b_i,   q_i = e_i + W t_i   (t_i: hashed words of item i's text)

fitted by next-interaction softmax over the catalog on the logs (Adam, full-batch softmax, seeded),
then calibrated: a temperature T, fitted on each user's last logged interaction under a fit that
held those out, divides every utility of the fit on all the logs (folded into ``q_i`` and
``b_i``), so the world's choice
probabilities are as confident as held-out logs say (``calibrate=False``: T = 1). On sparse logs
(Amazon Office, 11 interactions a user) the raw fit is over-confident (T > 1).
:class:`simulator.engine.users.LearnedUser` turns utilities into slate choices (position bias, a
no-click option calibrated to the logs' interaction rate, fatigue). ``context = 0`` and
``text_buckets = 0`` give plain matrix factorisation (the validation's MF baseline).

Fitted parameters are cached like arms (``artifacts/<dataset>/learned-<hash>.npz``, keyed by the
settings and the training data): the same data and seed give the same world.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from simulator.core.sequences import Sequences

VERSION = 2  # bump when fitting changes what the same settings learn from the same data


@dataclass(frozen=True)
class LearnedConfig:
    dim: int = 32
    context: int = 20  # recent history items in the taste (0: plain MF)
    text_buckets: int = 256  # hashed word features of the item text (0: none)
    epochs: int = 6
    batch_size: int = 2048
    lr: float = 0.02
    weight_decay: float = 1e-5
    seed: int = 0
    calibrate: bool = True  # a temperature from a fit that held each user's last interaction out


@dataclass
class LearnedParams:
    """numpy arrays of a fitted model (what the user model and the validation read)."""

    user: np.ndarray  # (U, D)
    ctx: np.ndarray  # (I, D) history-item embeddings (zeros when context = 0)
    item: np.ndarray  # (I, D) q_i, text projection included
    bias: np.ndarray  # (I,)
    context: int
    temperature: float = 1.0  # already divided into item and bias (a record of the calibration)

    def taste(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """(B, D) taste of each user given their history."""
        out = self.user[users].copy()
        if self.context:
            for b, h in enumerate(histories):
                h = np.asarray(h, np.int64)[-self.context:]
                if len(h):
                    out[b] += self.ctx[h].mean(0)
        return out

    def logits(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """(B, I) utilities of every item."""
        return self.taste(users, histories) @ self.item.T + self.bias


def text_features(texts: list[str], buckets: int) -> torch.Tensor:
    """(I, buckets) L2-normalised hashed bag of words (crc32: the same on every machine)."""
    x = torch.zeros(len(texts), max(buckets, 1))
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z0-9]+", (t or "").lower()):
            x[i, zlib.crc32(w.encode()) % buckets] += 1.0
    return torch.nn.functional.normalize(x, dim=1)


class _Model(torch.nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: LearnedConfig, text: torch.Tensor | None) -> None:
        super().__init__()
        d = cfg.dim
        self.user = torch.nn.Embedding(n_users, d)
        self.item = torch.nn.Embedding(n_items, d)
        self.ctx = torch.nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.bias = torch.nn.Parameter(torch.zeros(n_items))
        self.text = text
        self.proj = torch.nn.Linear(text.shape[1], d, bias=False) if text is not None else None
        for emb in (self.user, self.item, self.ctx):
            torch.nn.init.normal_(emb.weight, std=0.05)
        with torch.no_grad():
            self.ctx.weight[n_items].zero_()

    def items(self) -> torch.Tensor:
        return self.item.weight + (self.proj(self.text) if self.proj is not None else 0.0)

    def forward(self, users: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        taste = self.user(users)
        if ctx.shape[1]:
            n = (ctx != self.ctx.padding_idx).sum(1, keepdim=True).clamp(min=1)
            taste = taste + self.ctx(ctx).sum(1) / n
        return taste @ self.items().T + self.bias


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T in [0.05, 50] that maximises the mean log-likelihood of ``targets`` under
    softmax(logits / T) (bounded scalar search over log T: the likelihood is unimodal in it)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / float(np.exp(log_t)), targets))

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(50.0)), method="bounded",
                                        options={"xatol": 1e-4}).x))


def last_per_user(users: np.ndarray) -> np.ndarray:
    """(E,) bool: each user's last training example, for users with at least two (the held-out
    rows of the temperature fit; a user with one example keeps it for the fit)."""
    out = np.zeros(len(users), bool)
    if not len(users):
        return out
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])  # examples are grouped by user, in order
    first = np.r_[0, last[:-1] + 1]
    out[last[last > first]] = True
    return out


def training_examples(seqs: Sequences, n_items: int, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every interaction after a user's first: (user, the previous ``context`` items padded, target)."""
    users, ctxs, targets = [], [], []
    for u in range(seqs.n_users):
        s = seqs.seq(u).astype(np.int64)
        for t in range(1, len(s)):
            users.append(u)
            targets.append(s[t])
            c = s[max(0, t - context):t] if context else s[:0]
            ctxs.append(np.pad(c, (context - len(c), 0), constant_values=n_items))
    ctx = np.stack(ctxs) if context and ctxs else np.zeros((len(users), 0), np.int64)
    return np.asarray(users, np.int64), ctx, np.asarray(targets, np.int64)


def fit(seqs: Sequences, n_users: int, n_items: int, item_text: list[str], cfg: LearnedConfig,
        progress: bool = False) -> LearnedParams:
    """Fit the response model on ``seqs`` (deterministic given ``cfg.seed``; one thread: small matrices,
    and the same sums in the same order on every machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(seqs, n_users, n_items, item_text, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(seqs: Sequences, n_users: int, n_items: int, item_text: list[str], cfg: LearnedConfig,
         progress: bool) -> LearnedParams:
    text = text_features(item_text, cfg.text_buckets) if cfg.text_buckets else None
    examples = training_examples(seqs, n_items, cfg.context)
    t = 1.0
    if cfg.calibrate:  # T from a fit without each user's last interaction, judged on those
        held = last_per_user(examples[0])
        if held.any():
            model = _train(n_users, n_items, cfg, text, examples, np.flatnonzero(~held), progress)
            users, ctx, targets = (torch.from_numpy(a[held]) for a in examples)
            with torch.no_grad():
                t = fit_temperature(model(users, ctx), targets)
    model = _train(n_users, n_items, cfg, text, examples, np.arange(len(examples[0])), progress)
    with torch.no_grad():
        return LearnedParams(model.user.weight.numpy().copy(), model.ctx.weight[:n_items].numpy().copy(),
                             model.items().numpy() / t, model.bias.numpy() / t, cfg.context, t)


def _train(n_users: int, n_items: int, cfg: LearnedConfig, text: torch.Tensor | None, examples: tuple,
           rows: np.ndarray, progress: bool) -> _Model:
    """The model fitted on the examples at ``rows`` (seeded: the same rows give the same weights)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = _Model(n_users, n_items, cfg, text)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    users, ctx, targets = (torch.from_numpy(a) for a in examples)
    rows = torch.from_numpy(rows)
    for _ in tqdm(range(cfg.epochs), desc="fit learned user model", disable=not progress):
        order = rows[torch.from_numpy(rng.permutation(len(rows)))]
        for s in range(0, len(order), cfg.batch_size):
            b = order[s:s + cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(model(users[b], ctx[b]), targets[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def fit_or_load(seqs: Sequences, n_users: int, n_items: int, item_text: list[str], cfg: LearnedConfig,
                root: str | Path, dataset: str, progress: bool = False) -> LearnedParams:
    """:func:`fit`, cached under ``root/<dataset>/learned-<hash>.npz`` (settings + data fingerprint)."""
    h = hashlib.sha256(json.dumps({"cfg": dataclasses.asdict(cfg), "v": VERSION}, sort_keys=True).encode())
    for a in (seqs.indptr, seqs.items, seqs.ts):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([n_users, n_items, item_text]).encode())
    path = Path(root) / dataset / f"learned-{h.hexdigest()[:12]}.npz"
    if path.exists():
        z = np.load(path)
        return LearnedParams(z["user"], z["ctx"], z["item"], z["bias"], int(z["context"]),
                             float(z["temperature"]))
    p = fit(seqs, n_users, n_items, item_text, cfg, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, user=p.user, ctx=p.ctx, item=p.item, bias=p.bias, context=p.context,
             temperature=p.temperature)
    tmp.replace(path)
    return p
