"""Metric functions and the evaluation protocol against hand-computed values."""

import numpy as np
import pytest

from policies.base import PAD, topk_excluding
from policies.evaluate import evaluate, metrics_from_ranks, target_ranks
from simulator.core.sequences import Dataset, LeaveOneOut, Sequences


def test_metrics_from_ranks_hand_values():
    m = metrics_from_ranks(np.array([0, 1, 9, 10, 49]), ks=(10, 50))
    assert m["hr@10"].tolist() == [1, 1, 1, 0, 0]
    assert m["hr@50"].tolist() == [1, 1, 1, 1, 1]
    # NDCG with a single relevant item = 1 / log2(rank + 2)
    np.testing.assert_allclose(m["ndcg@10"], [1.0, 1 / np.log2(3), 1 / np.log2(11), 0, 0])
    np.testing.assert_allclose(m["ndcg@50"][3], 1 / np.log2(12))
    np.testing.assert_allclose(m["mrr"], [1, 1 / 2, 1 / 10, 1 / 11, 1 / 50])


def test_target_ranks_ties_pessimistic_and_exclusion():
    scores = np.array([[0.9, 0.5, 0.5, 0.1],
                       [0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
    # row 0: target 1 ties with item 2 -> counted behind it (rank 2); row 1: target 3 -> rank 3
    assert target_ranks(scores, np.array([1, 3]), None).tolist() == [2, 3]
    # excluding items 0 and 1 from row 1 moves the target to rank 1
    assert target_ranks(scores, np.array([1, 3]), [np.array([], np.int64), np.array([0, 1])]).tolist() == [2, 1]
    with pytest.raises(ValueError):
        target_ranks(np.full((1, 3), np.nan, np.float32), np.array([0]), None)


class _Fixed:
    """A policy that always scores items by a fixed vector."""

    def __init__(self, s):
        self.s = np.asarray(s, np.float32)
        self.n_items = len(s)

    def score_all(self, users):
        return np.tile(self.s, (len(users), 1))


def _ds():
    # user 0: 0 1 2 3 (test target 3, valid target 2), user 1: 3 2 1 0, user 2: too short
    seqs = Sequences.from_lists([[0, 1, 2, 3], [3, 2, 1, 0], [4, 4]])
    return Dataset("hand", 3, 5, seqs, [""] * 5), LeaveOneOut.from_sequences(seqs)


def test_evaluate_hand_example():
    ds, split = _ds()
    pol = _Fixed([5, 4, 3, 2, 1])  # ranking 0 > 1 > 2 > 3 > 4
    r = evaluate(pol, split, ks=(1, 2))
    # user 0: history {0,1,2} excluded, target 3 -> rank 0; user 1: history {3,2,1} excluded, target 0 -> rank 0
    assert r.per_user["user_id"].tolist() == [0, 1]
    assert r.per_user["rank"].tolist() == [0, 0]
    assert r.summary["hr@1"] == 1.0 and r.summary["n_users"] == 2
    r2 = evaluate(pol, split, ks=(1, 2), exclude_history=False)
    # without exclusion: user 0 target 3 has items 0,1,2 above -> rank 3; user 1 target 0 -> rank 0
    assert r2.per_user["rank"].tolist() == [3, 0]
    np.testing.assert_allclose(r2.summary["mrr"], (1 / 4 + 1) / 2)
    np.testing.assert_allclose(r2.summary["ndcg@2"], 0.5)
    rv = evaluate(pol, split, which="valid", ks=(1,))
    # valid: user 0 history {0,1} excluded, target 2 -> rank 0; user 1 history {3,2}, target 1 -> rank 1
    assert rv.per_user["rank"].tolist() == [0, 1]


def test_target_itself_is_never_excluded_even_if_in_history():
    seqs = Sequences.from_lists([[1, 2, 1, 2]])  # test target 2 also appears in the history
    split = LeaveOneOut.from_sequences(seqs)
    r = evaluate(_Fixed([3, 2, 1]), split)
    assert r.per_user["rank"].tolist() == [1]  # item 1 excluded (history), item 0 above target


def test_topk_excluding_pads_and_orders():
    s = np.array([[0.1, 0.9, 0.5, 0.9]], dtype=np.float32)
    ids, sc = topk_excluding(s.copy(), 3, [np.array([2])])
    assert ids.tolist() == [[1, 3, 0]]  # tie 0.9 -> lower id first
    ids, sc = topk_excluding(s.copy(), 6, [np.array([0, 2])])
    assert ids.tolist() == [[1, 3, PAD, PAD, PAD, PAD]] and np.isneginf(sc[0, 2:]).all()
