"""In-memory sequence data shared by every model: CSR user sequences and leave-one-out splits.

Conventions (used by every package):
- item ids and user ids are contiguous 0-based ints (``0..n_items-1``); models that need a
  padding index shift by one internally and never leak it through the API;
- a user's sequence is chronological with a stable tie-break (original log order);
- arrays are numpy; ``indptr`` has length ``n_users + 1`` (CSR layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Sequences:
    """Chronological item sequences of many users in CSR layout.

    ``items[indptr[u]:indptr[u+1]]`` is user ``u``'s sequence, ``ts`` the matching timestamps
    (seconds, float64).
    """

    indptr: np.ndarray  # (U+1,) int64
    items: np.ndarray  # (N,) int64
    ts: np.ndarray  # (N,) float64

    def __post_init__(self) -> None:
        if len(self.indptr) == 0 or self.indptr[0] != 0 or self.indptr[-1] != len(self.items):
            raise ValueError("Sequences: indptr must start at 0 and end at len(items)")
        if len(self.items) != len(self.ts):
            raise ValueError("Sequences: items and ts must have the same length")

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return len(self.items)

    def seq(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u]:self.indptr[u + 1]]

    def times(self, u: int) -> np.ndarray:
        return self.ts[self.indptr[u]:self.indptr[u + 1]]

    def as_lists(self) -> list[np.ndarray]:
        return np.split(self.items, self.indptr[1:-1])

    @classmethod
    def from_lists(cls, seqs: list, ts: list | None = None) -> Sequences:
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = (np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
                 if len(seqs) and indptr[-1] > 0 else np.zeros(0, np.int64))
        if ts is None:
            t = np.concatenate([np.arange(n, dtype=np.float64) for n in lengths]) if len(seqs) else np.zeros(0)
        else:
            t = (np.concatenate([np.asarray(x, dtype=np.float64) for x in ts])
                 if indptr[-1] > 0 else np.zeros(0))
        return cls(indptr, items, t.astype(np.float64))

    def keep(self, mask: np.ndarray) -> Sequences:
        """The interactions where ``mask`` (N,) is True, in order; every user stays (maybe empty)."""
        users = np.repeat(np.arange(self.n_users), self.lengths)
        counts = np.bincount(users[mask], minlength=self.n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Sequences(indptr, self.items[mask], self.ts[mask])



def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``concat([arange(n) for n in lengths])`` vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    offsets = np.repeat(ends - lengths, lengths)
    return np.arange(total, dtype=np.int64) - offsets


class SplitTargets:
    """What every split offers besides its own ``eval_histories``/``target_index``: the targets of
    'valid' or 'test', and the time of each (the request a target answers)."""

    def targets(self, which: str) -> np.ndarray:
        return {"valid": self.valid_targets, "test": self.test_targets}[which]

    def target_times(self, which: str) -> np.ndarray:
        """(U,) time of each user's ``which`` target, NaN where absent."""
        tg = self.targets(which)
        if len(self.full) == 0:
            return np.full(len(tg), np.nan)
        idx = np.clip(self.target_index(which), 0, len(self.full) - 1)
        return np.where(tg >= 0, self.full.ts[idx], np.nan)


@dataclass(frozen=True)
class LeaveOneOut(SplitTargets):
    """Leave-one-out split: train = seq[:-2], valid target = seq[-2], test target = seq[-1].

    Users with fewer than 3 interactions have no valid/test target (-1) and train on what
    they have. The validation input is seq[:-2], the test input seq[:-1].

    ``valid_inputs`` (optional): the validation inputs when ``train`` is a subset of seq[:-2]
    (``simulator.core.splits.sparse_users`` / ``cold_items``): users keep their whole history as
    the input of the validation target even when it is not training data, as at test time.
    """

    full: Sequences
    train: Sequences
    valid_targets: np.ndarray  # (U,) int64, -1 where absent
    test_targets: np.ndarray  # (U,) int64, -1 where absent
    valid_inputs: Sequences | None = None  # None: the validation inputs are ``train``

    @classmethod
    def from_sequences(cls, full: Sequences, min_len: int = 3) -> LeaveOneOut:
        lengths = full.lengths
        has = lengths >= min_len
        last = full.indptr[1:] - 1
        test = np.where(has, full.items[np.maximum(last, 0)], -1)
        valid = np.where(has, full.items[np.maximum(last - 1, 0)], -1)
        # users too short to split keep their whole sequence for training
        n_drop = np.where(has, 2, 0)
        lengths_train = lengths - n_drop
        keep = np.repeat(full.indptr[:-1], lengths_train) + _ragged_arange(lengths_train)
        indptr = np.concatenate([[0], np.cumsum(lengths_train)]).astype(np.int64)
        train = Sequences(indptr, full.items[keep], full.ts[keep])
        return cls(full, train, valid.astype(np.int64), test.astype(np.int64))

    def eval_histories(self, which: str) -> Sequences:
        """Histories used to predict the ``which`` target: 'valid' -> seq[:-2], 'test' -> seq[:-1]."""
        if which == "valid":
            return self.train if self.valid_inputs is None else self.valid_inputs
        if which == "test":
            has = self.test_targets >= 0
            lengths = self.full.lengths - has.astype(np.int64)
            keep = np.repeat(self.full.indptr[:-1], lengths) + _ragged_arange(lengths)
            indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            return Sequences(indptr, self.full.items[keep], self.full.ts[keep])
        raise ValueError(f"which must be 'valid' or 'test', got {which!r}")

    def target_index(self, which: str) -> np.ndarray:
        """(U,) index in ``full`` of each user's ``which`` target (meaningful where one exists)."""
        return self.full.indptr[1:] - {"valid": 2, "test": 1}[which]


@dataclass
class Dataset:
    """A loaded dataset: sizes, full chronological sequences, item text and attributes.

    ``item_text[i]`` is the text built for item ``i`` by the dataset's template (what an item
    LLM reads); ``item_attrs`` maps column name -> array of length ``n_items`` (e.g. 'genres',
    'year', 'title'); ``item_raw_ids``/``user_raw_ids`` map back to the raw ids of the log.
    """

    name: str
    n_users: int
    n_items: int
    sequences: Sequences
    item_text: list[str]
    item_attrs: dict[str, np.ndarray] = field(default_factory=dict)
    item_raw_ids: np.ndarray | None = None
    user_raw_ids: np.ndarray | None = None
    values: np.ndarray | None = None  # (N,) ratings/values aligned with sequences.items, if any

    def leave_one_out(self) -> LeaveOneOut:
        return LeaveOneOut.from_sequences(self.sequences)

    def until(self, t: float) -> Dataset:
        """The logs up to time ``t`` (inclusive), named ``name@t``: same users and items, ``values``
        kept aligned with the interactions (a ranker's like labels need them)."""
        keep = self.sequences.ts <= t
        return replace(self, name=f"{self.name}@{int(t)}", sequences=self.sequences.keep(keep),
                       values=None if self.values is None else self.values[keep])

    def item_popularity(self, seqs: Sequences | None = None) -> np.ndarray:
        s = self.sequences if seqs is None else seqs
        return np.bincount(s.items, minlength=self.n_items).astype(np.int64)
