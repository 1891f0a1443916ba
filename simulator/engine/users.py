"""User models (recsim_ng-style): a response to a slate, and a separate state update.

- :class:`WorldUser`  the synthetic world's ground truth (MNL with no-click, position bias,
  fatigue): answers any slate, including ones never logged, and knows each position's
  click probability (``click_probs``: what the world oracle sums).
- :class:`ReplayUser` logged data: a user consumes a shown item if it is among their next
  ``window`` logged interactions after the request time, using ONLY that user's future logs;
  the earliest such item in the slate (by position) is consumed.
``respond`` has no side effect; ``update`` changes the model's state (fatigue) after the
simulation has recorded the answers. Histories (what the arms see) belong to the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from simulator.core.sequences import Sequences


@dataclass(frozen=True)
class Response:
    """Per request: the chosen slate position (-1 = none) and the consumed value (1 if unknown)."""

    position: np.ndarray  # (B,) int64
    value: np.ndarray  # (B,) float64
    # (B,) how good the slate was for the user (world: -log P(no click), the slate's inclusive value
    # over not clicking); None when the user model cannot say (replay)
    satisfaction: np.ndarray | None = None


class UserModel(Protocol):
    def respond(self, user_ids: np.ndarray, slate: np.ndarray, now: np.ndarray,
                rng: np.random.Generator) -> Response: ...

    def update(self, user_ids: np.ndarray, items: np.ndarray, now: np.ndarray) -> None: ...

    def reset(self) -> None: ...


class WorldUser:
    """Ground truth of the synthetic world. ``user_map``/``item_map`` translate the dataset's
    internal ids to the world's ids (from the raw ids; identity when the catalog kept them)."""

    def __init__(self, world, user_map: np.ndarray | None = None, item_map: np.ndarray | None = None) -> None:
        self.world = world
        self.user_map, self.item_map = user_map, item_map
        world.reset_state()

    def _to_world(self, user_ids, slate) -> tuple[np.ndarray, np.ndarray]:
        wu = user_ids if self.user_map is None else self.user_map[user_ids]
        ws = slate if self.item_map is None else np.where(slate >= 0, self.item_map[np.clip(slate, 0, None)], -1)
        return wu, ws

    def respond(self, user_ids, slate, now, rng) -> Response:
        wu, ws = self._to_world(user_ids, slate)
        p = self.world.choice_probs(wu, ws, now)
        pos = self.world.sample(p, rng)
        return Response(pos, np.ones(len(pos)), -np.log(np.maximum(p[:, -1], 1e-300)))

    def click_probs(self, user_ids, slate, now) -> np.ndarray:
        """(B, K) probability that each position is clicked (no sampling: the oracle's input)."""
        wu, ws = self._to_world(user_ids, slate)
        return self.world.choice_probs(wu, ws, now)[:, :-1]

    def update(self, user_ids, items, now) -> None:
        """Consumed items (dataset ids, -1 = none) tire the user of them (fatigue)."""
        wu, wi = self._to_world(np.asarray(user_ids), np.asarray(items)[:, None])
        self.world.update(wu, wi[:, 0], now)

    def reset(self) -> None:
        self.world.reset_state()


def raw_to_world(raw_ids: np.ndarray | None) -> np.ndarray | None:
    """Internal id -> world id (the world writes raw ids '0'..'n-1'); None when identity."""
    if raw_ids is None:
        return None
    m = np.asarray([int(r) for r in raw_ids], dtype=np.int64)
    return None if np.array_equal(m, np.arange(len(m))) else m


class ReplayUser:
    """Replay against the log: ``future`` holds each user's full chronological log."""

    def __init__(self, log: Sequences, window: int, values: np.ndarray | None = None) -> None:
        self.log, self.window = log, window
        self.values = values  # (N,) logged values (ratings) aligned with log.items, or None

    def future_items(self, user: int, now: float) -> np.ndarray:
        items, ts = self.log.seq(user), self.log.times(user)
        start = np.searchsorted(ts, now, side="right")  # strictly after the request time
        return items[start:start + self.window]

    def respond(self, user_ids, slate, now, rng) -> Response:
        out = np.full(len(user_ids), -1, np.int64)
        vals = np.ones(len(user_ids), np.float64)
        for b, (u, t) in enumerate(zip(user_ids, now, strict=True)):
            fut = self.future_items(int(u), float(t))
            if len(fut):
                hit = np.flatnonzero(np.isin(slate[b], fut) & (slate[b] >= 0))
                if len(hit):
                    out[b] = hit[0]
                    if self.values is not None:
                        start = self.log.indptr[int(u)] + np.searchsorted(self.log.times(int(u)), float(t), side="right")
                        j = int(np.flatnonzero(fut == slate[b, hit[0]])[0])
                        vals[b] = float(self.values[start + j])
        return Response(out, vals)

    def update(self, user_ids, items, now) -> None:
        """The log does not change with what was shown."""

    def reset(self) -> None:
        """Stateless."""


class LearnedUser:
    """A world learned from the logs (:mod:`simulator.engine.learned`): each slate is answered by a
    multinomial logit over its items and a no-click option.

    utility(position k) = taste(u, history) . q_i + b_i + log(1 / log2(k + 2))   (position bias)
                          - ``repeat`` if the user already has item i (logged or consumed here)
                          - ``fatigue`` x times the simulation made the user consume item i
    The no-click utility ``no_click`` is calibrated (:func:`calibrate_no_click`). The user's history
    (its taste) grows with what it consumes; ``reset`` restores the logged histories.
    """

    def __init__(self, params, histories: list, no_click: float, repeat: float = 3.0, fatigue: float = 1.0) -> None:
        self.params, self.no_click, self.repeat, self.fatigue = params, float(no_click), repeat, fatigue
        self._start = [np.asarray(h, np.int64) for h in histories]
        self.reset()

    def reset(self) -> None:
        self.hist = [list(h) for h in self._start]
        self.seen = [set(h.tolist()) for h in self._start]
        self.consumed: dict[tuple[int, int], int] = {}

    def utilities(self, user_ids, slate) -> np.ndarray:
        """(B, K) utilities of the slate's positions (-inf where nothing is shown)."""
        users = np.asarray(user_ids, np.int64)
        taste = self.params.taste(users, [self.hist[u] for u in users])
        s = np.clip(slate, 0, None)
        u = np.einsum("bd,bkd->bk", taste, self.params.item[s]) + self.params.bias[s]
        u = u + np.log(1.0 / np.log2(np.arange(slate.shape[1]) + 2.0))[None, :]
        for b, (uid, row) in enumerate(zip(users.tolist(), s.tolist(), strict=True)):
            for k, it in enumerate(row):
                if it in self.seen[uid]:
                    u[b, k] -= self.repeat + self.fatigue * self.consumed.get((uid, it), 0)
        return np.where(slate >= 0, u, -np.inf)

    def choice_probs(self, user_ids, slate, now=None) -> np.ndarray:
        """(B, K+1): the slate positions, then no click."""
        u = self.utilities(user_ids, slate)
        logits = np.concatenate([u, np.full((len(u), 1), self.no_click)], 1)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def click_probs(self, user_ids, slate, now) -> np.ndarray:
        return self.choice_probs(user_ids, slate)[:, :-1]

    def respond(self, user_ids, slate, now, rng) -> Response:
        p = self.choice_probs(user_ids, slate)
        cdf = np.cumsum(p, axis=1)
        idx = (cdf < rng.random((len(p), 1)) * cdf[:, -1:]).sum(1)
        return Response(np.where(idx >= slate.shape[1], -1, idx).astype(np.int64), np.ones(len(p)))

    def update(self, user_ids, items, now) -> None:
        for u, it in zip(np.asarray(user_ids).tolist(), np.asarray(items).tolist(), strict=True):
            if it >= 0:
                self.hist[u].append(it)
                self.seen[u].add(it)
                self.consumed[(u, it)] = self.consumed.get((u, it), 0) + 1


def interaction_rate(lengths: np.ndarray, n_items: int, k: int) -> float:
    """The logs' interaction rate per slate: the chance that a random slate of ``k`` catalog items holds
    an item the user interacted with in the log, averaged over users (no impressions are logged)."""
    d = np.clip(np.asarray(lengths, np.float64) / max(n_items, 1), 0.0, 1.0)
    return float(np.mean(1.0 - (1.0 - d) ** k))


def calibrate_no_click(params, histories: list, n_items: int, k: int, target: float, seed: int = 0,
                       n: int = 2000) -> float:
    """The no-click utility at which random slates of ``k`` items (the user's own taste, no repeat
    penalty: preference only) are clicked at rate ``target`` (bisection, seeded sample)."""
    rng = np.random.default_rng([seed, 0xC41])
    users = rng.integers(0, len(histories), n)
    slate = np.stack([rng.choice(n_items, k, replace=False) for _ in range(n)])
    model = LearnedUser(params, [np.zeros(0, np.int64)] * len(histories), 0.0)
    model.hist = [list(h) for h in histories]  # taste from the histories, no item counted as seen
    u = model.utilities(users, slate)
    lo, hi = -30.0, 30.0
    for _ in range(60):
        c = (lo + hi) / 2
        m = u.max(1, keepdims=True)
        click = np.exp(u - m).sum(1) / (np.exp(u - m).sum(1) + np.exp(c - m[:, 0]))
        lo, hi = (c, hi) if click.mean() > target else (lo, c)
    return (lo + hi) / 2
