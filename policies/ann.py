"""Approximate nearest-neighbour (ANN) retrieval of items by inner product, with faiss.

The exact search (``hllm.serving.topk_inner_product``, the policy's full scoring) is the
reference; ANN serves large catalogs behind the same contract: ``search(index, users, k, exclude)
-> (ids (B, k) int64, scores (B, k) float32)``, rows padded with -1 / -inf, excluded ids never
returned. Scores are exact inner products of the returned items (float vectors, or 8-bit codes whose
candidates are re-ranked against the item table): only *which* items are found is approximate.

Which path serves is one setting, :class:`RetrievalConfig` ``index`` (default ``"auto"``: exact
below ``ann_min_items`` items, IVF at or above). Measured on one core (bench/results/
hllm_serving_2026-11-29): at 200k items exact takes 1.5 ms a user and IVF is only ~4x faster at
recall@100 0.95; at 1M exact takes ~8 ms and IVF is ~14x faster at recall@100 0.998; hence ANN
from 500k items. Index kinds:

- ``ivf``   k-means coarse quantiser (``nlist`` lists, trained on a seeded sample), ``nprobe``
            lists scanned per query; lists hold 8-bit codes (``ivf_codes="sq8"``: the scan is
            memory-bound and reads 4x fewer bytes; the index is a quarter of the table) whose best
            ``refine * k`` are re-ranked against the item table's float rows, or float vectors
            (``"flat"``, a full copy of the table). The measured choice (bench/hllm_serving.py).
- ``hnsw``  IndexHNSWFlat: graph search, no training; at 200k items 3x slower to build than IVF
            and both slower and less accurate at its default ef_search.

Builds are deterministic given ``seed`` at a fixed faiss thread count (the k-means sample and its
initialisation are seeded; HNSW insertion order is the item order); faiss does not promise bit-equal
k-means across thread counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.base import Candidates, FullScorePolicy, UserBatch
from simulator.core.errors import ConfigError, DataError

INDEX_KINDS = ("ivf", "hnsw")
ANN_MIN_ITEMS = 500_000  # the one catalog size from which retrieval is ANN (module doc), every policy
# the settings an index is built with; the others apply at search time (no rebuild)
BUILD_FIELDS = ("seed", "nlist", "ivf_codes", "train_per_list", "kmeans_iter", "hnsw_m", "ef_construction")


class RetrievalConfig(BaseModel):
    """How item retrieval is served, one default each (exact is the reference path)."""

    model_config = ConfigDict(extra="forbid")
    index: Literal["auto", "exact", "ivf", "hnsw"] = Field(
        "auto", description="auto: exact below ann_min_items items, ivf at or above; exact | ivf | hnsw: always")
    ann_min_items: int = Field(ANN_MIN_ITEMS, ge=1, description="auto: catalogs this large are served by ANN")
    seed: int = Field(0, description="seeds the IVF k-means sample and initialisation")
    nlist: int | None = Field(None, ge=1, description="IVF lists (None: 4 sqrt(n_items), at least 39 items a list)")
    nprobe: int = Field(48, ge=1, description="IVF lists scanned per query")
    ivf_codes: Literal["sq8", "flat"] = Field("sq8", description="IVF list storage: sq8 (8-bit codes, 4x fewer "
                                                                 "bytes to scan, re-ranked exactly) | flat (float32)")
    refine: float = Field(2.0, ge=1, description="sq8: re-rank this many times k candidates by exact inner "
                                                   "product with the item table's rows")
    train_per_list: int = Field(64, ge=39, description="IVF k-means sample: this many items per list")
    kmeans_iter: int = Field(16, ge=1)
    hnsw_m: int = Field(32, ge=4, description="HNSW neighbours per node")
    ef_construction: int = Field(128, ge=8)
    ef_search: int = Field(256, ge=1, description="HNSW search breadth (raised to k + excluded when smaller)")

    def kind(self, n_items: int) -> str:
        """``"exact"`` or the ANN index kind serving a catalog of ``n_items``."""
        if self.index == "auto":
            return "ivf" if n_items >= self.ann_min_items else "exact"
        return self.index

    def build_params(self) -> dict:
        """The settings an index is built with (a change needs a rebuild; search ones do not)."""
        return {f: getattr(self, f) for f in BUILD_FIELDS}

    def n_lists(self, n_items: int) -> int:
        cap = max(1, n_items // 39)  # faiss k-means wants >= 39 points per centroid
        return min(self.nlist or max(1, round(4 * math.sqrt(n_items))), cap)


def retrieval_config(values: dict | RetrievalConfig | None) -> RetrievalConfig:
    """``values`` validated; a bad key or value is a one-line :class:`ConfigError`."""
    if isinstance(values, RetrievalConfig):
        return values
    try:
        return RetrievalConfig(**(values or {}))
    except ValidationError as e:
        x = e.errors()[0]
        key = ".".join(map(str, x["loc"])) or "retrieval"
        raise ConfigError(f"retrieval config {key}={x.get('input')!r}: {x['msg']}") from None


def _faiss():
    import faiss

    return faiss


def build_index(emb: np.ndarray, cfg: RetrievalConfig, kind: str | None = None):
    """An inner-product faiss index over ``emb`` (N, D) (a memmap is read in chunks)."""
    kind = kind or cfg.kind(len(emb))
    if kind not in INDEX_KINDS:
        raise ConfigError(f"retrieval index {kind!r} is not an ANN index kind (one of: {', '.join(INDEX_KINDS)})")
    faiss = _faiss()
    n, d = emb.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    else:
        index = _ivf(emb, cfg)
    for s in range(0, n, 65_536):
        index.add(np.ascontiguousarray(emb[s:s + 65_536], dtype=np.float32))
    set_search_params(index, cfg)
    return index


def _ivf(emb: np.ndarray, cfg: RetrievalConfig):
    """A trained, empty IVF index: k-means lists on a seeded sample; float32 or 8-bit codes."""
    faiss = _faiss()
    n, d = emb.shape
    nlist, ip = cfg.n_lists(n), faiss.METRIC_INNER_PRODUCT
    if cfg.ivf_codes == "sq8":
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
    index.cp.seed, index.cp.niter = cfg.seed, cfg.kmeans_iter
    index.cp.max_points_per_centroid = cfg.train_per_list  # our seeded sample is not resampled
    m = min(n, nlist * cfg.train_per_list)
    sample = np.sort(np.random.default_rng(cfg.seed).choice(n, m, replace=False)) if m < n else np.arange(n)
    index.train(np.ascontiguousarray(emb[sample], dtype=np.float32))
    return index


def set_search_params(index, cfg: RetrievalConfig) -> None:
    if isinstance(index, _faiss().IndexHNSW):
        index.hnsw.efSearch = cfg.ef_search
    else:
        index.nprobe = min(cfg.nprobe, index.nlist)


def coded(index) -> bool:
    """Whether the index scores compressed codes (its scores and ranking are re-done exactly)."""
    return isinstance(index, _faiss().IndexIVFScalarQuantizer)


def rerank(table, users: np.ndarray, ids: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ``ids`` (B, m) (-1: none) re-scored by exact inner product with their ``table`` rows
    (a memmap is fine) and sorted best first (ties: lower id); returns (ids, scores)."""
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    for s in range(0, len(ids), chunk):
        part = ids[s:s + chunk]
        rows = np.asarray(table[np.clip(part, 0, None).reshape(-1)], dtype=np.float32).reshape(*part.shape, -1)
        scores[s:s + chunk] = np.where(part >= 0, np.einsum("bd,bmd->bm", users[s:s + chunk], rows), -np.inf)
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


def search(index, users: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None, *,
           table=None, refine: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k by inner product: (ids (B, k) int64, scores (B, k) float32).

    Excluded items are removed after fetching ``k + len(exclude[b])`` neighbours, so a user never
    gets fewer than k items while the index has them; rows are padded with -1 / -inf otherwise.
    A coded index fetches ``refine`` times as many and re-ranks them against ``table`` (N, D).
    """
    if coded(index) and table is None:
        raise ValueError("an index of 8-bit codes re-ranks against its item table: pass table=")
    users = np.ascontiguousarray(users, dtype=np.float32)
    if users.ndim != 2 or users.shape[1] != index.d:
        raise DataError(f"user embeddings of shape {users.shape} against an index of dim {index.d}", field="users")
    B = len(users)
    want = k + (max((len(e) for e in exclude), default=0) if exclude is not None else 0)
    fetch = min(math.ceil(want * refine) if coded(index) else want, index.ntotal)
    params = None  # HNSW: search at least `fetch` wide for this call only (the shared index is not changed)
    if isinstance(index, _faiss().IndexHNSW):
        params = _faiss().SearchParametersHNSW(efSearch=max(index.hnsw.efSearch, fetch))
    out_i = np.full((B, k), -1, dtype=np.int64)
    out_s = np.full((B, k), -np.inf, dtype=np.float32)
    if B == 0 or fetch == 0:
        return out_i, out_s
    scores, ids = index.search(users, fetch, params=params)
    if coded(index):
        ids, scores = rerank(table, users, ids)
    for b in range(B):
        keep = ids[b] >= 0
        if exclude is not None and len(exclude[b]):
            keep &= ~np.isin(ids[b], np.asarray(exclude[b], dtype=np.int64))
        got_i, got_s = ids[b][keep][:k], scores[b][keep][:k]
        out_i[b, :len(got_i)], out_s[b, :len(got_s)] = got_i, got_s
    return out_i, out_s


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each exact top-k row (ids >= 0) found in the matching approximate row."""
    hits = [len(np.intersect1d(a[a >= 0], e[e >= 0])) / max(1, int((e >= 0).sum()))
            for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


class TableIndex:
    """An in-memory ANN index of an item table, rebuilt whenever the table object changes (a
    policy's table is replaced, never edited in place, when items are added or retrained)."""

    def __init__(self, cfg: RetrievalConfig) -> None:
        self.cfg, self.index, self._table = cfg, None, None

    def search(self, table, users: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """ANN top-k of ``users`` (B, D) over ``table`` (N, D) (a numpy array or a torch tensor)."""
        emb = table.detach().cpu().numpy() if hasattr(table, "detach") else np.asarray(table)
        if self._table is not table:
            self.index, self._table = build_index(emb, self.cfg), table
        return search(self.index, users, k, exclude, table=emb, refine=self.cfg.refine)


class AnnServing(FullScorePolicy):
    """A :class:`FullScorePolicy` whose scores are inner products of user vectors with an item
    table: from its ``retrieval`` setting's ANN size (``ANN_MIN_ITEMS`` by default) retrieval
    searches an ANN index of the table (built on first use, rebuilt when the table object
    changes) and candidate scores are gathered inner products, so no request computes anything
    of catalog size; below it the exact full-score path serves (the reference)."""

    retrieval: RetrievalConfig = RetrievalConfig()

    def user_vectors(self, users: UserBatch) -> np.ndarray:  # (B, D) float32
        raise NotImplementedError

    def item_vectors(self):  # (N, D): a torch tensor or numpy array, the same object while unchanged
        raise NotImplementedError

    def full_scoring(self) -> bool:
        return self.retrieval.kind(self.n_items) == "exact"

    def _index(self) -> TableIndex:
        if getattr(self, "_ann", None) is None:
            self._ann = TableIndex(self.retrieval)
        return self._ann

    def retrieve(self, users: UserBatch, k: int, exclude: Sequence[np.ndarray] | None = None) -> Candidates:
        if self.full_scoring():
            return super().retrieve(users, k, exclude)
        ids, scores = self._index().search(self.item_vectors(), self.user_vectors(users), k, exclude)
        return Candidates(ids, scores)

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray:
        if self.full_scoring():
            return super().score(users, items)
        items = np.asarray(items, dtype=np.int64)
        table = self.item_vectors()
        table = table.detach().cpu().numpy() if hasattr(table, "detach") else np.asarray(table)
        rows = table[np.clip(items, 0, None)]  # (B, n, D)
        out = np.einsum("bd,bnd->bn", self.user_vectors(users), rows).astype(np.float32)
        out[items < 0] = -np.inf
        return out
