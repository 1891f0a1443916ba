"""Tiny deterministic dataset for HLLM tests: items in topics, users walk inside one topic."""

from __future__ import annotations

import numpy as np

from simulator.core.sequences import Dataset, Sequences

TOPICS = ["jazz music", "space travel", "cooking pasta", "football match", "garden flowers", "ocean fish"]


def tiny_dataset(n_users: int = 60, n_items: int = 48, length: int = 12, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    topic = np.arange(n_items) % len(TOPICS)
    text = [f"title: {TOPICS[t]} number {i}" for i, t in enumerate(topic)]
    seqs, tss = [], []
    for u in range(n_users):
        t = u % len(TOPICS)
        pool = np.flatnonzero(topic == t)
        start = rng.integers(len(pool))
        seqs.append(pool[(start + np.arange(length)) % len(pool)])  # walk the topic in id order
        tss.append(np.arange(length, dtype=np.float64) * 60.0 + u)
    return Dataset("tiny", n_users, n_items, Sequences.from_lists(seqs, tss), text,
                   {"topic": topic})


def tiny_hf_config(**kw):
    """The model config of the ``tiny`` preset, with architecture overrides ``kw``."""
    from hllm.configuration_hllm import ARCHITECTURE_FIELDS, HLLMConfig
    from hllm.recipe import HLLMPolicyConfig

    return HLLMConfig(**{**HLLMPolicyConfig.tiny().model_dump(include=set(ARCHITECTURE_FIELDS)), **kw})
