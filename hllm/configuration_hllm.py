"""HLLM configuration (HF ``PretrainedConfig``): item LLM, user LLM, loss and training recipe.

Presets (``HLLMConfig.preset(name)``):
- ``fast``  (default for simulations, ``sim run --treatment hllm``): NOT the paper's HLLM, whose
  defining step is fine-tuning the item LLM end to end (paper: frozen 0.588 vs fine-tuned 3.755
  R@5); it is a frozen sentence encoder + MLP adapter + user transformer: pretrained MiniLM item LLM,
  frozen (features cached once) with its native mean pooling (an item token only helps once the
  item LLM is fine-tuned to fill it), a residual-MLP adapter to the user width, 2-layer user LLM
  trained on all history windows in batches of 64 (twice the steps of 128 at the same cost per
  epoch), stage 2 only, <= 20 epochs with early stop. The best recipe
  measured on 2 CPU cores (``bench/hllm_quality.py``): fine-tuning the item LLM's top layer on
  top of it did not add quality.
- ``paper`` (THE paper-faithful recipe, scaled to CPU): stage 1 end-to-end fine-tuning of the item
  LLM together with the user LLM on short sequences, then stage 2 on long cached sequences;
  ``item_llm="smollm2"`` for a decoder item LLM as in the paper.
- ``tiny``  (tests): a tiny randomly initialised BERT item LLM and a 1-layer user LLM.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from simulator.errors import ConfigError

PRESETS: dict[str, dict] = {
    "fast": dict(item_llm="minilm", pooling="mean", stage1_epochs=0, stage2_epochs=20, user_layers=2, patience=3,
                 batch_size=64),
    "paper": dict(item_llm="minilm", stage1_epochs=1, stage2_epochs=20, user_layers=2, patience=3),
    "tiny": dict(item_llm="tiny", prompt="", max_text_len=16, user_hidden=32, user_layers=1, user_heads=2,
                 stage1_epochs=1, stage1_max_len=5, stage1_negatives=16, stage2_epochs=2, max_len=8, n_negatives=16,
                 proj_hidden=32,
                 batch_size=16, eval_every=2),
}


# what each preset is, in the words tables and reports use (one place)
PRESET_LABELS: dict[str, str] = {
    "fast": "frozen MiniLM sentence encoder + MLP adapter + user transformer (not the paper's fine-tuned item LLM)",
    "paper": "the paper's recipe on CPU: MiniLM item LLM fine-tuned end to end with the user LLM (stage 1), then stage 2",
    "tiny": "tests only: tiny random item LLM",
}


CHOICES = {"pooling": ("item_token", "mean"), "proj": ("linear", "mlp"), "windows": ("last", "all"),
           "similarity": ("cos", "dot")}


class HLLMConfig(PretrainedConfig):
    model_type = "hllm"

    def __init__(self,
                 item_llm: str = "minilm",  # "minilm" | "smollm2" | "tiny" | a local HF checkpoint folder
                 pooling: str = "item_token",  # "item_token" | "mean"
                 prompt: str = "Compress the following sentence into embedding: ",
                 max_text_len: int = 48,
                 item_llm_pretrained: bool = True,  # False: same architecture, random weights (ablation)
                 user_hidden: int = 256,
                 user_layers: int = 2,
                 user_heads: int = 4,
                 user_init: str = "scratch",  # "scratch" | "pretrained" (first user_layers layers of a Llama decoder)
                 user_llm: str | None = None,  # decoder for "pretrained": "smollm2" | local HF folder (None: the item LLM)
                 user_llm_config: dict | None = None,  # set when first built: the decoder's LlamaConfig (hllm.user_llm)
                 max_len: int = 50,
                 windows: str = "all",  # "last" | "all": training windows (see policies.train.training_windows)
                 proj: str = "mlp",  # "linear" | "mlp": item feature -> user width (an MLP adapts frozen features)
                 proj_hidden: int = 1024,
                 dropout: float = 0.1,
                 item_id_embeddings: bool = False,  # hybrid (not the paper): + a learned per-id vector, zero-initialised
                 n_item_ids: int = 0,  # set by fit when item_id_embeddings: ids >= this (new items) get text only
                 n_negatives: int = 512,
                 in_batch_negatives: bool = True,
                 similarity: str = "cos",  # "cos" (the paper: cosine / temperature) | "dot" (inner product, like the ID models)
                 init_temperature: float = 0.07,
                 learn_temperature: bool = True,
                 min_temperature: float = 0.01,
                 false_negative_cos: float = 0.99,
                 use_time: bool = False,
                 time_buckets: int = 32,
                 stage1_epochs: int = 2,
                 stage1_max_len: int = 10,
                 stage1_batch_size: int = 16,
                 stage1_negatives: int = 64,
                 item_lr: float = 3e-5,
                 item_trainable_layers: int | None = None,  # stage 1: fine-tune only the top k item-LLM layers
                 stage2_epochs: int = 60,
                 lr: float = 1e-3,
                 weight_decay: float = 0.01,
                 batch_size: int = 128,
                 patience: int = 5,
                 eval_every: int = 2,
                 grad_checkpointing: bool = False,  # item LLM in stage 1 (saves memory on long texts)
                 bf16: bool = True,  # bf16 autocast when a CUDA device supports it (CPU stays fp32)
                 seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.item_llm, self.pooling, self.prompt, self.max_text_len = item_llm, pooling, prompt, max_text_len
        self.item_llm_pretrained = item_llm_pretrained
        self.user_hidden, self.user_layers, self.user_heads, self.user_init = user_hidden, user_layers, user_heads, user_init
        self.user_llm, self.user_llm_config = user_llm, user_llm_config
        self.max_len, self.dropout = max_len, dropout
        self.windows, self.proj, self.proj_hidden = windows, proj, proj_hidden
        self.item_id_embeddings, self.n_item_ids = item_id_embeddings, n_item_ids
        self.n_negatives, self.in_batch_negatives = n_negatives, in_batch_negatives
        self.similarity = similarity
        self.init_temperature, self.learn_temperature, self.min_temperature = init_temperature, learn_temperature, min_temperature
        self.false_negative_cos = false_negative_cos
        self.use_time, self.time_buckets = use_time, time_buckets
        self.stage1_epochs, self.stage1_max_len, self.stage1_batch_size, self.item_lr = (
            stage1_epochs, stage1_max_len, stage1_batch_size, item_lr)
        self.stage1_negatives, self.item_trainable_layers = stage1_negatives, item_trainable_layers
        self.stage2_epochs, self.lr, self.weight_decay, self.batch_size = stage2_epochs, lr, weight_decay, batch_size
        self.patience, self.eval_every, self.seed = patience, eval_every, seed
        self.grad_checkpointing, self.bf16 = grad_checkpointing, bf16
        for field, allowed in CHOICES.items():  # a typo must not silently pick the other branch
            if getattr(self, field) not in allowed:
                raise ConfigError(f"HLLM config {field}={getattr(self, field)!r}: expected one of {', '.join(allowed)}")
