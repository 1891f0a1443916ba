"""Reward models for the model-based estimators (DM, DR, DR-OS, Cascade-DR).

:class:`ItemPositionModel` predicts the click rate of an item at a position as the logged
item-position rate shrunk towards the position's rate (``prior`` pseudo-observations): no context,
so it is biased wherever the target and logging policies differ in *who* sees an item; the DR
estimators correct that bias with the weights. :func:`cross_fit` predicts each unit with a model
fitted on the other folds (as OBP's ``RegressionModel.fit_predict(n_folds=...)``), so a row's own
reward never enters its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ItemPositionModel:
    prior: float = 20.0
    rate: dict = field(default_factory=dict, repr=False)
    position_rate: np.ndarray | None = field(default=None, repr=False)

    def fit(self, items: np.ndarray, positions: np.ndarray, rewards: np.ndarray) -> ItemPositionModel:
        k = int(positions.max()) + 1 if len(positions) else 1
        n_k = np.bincount(positions, minlength=k).astype(float)
        self.position_rate = np.bincount(positions, weights=rewards, minlength=k) / np.maximum(n_k, 1.0)
        keys = items.astype(np.int64) * k + positions
        uniq, inv = np.unique(keys, return_inverse=True)
        n = np.bincount(inv).astype(float)
        s = np.bincount(inv, weights=rewards)
        prior = self.position_rate[uniq % k]
        self.rate = dict(zip(uniq.tolist(), ((s + self.prior * prior) / (n + self.prior)).tolist(), strict=True))
        self._k = k
        return self

    def predict(self, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
        pos = np.minimum(positions, self._k - 1)
        keys = (items.astype(np.int64) * self._k + pos).tolist()
        base = self.position_rate[pos]
        return np.array([self.rate.get(key, b) for key, b in zip(keys, base.tolist(), strict=True)])


def cross_fit(units: np.ndarray, items: np.ndarray, positions: np.ndarray, rewards: np.ndarray,
              queries: list[tuple[np.ndarray, np.ndarray]], n_folds: int = 2, prior: float = 20.0,
              seed: int = 0) -> list[np.ndarray]:
    """Out-of-fold predictions: rows are split into ``n_folds`` folds by unit; each fold's rows of
    every query (item, position) array pair are predicted by a model fitted on the other folds."""
    uniq, inv = np.unique(units, return_inverse=True)
    fold = np.random.default_rng(seed).integers(0, n_folds, len(uniq))[inv]
    out = [np.zeros(len(units)) for _ in queries]
    for f in range(n_folds):
        train, test = fold != f, fold == f
        if not test.any():
            continue
        model = ItemPositionModel(prior).fit(items[train], positions[train], rewards[train]) if train.any() else \
            ItemPositionModel(prior).fit(items, positions, rewards)
        for o, (qi, qp) in zip(out, queries, strict=True):
            o[test] = model.predict(qi[test], qp[test])
    return out
