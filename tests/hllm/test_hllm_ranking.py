"""Early / late fusion ranking heads on a tiny fitted HLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tinydata import tiny_dataset  # noqa: E402

from hllm.ranking import RankerConfig, fit_ranker  # noqa: E402
from policies import registry  # noqa: E402


@pytest.mark.parametrize("fusion", ["late", "early"])
def test_ranker_learns_next_item_vs_random(fusion):
    torch.set_num_threads(1)
    ds = tiny_dataset(n_users=30)
    ds.values = np.where(np.arange(len(ds.sequences.items)) % 2 == 0, 5.0, 2.0)
    split = ds.leave_one_out()
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 2}).fit(ds, split, progress=False)
    ranker, hist = fit_ranker(pol, ds, split, RankerConfig(fusion=fusion, hidden=16, epochs=6, batch_size=32,
                                                           lr=3e-3), progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"]
    hists = [split.train.seq(u) for u in range(ds.n_users)]
    rng = np.random.default_rng(0)
    cand = np.concatenate([split.valid_targets[:, None], rng.integers(0, ds.n_items, (ds.n_users, 5))], 1)
    p = ranker.score(hists, cand)  # (U, 6) click probabilities
    assert p.shape == (ds.n_users, 6) and np.isfinite(p).all()
    assert (p[:, 0] > p[:, 1:].mean(1)).mean() > 0.6  # true next item scores above random items
