"""HLLM training options: all-history windows, MLP adapter, top-k item-LLM fine-tuning."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tinydata import tiny_dataset, tiny_hf_config  # noqa: E402

from hllm.item_llm import backbone_layers, load_item_backbone, trainable_item_parameters  # noqa: E402
from policies import registry  # noqa: E402
from policies.base import UserBatch  # noqa: E402
from policies.train import training_windows  # noqa: E402
from simulator.core.errors import ConfigError  # noqa: E402
from simulator.core.sequences import Sequences  # noqa: E402


def test_all_windows_cover_every_target_once():
    seqs = [list(range(11)), [5, 6], [7]]  # lengths 11, 2, 1 (too short to train on)
    train = Sequences.from_lists(seqs, [np.arange(len(s), dtype=float) for s in seqs])
    last, _ = training_windows(train, 4, "last")
    assert last.tolist() == [[7, 8, 9, 10, 11], [0, 0, 0, 6, 7]]  # shifted ids: item + 1
    ids, ts = training_windows(train, 4, "all")
    # 11 items -> windows ending at 11, 7, 3 (overlap of one): every target (position >= 1) once
    assert ids.tolist() == [[7, 8, 9, 10, 11], [3, 4, 5, 6, 7], [0, 0, 1, 2, 3], [0, 0, 0, 6, 7]]
    targets = sorted(int(t) for row in ids for x, t in zip(row[:-1], row[1:], strict=True) if x > 0 and t > 0)
    assert targets == sorted([t + 1 for s in seqs if len(s) >= 2 for t in s[1:]])
    assert ts[1].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_top_layer_fine_tuning_freezes_lower_layers():
    bb, _, _ = load_item_backbone("tiny")
    layers = backbone_layers(bb)
    assert len(layers) == bb.config.num_hidden_layers
    params = trainable_item_parameters(bb, 1)
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not bb.get_input_embeddings().weight.requires_grad
    assert {id(p) for p in layers[-1].parameters()} <= {id(p) for p in params}
    assert len(trainable_item_parameters(bb, None)) == len(list(bb.parameters()))
    with pytest.raises(ConfigError, match="item_trainable_layers=5: the item LLM has 1 layers"):
        trainable_item_parameters(bb, 5)


def _fit_top_layers(k: int):
    """Fit the tiny HLLM with stage 1 on the top ``k`` item-LLM layers; return it and the changed weights."""
    ds = tiny_dataset()
    torch.set_num_threads(1)
    pol = registry.create("hllm", {"preset": "tiny", "item_trainable_layers": k, "stage2_epochs": 1})
    pol.fit(ds, ds.leave_one_out(), progress=False)
    torch.manual_seed(pol.cfg.seed)  # as fit seeds before building the model
    fresh, _, _ = load_item_backbone("tiny")
    got = pol.model.item_encoder.backbone.state_dict()
    return pol, [name for name, v in fresh.state_dict().items() if not torch.equal(got[name], v)]


def test_stage1_top_layers_changes_only_those_weights():
    _, changed = _fit_top_layers(0)
    assert changed == []  # 0 trainable layers: the backbone is untouched


@pytest.mark.parametrize("over", [{"proj": "mlp", "proj_hidden": 16}, {"windows": "all"}, {"similarity": "dot"},
                                  {"item_id_embeddings": True}])
def test_options_train_and_round_trip(over, tmp_path):
    ds = tiny_dataset()
    split = ds.leave_one_out()
    torch.set_num_threads(1)
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 2, **over})
    pol.fit(ds, split, progress=False)
    batch = UserBatch.from_sequences(split.train, np.arange(6))
    pol.save(tmp_path / "m")
    again = type(pol).load(tmp_path / "m")
    np.testing.assert_array_equal(again.score_all(batch), pol.score_all(batch))
    norms = np.linalg.norm(pol.item_table(), axis=1)
    if over.get("similarity") == "dot":  # raw inner products: the norms are free (not all 1)
        assert not np.allclose(norms, 1.0)
    else:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_hybrid_id_vectors_train_and_new_items_fall_back_to_text():
    ds = tiny_dataset()
    torch.set_num_threads(1)
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 2, "item_id_embeddings": True})
    pol.fit(ds, ds.leave_one_out(), progress=False)
    ids = pol.model.id_emb
    assert ids.num_embeddings == ds.n_items and ids.weight.abs().sum() > 0  # trained away from zero
    new = pol.add_items(["a brand new item", "another one"])
    with torch.no_grad():
        text_only = pol.model.project(pol.features[new])  # no id vector
    torch.testing.assert_close(pol.table[new], text_only, rtol=1e-4, atol=1e-4)  # batch-shape rounding only
    assert not torch.allclose(pol.table[:2], pol.model.project(pol.features[:2]))  # known ids: text + id


def test_length_sorted_chunks_equal_one_batch():
    from hllm.modeling_hllm import HLLMModel
    from hllm.policy import features_by_length

    torch.manual_seed(0)
    m = HLLMModel(tiny_hf_config()).eval()
    tok = m.item_encoder.tokenize(["a", "a much longer title with words", "mid size title", "b c"] * 3)
    ids = torch.tensor([5, 1, 0, 11, 2, 7])
    want = m.item_features(tok["input_ids"][ids], tok["attention_mask"][ids])
    torch.testing.assert_close(features_by_length(m, tok, ids, "cpu", chunk=4), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["item_token", "mean"])
@pytest.mark.parametrize("decoder", [False, True])
def test_cached_lower_layers_plus_top_view_equal_full_forward(pooling, decoder, tmp_path):
    from transformers import LlamaConfig, LlamaModel

    from hllm.modeling_hllm import HLLMModel

    vals = dict(pooling=pooling)
    if decoder:
        torch.manual_seed(0)
        LlamaModel(LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                               num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "dec")
        from transformers import AutoTokenizer

        from hllm.item_llm import minilm_path
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path / "dec")
        vals["item_llm"] = str(tmp_path / "dec")
    torch.manual_seed(0)
    m = HLLMModel(tiny_hf_config(**vals)).eval()
    tok = m.item_encoder.tokenize(["a", "a much longer title with words", "mid size title"])
    full = m.item_features(tok["input_ids"], tok["attention_mask"])
    n = m.item_encoder.backbone.config.num_hidden_layers
    for top in range(1, n + 1):
        states, mask = m.item_encoder.lower_states(tok["input_ids"], tok["attention_mask"], top)
        torch.testing.assert_close(m.item_encoder.top_features(states, mask, top), full, atol=1e-5, rtol=1e-5)
    assert not any(k.startswith("item_encoder._views") for k in m.state_dict())


def test_stage1_cached_top_layer_trains_only_top_layer():
    pol, changed = _fit_top_layers(1)
    assert changed and all(k.startswith("encoder.layer.0.") for k in changed)  # the tiny BERT has 1 layer
    assert [h["stage"] for h in pol.history][0] == "hllm stage 1"


def test_every_preset_is_labelled_for_what_it_is():
    """Tables and reports call `fast` what it is: a frozen encoder, not the paper's fine-tuned item LLM."""
    from hllm.recipe import PRESET_LABELS, PRESETS

    assert set(PRESET_LABELS) == set(PRESETS)
    assert "frozen" in PRESET_LABELS["fast"] and "not the paper" in PRESET_LABELS["fast"]
    assert PRESETS["fast"]["stage1_epochs"] == 0 and PRESETS["paper"]["stage1_epochs"] > 0
    assert "fine-tuned" in PRESET_LABELS["paper"]


def test_every_setting_has_one_default_in_one_place():
    """Architecture defaults live in HLLMArchitecture, training ones in HLLMRecipe; the policy config
    and the model config add none, presets only override, and `sim run`'s budget is a named preset."""
    from hllm.configuration_hllm import ARCHITECTURE_FIELDS, HLLMArchitecture, HLLMConfig
    from hllm.recipe import PRESETS, HLLMPolicyConfig, HLLMRecipe
    from simulator.engine.config import QUICK_BUDGET

    arch, recipe = HLLMArchitecture(), HLLMRecipe()
    assert not ARCHITECTURE_FIELDS & set(HLLMRecipe.model_fields)
    # + the preset and the serving settings (their defaults: hllm.ann.RetrievalConfig,
    # hllm.user_state.UserStateConfig)
    assert set(HLLMPolicyConfig.model_fields) == (ARCHITECTURE_FIELDS | set(HLLMRecipe.model_fields)
                                                  | {"preset", *HLLMPolicyConfig.SERVING_FIELDS})
    assert HLLMPolicyConfig.SERVING_FIELDS == ("retrieval", "user_states")
    hf = HLLMConfig()
    assert {f: getattr(hf, f) for f in ARCHITECTURE_FIELDS} == arch.model_dump()
    assert not any(hasattr(hf, f) for f in HLLMRecipe.model_fields)  # the model config is architecture only
    defaults = {**arch.model_dump(), **recipe.model_dump()}
    for name, over in PRESETS.items():
        assert set(over) <= set(defaults), name
        assert not {k for k, v in over.items() if defaults[k] == v}, f"preset {name} restates a default"
    assert QUICK_BUDGET["hllm"] == {"preset": "quick"}
    assert PRESETS["quick"] == {**PRESETS["fast"], "stage2_epochs": 6, "patience": 2}


def test_explicit_value_beats_preset_beats_default():
    from hllm.recipe import HLLMPolicyConfig

    cfg = HLLMPolicyConfig(preset="tiny", stage2_epochs=7)
    assert (cfg.stage2_epochs, cfg.user_hidden, cfg.lr) == (7, 32, HLLMPolicyConfig.model_fields["lr"].default)
    assert HLLMPolicyConfig().batch_size == 64  # the default preset, fast
    assert HLLMPolicyConfig(**cfg.model_dump()) == cfg  # a saved config reloads as itself
    assert cfg.to_hf().user_hidden == 32 and not hasattr(cfg.to_hf(), "stage2_epochs")


@pytest.mark.parametrize("over, field", [({"windows": "every"}, "windows"), ({"preset": "fastest"}, "preset"),
                                         ({"stage2_epochz": 3}, "stage2_epochz"), ({"max_text_len": 2}, "max_text_len")])
def test_policy_config_rejects_bad_settings(over, field):
    with pytest.raises(ConfigError, match=f"policy 'hllm' config: {field}: "):
        registry.create("hllm", over)


def test_serving_settings_do_not_retrain():
    """The trained-model cache key ignores how retrieval is served, not what the model learns."""
    from policies import registry
    from policies.store import config_hash

    base = registry.make_config("hllm", {"preset": "tiny"})
    ann = registry.make_config("hllm", {"preset": "tiny", "retrieval": {"index": "ivf", "nprobe": 8}})
    other = registry.make_config("hllm", {"preset": "tiny", "stage2_epochs": 3})
    assert config_hash("hllm", ann) == config_hash("hllm", base) != config_hash("hllm", other)


def test_a_cached_model_serves_with_the_runs_serving_settings(tmp_path, monkeypatch):
    """fit_or_load: a model loaded from the cache takes this run's serving settings, not the saved ones."""
    from types import SimpleNamespace

    from hllm.recipe import HLLMPolicyConfig
    from policies import registry, store

    saved = HLLMPolicyConfig(preset="tiny")

    class Fake:
        def __init__(self, cfg):
            self.cfg = cfg

        @classmethod
        def load(cls, path):
            return cls(saved)

    monkeypatch.setattr(registry, "get", lambda name: SimpleNamespace(cls=Fake, config_cls=HLLMPolicyConfig))
    monkeypatch.setattr(store, "data_fingerprint", lambda d, s: "x")
    want = {"preset": "tiny", "user_states": {"serving": "tables", "refresh_s": 60.0}}
    cfg = registry.make_config("hllm", want)
    path = tmp_path / "d" / f"hllm-{store.config_hash('hllm', cfg, {'data': 'x'})}"
    path.mkdir(parents=True)
    (path / "DONE").write_text("{}")
    pol = store.fit_or_load("hllm", SimpleNamespace(name="d"), None, want, root=tmp_path)
    assert pol.cfg.user_states.serving == "tables" and pol.cfg.user_states.refresh_s == 60.0
