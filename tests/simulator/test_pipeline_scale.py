"""The pipeline at catalog scale: exact top-k semantics of torch.topk, the vectorised channel merge,
and ANN serving (retrieve + candidate scores, never a catalog-wide score matrix) above the threshold."""

from __future__ import annotations

import numpy as np
import pytest

from policies.ann import AnnServing, RetrievalConfig
from policies.base import PAD, Candidates, UserBatch, topk_excluding
from simulator.engine.config import parse_config
from simulator.engine.pipeline import Pipeline, merge_channels


def reference_merge(parts):
    """The per-row definition: first occurrence of an id wins, in channel order."""
    ids = np.concatenate([p.item_ids for p in parts], 1)
    rows = []
    for row in ids:
        seen, keep = set(), []
        for j, i in enumerate(row):
            if i >= 0 and i not in seen:
                seen.add(i)
                keep.append(j)
        rows.append(keep)
    return ids, rows


def test_merge_keeps_each_first_occurrence_in_channel_order():
    rng = np.random.default_rng(0)
    parts = [Candidates(rng.integers(-1, 30, (9, k)), rng.normal(size=(9, k)).astype(np.float32)) for k in (5, 12, 7)]
    got = merge_channels(parts, ("a", "b", "c"))
    ids, rows = reference_merge(parts)
    ch = np.concatenate([np.full(p.item_ids.shape, i) for i, p in enumerate(parts)], 1)
    sc = np.concatenate([p.scores for p in parts], 1)
    for b, keep in enumerate(rows):
        n = len(keep)
        assert got.item_ids[b, :n].tolist() == ids[b, keep].tolist() and (got.item_ids[b, n:] == PAD).all()
        assert got.channel[b, :n].tolist() == ch[b, keep].tolist() and np.array_equal(got.scores[b, :n], sc[b, keep])


def test_topk_breaks_ties_at_the_cut_towards_lower_ids():
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=(16, 400)) * 2).astype(np.float32)  # many ties
    ex = [rng.choice(400, 20, replace=False) for _ in range(16)]
    ids, top = topk_excluding(s.copy(), 37, ex)
    for b in range(16):
        row = s[b].copy()
        row[ex[b]] = -np.inf
        want = np.lexsort((np.arange(400), -row))[:37]
        assert ids[b].tolist() == want.tolist() and np.array_equal(top[b], row[want])


class VectorPolicy(AnnServing):
    """Scores = user vectors . item vectors; score_all must not be used above the ANN threshold."""

    def __init__(self, items: np.ndarray, ann_min_items: int) -> None:
        self.items, self.n_items = items, len(items)
        self.retrieval = RetrievalConfig(ann_min_items=ann_min_items, nprobe=64)
        self.full_calls = 0

    def user_vectors(self, users: UserBatch) -> np.ndarray:
        return self.items[[int(h[-1]) for h in users.histories]]

    def item_vectors(self) -> np.ndarray:
        return self.items

    def score_all(self, users: UserBatch) -> np.ndarray:
        self.full_calls += 1
        return self.user_vectors(users) @ self.items.T


@pytest.mark.parametrize("threshold", [10_000, 100])
def test_pipeline_serves_by_ann_above_the_threshold_and_in_full_below(threshold):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    pol = VectorPolicy(items, threshold)
    arm = parse_config({"arms": [{"name": "v", "role": "control", "channels": [{"policy": "v", "quota": 50}],
                                  "coarse": {"policy": "v", "keep": 30}, "slate_size": 10},
                                 {"name": "w", "channels": [{"policy": "v", "quota": 50}]}]}, "test").arms[0]
    users = UserBatch(np.arange(8), [rng.integers(0, 2000, 5) for _ in range(8)])
    slate = Pipeline(arm, {"v": pol}).run(users).slate
    assert (pol.full_calls > 0) == (threshold > 2000)
    exact = VectorPolicy(items, 10_000)
    want = Pipeline(arm, {"v": exact}).run(users).slate
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(slate.item_ids, want.item_ids, strict=True)])
    assert overlap >= 0.8  # ANN finds (nearly) the exact slate; exact below the threshold
    if threshold > 2000:
        assert np.array_equal(slate.item_ids, want.item_ids)


def _fitted(name: str, ds):
    from policies import registry

    cfg = ({"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1} if name == "hllm" else
           {"max_len": 8, "hidden": 16, "n_layers": 1, "epochs": 1, "batch_size": 64})
    return registry.create(name, cfg).fit(ds, ds.leave_one_out(), progress=False)


def _serve_by(pol, cfg: RetrievalConfig) -> None:
    """The policy's retrieval setting (HLLM: its config's; an ID model: the class default, here set on it)."""
    if hasattr(pol, "cfg") and "retrieval" in type(pol.cfg).model_fields:
        pol.cfg.retrieval = cfg
    else:
        pol.retrieval = cfg
    pol._ann = None


@pytest.mark.parametrize("name", ["hllm", "sasrec"])
def test_fitted_models_serve_a_catalog_above_the_threshold_by_ann_without_scoring_it(name, monkeypatch):
    """HLLM and an ID model alike: above ``ann_min_items`` the pipeline retrieves through the index
    and scores candidates only (score_all never runs), and finds the exact path's slates."""
    pytest.importorskip("faiss")
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "hllm"))
    from _tinydata import tiny_dataset

    torch.set_num_threads(1)
    ds = tiny_dataset(n_users=40, n_items=120)
    pol = _fitted(name, ds)
    arm = parse_config({"arms": [{"name": "a", "role": "control", "channels": [{"policy": name, "quota": 30}],
                                  "coarse": {"policy": name, "keep": 20}, "slate_size": 8},
                                 {"name": "b", "channels": [{"policy": name, "quota": 30}]}]}, "test").arms[0]
    users = UserBatch.from_sequences(ds.sequences)
    want = Pipeline(arm, {name: pol}).run(users).slate  # 120 items: the exact path (the reference)
    _serve_by(pol, RetrievalConfig(ann_min_items=100))
    assert not pol.full_scoring()
    monkeypatch.setattr(type(pol), "score_all", lambda *a: pytest.fail("scored the whole catalog"))
    got = Pipeline(arm, {name: pol}).run(users).slate
    assert pol._ann.index is not None and pol._ann.index.ntotal == 120
    overlap = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(got.item_ids, want.item_ids, strict=True)])
    assert overlap >= 0.95
