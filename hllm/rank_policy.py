"""HLLM with a ranking head (early or late fusion) as a registered policy: ``hllm_rank``.

``fit`` trains the HLLM retrieval model (``hllm`` config), then the ranking head with the item
LLM frozen (``ranker`` config, see :mod:`hllm.ranking`). ``score(users, items)`` returns the
probability of the first task (click) for each candidate: use it as the coarse or fine ranker
of a pipeline stage, e.g. ``fine = "hllm_rank"``. ``score_all`` scores the whole catalog (late
fusion: one user-LLM pass per user; early fusion: one pass per candidate, so keep it for
candidate lists), which gives the retriever contract for free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hllm.policy import HLLMPolicy, HLLMPolicyConfig, read_policy_json, write_policy_json
from hllm.ranking import HLLMRanker, RankerConfig, fit_ranker
from policies.base import FullScorePolicy, UserBatch
from policies.registry import register


class HLLMRankPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    hllm: HLLMPolicyConfig = Field(default_factory=HLLMPolicyConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    item_chunk: int = Field(512, ge=1, description="catalog items scored per head call in score_all")

    @classmethod
    def tiny(cls) -> HLLMRankPolicyConfig:
        return cls(hllm=HLLMPolicyConfig(preset="tiny", stage1_epochs=0), ranker=RankerConfig.tiny())

    def seeded(self) -> tuple[HLLMPolicyConfig, RankerConfig]:
        return (self.hllm.model_copy(update={"seed": self.seed}), self.ranker.model_copy(update={"seed": self.seed}))


@register("hllm_rank", config=HLLMRankPolicyConfig)
class HLLMRankPolicy(FullScorePolicy):
    """HLLM + early/late-fusion ranking head: candidate scores are click probabilities."""

    def __init__(self, cfg: HLLMRankPolicyConfig | None = None) -> None:
        self.cfg = cfg or HLLMRankPolicyConfig()
        self.hllm: HLLMPolicy | None = None
        self.ranker: HLLMRanker | None = None
        self.history: list[dict] = []
        self.n_items = 0

    def fit(self, dataset, split, progress: bool = True) -> HLLMRankPolicy:
        hcfg, rcfg = self.cfg.seeded()
        self.hllm = HLLMPolicy(hcfg).fit(dataset, split, progress=progress)
        self.ranker, hist = fit_ranker(self.hllm, dataset, split, rcfg, progress=progress)
        self.history = self.hllm.history + [{"stage": "ranker", **h} for h in hist]
        self.n_items = self.hllm.n_items
        return self

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        out = self.ranker.score(list(users.histories), np.clip(items, 0, None)).astype(np.float32)  # (B, C)
        out[items < 0] = -np.inf
        return out

    def score_all(self, users: UserBatch) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for s in range(0, self.n_items, self.cfg.item_chunk):
            ids = np.arange(s, min(s + self.cfg.item_chunk, self.n_items))
            out[:, ids] = self.score(users, np.tile(ids, (len(users), 1)))
        return out

    def save(self, path) -> None:
        from safetensors.torch import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.hllm.save(p / "hllm")  # includes the user LLM as fine-tuned by the ranker
        save_file(self.ranker.head.state_dict(), p / "head.safetensors")
        write_policy_json(p, self.cfg, self.history)

    @classmethod
    def load(cls, path) -> HLLMRankPolicy:
        from safetensors.torch import load_file

        p = Path(path)
        pol = read_policy_json(cls, HLLMRankPolicyConfig, p)
        pol.hllm = HLLMPolicy.load(p / "hllm")
        pol.ranker = HLLMRanker(pol.hllm, pol.cfg.seeded()[1])
        pol.ranker.head.load_state_dict(load_file(p / "head.safetensors"))
        pol.ranker.head.to(next(pol.hllm.model.parameters()).device)
        pol.n_items = pol.hllm.n_items
        return pol
