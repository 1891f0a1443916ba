"""Splits beyond leave-one-out (which lives in ``sequences.py``): the global temporal split, and
leave-one-out variants with sparser training data (``sparse_users``, ``cold_items``).

:class:`TemporalSplit` cuts the whole log at two global times ``t_valid < t_test`` (quantiles
of all timestamps by default): training data is everything before ``t_valid`` (no item from
the future can leak into training); a user's valid target is their first interaction in
``[t_valid, t_test)``, their test target their first interaction at or after ``t_test``, each
predicted from everything the user did before it. It exposes the same attributes as
:class:`LeaveOneOut` (``full``, ``train``, ``valid_targets``, ``test_targets``,
``eval_histories``, ``targets``), so ``policy.fit`` and ``evaluate`` accept either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulator.core.sequences import LeaveOneOut, Sequences, SplitTargets, _ragged_arange


def _prefix(full: Sequences, lengths: np.ndarray) -> Sequences:
    keep = np.repeat(full.indptr[:-1], lengths) + _ragged_arange(lengths)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(indptr, full.items[keep], full.ts[keep])


def _count_before(full: Sequences, t: float) -> np.ndarray:
    """Per user, how many interactions have ts < t (sequences are chronological)."""
    before = (full.ts < t).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(before)])
    return csum[full.indptr[1:]] - csum[full.indptr[:-1]]


@dataclass(frozen=True)
class TemporalSplit(SplitTargets):
    full: Sequences
    train: Sequences
    valid_targets: np.ndarray  # (U,) int64, -1 where the user has no interaction in [t_valid, t_test)
    test_targets: np.ndarray  # (U,) int64, -1 where the user has no interaction at/after t_test
    t_valid: float
    t_test: float

    @classmethod
    def from_sequences(cls, full: Sequences, *, test_frac: float = 0.1, valid_frac: float = 0.1,
                       t_valid: float | None = None, t_test: float | None = None) -> TemporalSplit:
        if not 0 <= valid_frac < 1 or not 0 < test_frac < 1 or valid_frac + test_frac >= 1:
            raise ValueError("need 0 <= valid_frac, 0 < test_frac and valid_frac + test_frac < 1")
        if len(full) == 0:
            raise ValueError("cannot split an empty log")
        if t_test is None:
            t_test = float(np.quantile(full.ts, 1.0 - test_frac, method="lower"))
        if t_valid is None:
            t_valid = float(np.quantile(full.ts, 1.0 - test_frac - valid_frac, method="lower"))
        t_valid = min(t_valid, t_test)
        n_train = _count_before(full, t_valid)
        n_pre_test = _count_before(full, t_test)
        lengths = full.lengths
        start = full.indptr[:-1]
        has_valid = n_pre_test > n_train
        has_test = lengths > n_pre_test
        valid = np.where(has_valid, full.items[np.minimum(start + n_train, len(full) - 1)], -1)
        test = np.where(has_test, full.items[np.minimum(start + n_pre_test, len(full) - 1)], -1)
        return cls(full, _prefix(full, n_train), valid.astype(np.int64), test.astype(np.int64),
                   float(t_valid), float(t_test))

    def eval_histories(self, which: str) -> Sequences:
        """Everything before the ``which`` target: 'valid' -> ts < t_valid, 'test' -> ts < t_test."""
        if which == "valid":
            return self.train
        if which == "test":
            return _prefix(self.full, _count_before(self.full, self.t_test))
        raise ValueError(f"which must be 'valid' or 'test', got {which!r}")

    def target_index(self, which: str) -> np.ndarray:
        """(U,) index in ``full`` of each user's first interaction at/after the ``which`` cut."""
        return self.full.indptr[:-1] + _count_before(self.full, self.t_valid if which == "valid" else self.t_test)

    def future(self, which: str = "test") -> Sequences:
        """All interactions of the held-out period (ts >= t_test for 'test', [t_valid, t_test) for 'valid')."""
        lo, hi = (self.t_test, np.inf) if which == "test" else (self.t_valid, self.t_test)
        mask = (self.full.ts >= lo) & (self.full.ts < hi)
        csum = np.concatenate([[0], np.cumsum(mask.astype(np.int64))])
        counts = csum[self.full.indptr[1:]] - csum[self.full.indptr[:-1]]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Sequences(indptr, self.full.items[mask], self.full.ts[mask])


def temporal_split(full: Sequences, test_frac: float = 0.1, valid_frac: float = 0.1) -> TemporalSplit:
    return TemporalSplit.from_sequences(full, test_frac=test_frac, valid_frac=valid_frac)


# ---------------------------------------------------------------------- sparser training data
def _with_train(split: LeaveOneOut, keep: np.ndarray, valid_targets: np.ndarray | None = None) -> LeaveOneOut:
    """``split`` trained only on the training interactions where ``keep``; validation and test inputs
    stay every user's whole history (seq[:-2], seq[:-1]): inputs are not training data."""
    return replace(split, train=split.train.keep(keep), valid_inputs=split.eval_histories("valid"),
                   valid_targets=split.valid_targets if valid_targets is None else valid_targets)


def sparse_users(split: LeaveOneOut, frac: float, seed: int = 0) -> LeaveOneOut:
    """Train on the histories of a random ``frac`` of the users only; every user is still validated
    and tested with the whole history as input (fewer interactions per item, some items never seen
    in training: the regime where item text should matter most)."""
    if not 0 < frac <= 1:
        raise ValueError(f"sparse_users: frac={frac}: expected a fraction in (0, 1]")
    n_users = split.train.n_users
    chosen = np.zeros(n_users, bool)
    chosen[np.random.default_rng(seed).choice(n_users, int(round(frac * n_users)), replace=False)] = True
    return _with_train(split, np.repeat(chosen, split.train.lengths))


def cold_items(split: LeaveOneOut, n_items: int, frac: float = 0.1, seed: int = 0) -> tuple[LeaveOneOut, np.ndarray]:
    """Hold a random ``frac`` of the items out of training entirely (as inputs and as targets);
    validation targets that are held out become -1. Returns the split and the sorted held-out ids.
    Models must not train them as negatives either (``policies.train.trained_items``)."""
    if not 0 < frac < 1:
        raise ValueError(f"cold_items: frac={frac}: expected a fraction in (0, 1)")
    cold = np.sort(np.random.default_rng(seed).choice(n_items, int(round(frac * n_items)), replace=False))
    valid = np.where(np.isin(split.valid_targets, cold), -1, split.valid_targets)
    return _with_train(split, ~np.isin(split.train.items, cold), valid), cold
