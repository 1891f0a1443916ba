"""Text-kNN: a content-only baseline with HLLM's own frozen item encoder (registered ``textknn``).

Each item's text is embedded once by the item LLM HLLM uses (``hllm.modeling_hllm.ItemEncoder``,
mean pooling, no prompt: what preset ``fast`` caches), L2-normalised; a user is the normalised
mean of the vectors of the last ``history`` items; scores are cosines. Nothing is learned from the
interactions except the vector served to a user without history (the mean training interaction).
It answers "how much does HLLM's user model add to its item text?" and serves as an A/B arm
(``sim run --treatment textknn``) or a retrieval channel; ``add_items`` embeds new items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from hllm.configuration_hllm import HLLMArchitecture, HLLMConfig
from hllm.item_llm import hf_progress
from hllm.modeling_hllm import ItemEncoder
from hllm.policy import read_policy_json, write_policy_json
from policies.base import FullScorePolicy, UserBatch
from policies.registry import register
from simulator.core.errors import DataError, NotFittedError

_ITEM_LLM = HLLMArchitecture.model_fields  # the item-LLM settings' defaults are HLLM's (one place)


class TextKNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    item_llm: str = Field(_ITEM_LLM["item_llm"].default, description="the item LLM (as HLLM's item_llm)")
    max_text_len: int = Field(_ITEM_LLM["max_text_len"].default, ge=4)
    prompt: str = Field("", description="text before each item (HLLM fast: none; mean pooling averages it in)")
    history: int = Field(50, ge=1, description="the user is the mean of the last N history items")
    batch_size: int = Field(256, ge=1, description="items embedded per batch")

    @classmethod
    def tiny(cls) -> TextKNNConfig:
        return cls(item_llm="tiny", max_text_len=16)

    def encoder_config(self) -> HLLMConfig:
        return HLLMConfig(item_llm=self.item_llm, max_text_len=self.max_text_len, prompt=self.prompt, pooling="mean")


@register("textknn", config=TextKNNConfig)
class TextKNNPolicy(FullScorePolicy):
    """Text-kNN: cosine between the mean of a user's history item embeddings and each item's (frozen
    item LLM, the one HLLM uses)."""

    def __init__(self, cfg: TextKNNConfig | None = None) -> None:
        self.cfg = cfg or TextKNNConfig()
        self.table: torch.Tensor | None = None  # (N, H) unit item vectors
        self.prior_user: torch.Tensor | None = None  # (H,) served to users with no history
        self.history: list[dict] = []  # nothing is trained (the training record says 0 steps)
        self._encoder: ItemEncoder | None = None
        self.n_items = 0

    def encoder(self) -> ItemEncoder:
        if self._encoder is None:
            torch.manual_seed(self.cfg.seed)  # a random (tiny) item LLM is drawn from the seed
            self._encoder = ItemEncoder(self.cfg.encoder_config()).eval()
        return self._encoder

    @torch.no_grad()
    def embed_texts(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        """(len(texts), H) unit vectors of the frozen item LLM (mean pooling)."""
        from tqdm.auto import tqdm

        enc = self.encoder()
        tok = enc.tokenize([str(t) for t in texts])
        out = [torch.zeros(0, enc.hidden)]
        for s in tqdm(range(0, len(texts), self.cfg.batch_size), desc="embed items", disable=not progress, leave=False):
            sl = slice(s, s + self.cfg.batch_size)
            out.append(enc(tok["input_ids"][sl], tok["attention_mask"][sl]).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def fit(self, dataset, split, progress: bool = True) -> TextKNNPolicy:
        if len(dataset.item_text) != dataset.n_items:
            raise DataError(f"dataset {dataset.name!r} has {len(dataset.item_text)} item texts for "
                            f"{dataset.n_items} items; textknn needs one text per item", field="item_text")
        with hf_progress(progress):
            self.table = self.embed_texts(list(dataset.item_text), progress)
        self.n_items = dataset.n_items
        counts = np.bincount(split.train.items, minlength=self.n_items)[:self.n_items]
        self.prior_user = self._unit(torch.from_numpy(counts).float() @ self.table) if counts.sum() else \
            torch.zeros(self.table.shape[1])
        return self

    @staticmethod
    def _unit(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(v, dim=-1)

    def user_embeddings(self, users: UserBatch) -> torch.Tensor:
        """(B, H) unit mean of each user's last ``history`` item vectors (``prior_user`` when empty)."""
        if self.table is None:
            raise NotFittedError("policy 'textknn' is not fitted: call fit() or load() first")
        out = self.prior_user.expand(len(users), -1).clone()
        for b, h in enumerate(users.histories):
            h = np.asarray(h, dtype=np.int64)[-self.cfg.history:]
            h = h[(h >= 0) & (h < self.n_items)]
            if len(h):
                out[b] = self._unit(self.table[torch.from_numpy(h)].mean(0))
        return out

    @torch.no_grad()
    def score_all(self, users: UserBatch) -> np.ndarray:
        return (self.user_embeddings(users) @ self.table.T).numpy().astype(np.float32)

    def add_items(self, texts: list[str]) -> np.ndarray:
        """Embed new items (no retraining); returns their new ids."""
        if self.table is None:
            raise NotFittedError("policy 'textknn' is not fitted: call fit() or load() first")
        start = len(self.table)
        self.table = torch.cat([self.table, self.embed_texts(list(texts))])
        self.n_items = len(self.table)
        return np.arange(start, self.n_items)

    def save(self, path) -> None:
        from safetensors.torch import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        save_file({"table": self.table.contiguous(), "prior_user": self.prior_user.contiguous()},
                  p / "textknn.safetensors")
        write_policy_json(p, self.cfg, self.history)

    @classmethod
    def load(cls, path) -> TextKNNPolicy:
        from safetensors.torch import load_file

        p = Path(path)
        pol = read_policy_json(cls, TextKNNConfig, p)
        w = load_file(p / "textknn.safetensors")
        pol.table, pol.prior_user = w["table"], w["prior_user"]
        pol.n_items = len(pol.table)
        return pol
