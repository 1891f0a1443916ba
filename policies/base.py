"""Contracts shared by every policy (ID-based and HLLM) and by the simulator's pipeline.

All calls are batch-first: one call serves many users. Item and user ids are the dataset's
contiguous 0-based ids (see ``simulator.core.sequences``).

- :class:`UserBatch`   who is asking: ids, chronological histories (ragged), request time.
- :class:`Candidates`  (B, k) item ids + scores (+ channel of origin), padded with -1 / -inf.
- :class:`Slate`       the final ranked list shown to each user.
- :class:`Retriever`   ``retrieve(users, k, exclude) -> Candidates``
- :class:`Scorer`      ``score(users, items) -> (B, n) scores`` for given candidate ids
- :class:`Reranker`    ``rerank(users, candidates, scores, k) -> Slate``
- :class:`Policy`      fit / save / load + retrieval and/or scoring; registered once by name.

:class:`FullScorePolicy` gives both retrieval and scoring to any model that can score every
item for a batch of users (``score_all``), with exact top-k and exclusion handled once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from simulator.core.sequences import Dataset, LeaveOneOut

PAD = -1  # item id used to pad Candidates / Slate rows


@dataclass(frozen=True)
class UserBatch:
    """A batch of users at request time.

    ``histories[b]`` is user b's chronological item history (what the policy may use);
    ``timestamps[b]`` the matching times (or None); ``now`` the request times (B,) or None.
    """

    user_ids: np.ndarray  # (B,) int64
    histories: Sequence[np.ndarray]  # B ragged int64 arrays
    timestamps: Sequence[np.ndarray] | None = None
    now: np.ndarray | None = None  # (B,) float64

    def __post_init__(self) -> None:
        if len(self.histories) != len(self.user_ids):
            raise ValueError("UserBatch: histories and user_ids differ in length")

    def __len__(self) -> int:
        return len(self.user_ids)

    def slice(self, sl: slice) -> UserBatch:
        """The users in ``sl`` (a contiguous sub-batch)."""
        return UserBatch(self.user_ids[sl], self.histories[sl],
                         None if self.timestamps is None else self.timestamps[sl],
                         None if self.now is None else self.now[sl])

    def chunks(self, size: int):
        """Yield (start, sub-batch) pairs of at most ``size`` users, in order."""
        for s in range(0, len(self), size):
            yield s, self.slice(slice(s, s + size))

    @classmethod
    def from_sequences(cls, seqs: Any, users: np.ndarray | None = None,
                       now: np.ndarray | None = None) -> UserBatch:
        """Build a batch from :class:`~simulator.core.sequences.Sequences` (all users by default)."""
        users = np.arange(seqs.n_users, dtype=np.int64) if users is None else np.asarray(users, np.int64)
        return cls(users, [seqs.seq(int(u)) for u in users], [seqs.times(int(u)) for u in users], now)


@dataclass(frozen=True)
class Candidates:
    """Per-user candidate lists: (B, k) ids padded with ``PAD``, scores padded with -inf.

    ``channel`` (optional, (B, k) int16) indexes ``channel_names``: which retrieval channel
    produced each candidate.
    """

    item_ids: np.ndarray  # (B, k) int64
    scores: np.ndarray  # (B, k) float32
    channel: np.ndarray | None = None  # (B, k) int16
    channel_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.item_ids.shape != self.scores.shape:
            raise ValueError(f"Candidates: ids {self.item_ids.shape} vs scores {self.scores.shape}")


@dataclass(frozen=True)
class Propensity:
    """A stochastic slate's logging probabilities (NaN at PAD positions): of the shown item at
    each position (marginal), of the prefix up to each position (cascade) and of the slate."""

    position: np.ndarray  # (B, K) float64
    cascade: np.ndarray  # (B, K) float64
    slate: np.ndarray  # (B,) float64


@dataclass(frozen=True)
class Slate:
    """The ranked list shown to each user: (B, K) ids (PAD where shorter), scores, channel, and
    the logging propensities when the slate was sampled (None: a deterministic slate).

    ``channel`` is the channel the merge credited (the first in priority); ``found_by`` (a bitmask
    over ``channel_names``, bit c = channel c retrieved the item) holds every channel that found it."""

    item_ids: np.ndarray  # (B, K) int64
    scores: np.ndarray  # (B, K) float32
    channel: np.ndarray | None = None  # (B, K) int16
    channel_names: tuple[str, ...] = ()
    propensity: Propensity | None = None
    found_by: np.ndarray | None = None  # (B, K) int64 bitmask over channel_names; 0 at PAD


@runtime_checkable
class Retriever(Protocol):
    def retrieve(self, users: UserBatch, k: int,
                 exclude: Sequence[np.ndarray] | None = None) -> Candidates: ...


@runtime_checkable
class Scorer(Protocol):
    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Reranker(Protocol):
    def rerank(self, users: UserBatch, candidates: Candidates, scores: np.ndarray,
               k: int) -> Slate: ...


@runtime_checkable
class Policy(Protocol):
    """A trainable model. ``fit`` on a leave-one-out split (train part + valid targets for
    early stopping; ``progress=False``: no progress bar), ``save``/``load`` to a directory."""

    name: ClassVar[str]

    def fit(self, dataset: Dataset, split: LeaveOneOut, progress: bool = True) -> Policy: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Policy: ...


def topk_excluding(scores: np.ndarray, k: int,
                   exclude: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k per row of ``scores`` (B, n) with excluded ids masked; ties -> lower id first.

    Returns (ids (B, k) int64, scores (B, k) float32); rows with fewer than k eligible items
    are padded with ``PAD`` / -inf. ``scores`` is modified in place where excluded.
    """
    B, n = scores.shape
    scores = scores.astype(np.float32, copy=False)
    if exclude is not None:
        ex = [np.zeros(0, np.int64) if e is None else np.asarray(e, dtype=np.int64) for e in exclude]
        if ex:
            rows = np.repeat(np.arange(len(ex)), [len(e) for e in ex])
            scores[rows, np.concatenate(ex)] = -np.inf
    k_eff = min(k, n)
    if k_eff <= 0:
        return np.full((B, k), PAD, np.int64), np.full((B, k), -np.inf, np.float32)
    part = _top_candidates(scores, k_eff)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # by -score, then id: deterministic
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(top)] = PAD
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=PAD)
        top = np.pad(top, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return ids, top


def _top_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, k) column ids of the k best scores per row, ties at the k-th score resolved towards
    lower ids (so the set is the first k of the order (-score, id)); unordered.

    ``torch.topk`` finds them (a partial selection, several times faster than a per-row
    ``argpartition`` on wide rows); the rare rows whose k-th score is tied with an item left out
    are redone exactly."""
    import torch

    B, n = scores.shape
    if k >= n:
        return np.tile(np.arange(n), (B, 1))
    t = torch.from_numpy(np.ascontiguousarray(scores))
    vals, idx = torch.topk(t, k, dim=1, sorted=False)
    kth = vals.min(dim=1).values.numpy()  # (B,)
    ties = np.count_nonzero(scores >= kth[:, None], axis=1) > k  # a tie at the k-th score left out
    idx = idx.numpy().astype(np.int64)
    for b in np.flatnonzero(ties & np.isfinite(kth)):
        row = scores[b]
        above = np.flatnonzero(row > kth[b])
        tied = np.flatnonzero(row == kth[b])[:k - len(above)]
        idx[b] = np.concatenate([above, tied])
    return idx


class FullScorePolicy:
    """Mixin: retrieval and candidate scoring from ``score_all(users) -> (B, n_items)``.

    Subclasses implement ``score_all``; ``retrieve`` is exact top-k with exclusion and
    ``score`` gathers candidate scores (PAD candidates score -inf).
    """

    n_items: int
    # True for a model that scores an item from its text (it can serve an item released after its
    # fit); False: an ID model, which knows only the items of the data it was fitted on
    embeds_item_text: ClassVar[bool] = False

    def score_all(self, users: UserBatch) -> np.ndarray:  # (B, n_items) float32
        raise NotImplementedError

    def history_only(self) -> bool:
        """Whether this policy's outputs for a request are a function of the user id and the history
        alone (not of the timestamps, the request time, random draws per call or anything that changes
        while serving): the oracle's counterfactual passes then reuse a slate for the same request
        (``simulator.engine.oracle.ReusingRuntime``). False unless a policy says so."""
        return False

    def nearline_seconds(self) -> float:
        """Wall seconds this policy has spent so far on work a deployment does outside the request
        path (HLLM ``tables`` serving: its user-embedding table's refresh, run inline at first use);
        a pipeline leaves it out of the requests' latency. 0 unless a policy says so."""
        return 0.0

    def start_serving(self, users: UserBatch) -> None:
        """A run is about to serve ``users`` (their histories and the run's start time as ``now``):
        the work a deployment does before traffic arrives (HLLM ``tables``: its user-embedding
        table). It must not change what any request is served. Nothing unless a policy says so."""

    def full_scoring(self) -> bool:
        """Whether a pipeline scores this policy over the whole catalog (one ``score_all`` per
        batch, shared by its stages); False: it serves through ``retrieve`` and ``score`` only
        (a large catalog behind an ANN index, ``policies.ann.AnnServing``)."""
        return True

    def retrieve(self, users: UserBatch, k: int,
                 exclude: Sequence[np.ndarray] | None = None) -> Candidates:
        ids, sc = topk_excluding(self.score_all(users), k, exclude)
        return Candidates(ids, sc)

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        full = self.score_all(users)
        out = np.take_along_axis(full, np.clip(items, 0, None), axis=1).astype(np.float32)
        out[items < 0] = -np.inf
        return out
