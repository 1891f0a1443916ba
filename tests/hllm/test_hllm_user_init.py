"""user_init="pretrained": the user LLM is the first user_layers layers of a Llama decoder (fast, tiny)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tinydata import tiny_dataset, tiny_hf_config  # noqa: E402

from hllm.configuration_hllm import HLLMConfig  # noqa: E402
from hllm.modeling_hllm import HLLMModel  # noqa: E402
from hllm.policy import HLLMPolicy, load_hllm_model  # noqa: E402
from policies import registry  # noqa: E402
from policies.base import UserBatch  # noqa: E402
from simulator.core.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    """A tiny random Llama decoder checkpoint: (folder, its state dict)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(123)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128))
    path = tmp_path_factory.mktemp("decoder") / "tiny-llama"
    lm.save_pretrained(path)
    return path, {k: v.clone() for k, v in lm.state_dict().items()}


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("bert") / "tiny-bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(path)
    return path


def tiny_config(**kw) -> HLLMConfig:
    return tiny_hf_config(**kw)


def assert_user_llm_is_decoder(model: HLLMModel, ref: dict, n_layers: int) -> None:
    sd = model.user_llm.model.state_dict()
    keys = [k for k in sd if not k.startswith("embed_tokens.")]
    assert {k.split(".")[1] for k in keys if k.startswith("layers.")} == {str(i) for i in range(n_layers)}
    assert "norm.weight" in keys
    for k in keys:
        torch.testing.assert_close(sd[k], ref["model." + k], rtol=0, atol=0, msg=k)


def test_pretrained_user_llm_takes_decoder_layers_and_width(decoder):
    path, ref = decoder
    cfg = tiny_config(user_init="pretrained", user_llm=str(path), user_layers=2, user_hidden=16, user_heads=4)
    m = HLLMModel(cfg).eval()
    # width and heads come from the decoder; the config is overwritten so it round-trips
    assert (cfg.user_hidden, cfg.user_heads) == (32, 2) and cfg.user_llm_config["num_hidden_layers"] == 3
    assert m.proj(torch.zeros(1, m.item_encoder.hidden)).shape[-1] == 32 and m.user_llm.model.config.hidden_size == 32
    assert m.user_llm.model.config.vocab_size == 2  # the token table is unused (inputs_embeds)
    assert_user_llm_is_decoder(m, ref, 2)
    m.initialize_weights()  # what HF post_init would run: the loaded layers must not be re-initialised
    assert_user_llm_is_decoder(m, ref, 2)
    # a second model from the same (now resolved) config object also starts from the decoder
    assert_user_llm_is_decoder(HLLMModel(cfg), ref, 2)
    # load_user_llm=False: same architecture, decoder not read
    torch.manual_seed(0)
    bare = HLLMModel(tiny_config(user_init="pretrained", user_llm=str(path), user_layers=2), load_user_llm=False)
    assert bare.config.user_hidden == 32
    assert not torch.equal(bare.user_llm.model.layers[0].mlp.up_proj.weight, ref["model.layers.0.mlp.up_proj.weight"])
    h = m.user_states(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool))
    assert h.shape == (2, 5, 32) and torch.isfinite(h).all()  # (B, T, D)


def test_fit_save_load_without_decoder(decoder, tmp_path):
    src, ref = decoder
    path = tmp_path / "dec"  # a private copy: removed after saving
    shutil.copytree(src, path)
    ds = tiny_dataset()
    split = ds.leave_one_out()
    pol = registry.create("hllm", {"preset": "tiny", "user_init": "pretrained", "user_llm": str(path),
                                   "user_layers": 2, "stage1_epochs": 0, "stage2_epochs": 2})
    pol.fit(ds, split, progress=False)
    assert pol.hf_config.user_hidden == 32 and pol.table.shape == (ds.n_items, 32)
    batch = UserBatch.from_sequences(split.train, np.arange(8))
    scores = pol.score_all(batch)
    assert scores.shape == (8, ds.n_items) and np.isfinite(scores).all()
    assert pol.embed_users(batch).shape == (8, 32)

    pol.save(tmp_path / "m")
    shutil.rmtree(path)  # the saved model must not need the decoder
    saved = HLLMConfig.from_pretrained(tmp_path / "m" / "model")
    assert saved.user_init == "pretrained" and saved.user_hidden == 32 and saved.user_llm_config["hidden_size"] == 32
    again = HLLMPolicy.load(tmp_path / "m")
    np.testing.assert_array_equal(again.score_all(batch), scores)
    assert again.hf_config.user_hidden == 32
    model = load_hllm_model(tmp_path / "m" / "model")
    for k, v in pol.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v.cpu(), rtol=0, atol=0, msg=k)


def test_scratch_is_unchanged():
    cfg = tiny_config()
    m = HLLMModel(cfg)
    assert cfg.user_init == "scratch" and cfg.user_llm_config is None and m.config.user_hidden == 32
    assert m.user_llm.model.config.num_hidden_layers == 1 and m.user_llm.model.config.rms_norm_eps == 1e-6


@pytest.mark.parametrize("kw, message", [
    (dict(user_init="bogus"), "HLLM config user_init='bogus': Input should be 'scratch' or 'pretrained'"),
    (dict(user_init="pretrained"),  # the tiny item LLM is a BERT encoder
     "user_init='pretrained' needs a Llama-architecture decoder, but 'tiny' is a random BERT encoder "
     "(model_type 'bert'); use user_init='scratch' or user_llm=<a decoder>"),
    (dict(user_init="pretrained", user_llm="@BERT@"),
     "user_init='pretrained' needs a Llama-architecture decoder, but user LLM '@BERT@' (@BERT@) has model_type 'bert'; "
     "use user_init='scratch' or user_llm=<a decoder>"),
    (dict(user_init="pretrained", user_llm="@DEC@", user_layers=4),
     "user_layers=4: the decoder '@DEC@' has 3 layers (user_init='pretrained' takes the first user_layers)"),
    (dict(user_init="pretrained", user_llm="@MISSING@"),
     "user LLM '@MISSING@': no local HF checkpoint folder with a config.json at @MISSING@ (no downloads are made)"),
])
def test_invalid_user_init_is_a_clear_error(kw, message, decoder, bert_folder, tmp_path):
    subst = {"@BERT@": str(bert_folder), "@DEC@": str(decoder[0]), "@MISSING@": str(tmp_path / "nope")}
    if kw.get("user_llm") in subst:
        kw = dict(kw, user_llm=subst[kw["user_llm"]])
    for name, value in subst.items():
        message = message.replace(name, value)
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        HLLMModel(tiny_config(**kw))


def test_policy_config_rejects_unknown_user_init():
    with pytest.raises(ConfigError, match="user_init"):
        registry.create("hllm", {"preset": "tiny", "user_init": "bogus"})
