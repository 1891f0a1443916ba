"""HLLM model configuration (HF ``PretrainedConfig``): the architecture only, as transformers'
configuration files are: item LLM, projection, user LLM and the InfoNCE head.

Every architectural setting has its one default in :class:`HLLMArchitecture`; how the model is
trained (epochs, learning rates, negatives, windows) and the presets are the recipe,
:mod:`hllm.recipe`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import PretrainedConfig

from simulator.core.errors import ConfigError


class HLLMArchitecture(BaseModel):
    """The architectural HLLM settings, one default each (what :class:`HLLMConfig` stores)."""

    model_config = ConfigDict(extra="forbid")
    # item LLM: text -> one feature vector per item
    item_llm: str = Field("minilm", description="minilm | smollm2 | tiny | a local HF checkpoint folder")
    item_llm_pretrained: bool = Field(True, description="False: same architecture, random weights (ablation)")
    pooling: Literal["item_token", "mean"] = "item_token"
    prompt: str = "Compress the following sentence into embedding: "
    max_text_len: int = Field(48, ge=4)
    # projection: item feature -> user width (an MLP adapts frozen features)
    proj: Literal["linear", "mlp"] = "mlp"
    proj_hidden: int = Field(1024, ge=1)
    item_id_embeddings: bool = Field(False, description="hybrid, not the paper: text embedding + a learned id "
                                                        "vector, zero-initialised")
    # user LLM: causal transformer over item embeddings
    user_hidden: int = Field(256, ge=8)
    user_layers: int = Field(2, ge=1)
    user_heads: int = Field(4, ge=1)
    user_init: Literal["scratch", "pretrained"] = Field(
        "scratch", description="pretrained: the first user_layers layers of a Llama decoder (hllm.user_llm)")
    user_llm: str | None = Field(None, description="decoder for user_init='pretrained': smollm2 | local HF "
                                                   "folder (None: the item LLM)")
    max_len: int = Field(50, ge=2, description="user history length (positions)")
    dropout: float = Field(0.1, ge=0, lt=1)
    use_time: bool = Field(False, description="add an embedding of log2(seconds since the previous item)")
    time_buckets: int = Field(32, ge=1, description="a gap of g seconds is bucket floor(log2(max(g, 1))), "
                                                    "at most time_buckets (the first item: bucket 0)")
    # InfoNCE head
    similarity: Literal["cos", "dot"] = Field("cos", description="cos: the paper's cosine / temperature; "
                                                                "dot: inner product, like the ID models")
    init_temperature: float = Field(0.07, gt=0)
    learn_temperature: bool = True
    min_temperature: float = Field(0.01, gt=0)
    false_negative_cos: float = Field(0.99, gt=-1, description="negatives this close (cosine) to the positive "
                                                               "are masked; >= 1 turns the filter off")


ARCHITECTURE_FIELDS = frozenset(HLLMArchitecture.model_fields)


def architecture(values: dict) -> dict:
    """``values`` validated and completed with the defaults; a bad value is a one-line ConfigError."""
    try:
        return HLLMArchitecture(**values).model_dump()
    except ValidationError as e:
        x = e.errors()[0]
        raise ConfigError(f"HLLM config {x['loc'][0]}={x['input']!r}: {x['msg']}") from None


class HLLMConfig(PretrainedConfig):
    model_type = "hllm"

    def __init__(self, user_llm_config: dict | None = None, n_item_ids: int = 0, **kwargs) -> None:
        """Architecture settings by name (:class:`HLLMArchitecture`); other keywords go to
        ``PretrainedConfig``. Set when the model is first built: ``user_llm_config``, the pretrained
        decoder's LlamaConfig (``hllm.user_llm``), and ``n_item_ids``, the items with hybrid id
        vectors (ids >= it, new items, get text only)."""
        arch = architecture({k: kwargs.pop(k) for k in list(kwargs) if k in ARCHITECTURE_FIELDS})
        super().__init__(**kwargs)
        self.user_llm_config, self.n_item_ids = user_llm_config, n_item_ids
        for field, value in arch.items():
            setattr(self, field, value)
