"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence.

Learned absolute positions, pre-LayerNorm transformer blocks with dropout, item embeddings
shared between input and output. Trained by ``policies.train`` (full softmax CE by default;
BCE with sampled negatives as in the paper, or sampled softmax, via ``loss``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from policies.registry import register
from policies.seqbase import SequenceModelConfig, SequencePolicy


class SASRecConfig(SequenceModelConfig):
    """SASRec hyper-parameters: the shared sequence-model fields (see ``SequenceModelConfig``)."""

    @classmethod
    def tiny(cls) -> SASRecConfig:
        return cls(max_len=8, hidden=16, n_layers=1, epochs=2, batch_size=64, eval_every=1)


class CausalBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=blocked, need_weights=False)  # (B, T, D)
        x = x + a
        x = x + self.ff(self.ln2(x))
        return x.masked_fill(pad[..., None], 0.0)


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(CausalBlock(cfg.hidden, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight  # (N+1, D)

    def forward(self, items: torch.Tensor, ts: torch.Tensor | None = None,
                next_ts: torch.Tensor | None = None) -> torch.Tensor:
        """items (B, T) shifted ids -> (B, T, D); SASRec uses no times (``ts``, ``next_ts`` ignored)."""
        B, T = items.shape
        pad = items == 0  # (B, T)
        pos = torch.arange(T, device=items.device) + (self.cfg.max_len - T)
        x = self.item_emb(items) * self.cfg.hidden ** 0.5 + self.pos_emb(pos)[None]  # (B, T, D)
        x = self.drop(x).masked_fill(pad[..., None], 0.0)
        # True = blocked: future positions and padding keys; a position always sees itself
        # (so all-padding rows stay finite; their outputs are zeroed anyway)
        eye = torch.eye(T, dtype=torch.bool, device=items.device)
        blocked = torch.triu(torch.ones(T, T, dtype=torch.bool, device=items.device), 1)[None] | pad[:, None, :]
        blocked = (blocked & ~eye).repeat_interleave(self.cfg.n_heads, dim=0)  # (B*H, T, T)
        for blk in self.blocks:
            x = blk(x, blocked, pad)
        return self.ln(x)  # (B, T, D)


@register("sasrec", config=SASRecConfig)
class SASRecPolicy(SequencePolicy):
    """SASRec: causal self-attention sequential recommender (ID-based)."""

    def build_model(self, n_items: int) -> nn.Module:
        return SASRec(self.cfg, n_items)

    def history_only(self) -> bool:
        return True  # SASRec reads no times
