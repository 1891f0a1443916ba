"""Shared fixtures: real-data location (skips cleanly when absent), tiny datasets, seeds."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ml100k_dir():
    from simulator.data.paths import find_ml100k

    p = find_ml100k()
    if p is None:
        pytest.skip("MovieLens-100K not found (../shared/data/ml-100k or HLLM_SIM_ML100K)")
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(0)
