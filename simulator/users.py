"""User response models (recsim_ng-style: state + response to a slate).

- :class:`WorldUser`  the synthetic world's ground truth (MNL with no-click, position bias,
  fatigue): answers any slate, including ones never logged.
- :class:`ReplayUser` logged data: a user consumes a shown item if it is among their next
  ``window`` logged interactions after the request time, using ONLY that user's future logs;
  the earliest such item in the slate (by position) is consumed.
Both return, per request, the chosen position (-1 = none); histories are updated by the caller.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simulator.data.sequences import Sequences


class UserModel(Protocol):
    def respond(self, user_ids: np.ndarray, slate: np.ndarray, now: np.ndarray,
                rng: np.random.Generator) -> np.ndarray: ...


class WorldUser:
    """Ground truth of the synthetic world. ``user_map``/``item_map`` translate the dataset's
    internal ids to the world's ids (from the raw ids; identity when the catalog kept them)."""

    def __init__(self, world, user_map: np.ndarray | None = None, item_map: np.ndarray | None = None) -> None:
        self.world = world
        self.user_map, self.item_map = user_map, item_map
        world.reset_state()

    def respond(self, user_ids, slate, now, rng) -> np.ndarray:
        wu = user_ids if self.user_map is None else self.user_map[user_ids]
        ws = slate if self.item_map is None else np.where(slate >= 0, self.item_map[np.clip(slate, 0, None)], -1)
        pos = self.world.choose(wu, ws, now, rng)
        chosen = np.where(pos >= 0, ws[np.arange(len(pos)), np.clip(pos, 0, None)], -1)
        self.world.update(wu, chosen, now)
        return pos


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
        self.last_values: np.ndarray | None = None  # value of each consumed item of the last respond()

    def future_items(self, user: int, now: float) -> np.ndarray:
        items, ts = self.log.seq(user), self.log.times(user)
        start = np.searchsorted(ts, now, side="right")  # strictly after the request time
        return items[start:start + self.window]

    def respond(self, user_ids, slate, now, rng) -> np.ndarray:
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
        self.last_values = vals
        return out
