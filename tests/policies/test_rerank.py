"""Reranker stage: seen filter, MMR, per-label caps, chains, the factory, the protocol."""

import numpy as np
import pytest
from _policy_data import tiny_dataset

from policies.base import PAD, Candidates, Reranker, Slate, UserBatch
from policies.rerank import (
    MMR,
    Chain,
    MaxPerLabel,
    MaxPerLabelConfig,
    MMRConfig,
    SeenFilter,
    TopK,
    label_sets,
    make_reranker,
    multi_hot,
)
from simulator.core.errors import ConfigError


def _users(hist):
    return UserBatch(np.arange(len(hist)), [np.asarray(h, np.int64) for h in hist])


def _cands(ids, scores, channel=True):
    ids = np.asarray(ids, np.int64)
    ch = (np.arange(ids.size).reshape(ids.shape) % 2).astype(np.int16) if channel else None
    return Candidates(ids, np.asarray(scores, np.float32), ch, ("a", "b"))


def test_all_rerankers_implement_the_protocol():
    ds = tiny_dataset()
    for r in (TopK(), SeenFilter(), MMR(MMRConfig(attribute="genre"), ds), MaxPerLabel(dataset=ds), Chain([])):
        assert isinstance(r, Reranker)


def test_topk_sorts_drops_pad_and_pads():
    c = _cands([[5, 3, PAD, 7]], [[0.1, 0.9, 5.0, 0.5]])
    s = TopK().rerank(_users([[]]), c, None, 5)
    assert isinstance(s, Slate)
    assert s.item_ids.tolist() == [[3, 7, 5, PAD, PAD]]
    assert s.channel.tolist() == [[1, 1, 0, -1, -1]] and s.channel_names == ("a", "b")
    # explicit scorer scores override the retrieval scores
    s = TopK().rerank(_users([[]]), c, np.array([[3.0, 2.0, 1.0, 0.0]]), 2)
    assert s.item_ids.tolist() == [[5, 3]] and s.scores.tolist() == [[3.0, 2.0]]


def test_seen_filter_removes_history_only():
    c = _cands([[1, 2, 3, 4], [1, 2, 3, 4]], [[4, 3, 2, 1], [4, 3, 2, 1]])
    s = SeenFilter().rerank(_users([[2, 9], []]), c, None, 3)
    assert s.item_ids.tolist() == [[1, 3, 4], [1, 2, 3]]
    s = make_reranker({"name": "seen_filter", "last_n": 1}).rerank(_users([[1, 2], []]), c, None, 4)
    assert s.item_ids.tolist() == [[1, 3, 4, PAD], [1, 2, 3, 4]]  # only the last history item (2) filtered


def test_mmr_lambda_one_is_relevance_order_and_lower_lambda_diversifies():
    vec = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)  # items 0-2 identical, 3 different
    c = _cands([[0, 1, 2, 3]], [[1.0, 0.9, 0.8, 0.1]])
    s1 = MMR(MMRConfig(lam=1.0), item_vectors=vec).rerank(_users([[]]), c, None, 4)
    assert s1.item_ids.tolist() == [[0, 1, 2, 3]]
    s2 = MMR(MMRConfig(lam=0.5), item_vectors=vec).rerank(_users([[]]), c, None, 3)
    # rel = [1, .89, .78, 0]; after 0: item1 -> .5*.89-.5 < 0, item3 -> 0 -> picked second
    assert s2.item_ids.tolist() == [[0, 3, 1]]
    assert s2.scores.tolist() == [[1.0, pytest.approx(0.1), pytest.approx(0.9)]]


def test_mmr_handles_padding_and_short_rows():
    vec = np.eye(5, dtype=np.float32)
    c = _cands([[4, PAD, 2], [PAD, PAD, PAD]], [[0.3, 9.0, 0.2], [1, 1, 1]])
    s = MMR(MMRConfig(lam=0.7), item_vectors=vec).rerank(_users([[], []]), c, None, 5)
    assert s.item_ids.shape == (2, 5)
    assert s.item_ids.tolist() == [[4, 2, PAD, PAD, PAD], [PAD] * 5]


def test_mmr_on_attributes_spreads_genres():
    ds = tiny_dataset(n_items=40)
    ids = np.array([[0, 4, 8, 12, 1, 2, 3]])  # 0,4,8,12 share genre g0 (and 0 also g9)
    c = _cands(ids, [[7, 6, 5, 4, 3, 2, 1]])
    s = MMR(MMRConfig(lam=0.3, attribute="genre"), ds).rerank(_users([[]]), c, None, 4)
    genres = [ds.item_attrs["genre"][i].split()[0] for i in s.item_ids[0]]
    assert len(set(genres)) == 4


def test_max_per_label_caps_and_backfill():
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    c = _cands([[0, 1, 2, 3, 4, 5]], [[6, 5, 4, 3, 2, 1]])
    s = MaxPerLabel(MaxPerLabelConfig(max_per=2), item_labels=labels).rerank(_users([[]]), c, None, 5)
    # 0,1 fill label 0; 2 rejected; 3 ok; 4 has label 0 (full) -> rejected; 5 has no label -> ok
    assert s.item_ids.tolist() == [[0, 1, 3, 5, PAD]]
    s = MaxPerLabel(MaxPerLabelConfig(max_per=2, backfill=True), item_labels=labels).rerank(_users([[]]), c, None, 5)
    assert s.item_ids.tolist() == [[0, 1, 3, 5, 2]]
    s = MaxPerLabel(MaxPerLabelConfig(max_per=2), item_labels=labels).rerank(_users([[]]), c, None, 2)
    assert s.item_ids.tolist() == [[0, 1]]


def test_chain_and_factory():
    ds = tiny_dataset(n_items=40)
    r = make_reranker([{"name": "seen_filter"}, {"name": "max_per_label", "attribute": "topic", "max_per": 1}], ds)
    assert isinstance(r, Chain)
    ids = np.array([[0, 4, 1, 5, 2, 6, 3, 7]])
    c = _cands(ids, [[8, 7, 6, 5, 4, 3, 2, 1]])
    s = r.rerank(_users([[1]]), c, None, 4)
    assert s.item_ids.tolist() == [[0, 5, 2, 3]]  # 1 seen; one item per topic (i % 4)
    assert isinstance(make_reranker(None), TopK)
    with pytest.raises(ConfigError, match="unknown reranker"):
        make_reranker({"name": "nope"})
    with pytest.raises(ConfigError, match="lam"):
        make_reranker({"name": "mmr", "lam": 3, "attribute": "genre"}, ds)
    with pytest.raises(ConfigError, match="no item attribute"):
        make_reranker({"name": "mmr", "attribute": "colour"}, ds)
    with pytest.raises(ConfigError):
        make_reranker({"name": "seen_filter", "typo": 1})


def test_label_parsing():
    ls = label_sets(["Action|Comedy", "Drama", None, ["x", "y"], "a b"])
    assert ls == [("Action", "Comedy"), ("Drama",), (), ("x", "y"), ("a", "b")]
    m, vocab = multi_hot(ls)
    assert m.shape == (5, 7) and m.sum() == 7


def test_vectorised_batch_matches_row_by_row():
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(50, 8)).astype(np.float32)
    ids = np.stack([rng.permutation(50)[:20] for _ in range(6)])
    sc = rng.random((6, 20)).astype(np.float32)
    m = MMR(MMRConfig(lam=0.6), item_vectors=vec)
    users = _users([[]] * 6)
    full = m.rerank(users, Candidates(ids, sc), None, 10)
    for b in range(6):
        one = m.rerank(_users([[]]), Candidates(ids[b:b + 1], sc[b:b + 1]), None, 10)
        assert one.item_ids[0].tolist() == full.item_ids[b].tolist()


def test_mmr_chunking_matches_single_block():
    rng = np.random.default_rng(1)
    vec = rng.normal(size=(40, 4)).astype(np.float32)
    ids = np.stack([rng.permutation(40)[:15] for _ in range(9)])
    sc = rng.random((9, 15)).astype(np.float32)
    a = MMR(MMRConfig(lam=0.5), item_vectors=vec)
    b = MMR(MMRConfig(lam=0.5), item_vectors=vec)
    b.chunk = 2
    users = _users([[]] * 9)
    np.testing.assert_array_equal(a.rerank(users, Candidates(ids, sc), None, 6).item_ids,
                                  b.rerank(users, Candidates(ids, sc), None, 6).item_ids)


def test_chain_intermediate_width_is_bounded():
    seen = []

    class Spy(TopK):
        def rerank(self, users, candidates, scores, k):
            seen.append(k)
            return super().rerank(users, candidates, scores, k)

    c = _cands(np.arange(300)[None], -np.arange(300, dtype=np.float32)[None])
    s = Chain([Spy(), Spy()]).rerank(_users([[]]), c, None, 10)
    assert seen == [50, 10] and s.item_ids[0].tolist() == list(range(10))
