"""Shared machinery for sequential models (SASRec, HSTU, and the HLLM user model's ID twin).

A sequence model is an ``nn.Module`` with
  ``forward(items (B, T) int64 [0 = padding, item i -> i+1], ts (B, T) float64 seconds,
  next_ts (B, T) float64 | None: the time of the event each position predicts) -> (B, T, D)``
  ``item_embeddings() -> (n_items + 1, D)`` (row 0 is padding)
and :class:`SequencePolicy` turns it into a registered policy: training (``policies.train``),
``score_all`` (last position's state against every item), and save/load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.ann import AnnServing
from policies.base import UserBatch
from policies.tensors import device, next_times, pad_left
from policies.train import train_sequence_model
from simulator.core.errors import NotFittedError


class SequenceModelConfig(BaseModel):
    """Fields shared by every ID-based sequence model (architecture size + training recipe)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    max_len: int = Field(50, ge=2)
    hidden: int = Field(64, ge=4)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    loss: Literal["ce", "sampled_ce", "bce"] = "ce"
    n_negatives: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(200, ge=1)
    patience: int = Field(5, ge=1, description="evaluations without improvement before stopping")
    eval_every: int = Field(2, ge=1)
    windows: Literal["last", "all"] = Field(
        "all", description="training windows: all of each history (every interaction a target once), or "
                           "only the last max_len items per user (the original SASRec recipe)")


class SequencePolicy(AnnServing):
    """Base policy for ID-based sequence models. Subclasses set ``build_model(cfg, n_items)``.
    Large catalogs are served by ANN retrieval over the item embeddings (``AnnServing``)."""

    cfg: BaseModel
    model: torch.nn.Module | None

    def __init__(self, cfg: BaseModel | None = None) -> None:
        self.cfg = cfg or self.config_cls()  # type: ignore[attr-defined]
        self.model = None
        self.n_items = 0
        self.history: list[dict] = []

    def __getstate__(self) -> dict:
        """Pickled / deep-copied without the ANN index (a faiss object): each copy builds its own."""
        return {**self.__dict__, "_ann": None, "_items": None}

    def build_model(self, n_items: int) -> torch.nn.Module:
        raise NotImplementedError

    def user_vectors(self, users: UserBatch) -> np.ndarray:
        out = [self.user_states(sub).float().cpu().numpy() for _, sub in users.chunks(512)]
        return np.concatenate(out) if out else np.zeros((0, self.cfg.hidden), np.float32)

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """(N, D) item embeddings (without the padding row), one array while the weights are the same."""
        w = self.model.item_embeddings()
        cached = getattr(self, "_items", None)
        if cached is None or cached[0] is not w or cached[1] != w._version:
            self._items = (w, w._version, w[1:].float().cpu().numpy())
        return self._items[2]

    def fit(self, dataset, split, progress: bool = True) -> SequencePolicy:
        self.n_items = dataset.n_items
        torch.manual_seed(self.cfg.seed)
        self.model = self.build_model(self.n_items)
        self.history = train_sequence_model(self, split, progress)
        return self

    @torch.no_grad()
    def user_states(self, users: UserBatch) -> torch.Tensor:
        if self.model is None:
            raise NotFittedError(f"policy {self.name!r} is not fitted: call fit() or load() first")
        ids, ts = pad_left(users.histories, self.cfg.max_len, users.timestamps)
        self.model.eval()
        dev = next(self.model.parameters()).device
        ts_t = torch.from_numpy(ts)  # (B, T) float64 seconds
        # the last position predicts for the request time (users.now), when the history has times
        now = None if users.now is None or users.timestamps is None else torch.as_tensor(users.now, dtype=torch.float64)
        nxt = next_times(ts_t, now)
        h = self.model(torch.from_numpy(ids).to(dev), ts_t.to(dev), nxt.to(dev))  # (B, T, D)
        return h[:, -1]  # (B, D)

    @torch.no_grad()
    def score_all(self, users: UserBatch) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for s, sub in users.chunks(512):
            u = self.user_states(sub)  # (B, D)
            emb = self.model.item_embeddings()[1:]  # (N, D)
            out[s:s + len(sub)] = (u @ emb.T).float().cpu().numpy()
        return out

    def save(self, path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        (p / "config.json").write_text(json.dumps({"config": self.cfg.model_dump(), "n_items": self.n_items,
                                                   "history": self.history}))
        torch.save(self.model.state_dict(), p / "model.pt")

    @classmethod
    def load(cls, path) -> SequencePolicy:
        p = Path(path)
        d = json.loads((p / "config.json").read_text())
        pol = cls(cls.config_cls(**d["config"]))  # type: ignore[attr-defined]
        pol.n_items = d["n_items"]
        pol.history = d.get("history", [])
        pol.model = pol.build_model(pol.n_items)
        pol.model.load_state_dict(torch.load(p / "model.pt", map_location="cpu", weights_only=True))
        pol.model.to(device())
        return pol
