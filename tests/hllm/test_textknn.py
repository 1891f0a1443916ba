"""``textknn`` (issue 22): HLLM's frozen item encoder (mean pooling), user = mean of the history's
item vectors, cosine scores; registered from hllm/, usable as an arm and as a retrieval channel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tomllib
import torch
from _tinydata import tiny_dataset

from hllm.textknn import TextKNNConfig, TextKNNPolicy
from policies.base import UserBatch


def fitted():
    ds = tiny_dataset()
    split = ds.leave_one_out()
    return TextKNNPolicy(TextKNNConfig.tiny()).fit(ds, split, progress=False), ds, split


def test_scores_are_cosines_to_the_mean_history_vector():
    pol, ds, split = fitted()
    enc = pol.encoder()
    tok = enc.tokenize(list(ds.item_text))
    with torch.no_grad():
        feats = torch.nn.functional.normalize(enc(tok["input_ids"], tok["attention_mask"]), dim=-1)
    assert torch.allclose(pol.table, feats, atol=1e-5)  # the item LLM's mean-pooled features, unit length
    hist = [np.array([3, 7, 11]), np.array([], dtype=np.int64)]
    got = pol.score_all(UserBatch(np.arange(2), hist))
    u = torch.nn.functional.normalize(feats[[3, 7, 11]].mean(0), dim=-1)
    assert np.allclose(got[0], (feats @ u).numpy(), atol=1e-5)
    counts = np.bincount(split.train.items, minlength=ds.n_items)
    prior = torch.nn.functional.normalize(torch.from_numpy(counts).float() @ feats, dim=-1)
    assert np.allclose(got[1], (feats @ prior).numpy(), atol=1e-5)  # no history: the mean interaction


def test_same_encoder_as_hllm_with_mean_pooling():
    from hllm.modeling_hllm import ItemEncoder
    from hllm.recipe import PRESETS, HLLMPolicyConfig

    cfg = TextKNNConfig()
    fast = HLLMPolicyConfig(preset="fast")
    assert (cfg.item_llm, cfg.max_text_len, cfg.prompt) == (fast.item_llm, fast.max_text_len, fast.prompt)
    enc = TextKNNPolicy(TextKNNConfig.tiny()).encoder()
    assert PRESETS["fast"]["pooling"] == "mean" and isinstance(enc, ItemEncoder) and enc.pooling == "mean"


def test_new_items_are_retrievable_without_training():
    pol, ds, _ = fitted()
    new = pol.add_items([ds.item_text[5]])  # a copy of item 5's text
    assert list(new) == [ds.n_items]
    scores = pol.score_all(UserBatch(np.arange(1), [np.array([5])]))[0]
    assert scores[ds.n_items] == np.float32(scores[5]) and scores.argmax() in (5, ds.n_items)


def test_registered_from_hllm_and_usable_as_arm_and_channel():
    eps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert eps["hllm_sim.policies"]["textknn"] == "hllm.textknn"
    from simulator.commands.run import build_config

    cfg = build_config("textknn", "sasrec", None, None, {})
    assert "textknn" in cfg.arms[1].policies() and "textknn" in [c.policy for c in cfg.arms[1].channels]
