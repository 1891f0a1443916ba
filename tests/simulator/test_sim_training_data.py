"""What the arms are trained on in a run: the pre-period logs with their values (issue 16)."""

from __future__ import annotations

import numpy as np
from _simdata import tiny_catalog, tiny_config

from simulator.engine.run import prepare


def test_training_dataset_keeps_values_aligned(tmp_path):
    """hllm_rank's 'like' label comes from ``values``; dropping them made like == click."""
    cat = tiny_catalog(tmp_path / "c.duckdb")
    for mode in ("world", "replay"):
        setup = prepare(tiny_config(tmp_path / "art", user_model=mode), cat)
        tr, full = setup.train_dataset, setup.dataset
        assert tr.values is not None and len(tr.values) == len(tr.sequences), mode
        keep = full.sequences.ts <= setup.sim_start
        np.testing.assert_array_equal(tr.values, full.values[keep])
        np.testing.assert_array_equal(tr.sequences.items, full.sequences.items[keep])
