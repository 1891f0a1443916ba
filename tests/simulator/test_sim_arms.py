"""Default arms of `sim run --treatment X --control Y` (issue 16): the HLLM arm is pure HLLM, the
hybrid is a named option, and every arm's pipeline can be described stage by stage."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simulator.commands.run import build_config
from simulator.engine.config import QUICK_BUDGET, ArmConfig, default_arm, describe_pipeline, load_config

ID_MODELS = {"sasrec", "hstu", "itemknn"}  # policies that learn from item ids
EXAMPLES = Path(__file__).resolve().parents[2] / "simulator" / "examples"


def test_default_hllm_arm_has_no_id_model_stage():
    cfg = build_config("hllm", "sasrec", None, None, {})
    control, treatment = cfg.arms
    assert treatment.name == "hllm" and not set(treatment.policies()) & ID_MODELS
    assert describe_pipeline(treatment) == ["retrieval: hllm (100) + popularity (50)", "coarse: hllm (keep 100)",
                                            "fine: hllm (keep 30)", "rerank: seen filter", "slate: 10"]
    # both arms have the same shape: the A/B compares the models, not the pipelines
    assert [s.split(":")[0] for s in describe_pipeline(control)] == [s.split(":")[0] for s in describe_pipeline(treatment)]
    assert load_config(EXAMPLES / "ab_hllm_vs_sasrec.toml").arms[1].policies() == ["hllm", "popularity"]


def test_hybrid_is_one_flag_away():
    cfg = build_config("hllm_hybrid", "sasrec", None, None, {})
    hybrid = cfg.arms[1]
    assert hybrid.name == "hllm_hybrid" and hybrid.coarse.policy == "sasrec" and hybrid.fine.policy == "hllm"
    assert describe_pipeline(hybrid)[:3] == ["retrieval: hllm (100) + sasrec (100) + popularity (50)",
                                             "coarse: sasrec (keep 100)", "fine: hllm (keep 30)"]
    assert set(cfg.policies) == {"sasrec", "hllm"}  # the short default training budgets apply to both
    example = load_config(EXAMPLES / "ab_hllm_hybrid_vs_sasrec.toml").arms[1]
    assert example.coarse.policy == "sasrec" and example.fine.policy == "hllm"


def test_describe_pipeline_lists_every_stage_in_merge_order():
    arm = ArmConfig(name="x", channels=({"policy": "pop", "quota": 50, "weight": 0.5}, {"policy": "m", "quota": 80}),
                    fine={"policy": "m", "keep": 20},
                    rerank={"filter_seen": False, "mmr_lambda": 0.7, "max_per_genre": 3}, slate_size=5)
    assert describe_pipeline(arm) == ["retrieval: m (80) + pop (50)", "coarse: none", "fine: m (keep 20)",
                                      "rerank: top-k, MMR (lambda 0.7, genres), at most 3 per genres", "slate: 5"]


def test_pure_hllm_arm_serves_items_it_never_trained_on():
    """Cold items reach the slate: the pure arm has no ID stage to cut them."""
    from policies import registry
    from policies.base import UserBatch
    from simulator.core.splits import cold_items
    from simulator.engine.pipeline import Pipeline

    sys.path.insert(0, str(Path(__file__).parents[1] / "hllm"))
    from _tinydata import tiny_dataset

    torch.set_num_threads(1)
    ds = tiny_dataset(n_users=30)
    split, held_out = cold_items(ds.leave_one_out(), ds.n_items, 0.25, seed=0)
    pols = {"hllm": registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 2}),
            "popularity": registry.create("popularity")}
    for p in pols.values():
        p.fit(ds, split)
    arm = ArmConfig(**{**default_arm("hllm", "treatment"), "channels": [{"policy": "hllm", "quota": 20},
                                                                         {"policy": "popularity", "quota": 10}],
                       "coarse": {"policy": "hllm", "keep": 20}, "fine": {"policy": "hllm", "keep": 12}})
    users = UserBatch.from_sequences(split.eval_histories("test"))
    slate = Pipeline(arm, pols).run(users).slate
    shown = slate.item_ids[slate.item_ids >= 0]
    assert np.isin(shown, held_out).mean() > 0.05, "no held-out item reached a slate"


@pytest.mark.parametrize("name", ["hllm", "hllm_hybrid", "sasrec", "popularity"])
def test_default_arms_are_valid(name):
    ArmConfig(**default_arm(name, "treatment"))


def test_readme_shows_the_arms_as_they_are():
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    for name in ("hllm", "sasrec", "hllm_hybrid"):
        assert " -> ".join(describe_pipeline(ArmConfig(**default_arm(name, "treatment")))) in readme, name


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_validate(example):
    from simulator.engine.run import validate

    cfg = load_config(example)
    validate(cfg)  # every policy override is a known field of that policy's config
    if "hllm" in cfg.policies:  # the examples train HLLM on sim run's budget, named once (the quick preset)
        assert cfg.policies["hllm"] == QUICK_BUDGET["hllm"]
