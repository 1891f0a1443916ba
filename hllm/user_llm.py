"""User LLM initialisation: ``user_init="scratch"`` or ``"pretrained"`` (HLLM paper, arXiv 2409.12740).

``pretrained``: the user LLM is the first ``user_layers`` decoder layers (+ final norm) of a
pretrained Llama-architecture decoder (``user_llm``: ``"smollm2"`` or a local HF folder; None =
the item LLM), so its width and heads are the decoder's. The embedding table is never used
(the user LLM reads ``inputs_embeds``), so it is rebuilt with a 2-token vocabulary.

Design (saved models need no decoder): the first model built from a config *resolves* it:
the decoder's ``LlamaConfig`` (cleaned) is stored in ``config.user_llm_config`` and
``config.user_hidden`` / ``config.user_heads`` are overwritten with the decoder's values, so
``save_pretrained`` writes a config that fully describes the architecture. A resolved config
builds the same architecture without reading the decoder. Whether the pretrained *weights* are
read is a separate, explicit switch (``HLLMModel(config, load_user_llm=...)``, default True):
training always starts from the decoder's layers (also when a resolved config object is reused
for a second ``fit``), while ``hllm.policy.load_hllm_model`` passes False because the saved
state dict supplies every weight.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, LlamaConfig, LlamaModel
from transformers.utils import logging as hf_logging

from hllm.item_llm import minilm_path, smollm2_path
from simulator.core.errors import ConfigError

hf_logging.disable_progress_bar()  # no "Loading weights" bar: our own bars say what loads

# decoder config keys that describe the checkpoint file, not the architecture
_DROP_KEYS = ("architectures", "quantization_config", "_name_or_path", "_model_name_or_path", "name_or_path",
              "transformers_version", "dtype", "torch_dtype", "auto_map", "_commit_hash")


def decoder_name(cfg) -> str:
    return cfg.user_llm or cfg.item_llm


def decoder_path(name: str) -> Path:
    """Local folder of the decoder checkpoint named ``name`` (registry name or folder)."""
    if name == "tiny":
        raise ConfigError("user_init='pretrained' needs a Llama-architecture decoder, but 'tiny' is a random BERT "
                          "encoder (model_type 'bert'); use user_init='scratch' or user_llm=<a decoder>")
    path = Path({"minilm": minilm_path, "smollm2": smollm2_path}.get(name, lambda: Path(name))())
    if not (path / "config.json").exists():
        raise ConfigError(f"user LLM {name!r}: no local HF checkpoint folder with a config.json at {path} "
                          "(no downloads are made)")
    return path


def _decoder_config(name: str) -> dict:
    path = decoder_path(name)
    dc = AutoConfig.from_pretrained(path)
    if getattr(dc, "model_type", None) != "llama":
        raise ConfigError(f"user_init='pretrained' needs a Llama-architecture decoder, but user LLM {name!r} ({path}) "
                          f"has model_type {getattr(dc, 'model_type', None)!r}; "
                          "use user_init='scratch' or user_llm=<a decoder>")
    d = dc.to_dict()
    for k in _DROP_KEYS:
        d.pop(k, None)
    return d


def resolve_user_llm(cfg) -> None:
    """For ``user_init="pretrained"``, fix the architecture in ``cfg`` (idempotent, see module doc);
    ``user_init`` itself is validated by ``HLLMConfig``."""
    if cfg.user_init == "scratch":
        return
    if getattr(cfg, "user_llm_config", None) is None:
        cfg.user_llm_config = _decoder_config(decoder_name(cfg))
    d = cfg.user_llm_config
    if not 1 <= cfg.user_layers <= d["num_hidden_layers"]:
        raise ConfigError(f"user_layers={cfg.user_layers}: the decoder {decoder_name(cfg)!r} has "
                          f"{d['num_hidden_layers']} layers (user_init='pretrained' takes the first user_layers)")
    cfg.user_hidden, cfg.user_heads = int(d["hidden_size"]), int(d["num_attention_heads"])


def user_llama_config(cfg) -> LlamaConfig:
    """The user LLM's LlamaConfig: scratch blocks, or the truncated decoder (``resolve_user_llm`` first)."""
    max_pos = max(cfg.max_len, 64) + 1
    if cfg.user_init == "scratch":
        return LlamaConfig(vocab_size=2, hidden_size=cfg.user_hidden, intermediate_size=cfg.user_hidden * 2,
                           num_hidden_layers=cfg.user_layers, num_attention_heads=cfg.user_heads,
                           num_key_value_heads=cfg.user_heads, max_position_embeddings=max_pos,
                           attention_dropout=cfg.dropout, rms_norm_eps=1e-6,
                           bos_token_id=None, eos_token_id=None, pad_token_id=None)
    d = dict(cfg.user_llm_config)
    d.update(num_hidden_layers=cfg.user_layers, vocab_size=2,  # inputs_embeds only: the token table is unused
             max_position_embeddings=max(int(d.get("max_position_embeddings") or 0), max_pos),
             attention_dropout=cfg.dropout, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return LlamaConfig(**d)


@torch.no_grad()
def load_decoder_layers(model: LlamaModel, name: str) -> None:
    """Copy layers 0..L-1 and the final norm of decoder ``name`` into ``model`` (L = its layer count); strict."""
    path = decoder_path(name)
    wanted = {k for k in model.state_dict() if not k.startswith("embed_tokens.")}  # layers.i.* and norm.weight
    state: dict[str, torch.Tensor] = {}
    files = sorted(path.glob("*.safetensors"))
    if files:  # read only the tensors we need (no full decoder in memory)
        from safetensors import safe_open

        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    k = key.removeprefix("model.")
                    if k in wanted:
                        state[k] = sf.get_tensor(key)
    else:  # e.g. pytorch_model.bin: load a truncated LlamaModel through transformers
        dec = AutoModel.from_pretrained(path, num_hidden_layers=model.config.num_hidden_layers, dtype=torch.float32)
        state = {k: v for k, v in dec.state_dict().items() if k in wanted}
    missing = sorted(wanted - state.keys())
    if missing:
        raise ConfigError(f"user LLM {name!r} ({path}): checkpoint lacks {missing[:4]} "
                          f"({len(missing)} missing tensors)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch: the decoder changed since the config was resolved
        raise ConfigError(f"user LLM {name!r} ({path}) does not match the stored user_llm_config: {e}") from e
