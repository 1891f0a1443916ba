"""Split correctness: leave-one-out and the global temporal split (no future item in training)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.core import Catalog, LeaveOneOut, Sequences, TemporalSplit, get_dataset, temporal_split


def _toy() -> Sequences:
    return Sequences.from_lists([[1, 2, 3, 4], [5, 6], [], [7, 8, 9]],
                                ts=[[1, 5, 8, 9], [2, 7], [], [3, 4, 10]])


def test_temporal_split_toy():
    s = TemporalSplit.from_sequences(_toy(), t_valid=6, t_test=8)
    assert s.train.as_lists()[0].tolist() == [1, 2] and s.train.as_lists()[1].tolist() == [5]
    assert s.train.as_lists()[3].tolist() == [7, 8]
    assert s.valid_targets.tolist() == [-1, 6, -1, -1]
    assert s.test_targets.tolist() == [3, -1, -1, 9]
    assert s.eval_histories("test").as_lists()[0].tolist() == [1, 2]
    assert s.eval_histories("test").as_lists()[1].tolist() == [5, 6]
    assert s.future("test").as_lists()[0].tolist() == [3, 4]
    assert s.future("valid").as_lists()[1].tolist() == [6]
    assert (s.train.ts < 6).all()


def test_temporal_split_quantiles_no_future_leak(tmp_path):
    ds = get_dataset("synthetic-split", Catalog(":memory:"), n_users=300, n_items=200)
    s = temporal_split(ds.sequences, test_frac=0.1, valid_frac=0.1)
    assert s.t_valid <= s.t_test
    assert (s.train.ts < s.t_valid).all()
    assert len(s.train) == int((ds.sequences.ts < s.t_valid).sum())
    # every target happens at/after its cutoff and after every history interaction
    for which, cut in (("valid", s.t_valid), ("test", s.t_test)):
        h = s.eval_histories(which)
        assert (h.ts < cut).all()
        tg = s.targets(which)
        assert (tg >= 0).any()
    assert len(s.train) + len(s.future("valid")) + len(s.future("test")) == len(ds.sequences)
    frac = len(s.future("test")) / len(ds.sequences)
    assert 0.05 < frac < 0.15
    with pytest.raises(ValueError):
        temporal_split(ds.sequences, test_frac=0.0)


def test_leave_one_out_no_future_in_train():
    seqs = _toy()
    s = LeaveOneOut.from_sequences(seqs)
    for u in range(seqs.n_users):
        full, tr = seqs.seq(u), s.train.seq(u)
        if len(full) >= 3:
            assert tr.tolist() == full[:-2].tolist()
            assert s.valid_targets[u] == full[-2] and s.test_targets[u] == full[-1]
            assert s.train.times(u).max() <= seqs.times(u)[-2]
        else:
            assert s.test_targets[u] == -1


def test_split_works_with_loaded_dataset_order(ml100k_dir):
    ds = get_dataset("ml-100k", Catalog(":memory:"))
    s = temporal_split(ds.sequences)
    assert (s.train.ts < s.t_valid).all()
    loo = ds.leave_one_out()
    last_ts = ds.sequences.ts[ds.sequences.indptr[1:] - 1]
    tr_last = np.array([t.max() if len(t) else -np.inf for t in np.split(loo.train.ts, loo.train.indptr[1:-1])])
    assert (tr_last <= last_ts).all()


# ---------------------------------------------------------------------- issue 16: sparse / cold splits
def _splits(ds):
    from simulator.core.splits import cold_items, sparse_users

    loo = ds.leave_one_out()
    return {"loo": loo, "sparse20": sparse_users(loo, 0.2, seed=0), "sparse50": sparse_users(loo, 0.5, seed=1),
            "cold": cold_items(loo, ds.n_items, 0.1, seed=0)[0]}


def test_every_validation_and_test_user_has_an_input_history_in_every_split():
    """Users left out of training are still validated and tested on their own history: inputs are not
    training data (a sparse split once validated on empty histories, so early stopping saw noise)."""
    ds = get_dataset("synthetic-split", Catalog(":memory:"), n_users=300, n_items=200)
    for name, s in _splits(ds).items():
        for which in ("valid", "test"):
            users = np.flatnonzero(s.targets(which) >= 0)
            assert len(users) > 250, name
            lengths = s.eval_histories(which).lengths[users]
            assert (lengths > 0).all(), (name, which, int((lengths == 0).sum()))
        # the inputs are the whole history before the target, whatever was trained on
        loo = ds.leave_one_out()
        for which in ("valid", "test"):
            assert np.array_equal(s.eval_histories(which).items, loo.eval_histories(which).items), (name, which)


def test_sparse_and_cold_splits_train_on_less():
    ds = get_dataset("synthetic-split", Catalog(":memory:"), n_users=300, n_items=200)
    from simulator.core.splits import cold_items, sparse_users

    loo = ds.leave_one_out()
    sp = sparse_users(loo, 0.2, seed=0)
    trained = (sp.train.lengths > 0).sum()
    assert trained == round(0.2 * 300) and len(sp.train) < 0.3 * len(loo.train)
    for u in np.flatnonzero(sp.train.lengths):  # a kept user keeps the whole training history
        assert np.array_equal(sp.train.seq(u), loo.train.seq(u))
    cs, cold = cold_items(loo, ds.n_items, 0.1, seed=0)
    assert len(cold) == 20 and not np.isin(cs.train.items, cold).any()
    assert not np.isin(cs.valid_targets[cs.valid_targets >= 0], cold).any()
    assert np.array_equal(cs.test_targets, loo.test_targets)  # cold test targets are what the cold test measures
    with pytest.raises(ValueError, match="frac"):
        sparse_users(loo, 0.0)


def test_target_times_are_the_targets_timestamps():
    s = LeaveOneOut.from_sequences(_toy())
    np.testing.assert_array_equal(s.target_times("test"), [9, np.nan, np.nan, 10])
    np.testing.assert_array_equal(s.target_times("valid"), [8, np.nan, np.nan, 4])
    t = TemporalSplit.from_sequences(_toy(), t_valid=6, t_test=8)
    np.testing.assert_array_equal(t.target_times("valid"), [np.nan, 7, np.nan, np.nan])
    np.testing.assert_array_equal(t.target_times("test"), [8, np.nan, np.nan, 10])


def test_dataset_until_keeps_values_aligned():
    """The simulator trains arms on ``until(sim_start)``: ratings must come along (a ranker's like label)."""
    from simulator.core.sequences import Dataset

    seqs = _toy()
    vals = np.arange(len(seqs), dtype=np.float64) + 1  # value of interaction k is k + 1
    ds = Dataset("toy", 4, 10, seqs, [str(i) for i in range(10)], values=vals)
    pre = ds.until(7)
    assert pre.name == "toy@7" and pre.values is not None
    assert pre.sequences.as_lists()[0].tolist() == [1, 2] and pre.sequences.as_lists()[3].tolist() == [7, 8]
    keep = seqs.ts <= 7
    np.testing.assert_array_equal(pre.values, vals[keep])
    assert len(pre.values) == len(pre.sequences)
