"""HLLM as a registered policy (retriever + scorer) under the shared contracts.

``fit``: optional stage 1 (end-to-end item LLM fine-tuning), then item features cached and
stage 2 (projection + user LLM on long sequences). Serving: an item table (N, D) of
embeddings (L2-normalised for ``similarity="cos"``, raw for "dot"); a user's embedding is the user
LLM's last state (the same treatment), computed per user from that user's window alone and kept
in a user-state cache that extends it when items are appended (``hllm.user_state``; the
``serving`` setting, not a training one); scores are their inner products (one batched matmul).
``add_items`` embeds new items with the frozen item LLM: cold-start items become retrievable
without retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from hllm.configuration_hllm import HLLMConfig
from hllm.item_llm import hf_progress, snapshot, trainable_item_parameters, weight_movement
from hllm.modeling_hllm import HLLMModel
from hllm.recipe import HLLMPolicyConfig
from hllm.train import encode_items, run_stage
from hllm.user_state import UserLLMRunner, UserStateConfig, UserStates
from policies.ann import AnnServing, TableIndex
from policies.base import UserBatch
from policies.registry import register
from policies.tensors import device
from policies.train import ndcg_validation
from simulator.core.errors import ConfigError, DataError, NotFittedError


def load_hllm_model(path) -> HLLMModel:
    """Rebuild the model from ``save_pretrained`` output (config.json + model.safetensors)."""
    from safetensors.torch import load_file

    path = Path(path)
    # the saved config carries the resolved user-LLM architecture and the state dict every weight:
    # a pretrained user LLM's decoder is not read (hllm.user_llm)
    model = HLLMModel(HLLMConfig.from_pretrained(path), load_user_llm=False)
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(f))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("rotary_emb.inv_freq")]:
        raise ValueError(f"HLLM checkpoint {path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def by_length(lengths: torch.Tensor, ids: torch.Tensor, encode, chunk: int = 128) -> torch.Tensor:
    """``encode`` chunks of ``ids`` of similar text length; rows come back in the order of ``ids``.

    ``ItemEncoder`` trims a chunk to its longest text, so sorting by length first avoids paying
    for the longest title in every row.
    """
    order = torch.argsort(lengths[ids], stable=True)
    parts = [encode(ids[order[s:s + chunk]]) for s in range(0, len(ids), chunk)]
    out = torch.cat(parts)
    return out[torch.argsort(order).to(out.device)]


def features_by_length(model: HLLMModel, tokens: dict[str, torch.Tensor], ids: torch.Tensor, dev,
                       chunk: int = 128) -> torch.Tensor:
    """Item LLM features (K, H) of ``ids`` with gradients, in length-sorted chunks."""
    return by_length(tokens["attention_mask"].sum(1), ids, lambda b: model.item_features(
        tokens["input_ids"][b].to(dev), tokens["attention_mask"][b].to(dev)), chunk)


MAX_CACHE_BYTES = 8 * 2**30


def cache_lower_states(enc, tokens: dict[str, torch.Tensor], top: int, dev, progress: bool = False,
                       chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L+1, H) inputs of the top ``top`` item-LLM layers for every item (CPU) and their masks."""
    N, L = tokens["input_ids"].shape
    need = N * (L + 1) * enc.hidden * 4
    if need > MAX_CACHE_BYTES:
        raise ConfigError(f"item_trainable_layers={top}: caching lower-layer states of {N:,} items needs "
                          f"{need / 2**30:.1f} GiB (limit 8 GiB); fine-tune all layers (unset it) or shorten "
                          "max_text_len")
    states = torch.zeros(N, L + 1, enc.hidden)
    mask = torch.zeros(N, L + 1, dtype=tokens["attention_mask"].dtype)
    enc.eval()
    for s in tqdm(range(0, N, chunk), desc="cache item-LLM states", disable=not progress, leave=False):
        h, m = enc.lower_states(tokens["input_ids"][s:s + chunk].to(dev), tokens["attention_mask"][s:s + chunk].to(dev), top)
        states[s:s + len(h), :h.shape[1]], mask[s:s + len(h), :m.shape[1]] = h.float().cpu(), m.cpu()
    return states, mask


def write_policy_json(p: Path, cfg: BaseModel, history: list[dict]) -> None:
    (p / "policy.json").write_text(json.dumps({"config": cfg.model_dump(), "history": history}))


def read_policy_json(cls, config_cls: type[BaseModel], p: Path):
    """A new ``cls`` built from ``p/policy.json`` (config + training history); weights are the caller's."""
    d = json.loads((p / "policy.json").read_text())
    pol = cls(config_cls(**d["config"]))
    pol.history = d.get("history", [])
    return pol


@register("hllm", config=HLLMPolicyConfig)
class HLLMPolicy(AnnServing):
    """HLLM: item LLM (text -> embedding) + user LLM (sequence of embeddings -> next item)."""

    embeds_item_text = True  # new items are embedded from their text by the frozen item LLM

    def __init__(self, cfg: HLLMPolicyConfig | None = None) -> None:
        self.cfg = cfg or HLLMPolicyConfig()
        self.hf_config = self.cfg.to_hf()
        self.model: HLLMModel | None = None
        self.features: torch.Tensor | None = None  # (N, H) cached item LLM features
        self.table: torch.Tensor | None = None  # (N, D) projected item embeddings
        self.score_table: torch.Tensor | None = None  # (N, D) what scores are inner products with (model.unit)
        self.history: list[dict] = []
        self.n_items = 0
        self._states: UserStates | None = None  # built on first use from the current weights and table
        self.prior_user: torch.Tensor | None = None  # (D,) served to users with no history (fit / load)
        self._ann: TableIndex | None = None  # large catalogs: an ANN index, built on first use
        self._nearline_s = 0.0  # tables: the user LLM's time refreshing the user-embedding table

    def __getstate__(self) -> dict:
        """Pickled / deep-copied without the user-state cache and the ANN index (a faiss object):
        each copy (a Ray actor) builds its own."""
        return {**self.__dict__, "_states": None, "_ann": None}

    @property
    def serving(self) -> UserStateConfig:
        """How user embeddings are served (``cfg.user_states``: a serving setting, not a training one)."""
        return self.cfg.user_states

    def history_only(self) -> bool:
        """Online serving without time embeddings reads the history alone (tables: the request time)."""
        return self.serving.serving == "online" and not self.hf_config.use_time

    def nearline_seconds(self) -> float:
        """tables: the wall time of the user-embedding table's refresh so far (every user-LLM
        pass: the request path itself is a lookup); online: 0 (the user LLM is the request path)."""
        return getattr(self, "_nearline_s", 0.0)

    def set_serving(self, cfg: UserStateConfig) -> None:
        self.cfg, self._states = self.cfg.model_copy(update={"user_states": cfg}), None

    # ----------------------------------------------------------------- training
    def fit(self, dataset, split, progress: bool = True) -> HLLMPolicy:
        with hf_progress(progress):  # progress=False: no bar at all, transformers' included
            return self._fit(dataset, split, progress)

    def _fit(self, dataset, split, progress: bool) -> HLLMPolicy:
        cfg = self.cfg  # architecture + recipe
        torch.manual_seed(cfg.seed)
        dev = device()
        self.prior_user = None  # a refit's validation serves no user from the previous model
        self.n_items = dataset.n_items
        self.hf_config.n_item_ids = dataset.n_items if cfg.item_id_embeddings else 0
        self.model = model = HLLMModel(self.hf_config).to(dev)
        if len(dataset.item_text) != dataset.n_items:
            raise DataError(f"dataset {dataset.name!r} has {len(dataset.item_text)} item texts for "
                            f"{dataset.n_items} items; HLLM needs one text per item", field="item_text")
        tokens = model.item_encoder.tokenize([str(t) for t in dataset.item_text])
        if cfg.stage1_epochs > 0:
            self._stage1(split, tokens, progress)
        self.features = encode_items(model, tokens, progress=progress).to(dev)  # item LLM frozen from here
        # standardisation from the final item LLM's features: keeping stage 1's starting statistics
        # instead (its projection was trained on them) lost 0.99 -> 0.85 test NDCG@10 on the tiny
        # pinned case, as the fine-tuned item token's features drift away from them
        model.set_feature_stats(self.features)
        for p in model.item_encoder.parameters():
            p.requires_grad_(False)

        def emb_cached(ids: torch.Tensor) -> torch.Tensor:
            return model.project(self.features[ids], ids)

        params = [p for n, p in model.named_parameters() if not n.startswith("item_encoder.") and p.requires_grad]
        valid = ndcg_validation(self, split, every=cfg.eval_every, patience=cfg.patience,
                                before=self.refresh_table, keep=lambda name: not name.startswith("item_encoder."),
                                every_steps=cfg.eval_every_steps)
        self.history += run_stage(model, split, emb_cached, [{"params": params}], cfg, 2, validation=valid,
                                  progress=progress)
        self.refresh_table()
        self.prior_user = self._average_user(split.train)
        return self

    @torch.no_grad()
    def _average_user(self, train, max_users: int = 2000) -> torch.Tensor:
        """(D,) the embedding served to a user with no history: the mean training user (up to
        ``max_users``, drawn with the seed). Without it an empty window embeds to zero, every item
        scores the same and the slate is the first item ids, which no new user should see."""
        users = np.flatnonzero(train.lengths > 0)
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(self.cfg.seed).choice(users, max_users, replace=False))
        if not len(users):
            return torch.zeros(self.hf_config.user_hidden, device=self.table.device)
        emb = torch.from_numpy(self.embed_users(UserBatch.from_sequences(train, users))).to(self.table.device)
        self._states = None  # the training users' states are not this run's
        return self.model.unit(emb.mean(0, keepdim=True))[0]

    def _stage1(self, split, tokens: dict[str, torch.Tensor], progress: bool) -> None:
        """End-to-end stage: all item-LLM layers train, or only the top ``item_trainable_layers``;
        the last stage-1 record of the history gets ``item_llm_movement`` (per layer: relative
        RMS change of its weights).

        With ``item_trainable_layers=k`` the input of the top k layers is computed once for every
        item and kept in RAM (N x (max_text_len+1) x H floats); each step then runs only k layers.
        The item token's lower-layer states are part of that cache, so it stays as initialised.
        """
        model, cfg, dev = self.model, self.cfg, device()
        enc, top = model.item_encoder, cfg.item_trainable_layers
        if cfg.grad_checkpointing and getattr(enc.backbone, "supports_gradient_checkpointing", False):
            (getattr(enc.backbone, "activation_checkpointing_enable", None) or enc.backbone.gradient_checkpointing_enable)()
        # validated first: a bad item_trainable_layers fails before any item is encoded
        item_params = list(enc.parameters()) if top is None else trainable_item_parameters(enc.backbone, top)
        model.set_feature_stats(encode_items(model, tokens, progress=progress))
        lengths = tokens["attention_mask"].sum(1)
        if top is None:

            def emb_e2e(ids: torch.Tensor) -> torch.Tensor:
                return model.project(features_by_length(model, tokens, ids.cpu(), dev), ids)
        else:
            states, mask = cache_lower_states(enc, tokens, top, dev, progress)

            def emb_e2e(ids: torch.Tensor) -> torch.Tensor:
                return model.project(by_length(lengths, ids.cpu(), lambda b: enc.top_features(
                    states[b].to(dev), mask[b].to(dev), top)), ids)
        # the official scheme: the item LLM at item_lr; its item token and the rest (projection, user
        # LLM) at the head's lr. (With cached lower layers the item token's states are cached too.)
        token = [enc.item_token] if top is None else []
        head = [p for n, p in model.named_parameters() if not n.startswith("item_encoder.")] + token
        groups = [{"params": [p for p in item_params if p is not enc.item_token], "lr": cfg.item_lr},
                  {"params": head}]
        before, token0 = snapshot(enc.backbone), enc.item_token.detach().clone()
        hist = run_stage(model, split, emb_e2e, groups, cfg, 1, progress=progress)
        if hist:  # how far the item LLM moved, per layer (relative RMS change of its weights)
            moved = float((enc.item_token.detach() - token0).norm() / token0.norm())
            hist[-1]["item_llm_movement"] = {**weight_movement(before, enc.backbone), "item_token": round(moved, 6)}
        self.history += hist

    def _check_fitted(self) -> None:
        if self.model is None or self.features is None:
            raise NotFittedError("policy 'hllm' is not fitted: call fit() or load() first")

    @torch.no_grad()
    def refresh_table(self) -> None:
        self._check_fitted()
        self.model.eval()
        self.table = self.model.project(self.features, torch.arange(len(self.features), device=self.features.device))  # (N, D)
        self.score_table = self.model.unit(self.table)
        self.n_items = len(self.table)
        self._states = None  # cached user states belong to the previous weights / table

    # ----------------------------------------------------------------- serving
    def _user_states(self) -> UserStates:
        self._check_fitted()
        self.model.eval()
        if self._states is None:
            self._states = UserStates(UserLLMRunner(self.model, self.table, self.prior_user), self.serving,
                                      self.hf_config.use_time)
        return self._states

    @torch.no_grad()
    def start_serving(self, users: UserBatch) -> None:
        """tables: the user-embedding table as of the run's start, built before its first request (as
        a deployment's offline job; ``UserStates.warm``: as many users as the cache holds). A
        user's first request finds their row when it was served from the same window (the
        schedule's last rebuild after their last item), else computes it as without a table."""
        if self.serving.serving == "tables" and len(users):
            self._user_states().warm(users.user_ids, users.histories, users.timestamps, users.now)

    @torch.no_grad()
    def user_embeddings(self, users: UserBatch) -> torch.Tensor:
        """(B, D) user embeddings from histories (last user-LLM state; normalised for cos).

        Each user's state is computed from that user's window alone (``hllm.user_state``), so it
        does not depend on the batch, and is reused / extended through the user-state cache; a user
        with no history gets ``prior_user`` (the runner's empty state)."""
        before = self._user_states().compute_s
        emb = self._states.embeddings(users.user_ids, users.histories, users.timestamps, users.now)
        if self.serving.serving == "tables":
            self._nearline_s = self.nearline_seconds() + self._states.compute_s - before
        return self.model.unit(emb)

    @torch.no_grad()
    def score_all(self, users: UserBatch) -> np.ndarray:
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        for s, sub in users.chunks(512):
            out[s:s + len(sub)] = (self.user_embeddings(sub) @ self.score_table.T).cpu().numpy()
        return out

    @property
    def retrieval(self):
        """Exact (the reference) below this setting's ANN size, else an ANN index of the item
        table, built on first use and again whenever the table changes (``policies.ann``)."""
        return self.cfg.retrieval

    def user_vectors(self, users: UserBatch) -> np.ndarray:
        return self.embed_users(users)

    def item_vectors(self) -> torch.Tensor:
        return self.score_table

    @torch.no_grad()
    def add_items(self, texts: list[str]) -> np.ndarray:
        """Embed new items with the frozen item LLM; returns their new ids (no retraining)."""
        self._check_fitted()
        tok = self.model.item_encoder.tokenize(list(texts))
        feats = encode_items(self.model, tok).to(self.features.device)
        start = len(self.features)
        self.features = torch.cat([self.features, feats])
        self.refresh_table()
        return np.arange(start, start + len(texts), dtype=np.int64)

    def item_table(self) -> np.ndarray:
        """(N, D) item embeddings retrieval scores against (L2-normalised for similarity="cos")."""
        return self.score_table.cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """(M, D) scoring embeddings of item texts with the frozen item LLM (not added)."""
        self._check_fitted()
        tok = self.model.item_encoder.tokenize(list(texts))
        feats = encode_items(self.model, tok, batch_size=batch_size, progress=progress).to(self.features.device)
        return self.model.unit(self.model.project(feats)).cpu().numpy()

    @torch.no_grad()
    def embed_users(self, users: UserBatch, batch_size: int = 512) -> np.ndarray:
        """(B, D) scoring user embeddings, batched."""
        out = [self.user_embeddings(sub) for _, sub in users.chunks(batch_size)]
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.hf_config.user_hidden), np.float32)

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        with hf_progress(False):  # a "Writing model shards" bar for one small file is noise
            self.model.save_pretrained(p / "model", safe_serialization=True)
        np.save(p / "item_features.npy", self.features.cpu().numpy())
        if self.prior_user is not None:
            np.save(p / "prior_user.npy", self.prior_user.cpu().numpy())
        write_policy_json(p, self.cfg, self.history)

    @classmethod
    def load(cls, path) -> HLLMPolicy:
        p = Path(path)
        pol = read_policy_json(cls, HLLMPolicyConfig, p)
        torch.manual_seed(pol.cfg.seed)
        with hf_progress(False):  # a cached model loads in a second: no "Loading weights" bar
            pol.model = load_hllm_model(p / "model").to(device())
        pol.hf_config = pol.model.config  # the config it was trained with (user_init="pretrained": resolved widths)
        pol.model.eval()
        pol.features = torch.from_numpy(np.load(p / "item_features.npy")).to(device())
        pol.refresh_table()
        if (p / "prior_user.npy").exists():
            pol.prior_user = torch.from_numpy(np.load(p / "prior_user.npy")).to(device())
        return pol
