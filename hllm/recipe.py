"""HLLM training recipe and presets: the one place that says how an HLLM is trained.

Each setting has one default: architectural ones in
:class:`~hllm.configuration_hllm.HLLMArchitecture`, training ones in :class:`HLLMRecipe`. A preset
is a named set of overrides of those defaults; :class:`HLLMPolicyConfig` (the ``hllm`` policy's
config) applies its preset to the settings not given explicitly.

Presets:
- ``fast``  (the policy's default): NOT the paper's HLLM, whose defining step is fine-tuning the
  item LLM end to end (paper: frozen 0.588 vs fine-tuned 3.755 R@5); it is a frozen sentence
  encoder + MLP adapter + user transformer: pretrained MiniLM item LLM, frozen (features cached
  once) with its native mean pooling (an item token only helps once the item LLM is fine-tuned to
  fill it), a residual-MLP adapter to the user width, 2-layer user LLM trained on all history
  windows in batches of 64 (twice the steps of 128 at the same cost per epoch), stage 2 only,
  <= 20 epochs with early stop. The best recipe measured on 2 CPU cores (``bench/hllm_quality.py``):
  fine-tuning the item LLM's top layer on top of it did not add quality.
- ``quick`` (what ``sim run`` trains when no config names a budget): ``fast`` with a smaller
  training budget, so a default run takes minutes on 2 cores.
- ``paper`` (THE paper-faithful recipe, scaled to CPU): stage 1 end-to-end fine-tuning of the item
  LLM together with the user LLM on short sequences, then stage 2 on long cached sequences;
  ``item_llm="smollm2"`` for a decoder item LLM as in the paper.
- ``tiny``  (tests): a tiny randomly initialised BERT item LLM and a 1-layer user LLM.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hllm.ann import RetrievalConfig
from hllm.configuration_hllm import ARCHITECTURE_FIELDS, HLLMArchitecture, HLLMConfig
from hllm.user_state import UserStateConfig


class HLLMRecipe(BaseModel):
    """How HLLM trains, one default each (stage 1: item LLM end to end; stage 2: item LLM frozen)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    windows: Literal["last", "all"] = Field("all", description="training windows (policies.train.training_windows)")
    n_negatives: int = Field(512, ge=1, description="stage 2: random negatives shared by a batch")
    in_batch_negatives: bool = Field(True, description="the batch's other positives are negatives too")
    stage1_epochs: int = Field(2, ge=0)
    stage1_max_len: int = Field(10, ge=2)
    stage1_batch_size: int = Field(16, ge=1)
    stage1_negatives: int = Field(64, ge=1)
    item_lr: float = Field(3e-5, gt=0, description="stage 1: the item LLM's learning rate")
    item_trainable_layers: int | None = Field(None, ge=0, description="stage 1: fine-tune only the top k "
                                                                      "item-LLM layers (None: all)")
    grad_checkpointing: bool = Field(False, description="stage 1: item LLM (saves memory on long texts)")
    stage2_epochs: int = Field(60, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(128, ge=1)
    patience: int = Field(5, ge=1, description="stage 2: validations without improvement before stopping")
    eval_every: int = Field(2, ge=1)
    bf16: bool = Field(True, description="bf16 autocast when a CUDA device supports it (CPU stays fp32)")


_FAST = dict(pooling="mean", stage1_epochs=0, stage2_epochs=20, patience=3, batch_size=64)
PRESETS: dict[str, dict[str, Any]] = {  # named overrides of the defaults above (none restates one)
    "fast": _FAST,
    "quick": {**_FAST, "stage2_epochs": 6, "patience": 2},
    "paper": dict(stage1_epochs=1, stage2_epochs=20, patience=3),
    "tiny": dict(item_llm="tiny", prompt="", max_text_len=16, user_hidden=32, user_layers=1, user_heads=2,
                 proj_hidden=32, max_len=8, stage1_epochs=1, stage1_max_len=5, stage1_negatives=16,
                 stage2_epochs=2, n_negatives=16, batch_size=16),
}

# what each preset is, in the words tables and reports use (one place)
PRESET_LABELS: dict[str, str] = {
    "fast": "frozen MiniLM sentence encoder + MLP adapter + user transformer (not the paper's fine-tuned item LLM)",
    "quick": "preset fast on the `sim run` default budget (at most 6 stage-2 epochs, patience 2)",
    "paper": "the paper's recipe on CPU: MiniLM item LLM fine-tuned end to end with the user LLM (stage 1), then stage 2",
    "tiny": "tests only: tiny random item LLM",
}


class StageBudget(NamedTuple):
    epochs: int
    max_len: int  # training window length
    batch_size: int
    n_negatives: int  # random negatives per batch


class HLLMPolicyConfig(HLLMArchitecture, HLLMRecipe):
    """The ``hllm`` policy's config: every architecture and recipe setting, flat; ``preset`` fills
    the ones not given explicitly (explicit value > preset > default)."""

    model_config = ConfigDict(extra="forbid")
    SERVING_FIELDS: ClassVar[tuple[str, ...]] = ("retrieval", "user_states")  # not in the trained model's cache key
    preset: Literal[tuple(PRESETS)] = "fast"  # type: ignore[valid-type]
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig,
                                       description="serving: exact or ANN retrieval (hllm.ann), not training")
    user_states: UserStateConfig = Field(default_factory=UserStateConfig, description="serving: online (the "
                                         "user LLM per request) or tables (hllm.user_state), not training")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {**PRESETS.get(data.get("preset", cls.model_fields["preset"].default), {}), **data}

    @classmethod
    def tiny(cls) -> HLLMPolicyConfig:
        return cls(preset="tiny")

    def stage(self, n: int) -> StageBudget:
        """Stage ``n``'s budget: stage 1 trains end to end on short windows, stage 2 on ``max_len``."""
        if n == 1:
            return StageBudget(self.stage1_epochs, self.stage1_max_len, self.stage1_batch_size, self.stage1_negatives)
        return StageBudget(self.stage2_epochs, self.max_len, self.batch_size, self.n_negatives)

    def to_hf(self) -> HLLMConfig:
        """The model's config: the architecture settings."""
        return HLLMConfig(**self.model_dump(include=set(ARCHITECTURE_FIELDS)))
