"""A multi-stage recommendation pipeline for one arm (pure: no Ray, no I/O).

channels -> merge (de-dup, channel order = priority, per-channel quotas) -> coarse ranker
(keep N) -> fine ranker (keep M) -> reranker -> Slate of K (an exploring arm samples its K from the
reranker's best ``pool`` and records the propensities: simulator.engine.explore). Every stage is
batched over users. A full-score policy is scored over the catalog once per batch and its stages
share that matrix, unless its catalog is served by ANN (``FullScorePolicy.full_scoring``, from
``policies.ann.ANN_MIN_ITEMS`` items): then it retrieves through its index and scores candidates only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from policies.base import PAD, Candidates, FullScorePolicy, Slate, UserBatch, topk_excluding
from policies.rerank import make_reranker
from simulator.engine.availability import ItemAvailability
from simulator.engine.config import ArmConfig
from simulator.engine.explore import make_explorer


@dataclass
class PipelineResult:
    slate: Slate
    stage_ms: dict[str, float]  # wall time of each stage for the whole batch
    nearline_ms: float = 0.0  # of which policies' work outside the request path (FullScorePolicy.nearline_seconds)


def merge_channels(parts: list[Candidates], names: tuple[str, ...]) -> Candidates:
    """Concatenate channel candidates; the first occurrence of an item wins (de-dup)."""
    ids = np.concatenate([p.item_ids for p in parts], axis=1)  # (B, C)
    sc = np.concatenate([p.scores for p in parts], axis=1)
    ch = np.concatenate([np.full(p.item_ids.shape, i, np.int16) for i, p in enumerate(parts)], axis=1)
    valid = ids >= 0
    # a stable sort by id keeps channel order among equal ids: an id equal to its left neighbour
    # in that order is a later occurrence
    order = np.argsort(np.where(valid, ids, np.iinfo(np.int64).max), axis=1, kind="stable")
    srt = np.take_along_axis(ids, order, 1)
    dup = np.zeros_like(valid)
    np.put_along_axis(dup, order, np.pad(srt[:, 1:] == srt[:, :-1], ((0, 0), (1, 0))), 1)
    keep = valid & ~dup
    cols = np.argsort(~keep, axis=1, kind="stable")  # kept columns first, in their order
    shown = np.arange(ids.shape[1]) < keep.sum(1, keepdims=True)
    out_ids = np.where(shown, np.take_along_axis(ids, cols, 1), PAD)
    out_sc = np.where(shown, np.take_along_axis(sc, cols, 1), -np.inf).astype(np.float32)
    out_ch = np.where(shown, np.take_along_axis(ch, cols, 1), -1).astype(np.int16)
    return Candidates(out_ids, out_sc, out_ch, names)


def found_by(parts: list[Candidates], ids: np.ndarray) -> np.ndarray:
    """(B, K) int64 bitmask: bit c is set where channel ``parts[c]`` retrieved the item at that
    position (0 at PAD). The merge credits a shared item to one channel; this keeps every finder.
    Vectorised: each channel's (row, item) pairs as sorted keys ``row * span + item``, looked up
    with one searchsorted (PAD maps below its row's items, so it never matches)."""
    B = ids.shape[0]
    span = max([int(ids.max(initial=0))] + [int(p.item_ids.max(initial=0)) for p in parts]) + 2
    row = np.arange(B, dtype=np.int64)[:, None] * span
    query = (ids + row).ravel()
    mask = np.zeros(ids.size, np.int64)
    for c, p in enumerate(parts):
        keys = np.sort((p.item_ids + row).ravel())
        if not keys.size:
            continue
        at = np.minimum(np.searchsorted(keys, query), keys.size - 1)
        mask |= (keys[at] == query).astype(np.int64) << c
    return np.where(ids >= 0, mask.reshape(ids.shape), 0)


def cut(cands: Candidates, scores: np.ndarray, keep: int) -> tuple[Candidates, np.ndarray]:
    """Keep the ``keep`` best-scored candidates per user (PAD scores -inf)."""
    scores = np.where(cands.item_ids >= 0, scores, -np.inf).astype(np.float32)
    idx, top = topk_excluding(scores.copy(), keep)
    idx_safe = np.clip(idx, 0, None)
    ids = np.where(idx >= 0, np.take_along_axis(cands.item_ids, idx_safe, 1), PAD)
    ch = np.where(idx >= 0, np.take_along_axis(cands.channel, idx_safe, 1), -1).astype(np.int16)
    return Candidates(ids, top, ch, cands.channel_names), top


def rerank_spec(arm: ArmConfig) -> list[dict]:
    """The reranker chain of an arm: seen filter, then MMR, then the per-genre cap."""
    r = arm.rerank
    spec: list[dict] = [{"name": "seen_filter"}] if r.filter_seen else [{"name": "topk"}]
    if r.mmr_lambda is not None:
        spec.append({"name": "mmr", "lam": r.mmr_lambda, "attribute": r.genre_attr})
    if r.max_per_genre is not None:
        spec.append({"name": "max_per_label", "attribute": r.genre_attr, "max_per": r.max_per_genre})
    return spec


class Pipeline:
    """Runs one arm's stages with the given fitted policies (name -> policy)."""

    def __init__(self, arm: ArmConfig, policies: dict, dataset=None,
                 availability: ItemAvailability | None = None) -> None:
        self.arm = arm
        self.policies = policies
        self.availability = availability
        self.reranker = make_reranker(rerank_spec(arm), dataset)
        self.explorer = make_explorer(arm.explore)  # None: the slate is the reranker's top
        # merge priority: by weight (stable: equal weights keep the listed order)
        self.channels = sorted(arm.channels, key=lambda c: -c.weight)
        self.channel_names = tuple(c.policy for c in self.channels)

    def history_only(self) -> bool:
        """Whether this arm's slate for a request is a function of the user id and history alone:
        every policy says so (``FullScorePolicy.history_only``), no item availability by time, no
        exploration draws (the rerankers read the candidates and the history only)."""
        return (self.availability is None and self.explorer is None
                and all(isinstance(p, FullScorePolicy) and p.history_only() for p in self.policies.values()))

    def slate_key(self) -> str:
        """The same for pipelines that serve the same slate for the same request (two identical arms,
        as in an A/A test): the arm's stages (its name, role and traffic weight aside) and the very
        policy objects they run."""
        return self.arm.model_dump_json(exclude={"name", "role", "weight"}) + repr(
            sorted((name, id(p)) for name, p in self.policies.items()))

    def start(self, users: UserBatch, started: set[int] | None = None) -> None:
        """The run is about to serve ``users`` (``FullScorePolicy.start_serving``), each policy once
        (``started``: the ids of policy objects other pipelines already started)."""
        started = set() if started is None else started
        for p in self.policies.values():
            if isinstance(p, FullScorePolicy) and id(p) not in started:
                started.add(id(p))
                p.start_serving(users)

    def nearline_seconds(self) -> float:
        """The policies' work outside the request path so far (``FullScorePolicy.nearline_seconds``)."""
        return sum(p.nearline_seconds() for p in self.policies.values() if isinstance(p, FullScorePolicy))

    def run(self, users: UserBatch) -> PipelineResult:
        ms: dict[str, float] = {}
        nearline = self.nearline_seconds()
        t = time.perf_counter()
        exclude = [np.asarray(h) for h in users.histories] if self.arm.rerank.filter_seen else None
        full: dict[str, np.ndarray] = {}  # score_all once per policy per batch, shared by stages

        def all_scores(name: str) -> np.ndarray | None:
            pol = self.policies[name]
            # the declared contract, not a duck-typed method; a catalog served by ANN is never scored in full
            if not isinstance(pol, FullScorePolicy) or not pol.full_scoring():
                return None
            if name not in full:
                full[name] = np.asarray(pol.score_all(users), dtype=np.float32)
                if self.availability is not None:
                    full[name][~self.availability.allowed(name, users.now)] = -np.inf
            return full[name]

        def available(name: str, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if self.availability is None:
                return scores
            return np.where(self.availability.allowed(name, users.now, ids), scores, -np.inf).astype(np.float32)

        parts = []
        for c in self.channels:
            sc_all = all_scores(c.policy)
            if sc_all is None:
                got = self.policies[c.policy].retrieve(users, c.quota, exclude)
                sc = available(c.policy, got.item_ids, got.scores)
                parts.append(Candidates(np.where(np.isfinite(sc), got.item_ids, PAD), sc))
            else:
                ids, top = topk_excluding(sc_all.copy(), c.quota, exclude)
                parts.append(Candidates(ids, top))
        cands = merge_channels(parts, self.channel_names)
        ms["retrieve"] = (time.perf_counter() - t) * 1e3
        scores = cands.scores
        for name, st in (("coarse", self.arm.coarse), ("fine", self.arm.fine)):
            if st is None:
                continue
            t = time.perf_counter()
            sc_all = all_scores(st.policy)
            if sc_all is None:
                s = available(st.policy, cands.item_ids, self.policies[st.policy].score(users, cands.item_ids))
            else:
                s = np.take_along_axis(sc_all, np.clip(cands.item_ids, 0, None), 1)
            cands, scores = cut(cands, s, st.keep)
            ms[name] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        if self.explorer is None:
            slate = self.reranker.rerank(users, cands, scores, self.arm.slate_size)
        else:  # sample the slate from the reranker's best `pool`, with its propensities
            pool = self.reranker.rerank(users, cands, scores, self.arm.explore_pool())
            slate = self.explorer.sample(pool, users, self.arm.slate_size)
        slate = replace(slate, found_by=found_by(parts, slate.item_ids))
        ms["rerank"] = (time.perf_counter() - t) * 1e3
        return PipelineResult(slate, ms, (self.nearline_seconds() - nearline) * 1e3)
