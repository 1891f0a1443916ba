"""Which items an arm may serve at a request (items released during a run; ID models' known items)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemAvailability:
    """What an arm may serve at a request: only items released by the request time, and of those only
    the items each policy can score (an ID model: the items of the data it was fitted on; a model
    that embeds items from their text: every released item). Policies not in ``known``: every item."""

    release: np.ndarray  # (N,) float64 release time per item
    known: dict[str, np.ndarray]  # policy -> (N,) bool

    def allowed(self, name: str, now: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """(B, N) or, with candidate ``ids`` (B, C), (B, C): True where policy ``name`` may serve it."""
        cols = np.arange(len(self.release)) if ids is None else np.clip(ids, 0, None)
        ok = self.release[cols] <= now[:, None]
        known = self.known.get(name)
        if known is not None:
            ok &= known[cols]
        return ok if ids is None else ok & (ids >= 0)
