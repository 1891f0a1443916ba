"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words").

Each layer: ``U, V, Q, K = split(SiLU(f1(x)))``; pointwise aggregated attention
``A = SiLU(Q K^T / sqrt(d) + rab(p, t)) / max_len`` under a causal mask (no softmax); output
``x + f2(Norm(A V) * U)`` (the U-gating). ``rab`` is a learned relative attention bias over
position distances plus log-bucketed time gaps, as in the official generative-recommenders code:
the gap is from each attended item's time to the time of the event the position predicts
(``next_ts``: the target's time in training, the request time at serving). Timestamps stay
float64 seconds until bucketing (float32 would round today's epoch times to 64 s steps).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from policies.registry import register
from policies.seqbase import SequenceModelConfig, SequencePolicy
from policies.tensors import next_times


class HSTUConfig(SequenceModelConfig):
    time_buckets: int = Field(128, ge=1, description="log-time buckets of the relative bias (official: 128)")
    time_bucket_width: float = Field(0.301, gt=0, description="bucket = floor(ln(gap in s) / width) (official: 0.301)")
    use_time_bias: bool = True

    @classmethod
    def tiny(cls) -> HSTUConfig:
        return cls(max_len=8, hidden=16, n_layers=1, epochs=2, batch_size=64, eval_every=1)


class RelativeBias(nn.Module):
    """rab(i, j) = w_pos[i - j] + w_time[bucket(next_t_i - t_j)] for j <= i; (B, T, T).

    ``bucket(g) = floor(ln(max(|g|, 1 s)) / width)`` clamped to [0, time_buckets]; both tables
    start N(0, 0.02), as in the official RelativeBucketedTimeAndPositionBasedBias.
    """

    def __init__(self, max_len: int, time_buckets: int, use_time: bool, width: float = 0.301) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(max_len) * 0.02)
        self.time = nn.Parameter(torch.randn(time_buckets + 1) * 0.02) if use_time else None
        self.time_buckets, self.width = time_buckets, width

    def forward(self, ts: torch.Tensor, next_ts: torch.Tensor) -> torch.Tensor:
        """ts, next_ts: (B, T) float64 seconds -> (B, T, T) bias."""
        B, T = ts.shape
        idx = torch.arange(T, device=ts.device)
        dist = (idx[:, None] - idx[None, :]).clamp(min=0, max=len(self.pos) - 1)  # (T, T)
        bias = self.pos[dist][None].expand(B, T, T)
        if self.time is not None:
            gap = (next_ts[:, :, None] - ts[:, None, :]).abs().clamp(min=1.0)  # (B, T, T) float64
            bucket = torch.log(gap).div(self.width).floor().long().clamp(0, self.time_buckets)
            bias = bias + self.time[bucket]
        return bias


class HSTULayer(nn.Module):
    def __init__(self, cfg: HSTUConfig) -> None:
        super().__init__()
        d, self.h, self.max_len = cfg.hidden, cfg.n_heads, cfg.max_len
        self.f1 = nn.Linear(d, 4 * d)
        self.f2 = nn.Linear(d, d)
        self.norm_in = nn.LayerNorm(d)
        self.norm_attn = nn.LayerNorm(d)
        self.rab = RelativeBias(cfg.max_len, cfg.time_buckets, cfg.use_time_bias, cfg.time_bucket_width)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ts: torch.Tensor, next_ts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        u, v, q, k = F.silu(self.f1(self.norm_in(x))).chunk(4, dim=-1)  # 4 x (B, T, D)
        dh = D // self.h
        q = q.view(B, T, self.h, dh).transpose(1, 2)  # (B, H, T, dh)
        k = k.view(B, T, self.h, dh).transpose(1, 2)
        v = v.view(B, T, self.h, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / dh ** 0.5 + self.rab(ts, next_ts)[:, None]  # (B, H, T, T)
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))[None, None] & valid[:, None, None, :]
        attn = F.silu(scores).masked_fill(~mask, 0.0) / self.max_len  # pointwise, no softmax; fixed
        # normaliser (the padded length in the paper) so left padding never changes a state
        y = (attn @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        y = self.f2(self.drop(self.norm_attn(y) * u))
        return x + y


class HSTU(nn.Module):
    def __init__(self, cfg: HSTUConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.n_layers))
        self.drop = nn.Dropout(cfg.dropout)
        self.ln = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight

    def forward(self, items: torch.Tensor, ts: torch.Tensor | None = None,
                next_ts: torch.Tensor | None = None) -> torch.Tensor:
        """items (B, T) shifted ids, ts (B, T) seconds, next_ts (B, T) the time each position predicts
        for (None: ``next_times(ts)``) -> (B, T, D). Times are used as float64."""
        B, T = items.shape
        valid = items > 0
        ts = torch.zeros_like(items, dtype=torch.float64) if ts is None else ts.double()
        next_ts = next_times(ts) if next_ts is None else next_ts.double()
        pos = torch.arange(T, device=items.device) + (self.cfg.max_len - T)
        x = self.drop(self.item_emb(items) * self.cfg.hidden ** 0.5 + self.pos_emb(pos)[None])  # (B, T, D)
        x = x.masked_fill(~valid[..., None], 0.0)
        for layer in self.layers:
            x = layer(x, ts, next_ts, valid).masked_fill(~valid[..., None], 0.0)
        return self.ln(x)


@register("hstu", config=HSTUConfig)
class HSTUPolicy(SequencePolicy):
    """HSTU: pointwise aggregated attention with relative position/time bias and U-gating."""

    def build_model(self, n_items: int) -> nn.Module:
        return HSTU(self.cfg, n_items)
