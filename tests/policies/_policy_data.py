"""Tiny deterministic sequence data for policy tests (no catalog, builds in milliseconds).

Users walk the item ring ``i -> i+1 (mod N)`` with occasional random jumps, so a sequence
model can learn the next item while popularity and random cannot.
"""

from __future__ import annotations

import numpy as np

from simulator.core.sequences import Dataset, LeaveOneOut, Sequences


def tiny_dataset(n_users: int = 80, n_items: int = 40, seed: int = 0, jump: float = 0.1) -> Dataset:
    rng = np.random.default_rng(seed)
    seqs, tss = [], []
    for _ in range(n_users):
        n = int(rng.integers(8, 16))
        s = [int(rng.integers(n_items))]
        for _ in range(n - 1):
            s.append(int(rng.integers(n_items)) if rng.random() < jump else (s[-1] + 1) % n_items)
        seqs.append(s)
        tss.append(np.cumsum(rng.exponential(3600.0, n)) + 1e9)
    genres = np.array([f"g{i % 4}" + (" g9" if i % 7 == 0 else "") for i in range(n_items)], dtype=object)
    return Dataset(
        name="tiny-ring", n_users=n_users, n_items=n_items, sequences=Sequences.from_lists(seqs, tss),
        item_text=[f"item {i} about topic {i % 4}" for i in range(n_items)],
        item_attrs={"genre": genres, "topic": np.arange(n_items) % 4},
    )


def tiny_split(ds: Dataset) -> LeaveOneOut:
    return LeaveOneOut.from_sequences(ds.sequences)
