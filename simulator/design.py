"""Experiment designs: which arm serves each request, and what the user is shown.

A :class:`Design` turns one batch of requests into per-arm work (``split``) and the arms'
slates back into the slates shown (``combine``), as a :class:`SlateBatch` that records the arm
and retrieval channel of origin of every position. The simulation loop knows nothing else
about the design, so a new design (interleaving) is one class.

- :class:`ABDesign`   each user is hashed (salted) to one arm for the whole run.
- :class:`SingleArm`  every user served by one arm: the world oracle's counterfactual pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from policies.base import PAD, Slate
from simulator.assignment import assign


@dataclass(frozen=True)
class SlateBatch:
    """What one batch of requests was shown: (B, K) arrays, padded with -1 / -inf / ''."""

    item_ids: np.ndarray  # (B, K) int64
    scores: np.ndarray  # (B, K) float32
    channel: np.ndarray  # (B, K) object: retrieval channel of origin
    arm: np.ndarray  # (B, K) int64: arm of origin (index into the design's arm names), -1 = padding
    latency_ms: np.ndarray  # (B,) float64: serving time per request (the arm call, amortised)

    @property
    def shape(self) -> tuple[int, int]:
        return self.item_ids.shape


class Design(Protocol):
    arm_names: tuple[str, ...]

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """Arm index per user (the randomisation unit), recorded in ``assignments``."""

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Rows of the batch each arm must serve: arm index -> row indices."""

    def combine(self, n: int, served: dict[int, tuple[np.ndarray, Slate, np.ndarray]],
                rng: np.random.Generator) -> SlateBatch:
        """The shown slates from each arm's (rows, slate, ms per request)."""


def place(n: int, served: dict[int, tuple[np.ndarray, Slate, np.ndarray]]) -> SlateBatch:
    """Each row shows the slate of the one arm that served it (rows of different arms are disjoint)."""
    K = max(sl.item_ids.shape[1] for _, sl, _ in served.values()) if served else 0
    ids = np.full((n, K), PAD, np.int64)
    scores = np.full((n, K), -np.inf, np.float32)
    channel = np.full((n, K), "", dtype=object)
    arm = np.full((n, K), -1, np.int64)
    lat = np.zeros(n)
    for a, (rows, sl, ms) in served.items():
        k = sl.item_ids.shape[1]
        ids[rows, :k], scores[rows, :k], lat[rows] = sl.item_ids, sl.scores, ms
        names = np.array(list(sl.channel_names) + [""], dtype=object)
        ch = sl.channel if sl.channel is not None else np.full(sl.item_ids.shape, -1)
        channel[rows, :k] = names[np.where(ch >= 0, ch, len(names) - 1)]
        arm[rows, :k] = np.where(sl.item_ids >= 0, a, -1)
    return SlateBatch(ids, scores, channel, arm, lat)


class ABDesign:
    """A/B(/n): a salted hash of the user id picks the arm, in proportion to the weights."""

    def __init__(self, arm_names: tuple[str, ...], weights: list[float], salt: str) -> None:
        self.arm_names, self.weights, self.salt = tuple(arm_names), list(weights), salt

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        return assign(np.asarray(user_ids, np.int64), self.weights, self.salt)

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        arms = self.assign(user_ids)
        return {int(a): np.flatnonzero(arms == a) for a in np.unique(arms)}

    def combine(self, n, served, rng) -> SlateBatch:
        return place(n, served)


class SingleArm(ABDesign):
    """Every user is served by arm ``index`` (the counterfactual "everyone gets this arm")."""

    def __init__(self, arm_names: tuple[str, ...], index: int) -> None:
        super().__init__(arm_names, [1.0 if i == index else 0.0 for i in range(len(arm_names))], "")
        self.index = index

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        return np.full(len(user_ids), self.index, np.int64)
