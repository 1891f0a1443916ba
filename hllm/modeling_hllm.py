"""HLLM (Chen et al., 2024, arXiv 2409.12740): hierarchical item LLM + user LLM.

Item LLM: prompt + item text + a learnable item token appended at the end of each item's
tokens; the item's feature is the last hidden state at that token (or mean pooling), then a
linear projection to the user-LLM width. User LLM: a causal transformer (Llama blocks, RoPE)
over the sequence of item embeddings (``inputs_embeds``); the state at each position predicts
the next item's embedding. Loss: InfoNCE over cosine similarity with a learnable temperature,
a shared negative pool, same-id negatives masked and the 0.99-cosine false-negative filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaModel, PreTrainedModel

from hllm.configuration_hllm import HLLMConfig
from hllm.item_llm import load_item_backbone, top_layers_view
from hllm.user_llm import decoder_name, load_decoder_layers, resolve_user_llm, user_llama_config


class ItemEncoder(nn.Module):
    """Text -> one feature vector per item (item token or mean pooling). (N, L) -> (N, H)."""

    def __init__(self, cfg: HLLMConfig) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.hidden = load_item_backbone(cfg.item_llm, cfg.item_llm_pretrained)
        self.pooling = cfg.pooling
        self.item_token = nn.Parameter(torch.randn(1, self.hidden) * 0.02)
        self.prompt, self.max_text_len = cfg.prompt, cfg.max_text_len
        self._views: dict[int, nn.Module] = {}  # top-k layer views sharing the backbone's weights (not submodules)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([self.prompt + t for t in texts], padding="max_length", truncation=True,
                             max_length=self.max_text_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Token embeddings with the item token appended: x (N, L+1, H), mask (N, L+1), lengths (N,)."""
        L = max(int(attention_mask.sum(1).max()), 1) if attention_mask.numel() else input_ids.shape[1]
        input_ids, attention_mask = input_ids[:, :L], attention_mask[:, :L]  # trim right padding (same result)
        N = input_ids.shape[0]
        emb = self.backbone.get_input_embeddings()(input_ids)  # (N, L, H)
        lengths = attention_mask.sum(1)  # (N,)
        x = torch.cat([emb, emb.new_zeros(N, 1, self.hidden)], 1)  # (N, L+1, H)
        mask = torch.cat([attention_mask, attention_mask.new_zeros(N, 1)], 1)  # (N, L+1)
        rows = torch.arange(N, device=input_ids.device)
        if self.pooling == "item_token":
            x = x.index_put((rows, lengths), self.item_token.expand(N, -1).to(x.dtype))
            mask = mask.index_put((rows, lengths), torch.ones_like(lengths, dtype=mask.dtype))
        return x, mask, lengths

    def _pool(self, h: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.pooling == "item_token":
            return h[torch.arange(len(h), device=h.device), lengths]  # (N, H)
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x, mask, lengths = self._inputs(input_ids, attention_mask)
        h = self.backbone(inputs_embeds=x, attention_mask=mask).last_hidden_state  # (N, L+1, H)
        return self._pool(h, mask, lengths)

    @torch.no_grad()
    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, top: int):
        """Input of the top ``top`` layers, computed once: (N, L+1, H) states and the (N, L+1) mask."""
        x, mask, _ = self._inputs(input_ids, attention_mask)
        n = self.backbone.config.num_hidden_layers
        hs = self.backbone(inputs_embeds=x, attention_mask=mask, output_hidden_states=True).hidden_states
        return hs[n - top], mask

    def top_features(self, states: torch.Tensor, mask: torch.Tensor, top: int) -> torch.Tensor:
        """Features (N, H) from cached ``lower_states``: only the top layers run (and train)."""
        L = max(int(mask.sum(1).max()), 1)
        states, mask = states[:, :L], mask[:, :L]  # (N, L, H), (N, L)
        view = self._views.get(top) or self._views.setdefault(top, top_layers_view(self.backbone, top))
        h = view(inputs_embeds=states, attention_mask=mask).last_hidden_state  # (N, L, H)
        lengths = mask.sum(1) - 1 if self.pooling == "item_token" else mask.sum(1)
        return self._pool(h, mask, lengths)


class ResidualMLP(nn.Module):
    """Linear map plus a GELU MLP branch: (N, H) -> (N, D). Starts close to the linear map."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


def time_gap_buckets(ts: torch.Tensor, mask: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """(B, T) bucket of each position's gap g (seconds since the previous item): floor(log2(max(g, 1))),
    at most ``n_buckets``; 0 where the previous position is padding (the first item). ts (B, T) is kept
    float64: float32 rounds epoch times to 64 s steps."""
    ts = ts.double()
    prev = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], 1)  # (B, T) the previous position is an item
    gap = torch.diff(ts, dim=1, prepend=ts[:, :1]).where(prev, 0.0).clamp(min=1.0)  # (B, T) seconds since it
    return torch.log2(gap).floor().long().clamp(0, n_buckets)


class UserLLM(nn.Module):
    """Causal transformer over item embeddings: (B, T, D) -> (B, T, D).

    ``user_init="scratch"``: random Llama blocks of width ``user_hidden``. ``"pretrained"``: the first
    ``user_layers`` layers + final norm of a Llama decoder (``hllm.user_llm``; width = the decoder's);
    ``load_pretrained=False`` builds that architecture only (weights come from a saved state dict).
    """

    def __init__(self, cfg: HLLMConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        resolve_user_llm(cfg)  # validates user_init; "pretrained": user_hidden/user_heads := the decoder's
        self.model = LlamaModel(user_llama_config(cfg))
        if cfg.user_init == "pretrained" and load_pretrained:
            load_decoder_layers(self.model, decoder_name(cfg))  # flagged initialised: post_init keeps them
        self.time_emb = nn.Embedding(cfg.time_buckets + 1, cfg.user_hidden) if cfg.use_time else None
        self.time_buckets = cfg.time_buckets
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) item embeddings, mask (B, T), ts (B, T) seconds (kept float64: float32 rounds
        epoch times to 64 s steps) -> (B, T, D)."""
        if self.time_emb is not None and ts is not None:
            x = x + self.time_emb(time_gap_buckets(ts, mask, self.time_buckets))
        return self.model(inputs_embeds=self.drop(x), attention_mask=mask.long()).last_hidden_state


@dataclass
class InfoNCEOutput:
    loss: torch.Tensor
    unmasked_negatives: float  # mean number of negatives left per positive (collapse guard)
    accuracy: float
    guarded_rows: float = 0.0  # fraction of positives whose false-negative filter was suspended


class HLLMModel(PreTrainedModel):
    config_class = HLLMConfig
    base_model_prefix = "hllm"
    _supports_sdpa = True

    def __init__(self, config: HLLMConfig, load_user_llm: bool = True) -> None:
        """``load_user_llm=False``: skip reading the pretrained user-LLM decoder (a saved state dict follows)."""
        super().__init__(config)
        resolve_user_llm(config)  # before proj: user_init="pretrained" sets user_hidden to the decoder's width
        self.item_encoder = ItemEncoder(config)
        H, D = self.item_encoder.hidden, config.user_hidden
        if config.proj == "mlp":  # (N, H) -> (N, D): a residual MLP adapter over the (possibly frozen) features
            self.proj = ResidualMLP(H, config.proj_hidden, D, config.dropout)
        else:
            self.proj = nn.Linear(H, D)
        # hybrid option: a per-id vector added to the text embedding; zero at start, so training begins
        # from the text-only model, and ids it never saw (cold-start items) keep their text embedding
        self.id_emb = None
        if config.item_id_embeddings and config.n_item_ids > 0:
            self.id_emb = nn.Embedding(config.n_item_ids, D)
            nn.init.zeros_(self.id_emb.weight)
        # feature standardisation (set from the item table by ``set_feature_stats``): LLM features
        # are anisotropic (all cosines high); centring them makes items separable from step one
        self.register_buffer("feat_mean", torch.zeros(self.item_encoder.hidden))
        self.register_buffer("feat_std", torch.ones(self.item_encoder.hidden))
        self.user_llm = UserLLM(config, load_pretrained=load_user_llm)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)),
                                        requires_grad=config.learn_temperature and config.similarity == "cos")

    def _init_weights(self, module: nn.Module) -> None:  # backbone keeps its pretrained weights
        pass

    def item_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.item_encoder(input_ids, attention_mask)  # (N, H) before projection

    @torch.no_grad()
    def set_feature_stats(self, feats: torch.Tensor) -> None:
        """Freeze the standardisation to the statistics of an item-feature table (N, H)."""
        self.feat_mean.copy_(feats.mean(0))
        self.feat_std.copy_(feats.std(0).clamp(min=1e-6) if len(feats) > 1 else torch.ones_like(self.feat_std))

    def project(self, feats: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item embeddings (N, D) from item-LLM features (N, H); ``ids`` (N,) adds the hybrid id vectors."""
        out = self.proj((feats - self.feat_mean) / self.feat_std)  # (N, H) -> (N, D)
        if self.id_emb is not None and ids is not None:
            known = ids < self.id_emb.num_embeddings  # (N,) new items: text only
            out = out + self.id_emb(ids.clamp(max=self.id_emb.num_embeddings - 1)) * known[..., None]
        return out

    def user_states(self, seq_emb: torch.Tensor, mask: torch.Tensor, ts: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_llm(seq_emb, mask, ts)  # (B, T, D)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """The vectors scores are inner products of: L2-normalised for ``similarity="cos"``, raw for "dot"."""
        return F.normalize(x, dim=-1) if self.config.similarity == "cos" else x

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(1.0 / self.config.min_temperature)).exp()

    def info_nce(self, pred: torch.Tensor, pos: torch.Tensor, pos_ids: torch.Tensor,
                 neg: torch.Tensor, neg_ids: torch.Tensor) -> InfoNCEOutput:
        """pred, pos: (M, D); neg: (K, D) shared pool; ids mask same-item negatives."""
        p, pos_v, neg_v = self.unit(pred), self.unit(pos), self.unit(neg)
        pos_logit = (p * pos_v).sum(-1, keepdim=True)  # (M, 1)
        neg_logit = p @ neg_v.T  # (M, K)
        masked = (pos_ids[:, None] == neg_ids[None, :])  # (M, K) same item: never a negative
        guarded = 0.0
        if self.config.false_negative_cos < 1.0:
            with torch.no_grad():  # (M, K) likely false negatives: cosine, whatever the scoring
                near = F.normalize(pos, dim=-1) @ F.normalize(neg, dim=-1).T > self.config.false_negative_cos
            # collapse guard: a row whose filter would drop more than half of its negatives keeps them
            # (near-identical embeddings early in training would otherwise leave no negatives at all)
            too_many = near.sum(1, keepdim=True) > 0.5 * neg_v.shape[0]
            masked |= near & ~too_many
            guarded = float(too_many.float().mean())
        scale = self.scale() if self.config.similarity == "cos" else 1.0  # dot: the norms carry the scale
        # scale first, then mask: -inf * scale would make the scale's gradient NaN
        logits = torch.cat([pos_logit * scale, (neg_logit * scale).masked_fill(masked, float("-inf"))], 1)
        target = torch.zeros(len(p), dtype=torch.long, device=p.device)
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            acc = float((logits.argmax(1) == 0).float().mean())
            left = float((~masked).sum(1).float().mean())
        return InfoNCEOutput(loss, left, acc, guarded)
