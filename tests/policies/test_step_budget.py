"""One budget rule for every trainer (``policies.train.StepBudget``): bounds in optimizer steps,
validation every N steps, no early stop before ``min_steps``, and a record of how training ended
(``steps``, ``epochs``, ``best_step``, ``capped``) in every policy's history."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _policy_data import tiny_dataset

from policies import registry
from policies.train import fit_summaries, training_record

sys.path.insert(0, str(Path(__file__).parents[1] / "hllm"))
from _tinydata import tiny_dataset as topic_dataset  # noqa: E402

ID = dict(max_len=8, hidden=16, n_layers=1, batch_size=32)


def fit(name, over, ds=None):
    ds = ds or tiny_dataset(n_users=60, n_items=30)
    split = ds.leave_one_out()
    return registry.create(name, over).fit(ds, split, progress=False), ds, split


def test_max_steps_stops_mid_epoch_and_is_recorded_as_capped():
    pol, ds, split = fit("sasrec", dict(ID, epochs=50, max_steps=5, eval_every_steps=2, patience=99))
    rec = training_record(pol.history)
    assert rec["steps"] == 5 and rec["capped"] and rec["stages"][0]["stop"] == "max_steps"
    per_epoch = pol.history[0]["step"]
    assert per_epoch < 5 and rec["epochs"] == -(-5 // per_epoch)  # the last epoch cut short
    assert rec["best_step"] in (2, 4)  # validated at steps 2 and 4 only


def test_patience_stops_and_min_steps_overrides_it():
    over = dict(ID, epochs=200, eval_every_steps=1, patience=1, lr=0.5)  # a huge lr: validation soon stalls
    early = training_record(fit("sasrec", over)[0].history)
    assert early["stages"][0]["stop"] == "patience" and not early["capped"]
    late = training_record(fit("sasrec", dict(over, min_steps=early["steps"] + 10))[0].history)
    assert late["steps"] >= early["steps"] + 10  # patience is not honoured before min_steps
    assert late["best_step"] <= late["steps"]


def test_epoch_cap_without_early_stop_is_capped():
    pol, _, _ = fit("hstu", dict(ID, epochs=2, eval_every=1, patience=5))
    rec = training_record(pol.history)
    assert rec["capped"] and rec["epochs"] == 2 and rec["stages"][0]["stop"] == "max_epochs"
    per_epoch = pol.history[0]["step"]
    assert [h["step"] for h in pol.history] == [per_epoch, 2 * per_epoch]  # steps counted across epochs


def test_hllm_stages_and_ranker_share_the_budget_rule():
    ds = topic_dataset()
    pol, _, _ = fit("hllm", {"preset": "tiny", "stage1_epochs": 1, "stage2_epochs": 50, "max_steps": 3,
                             "eval_every_steps": 1, "patience": 50}, ds)
    stages = fit_summaries(pol.history)
    assert [s["stage"] for s in stages] == ["hllm stage 1", "hllm stage 2"]
    assert stages[0]["stop"] == "max_epochs" and stages[0]["best_step"] is None  # stage 1: fixed epochs
    assert stages[1]["steps"] == 3 and stages[1]["capped"]
    rank, _, _ = fit("hllm_rank", {"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1},
                                   "ranker": {"hidden": 8, "epochs": 9, "max_steps": 2, "batch_size": 32}}, ds)
    assert fit_summaries(rank.history)[-1] == {"stage": "ranker", "epochs": 1, "steps": 2, "best_step": None,
                                                "stop": "max_steps", "capped": True}


def test_untrained_policy_records_zero_steps():
    assert training_record([]) == {"steps": 0, "epochs": 0, "best_step": None, "capped": False, "stages": []}


def test_presets_do_not_cap_hllm_below_the_id_models():
    from hllm.recipe import PRESETS, HLLMPolicyConfig
    from policies.sasrec import SASRecConfig

    for name in ("fast", "paper"):
        cfg = HLLMPolicyConfig(preset=name)
        assert cfg.stage2_epochs >= SASRecConfig().epochs and cfg.patience == SASRecConfig().patience
        assert cfg.max_steps is None and "patience" not in PRESETS[name]


@pytest.mark.parametrize("bad", [{"max_steps": 0}, {"min_steps": -1}, {"eval_every_steps": 0}])
def test_bad_budget_is_a_config_error(bad):
    from simulator.core.errors import ConfigError

    with pytest.raises(ConfigError):
        registry.make_config("sasrec", bad)


# ----------------------------------------------------------------- matched objectives
def test_popularity_negatives_follow_popularity_and_carry_log_q():
    import numpy as np
    import torch

    from policies.train import Negatives, trained_items

    ds = tiny_dataset(n_users=60, n_items=30)
    split = ds.leave_one_out()
    known = torch.from_numpy(trained_items(split.train, ds.n_items))
    neg = Negatives.of(split.train, known, "popularity")
    draws = neg.draw(200_000, torch.Generator().manual_seed(0))
    counts = np.bincount(split.train.items, minlength=ds.n_items)
    freq = np.bincount(draws.numpy() - 1, minlength=ds.n_items) / len(draws)
    assert np.allclose(freq, counts / counts.sum(), atol=3e-3)
    assert torch.allclose(neg.log_q[1:][known], torch.from_numpy(np.log(counts / counts.sum())[known.numpy()]).float())
    assert Negatives.of(split.train, known, "uniform").log_q is None  # uniform: a constant shift, no correction


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_sampled_softmax_with_popularity_negatives_learns(name):
    from policies.evaluate import evaluate

    pol, ds, split = fit(name, dict(ID, epochs=6, eval_every=2, loss="sampled_ce", n_negatives=8,
                                    negative_sampler="popularity", lr=3e-3))
    pop, _, _ = fit("popularity", {})
    assert evaluate(pol, split, ks=(10,)).summary["ndcg@10"] > evaluate(pop, split, ks=(10,)).summary["ndcg@10"]


def test_hllm_full_softmax_uses_every_trained_item_as_negative():
    ds = topic_dataset()
    pol, _, split = fit("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "negatives": "all",
                                 "in_batch_negatives": False}, ds)
    n_trained = len(set(split.train.items.tolist()))
    # every trained item but the positive itself (masked) is left as a negative in every row
    assert pol.history[-1]["unmasked_negatives"] >= n_trained - 1 - 1e-6
    sampled, _, _ = fit("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "n_negatives": 4,
                                 "in_batch_negatives": False}, ds)
    assert sampled.history[-1]["unmasked_negatives"] <= 4


# ----------------------------------------------------------------- stage 1: a real fine-tune
def test_stage1_records_item_llm_movement_and_trains_the_item_token_at_the_heads_lr():
    ds = topic_dataset()
    pol, _, _ = fit("hllm", {"preset": "tiny", "stage1_epochs": 2, "stage1_max_steps": 3, "stage2_epochs": 1,
                             "item_lr": 1e-4, "lr": 1e-2}, ds)
    s1 = [h for h in pol.history if h["stage"] == "hllm stage 1"]
    assert s1[-1]["step"] == 3 and s1[-1]["stop"] == "max_steps"  # stage 1's step bound
    move = s1[-1]["item_llm_movement"]
    assert set(move) == {"layer.0", "other", "item_token"} and 0 < move["layer.0"] < 0.05  # 3 steps at 1e-4
    assert move["item_token"] > 5 * move["layer.0"]  # the item token trains at the head's lr (1e-2)


def test_paper_preset_is_the_official_stage1_scheme():
    from hllm.recipe import HLLMPolicyConfig

    cfg = HLLMPolicyConfig(preset="paper")
    assert (cfg.stage1_epochs, cfg.item_lr, cfg.lr) == (5, 1e-4, 1e-3)
    assert HLLMPolicyConfig(preset="fast").prompt == ""
