"""Split correctness: leave-one-out and the global temporal split (no future item in training)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.data import Catalog, LeaveOneOut, Sequences, TemporalSplit, get_dataset, temporal_split


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


def test_schema_check_on_loaded_datasets(tmp_path):
    from simulator.data.schema import check_dataset

    c = Catalog(":memory:")
    get_dataset("synthetic-schema", c, n_users=50, n_items=40)
    check_dataset(c, "synthetic-schema")
    s = c.info("synthetic-schema").schema_name
    c.con.execute(f"UPDATE {s}.items SET item_id = item_id + 1 WHERE item_id = 39")
    from simulator.errors import DataError

    with pytest.raises(DataError, match="not contiguous"):
        check_dataset(c, "synthetic-schema")


def test_split_roundtrip_in_catalog():
    from simulator.data.splits import load_split, make_split, save_split
    from simulator.errors import NotFoundError

    c = Catalog(":memory:")
    ds = get_dataset("synthetic-sp", c, n_users=60, n_items=50)
    for kind in ("loo", "temporal"):
        s = make_split(ds.sequences, kind)
        save_split(c, "synthetic-sp", kind, s)
        back = load_split(c, "synthetic-sp", kind)
        assert type(back) is type(s)
        assert np.array_equal(back.test_targets, s.test_targets) and np.array_equal(back.train.items, s.train.items)
    with pytest.raises(NotFoundError):
        load_split(c, "synthetic-sp", "nope")
