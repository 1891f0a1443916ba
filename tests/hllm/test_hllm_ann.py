"""ANN retrieval (hllm.ann) behind the exact contract: recall on a clustered catalog, exact below
the threshold, a persisted index that reloads identically and is refused once the table changed,
one-line errors for bad settings, and the policy's retrieve on either path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hllm import ann, serving
from simulator.core.errors import ConfigError, DataError, NotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from hllm_serving import topic_mixture  # noqa: E402

# a small catalog served by IVF: 2,000 items in 40 lists, 6 of them scanned per query
ANN = {"ann_min_items": 1000, "nprobe": 6}


@pytest.fixture(autouse=True)
def one_faiss_thread():
    import faiss

    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture
def catalog():
    items, users = topic_mixture(2000, 32, n_topics=30, n_users=64, seed=3)
    exclude = [np.arange(u, 2000, 97)[:10] for u in range(64)]
    return items, users, exclude


def _table(tmp_path, items) -> Path:
    return serving.write_item_table(tmp_path / "t", items, [f"item {i}" for i in range(len(items))])


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_ann_recall_and_contract_on_a_clustered_catalog(tmp_path, catalog, codes):
    items, users, exclude = catalog
    folder = _table(tmp_path, items)
    cfg = {**ANN, "ivf_codes": codes}
    assert serving.ensure_table_index(folder, cfg)["kind"] == "ivf"
    ids, scores = serving.search_table(folder, users, 20, exclude, cfg)
    exact, _ = serving.topk_inner_product(users, items, 20, exclude)
    assert ann.recall_at_k(ids, exact) >= 0.95
    assert ids.shape == scores.shape == (64, 20) and (ids >= 0).all()
    assert not any(np.isin(ids[b], exclude[b]).any() for b in range(64))
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", users, items[ids]), rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    few = serving.search_table(folder, users, 20, exclude, {**cfg, "nprobe": 1})[0]
    assert ann.recall_at_k(few, exact) < ann.recall_at_k(ids, exact)  # the recall is the index's, not luck


def test_exact_path_below_the_threshold(tmp_path, catalog):
    items, users, exclude = catalog
    folder = _table(tmp_path, items)
    assert ann.RetrievalConfig().kind(len(items)) == "exact"
    assert serving.ensure_table_index(folder) is None and not (folder / serving.INDEX_FILE).exists()
    got = serving.search_table(folder, users, 20, exclude)
    want = serving.topk_inner_product(users, items, 20, exclude)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert ann.RetrievalConfig(ann_min_items=len(items)).kind(len(items)) == "ivf"
    assert ann.RetrievalConfig(index="exact", ann_min_items=1).kind(10**7) == "exact"


def test_persisted_index_reloads_identically_and_builds_deterministically(tmp_path, catalog):
    items, users, exclude = catalog
    folder = _table(tmp_path, items)
    serving.build_table_index(folder, ANN)
    first = ann.search(serving.load_table_index(folder), users, 20, exclude, table=items, refine=2)
    again = serving.search_table(folder, users, 20, exclude, ANN)
    other = _table(tmp_path / "copy", items)
    serving.build_table_index(other, ANN)
    rebuilt = serving.search_table(other, users, 20, exclude, ANN)
    for a, b in [(first, again), (first, rebuilt)]:
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="re-ranks against its item table"):
        ann.search(serving.load_table_index(folder), users, 20)
    meta = serving.read_meta(folder)["index"]
    assert meta["params"]["nprobe"] == 6 and meta["n_items"] == 2000 and meta["bytes"] > 0
    hnsw = {"index": "hnsw", "ef_search": 64}
    serving.build_table_index(folder, hnsw)
    assert ann.recall_at_k(serving.search_table(folder, users, 20, exclude, hnsw)[0], first[0]) >= 0.9


def test_index_is_refused_after_append_until_rebuilt(tmp_path, catalog):
    items, users, _ = catalog
    folder = _table(tmp_path, items)
    serving.ensure_table_index(folder, ANN)
    new = serving.search_table(folder, users[:1], 1, cfg=ANN)  # nothing new yet
    serving.append_items(folder, users[:1], ["the user's own vector"])
    with pytest.raises(DataError, match=r"^.*index\.faiss: the ANN index was built for another version of the item "
                                        r"table \(2,000 items then, 2,001 now\): rebuild it \(`sim hllm embed-items "
                                        r"--index ivf`\)$"):
        serving.search_table(folder, users[:1], 1, cfg=ANN)
    info = serving.ensure_table_index(folder, ANN)
    assert info["n_items"] == serving.read_meta(folder)["n_items"] == 2001
    ids, _ = serving.search_table(folder, users[:1], 1, cfg=ANN)
    assert ids[0, 0] == 2000 != new[0][0, 0]  # the appended item, its own best match, is found
    with pytest.raises(NotFoundError, match="no ANN index"):
        serving.load_table_index(_table(tmp_path / "bare", items))


@pytest.mark.parametrize("values, message", [
    ({"index": "annoy"}, "retrieval config index='annoy': Input should be 'auto', 'exact', 'ivf' or 'hnsw'"),
    ({"nprobe": 0}, "retrieval config nprobe=0: Input should be greater than or equal to 1"),
    ({"nprob": 8}, "retrieval config nprob=8: Extra inputs are not permitted"),
])
def test_bad_retrieval_settings_are_one_line(values, message):
    with pytest.raises(ConfigError) as e:
        ann.retrieval_config(values)
    assert str(e.value) == message
    with pytest.raises(ConfigError, match=r"^retrieval index 'exact' is not an ANN index kind \(one of: ivf, hnsw\)$"):
        ann.build_index(np.zeros((4, 2), np.float32), ann.RetrievalConfig(), "exact")


def test_policy_retrieves_exactly_by_default_and_by_ann_when_asked():
    sys.path.insert(0, str(Path(__file__).parent))
    from _tinydata import tiny_dataset

    from policies import registry
    from policies.base import FullScorePolicy, UserBatch

    torch.set_num_threads(1)
    ds = tiny_dataset()
    with pytest.raises(ConfigError, match=r"^policy 'hllm' config: retrieval\.index: Input should be"):
        registry.create("hllm", {"retrieval": {"index": "flat"}})
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1})
    pol.fit(ds, ds.leave_one_out(), progress=False)
    users = UserBatch.from_sequences(ds.sequences)
    exclude = list(users.histories)
    got, want = pol.retrieve(users, 10, exclude), FullScorePolicy.retrieve(pol, users, 10, exclude)
    np.testing.assert_array_equal(got.item_ids, want.item_ids)  # below the threshold: the exact path itself
    np.testing.assert_array_equal(got.scores, want.scores)
    pol._ann = ann.TableIndex(ann.retrieval_config({"ann_min_items": 1}))  # as if built with it
    pol.cfg.retrieval = pol._ann.cfg
    got = pol.retrieve(users, 10, exclude)  # 48 items: one IVF list, scanned whole
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    new = pol.add_items([ds.item_text[0]])
    assert pol._ann.index.ntotal == ds.n_items  # rebuilt on the next retrieve, not before
    assert pol.retrieve(users, ds.n_items + 1).item_ids.max() == new[0]
    assert pol._ann.index.ntotal == ds.n_items + 1


def test_index_of_another_kind_a_broken_file_and_a_wrong_dim_are_one_line(tmp_path, catalog):
    items, users, _ = catalog
    folder = _table(tmp_path, items)
    serving.build_table_index(folder, ANN)
    with pytest.raises(DataError, match=r"index\.faiss: the ANN index is 'ivf', the retrieval config serves this "
                                        r"table with 'hnsw': rebuild it \(`sim hllm embed-items --index hnsw`\)$"):
        serving.search_table(folder, users, 5, cfg={"index": "hnsw"})
    with pytest.raises(DataError, match=r"^field 'users': user embeddings of shape \(3, 8\) against an index of "
                                        r"dim 32$"):
        serving.search_table(folder, users[:3, :8], 5, cfg=ANN)
    (folder / serving.INDEX_FILE).write_bytes(b"not an index")
    with pytest.raises(DataError, match=r"index\.faiss: not a readable faiss index: rebuild it"):
        serving.load_table_index(folder)
    serving.build_table_index(folder, ANN)
    serving.write_item_table(folder, items[::-1].copy(), meta=serving.read_meta(folder))  # same size, other rows
    with pytest.raises(DataError, match=r"another version of the item table \(same size, other contents\)"):
        serving.load_table_index(folder)


def test_hnsw_search_leaves_the_shared_index_as_it_was():
    """A request with a long exclude list searches wider for itself only: the next request's
    results do not depend on it."""
    import faiss

    from hllm.ann import search

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(32, 16, faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    index.hnsw.efSearch = 16
    before = search(index, x[:4], 10)
    search(index, x[:4], 10, exclude=[np.arange(500)] * 4)
    assert index.hnsw.efSearch == 16
    np.testing.assert_array_equal(search(index, x[:4], 10)[0], before[0])
