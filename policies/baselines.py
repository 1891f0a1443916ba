"""Non-learned baselines: ``random`` and ``popularity`` (global counts or a recent window)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.ann import ANN_MIN_ITEMS
from policies.base import PAD, Candidates, FullScorePolicy, UserBatch
from policies.registry import register


class RandomConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0

    @classmethod
    def tiny(cls) -> RandomConfig:
        return cls()


@register("random", config=RandomConfig)
class RandomPolicy(FullScorePolicy):
    """Uniformly random scores; a user's scores are a deterministic function of (seed, user)."""

    def __init__(self, cfg: RandomConfig | None = None) -> None:
        self.cfg = cfg or RandomConfig()
        self.n_items = 0

    def fit(self, dataset, split, progress: bool = True) -> RandomPolicy:
        self.n_items = dataset.n_items
        return self

    def history_only(self) -> bool:
        return True  # a function of (seed, user)

    def score_all(self, users: UserBatch) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for b, u in enumerate(users.user_ids):
            out[b] = np.random.default_rng([self.cfg.seed, int(u)]).random(self.n_items, dtype=np.float32)
        return out

    def save(self, path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / "policy.json").write_text(json.dumps({"config": self.cfg.model_dump(), "n_items": self.n_items}))

    @classmethod
    def load(cls, path) -> RandomPolicy:
        d = json.loads((Path(path) / "policy.json").read_text())
        p = cls(RandomConfig(**d["config"]))
        p.n_items = d["n_items"]
        return p


class PopularityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    window_days: float | None = Field(None, gt=0, description="count only the last N days of training logs")

    @classmethod
    def tiny(cls) -> PopularityConfig:
        return cls()


@register("popularity", config=PopularityConfig)
class PopularityPolicy(FullScorePolicy):
    """Item interaction counts in the training logs (all time, or a recent window)."""

    def __init__(self, cfg: PopularityConfig | None = None) -> None:
        self.cfg = cfg or PopularityConfig()
        self.counts = np.zeros(0, dtype=np.float32)

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def fit(self, dataset, split, progress: bool = True) -> PopularityPolicy:
        tr = split.train
        items, ts = tr.items, tr.ts
        if self.cfg.window_days is not None and len(ts):
            keep = ts >= ts.max() - self.cfg.window_days * 86400.0
            items = items[keep]
        c = np.bincount(items, minlength=dataset.n_items).astype(np.float32)
        # tiny deterministic tie-break towards lower ids keeps rankings stable
        self.counts = c - np.arange(len(c), dtype=np.float32) * 1e-6
        return self

    def history_only(self) -> bool:
        return True  # the training counts

    def score_all(self, users: UserBatch) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()

    def full_scoring(self) -> bool:
        """A catalog of ANN size is served from the precomputed ranking (``retrieve``), not scored in
        full for every request (5 ms a request at 500k items)."""
        return self.n_items < ANN_MIN_ITEMS

    def _ranking(self) -> tuple[np.ndarray, np.ndarray]:
        """(items by decreasing count, ties to the lower id; each item's place in that order)."""
        if getattr(self, "_order", None) is None or len(self._order) != self.n_items:
            self._order = np.argsort(-self.counts, kind="stable")
            self._place = np.empty(self.n_items, np.int64)
            self._place[self._order] = np.arange(self.n_items)
        return self._order, self._place

    def retrieve(self, users: UserBatch, k: int, exclude=None) -> Candidates:
        """The k most popular items not in ``exclude``, read off the ranking: the same ids and scores
        as the exact top-k over ``score_all`` (``topk_excluding``), in O(k + excluded) per request."""
        order, place = self._ranking()
        ex = [np.asarray(e if e is not None else [], np.int64) for e in exclude] if exclude is not None else []
        head = order[:min(self.n_items, k + max((len(e) for e in ex), default=0))]  # (H,)
        blocked = np.zeros((len(users), len(head)), bool)
        if ex:
            rows = np.repeat(np.arange(len(ex)), [len(e) for e in ex])
            pos = place[np.concatenate(ex)] if rows.size else np.zeros(0, np.int64)
            blocked[rows[pos < len(head)], pos[pos < len(head)]] = True
        rank = np.cumsum(~blocked, 1) - 1  # (B, H) the place among the allowed items
        r, c = np.nonzero(~blocked & (rank < k))
        ids = np.full((len(users), k), PAD, np.int64)
        scores = np.full((len(users), k), -np.inf, np.float32)
        ids[r, rank[r, c]], scores[r, rank[r, c]] = head[c], self.counts[head[c]]
        return Candidates(ids, scores)

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        return np.where(items >= 0, self.counts[np.clip(items, 0, None)], -np.inf).astype(np.float32)

    def save(self, path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        np.save(p / "counts.npy", self.counts)
        (p / "config.json").write_text(self.cfg.model_dump_json())

    @classmethod
    def load(cls, path) -> PopularityPolicy:
        p = cls(PopularityConfig.model_validate_json((Path(path) / "config.json").read_text()))
        p.counts = np.load(Path(path) / "counts.npy")
        return p
