"""Reranker stage: turn scored candidates into the slate a user sees.

Every reranker implements the :class:`~policies.base.Reranker` protocol,
``rerank(users, candidates, scores, k) -> Slate``, batch-first and vectorised:

- :class:`TopK`          sort by score, drop padding, keep k (the identity reranker);
- :class:`SeenFilter`    drop items already in the user's history, then top-k;
- :class:`MMR`           maximal marginal relevance (Carbonell & Goldstein 1998) over item
                         embeddings or attribute labels: ``lam * rel - (1 - lam) * max sim``;
- :class:`MaxPerLabel`   business rule: at most ``max_per`` items per label (e.g. genre);
- :class:`Chain`         apply several in order (each keeps up to its own k).

Built from a spec with :func:`make_reranker` (``{"name": "mmr", "lam": 0.7, "attribute":
"genre"}`` or a list of specs for a chain); names come from an explicit table, configs are
pydantic with ``extra="forbid"``. ``scores`` (B, C) are the scorer's scores for the candidate
ids; when ``None`` the candidates' own (retrieval) scores are used. Slate scores are the input
scores of the kept items; the channel of origin travels with each item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.base import PAD, Candidates, Slate, UserBatch
from simulator.core.errors import ConfigError

# ----------------------------------------------------------------------------- helpers


def _inputs(candidates: Candidates, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ids = np.asarray(candidates.item_ids, dtype=np.int64)
    sc = np.asarray(candidates.scores if scores is None else scores, dtype=np.float32).copy()
    if sc.shape != ids.shape:
        raise ValueError(f"rerank: scores {sc.shape} do not match candidates {ids.shape}")
    sc[ids < 0] = -np.inf
    return ids, sc, candidates.channel


def _slate_from_order(ids: np.ndarray, sc: np.ndarray, ch: np.ndarray | None, order: np.ndarray,
                      keep: np.ndarray, names: tuple[str, ...]) -> Slate:
    """Gather ``order`` (B, K) column indices; ``keep`` (B, K) False -> PAD."""
    out_ids = np.where(keep, np.take_along_axis(ids, order, 1), PAD).astype(np.int64)
    out_sc = np.where(keep, np.take_along_axis(sc, order, 1), -np.inf).astype(np.float32)
    out_ch = None if ch is None else np.where(keep, np.take_along_axis(ch, order, 1), -1).astype(np.int16)
    return Slate(out_ids, out_sc, out_ch, names)


def _topk(ids: np.ndarray, sc: np.ndarray, ch: np.ndarray | None, k: int, names: tuple[str, ...]) -> Slate:
    """Stable sort by (-score, position) and keep k; non-finite scores become PAD."""
    B, C = ids.shape
    if C < k:  # pad the candidate matrix so the gather below has k columns
        ids = np.pad(ids, ((0, 0), (0, k - C)), constant_values=PAD)
        sc = np.pad(sc, ((0, 0), (0, k - C)), constant_values=-np.inf)
        ch = None if ch is None else np.pad(ch, ((0, 0), (0, k - C)), constant_values=-1)
    order = np.argsort(-sc, axis=1, kind="stable")[:, :k]  # (B, k)
    keep = np.isfinite(np.take_along_axis(sc, order, 1)) & (np.take_along_axis(ids, order, 1) >= 0)
    return _slate_from_order(ids, sc, ch, order, keep, names)


def _as_candidates(slate: Slate) -> Candidates:
    return Candidates(slate.item_ids, slate.scores, slate.channel, slate.channel_names)


def label_sets(values: Sequence[Any]) -> list[tuple[str, ...]]:
    """Per-item label tuples from an attribute column: lists stay lists, strings split on
    ``|``, ``,`` or whitespace (RecBole token_seq), missing -> no label."""
    out: list[tuple[str, ...]] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(())
        elif isinstance(v, (list, tuple, np.ndarray)):
            out.append(tuple(str(x) for x in v))
        else:
            s = str(v).replace("|", " ").replace(",", " ")
            out.append(tuple(s.split()))
    return out


def multi_hot(labels: list[tuple[str, ...]]) -> tuple[np.ndarray, list[str]]:
    """(N, L) float32 multi-hot matrix and the label vocabulary (sorted)."""
    vocab = sorted({x for ls in labels for x in ls})
    idx = {x: i for i, x in enumerate(vocab)}
    m = np.zeros((len(labels), max(len(vocab), 1)), dtype=np.float32)
    for i, ls in enumerate(labels):
        for x in ls:
            m[i, idx[x]] = 1.0
    return m, vocab


def _item_matrix(dataset: Any, attribute: str) -> np.ndarray:
    attrs = getattr(dataset, "item_attrs", {}) or {}
    if attribute not in attrs:
        raise ConfigError(f"rerank: dataset {getattr(dataset, 'name', '?')!r} has no item attribute "
                          f"{attribute!r}; available: {', '.join(sorted(attrs)) or 'none'}")
    return multi_hot(label_sets(attrs[attribute]))[0]


# ----------------------------------------------------------------------------- rerankers


class TopKConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopK:
    """Sort candidates by score and keep the best k (PAD rows where fewer)."""

    def __init__(self, cfg: TopKConfig | None = None, dataset: Any = None) -> None:
        self.cfg = cfg or TopKConfig()

    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray | None, k: int) -> Slate:
        ids, sc, ch = _inputs(candidates, scores)
        return _topk(ids, sc, ch, k, candidates.channel_names)


class SeenFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    last_n: int | None = Field(None, ge=1, description="only filter the last N history items (None = all)")


class SeenFilter:
    """Drop candidates the user has already interacted with, then keep the top k."""

    def __init__(self, cfg: SeenFilterConfig | None = None, dataset: Any = None) -> None:
        self.cfg = cfg or SeenFilterConfig()

    def seen_mask(self, users: UserBatch, ids: np.ndarray) -> np.ndarray:
        """(B, C) True where the candidate is in the user's (recent) history."""
        hist = [np.asarray(h, np.int64) for h in users.histories]
        if self.cfg.last_n is not None:
            hist = [h[-self.cfg.last_n:] for h in hist]
        lengths = np.array([len(h) for h in hist])
        if lengths.sum() == 0:
            return np.zeros(ids.shape, dtype=bool)
        # one vectorised membership test on (row, item) keys
        n = int(max(ids.max(initial=0), max(int(h.max(initial=0)) for h in hist))) + 2
        rows = np.repeat(np.arange(len(hist)), lengths)
        seen_keys = rows * n + np.concatenate(hist)
        cand_keys = np.arange(ids.shape[0])[:, None] * n + np.clip(ids, 0, None)
        return np.isin(cand_keys, seen_keys) & (ids >= 0)

    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray | None, k: int) -> Slate:
        ids, sc, ch = _inputs(candidates, scores)
        sc[self.seen_mask(users, ids)] = -np.inf
        return _topk(ids, sc, ch, k, candidates.channel_names)


class MMRConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(0.7, ge=0, le=1, description="1 = pure relevance, 0 = pure diversity")
    attribute: str | None = Field(None, description="item attribute for label similarity (else embeddings)")


class MMR:
    """Greedy maximal marginal relevance: ``lam * rel - (1 - lam) * max_{s in slate} sim``.

    ``rel`` is the score min-max normalised per row over valid candidates; ``sim`` is cosine
    similarity of item vectors: embeddings (``item_vectors`` (N, D), e.g. a policy's item
    table) or the multi-hot of an attribute's labels (``attribute='genre'``).
    """

    def __init__(self, cfg: MMRConfig | None = None, dataset: Any = None,
                 item_vectors: np.ndarray | None = None) -> None:
        self.cfg = cfg or MMRConfig()
        if item_vectors is None:
            if self.cfg.attribute is None or dataset is None:
                raise ConfigError("mmr reranker needs item_vectors or attribute= with a dataset")
            item_vectors = _item_matrix(dataset, self.cfg.attribute)
        v = np.asarray(item_vectors, dtype=np.float32)
        self.vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # (N, D)

    chunk = 128  # users per block: the (B, C, C) similarity block stays small

    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray | None, k: int) -> Slate:
        ids, sc, ch = _inputs(candidates, scores)
        B, C = ids.shape
        kk = min(k, C)
        order = np.zeros((B, kk), dtype=np.int64)
        keep = np.zeros((B, kk), dtype=bool)
        for s in range(0, B, self.chunk):
            order[s:s + self.chunk], keep[s:s + self.chunk] = self._greedy(ids[s:s + self.chunk], sc[s:s + self.chunk], kk)
        slate = _slate_from_order(ids, sc, ch, order, keep, candidates.channel_names)
        return _pad_slate(slate, k)

    def _greedy(self, ids: np.ndarray, sc: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Greedy MMR selection for a block of users: (order (B, kk), keep (B, kk))."""
        B, C = ids.shape
        valid = np.isfinite(sc) & (ids >= 0)  # (B, C)
        lo = np.where(valid, sc, np.inf).min(1, keepdims=True)
        hi = np.where(valid, sc, -np.inf).max(1, keepdims=True)
        rel = np.where(valid, (sc - lo) / np.maximum(hi - lo, 1e-12), 0.0)  # (B, C) in [0, 1]
        V = self.vectors[np.clip(ids, 0, None)]  # (B, C, D)
        sim = V @ V.transpose(0, 2, 1)  # (B, C, C)
        max_sim = np.zeros((B, C), dtype=np.float32)
        avail = valid.copy()
        order = np.zeros((B, kk), dtype=np.int64)
        keep = np.zeros((B, kk), dtype=bool)
        rows = np.arange(B)
        for step in range(kk):
            mmr = self.cfg.lam * rel - (1 - self.cfg.lam) * max_sim
            mmr = np.where(avail, mmr, -np.inf)
            pick = np.argmax(mmr, axis=1)  # (B,) ties -> lowest position (= higher score)
            ok = avail[rows, pick]
            order[:, step], keep[:, step] = pick, ok
            avail[rows, pick] = False
            max_sim = np.maximum(max_sim, sim[rows, pick])  # (B, C)
        return order, keep


class MaxPerLabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attribute: str = Field("genre", description="item attribute holding the labels")
    max_per: int = Field(3, ge=1, description="at most this many slate items share a label")
    backfill: bool = Field(False, description="fill remaining slots with rule-breaking items, after the "
                           "compliant ones (else PAD)")


class MaxPerLabel:
    """Business rule: walk candidates by score; admit an item only while every one of its
    labels has been used fewer than ``max_per`` times in the slate so far."""

    def __init__(self, cfg: MaxPerLabelConfig | None = None, dataset: Any = None,
                 item_labels: np.ndarray | None = None) -> None:
        self.cfg = cfg or MaxPerLabelConfig()
        if item_labels is None:
            if dataset is None:
                raise ConfigError("max_per_label reranker needs a dataset or item_labels")
            item_labels = _item_matrix(dataset, self.cfg.attribute)
        self.labels = (np.asarray(item_labels) > 0).astype(np.int32)  # (N, L) multi-hot

    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray | None, k: int) -> Slate:
        ids, sc, ch = _inputs(candidates, scores)
        B, C = ids.shape
        by_score = np.argsort(-sc, axis=1, kind="stable")  # (B, C)
        ids_s, sc_s = np.take_along_axis(ids, by_score, 1), np.take_along_axis(sc, by_score, 1)
        valid = np.isfinite(sc_s) & (ids_s >= 0)
        lab = self.labels[np.clip(ids_s, 0, None)] * valid[..., None]  # (B, C, L)
        used = np.zeros((B, lab.shape[2]), dtype=np.int32)
        admitted = np.zeros((B, C), dtype=bool)
        n_in = np.zeros(B, dtype=np.int64)
        for c in range(C):  # C is the candidate count (hundreds), vectorised over users
            fits = valid[:, c] & ((used + lab[:, c]) <= self.cfg.max_per).all(1) & (n_in < k)  # (B,)
            admitted[:, c] = fits
            used += lab[:, c] * fits[:, None]
            n_in += fits
        backfilled = np.zeros_like(admitted)
        if self.cfg.backfill:  # rule-breakers demoted behind every compliant item, in score order
            rank = np.cumsum(valid & ~admitted, axis=1)
            backfilled = valid & ~admitted & (rank <= (k - n_in)[:, None])
        pos = np.arange(C)[None, :]
        key = np.where(admitted, pos, np.where(backfilled, C + pos, 2 * C + pos))
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(admitted | backfilled, order, 1)
        ch_s = None if ch is None else np.take_along_axis(ch, by_score, 1)
        return _pad_slate(_slate_from_order(ids_s, sc_s, ch_s, order, keep, candidates.channel_names), k)


def _pad_slate(s: Slate, k: int) -> Slate:
    K = s.item_ids.shape[1]
    if K >= k:
        return s
    pad = ((0, 0), (0, k - K))
    return Slate(np.pad(s.item_ids, pad, constant_values=PAD), np.pad(s.scores, pad, constant_values=-np.inf),
                 None if s.channel is None else np.pad(s.channel, pad, constant_values=-1), s.channel_names)


class Chain:
    """Apply rerankers in order; each stage's slate is the next stage's candidates.

    Intermediate stages keep ``max(width_factor * k, min_width)`` items (at most all of
    them): enough for later stages to fill k slots after their own removals, while MMR's
    quadratic work stays bounded.
    """

    def __init__(self, steps: Sequence[Any], width_factor: int = 4, min_width: int = 50) -> None:
        self.steps = list(steps)
        self.width_factor, self.min_width = width_factor, min_width

    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray | None, k: int) -> Slate:
        if not self.steps:
            return TopK().rerank(users, candidates, scores, k)
        slate = None
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            kk = k if last else min(candidates.item_ids.shape[1], max(self.width_factor * k, self.min_width))
            slate = step.rerank(users, candidates, scores, kk)
            candidates, scores = _as_candidates(slate), None
        return slate


# ----------------------------------------------------------------------------- factory

RERANKERS: dict[str, tuple[Callable[..., Any], type[BaseModel]]] = {
    "topk": (TopK, TopKConfig),
    "seen_filter": (SeenFilter, SeenFilterConfig),
    "mmr": (MMR, MMRConfig),
    "max_per_label": (MaxPerLabel, MaxPerLabelConfig),
}


def make_reranker(spec: dict | list | None, dataset: Any = None, **extra: Any) -> Any:
    """Build a reranker from ``{"name": ..., **config}`` or a list of them (a :class:`Chain`).

    ``extra`` keyword arguments (e.g. ``item_vectors=``) are passed to every stage that
    accepts them. ``None`` or ``[]`` gives :class:`TopK`.
    """
    if spec is None or spec == []:
        return TopK()
    if isinstance(spec, list):
        return Chain([make_reranker(s, dataset, **extra) for s in spec])
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in RERANKERS:
        raise ConfigError(f"unknown reranker {name!r}; known: {', '.join(sorted(RERANKERS))}")
    cls, cfg_cls = RERANKERS[name]
    try:
        cfg = cfg_cls(**spec)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"reranker {name!r} config: {errs}") from None
    kw = {k: v for k, v in extra.items() if k in cls.__init__.__code__.co_varnames}
    return cls(cfg, dataset, **kw)
