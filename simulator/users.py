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
    def __init__(self, world) -> None:
        self.world = world
        world.reset_state()

    def respond(self, user_ids, slate, now, rng) -> np.ndarray:
        pos = self.world.choose(user_ids, slate, now, rng)
        chosen = np.where(pos >= 0, slate[np.arange(len(pos)), np.clip(pos, 0, None)], -1)
        self.world.update(user_ids, chosen, now)
        return pos


class ReplayUser:
    """Replay against the log: ``future`` holds each user's full chronological log."""

    def __init__(self, log: Sequences, window: int) -> None:
        self.log, self.window = log, window

    def future_items(self, user: int, now: float) -> np.ndarray:
        items, ts = self.log.seq(user), self.log.times(user)
        start = np.searchsorted(ts, now, side="right")  # strictly after the request time
        return items[start:start + self.window]

    def respond(self, user_ids, slate, now, rng) -> np.ndarray:
        out = np.full(len(user_ids), -1, np.int64)
        for b, (u, t) in enumerate(zip(user_ids, now)):
            fut = self.future_items(int(u), float(t))
            if len(fut):
                hit = np.flatnonzero(np.isin(slate[b], fut) & (slate[b] >= 0))
                if len(hit):
                    out[b] = hit[0]
        return out
