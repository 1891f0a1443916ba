"""Item-kNN: item-item cosine similarity from co-occurrence in training sequences.

A user's score for item j = sum over the user's recent history items i of sim(i, j)
(optionally decayed by recency). Similarities are kept for the top ``neighbours`` per item.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from policies.base import FullScorePolicy, UserBatch
from policies.registry import register


class ItemKNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    neighbours: int = Field(100, ge=1)
    history: int = Field(20, ge=1, description="use the last N history items")
    decay: float = Field(0.9, gt=0, le=1, description="weight of the i-th most recent item is decay**i")
    shrink: float = Field(10.0, ge=0, description="cosine = co / (|i| |j| + shrink): damps rare pairs")

    @classmethod
    def tiny(cls) -> ItemKNNConfig:
        return cls(neighbours=10, history=5)


@register("itemknn", config=ItemKNNConfig)
class ItemKNNPolicy(FullScorePolicy):
    """Item-kNN over co-occurrence cosine similarity (user-item incidence)."""

    def __init__(self, cfg: ItemKNNConfig | None = None) -> None:
        self.cfg = cfg or ItemKNNConfig()
        self.sim: sp.csr_matrix | None = None
        self.n_items = 0

    def fit(self, dataset, split, progress: bool = True) -> ItemKNNPolicy:
        tr = split.train
        n = dataset.n_items
        users = np.repeat(np.arange(tr.n_users), tr.lengths)
        X = sp.csr_matrix((np.ones(len(tr.items), np.float32), (users, tr.items)), shape=(tr.n_users, n))
        X.data[:] = 1.0
        co = (X.T @ X).tocoo()  # (N, N) co-occurrence counts
        keep = co.row != co.col
        r, c, d = co.row[keep], co.col[keep], co.data[keep].astype(np.float32)
        norm = np.sqrt(np.asarray(X.sum(0)).ravel()).astype(np.float32)  # (N,)
        d = d / (norm[r] * norm[c] + self.cfg.shrink)  # shrunk cosine
        co = sp.csr_matrix((d, (r, c)), shape=(n, n))
        self.sim = self._top_k(co, self.cfg.neighbours)
        self.n_items = n
        return self

    @staticmethod
    def _top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for i in range(m.shape[0]):
            s, e = m.indptr[i], m.indptr[i + 1]
            if e == s:
                continue
            d, c = m.data[s:e], m.indices[s:e]
            if len(d) > k:
                top = np.argpartition(-d, k - 1)[:k]
                d, c = d[top], c[top]
            rows.append(np.full(len(c), i))
            cols.append(c)
            vals.append(d)
        if not rows:
            return sp.csr_matrix(m.shape, dtype=np.float32)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)

    def history_only(self) -> bool:
        return True  # the last items of the history

    def score_all(self, users: UserBatch) -> np.ndarray:
        B = len(users)
        rows, cols, vals = [], [], []
        for b, h in enumerate(users.histories):
            h = np.asarray(h)[-self.cfg.history:][::-1]
            rows.append(np.full(len(h), b))
            cols.append(h)
            vals.append(self.cfg.decay ** np.arange(len(h)))
        W = sp.csr_matrix((np.concatenate(vals) if vals else [], (np.concatenate(rows) if rows else [],
                           np.concatenate(cols) if cols else [])), shape=(B, self.n_items), dtype=np.float32)
        out = np.asarray((W @ self.sim).todense(), dtype=np.float32)
        return out

    def save(self, path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        sp.save_npz(p / "sim.npz", self.sim)
        (p / "config.json").write_text(json.dumps({"config": self.cfg.model_dump(), "n_items": self.n_items}))

    @classmethod
    def load(cls, path) -> ItemKNNPolicy:
        d = json.loads((Path(path) / "config.json").read_text())
        pol = cls(ItemKNNConfig(**d["config"]))
        pol.n_items = d["n_items"]
        pol.sim = sp.load_npz(Path(path) / "sim.npz").tocsr()
        return pol
