"""Training results pinned: the loss and validation NDCG@10 of every epoch, and the test NDCG@10 of
the kept (best) weights, for tiny SASRec / HSTU / HLLM / hllm_rank fits with fixed seeds.

The numbers were recorded before the training loops were merged into one (``policies.train.fit_loop``,
issue 13); a change in the loop (epoch order, random draws, when validation runs, early stopping,
which weights are kept) changes them. One torch thread; the tolerance only absorbs float differences
between CPUs. A deliberate change of what training learns updates these numbers in the same commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _policy_data import tiny_dataset as ring_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "hllm"))
from _tinydata import tiny_dataset as topic_dataset  # noqa: E402

from policies.evaluate import evaluate  # noqa: E402
from policies.store import fit_or_load  # noqa: E402

ID = dict(max_len=10, hidden=16, n_layers=1)
HLLM2 = {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 2}
CASES = {  # name: (data, policy, overrides)
    "sasrec": ("ring", "sasrec", dict(ID, epochs=6, eval_every=2, patience=2, dropout=0.1, lr=3e-3)),
    "sasrec_sampled": ("ring", "sasrec", dict(ID, epochs=4, eval_every=1, loss="sampled_ce", n_negatives=8)),
    "sasrec_bce_last": ("ring", "sasrec", dict(ID, epochs=4, eval_every=1, loss="bce", windows="last")),
    "sasrec_stop": ("ring", "sasrec", dict(ID, epochs=30, eval_every=1, patience=2, dropout=0.0, lr=5e-2)),
    "hstu": ("ring", "hstu", dict(ID, epochs=6, eval_every=2, patience=2, dropout=0.1, lr=3e-3)),
    "hllm_tiny": ("topic", "hllm", {"preset": "tiny", "stage2_epochs": 6, "patience": 1, "eval_every": 1}),
    "hllm_tiny_top1": ("topic", "hllm", {"preset": "tiny", "item_trainable_layers": 1, "stage2_epochs": 2}),
    "hllm_time_ids": ("topic", "hllm", {**HLLM2, "use_time": True, "item_id_embeddings": True}),
    "hllm_rank": ("topic", "hllm_rank", {"hllm": HLLM2, "ranker": {"hidden": 8, "epochs": 2, "batch_size": 32}}),
    "hllm_rank_early": ("topic", "hllm_rank", {"hllm": HLLM2, "ranker": {"hidden": 8, "epochs": 1, "batch_size": 32,
                                                                           "fusion": "early"}}),
}
STAGES = {"hllm stage 1": "s1", "hllm stage 2": "s2", "ranker": "rank", None: "id"}

# test NDCG@10, [(stage, epoch, loss, valid NDCG@10 or None)]
PINNED = {
    "sasrec": (0.661201, [
        ("id", 0, 3.391263, None), ("id", 1, 3.369378, 0.403416), ("id", 2, 3.342373, None),
        ("id", 3, 3.314571, 0.502796), ("id", 4, 3.290508, None), ("id", 5, 3.264101, 0.604498),
    ]),
    "sasrec_sampled": (0.333795, [
        ("id", 0, 2.157949, 0.216203), ("id", 1, 2.154216, 0.272875), ("id", 2, 2.164971, 0.281804),
        ("id", 3, 2.164613, 0.314475),
    ]),
    "sasrec_bce_last": (0.372597, [
        ("id", 0, 1.383163, 0.206803), ("id", 1, 1.382412, 0.252884), ("id", 2, 1.377809, 0.287372),
        ("id", 3, 1.377472, 0.311753),
    ]),
    "sasrec_stop": (0.977182, [
        ("id", 0, 3.3936, 0.300337), ("id", 1, 3.258173, 0.548902), ("id", 2, 2.918205, 0.799655),
        ("id", 3, 2.601251, 0.864042), ("id", 4, 2.328599, 0.844244), ("id", 5, 2.078015, 0.866104),
        ("id", 6, 1.843075, 0.881628), ("id", 7, 1.628718, 0.897058), ("id", 8, 1.461848, 0.906546),
        ("id", 9, 1.313887, 0.921031), ("id", 10, 1.194189, 0.921031), ("id", 11, 1.108884, 0.923866),
        ("id", 12, 1.05338, 0.923866), ("id", 13, 1.007386, 0.914377),
    ]),
    "hstu": (0.742239, [
        ("id", 0, 3.397363, None), ("id", 1, 3.367731, 0.555075), ("id", 2, 3.343368, None),
        ("id", 3, 3.31691, 0.655367), ("id", 4, 3.289681, None), ("id", 5, 3.267463, 0.690239),
    ]),
    "hllm_tiny": (0.993849, [
        # re-pinned (issue 22): stage 1 trains the item token at the head's lr (it was at item_lr)
        ("s1", 0, 10.161308, None), ("s2", 0, 4.754104, 0.925378), ("s2", 1, 3.790347, 0.972058),
        ("s2", 2, 3.176211, 0.993849), ("s2", 3, 2.889168, 0.993849),
    ]),
    "hllm_tiny_top1": (0.966963, [
        ("s1", 0, 11.07252, None), ("s2", 0, 4.398919, None), ("s2", 1, 3.780078, 0.935812),
    ]),
    "hllm_time_ids": (0.936414, [
        ("s2", 0, 3.372439, None), ("s2", 1, 3.045279, 0.893987),
    ]),
    "hllm_rank": (0.855153, [
        ("s2", 0, 4.604497, None), ("s2", 1, 3.903652, 0.943089), ("rank", 0, 1.141687, None),
        ("rank", 1, 0.945477, None),
    ]),
    "hllm_rank_early": (0.143023, [
        ("s2", 0, 4.604497, None), ("s2", 1, 3.903652, 0.943089), ("rank", 0, 1.033356, None),
    ]),
}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("case", list(CASES))
def test_training_results_are_pinned(case, one_thread, tmp_path):
    data, name, over = CASES[case]
    ds = ring_dataset(n_users=60, n_items=30) if data == "ring" else topic_dataset()
    split = ds.leave_one_out()
    pol = fit_or_load(name, ds, split, over, root=tmp_path, progress=False)
    got = [(STAGES[h.get("stage")], h["epoch"], h["loss"], h.get("valid_ndcg@10")) for h in pol.history]
    test_ndcg, want = PINNED[case]
    assert [g[:2] for g in got] == [w[:2] for w in want]  # the same epochs of the same stages ran
    assert [g[3] is None for g in got] == [w[3] is None for w in want]  # validated at the same epochs
    approx = pytest.approx
    assert np.array([g[2] for g in got]) == approx(np.array([w[2] for w in want]), rel=1e-4)
    assert [g[3] for g in got if g[3] is not None] == approx([w[3] for w in want if w[3] is not None], abs=1e-4)
    assert evaluate(pol, split, ks=(10,)).summary["ndcg@10"] == approx(test_ndcg, abs=1e-4)  # the best weights
