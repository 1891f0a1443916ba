"""Serving HLLM from tables: item embeddings on disk, batched user embeddings, exact top-k.

Item table folder (``write_item_table``):
  ``embeddings.npy``  (N, D) float32 scoring embeddings (L2-normalised unless the model scores by
                      ``similarity="dot"``), opened memory-mapped (``np.load(mmap_mode="r")``)
  ``items.parquet``   item_id, text (row i of the array is item i)
  ``meta.json``       dim, n_items, table_hash (of the embeddings), model path; ``index``: the ANN
                      index's kind, parameters and the table_hash it was built from
  ``index.faiss``     the ANN index (``build_table_index``), for catalogs served approximately
The same rows can be mirrored into DuckDB (``to_duckdb``: ``item_id BIGINT, emb FLOAT[]``).
New items are appended with ``append_items`` (the frozen item LLM embeds only the new texts;
nothing is retrained): this is how cold-start items become retrievable.
Retrieval (``search_table``) is exact or approximate by ``hllm.ann.RetrievalConfig`` (exact below
``ann_min_items`` by default). The exact path, the reference, is an inner product over the table
in (users x item-chunk) matmuls with a running top-k, so memory stays bounded at 1M+ items; the
ANN path searches a faiss index persisted next to the table, refused once the table changed
(e.g. ``append_items``) until it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hllm import ann
from simulator.core.errors import DataError, NotFoundError

INDEX_FILE = "index.faiss"


def embeddings_hash(emb: np.ndarray, chunk: int = 65_536) -> str:
    """Content hash of an (N, D) float32 table (shape included), read chunk by chunk."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(emb.shape, np.int64).tobytes())
    for s in range(0, len(emb), chunk):
        h.update(np.ascontiguousarray(emb[s:s + chunk], dtype=np.float32).tobytes())
    return h.hexdigest()


def write_item_table(folder, emb: np.ndarray, texts: list[str] | None = None, meta: dict | None = None) -> Path:
    """Write (N, D) embeddings (+ texts) as a memory-mappable table folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    arr = np.lib.format.open_memmap(folder / "embeddings.tmp.npy", mode="w+", dtype=np.float32, shape=emb.shape)
    arr[:] = emb
    arr.flush()
    del arr
    (folder / "embeddings.tmp.npy").replace(folder / "embeddings.npy")
    texts = list(texts) if texts is not None else [""] * len(emb)
    pd.DataFrame({"item_id": np.arange(len(emb), dtype=np.int64), "text": texts}).to_parquet(folder / "items.parquet")
    meta = {**(meta or {}), "dim": int(emb.shape[1]), "n_items": int(len(emb)), "table_hash": embeddings_hash(emb)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def open_item_table(folder) -> np.ndarray:
    """The (N, D) item embeddings, memory-mapped read-only."""
    p = Path(folder) / "embeddings.npy"
    if not p.exists():
        raise NotFoundError(f"no item table at {folder} (run `sim hllm embed-items` first)")
    return np.load(p, mmap_mode="r")


def read_item_texts(folder) -> list[str]:
    return pd.read_parquet(Path(folder) / "items.parquet")["text"].tolist()


def append_items(folder, new_emb: np.ndarray, new_texts: list[str]) -> np.ndarray:
    """Append new items' embeddings; returns their ids (N..N+M-1). Existing rows are untouched; an
    ANN index of the table is stale from here (refused until ``ensure_table_index`` rebuilds it)."""
    old = open_item_table(folder)
    if new_emb.ndim != 2 or new_emb.shape[1] != old.shape[1]:
        raise DataError(f"new item embeddings have shape {new_emb.shape}, table dim is {old.shape[1]}",
                        file=str(folder), field="embeddings")
    n = len(old)
    meta = json.loads((Path(folder) / "meta.json").read_text())
    both = np.concatenate([np.asarray(old), new_emb.astype(np.float32)])
    del old
    write_item_table(folder, both, read_item_texts(folder) + list(new_texts), meta)
    return np.arange(n, n + len(new_emb), dtype=np.int64)


def to_duckdb(con, table: str, emb: np.ndarray, replace: bool = True) -> None:
    """Mirror an item table into DuckDB as ``(item_id BIGINT, emb FLOAT[])`` (via Arrow, no Python loop)."""
    import pyarrow as pa

    emb = np.ascontiguousarray(emb, dtype=np.float32)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    tbl = pa.table({"item_id": pa.array(np.arange(len(emb), dtype=np.int64)), "emb": col})
    con.register("_hllm_emb", tbl)
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    con.execute(f"{verb} {table} AS SELECT item_id, emb::FLOAT[] AS emb FROM _hllm_emb")
    con.unregister("_hllm_emb")


def from_duckdb(con, table: str) -> np.ndarray:
    """Read back ``(item_id, emb)`` rows as an (N, D) array ordered by item_id."""
    t = con.sql(f"SELECT emb FROM {table} ORDER BY item_id").to_arrow_table()
    col = t.column("emb").combine_chunks()
    n = len(col)
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, -1)


@torch.no_grad()
def topk_inner_product(users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, k: int,
                       exclude: list[np.ndarray] | None = None, user_batch: int = 1024,
                       item_chunk: int = 262_144) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``users (B, D) @ items (N, D).T``; returns (ids (B, k) int64, scores (B, k)).

    ``exclude[b]`` lists item ids never returned for user b. Items are streamed in chunks (a
    memory-mapped table is read chunk by chunk) and merged into a running top-k.
    """
    U = torch.as_tensor(np.asarray(users, dtype=np.float32)) if not torch.is_tensor(users) else users.float()
    N = len(items)
    k = min(k, N)
    out_s = torch.full((len(U), k), -torch.inf)
    out_i = torch.full((len(U), k), -1, dtype=torch.long)
    for c0 in range(0, N, item_chunk):
        chunk = items[c0:c0 + item_chunk]
        T = chunk if torch.is_tensor(chunk) else torch.from_numpy(np.array(chunk, dtype=np.float32))  # copy: memmap is read-only
        for b0 in range(0, len(U), user_batch):
            s = U[b0:b0 + user_batch] @ T.T  # (b, chunk)
            if exclude is not None:
                for r, ex in enumerate(exclude[b0:b0 + user_batch]):
                    ex = np.asarray(ex, dtype=np.int64)
                    ex = ex[(ex >= c0) & (ex < c0 + len(T))] - c0
                    s[r, torch.from_numpy(ex)] = -torch.inf
            kk = min(k, s.shape[1])
            cs, ci = s.topk(kk, dim=1)
            both_s = torch.cat([out_s[b0:b0 + len(s)], cs], 1)
            both_i = torch.cat([out_i[b0:b0 + len(s)], ci + c0], 1)
            top_s, pos = both_s.topk(k, dim=1)
            out_s[b0:b0 + len(s)], out_i[b0:b0 + len(s)] = top_s, both_i.gather(1, pos)
    return out_i.numpy(), out_s.numpy()


# ----------------------------------------------------------------- ANN index next to the table
def read_meta(folder) -> dict:
    p = Path(folder) / "meta.json"
    if not p.exists():
        raise NotFoundError(f"no item table at {folder} (run `sim hllm embed-items` first)")
    return json.loads(p.read_text())


def table_hash(folder, meta: dict | None = None) -> str:
    """The table's content hash (from ``meta`` / meta.json; computed for tables written before it was
    recorded, which ``build_table_index`` then records)."""
    meta = read_meta(folder) if meta is None else meta
    return meta.get("table_hash") or embeddings_hash(open_item_table(folder))


def build_table_index(folder, cfg: ann.RetrievalConfig | dict | None = None, kind: str | None = None) -> dict:
    """Build the ANN index of the table at ``folder``, write ``index.faiss`` and record it in meta.json."""
    import faiss

    folder, cfg = Path(folder), ann.retrieval_config(cfg)
    table = open_item_table(folder)
    kind = kind or cfg.kind(len(table))
    t0 = time.perf_counter()
    index = ann.build_index(table, cfg, kind)
    build_s = time.perf_counter() - t0
    faiss.write_index(index, str(folder / "index.tmp.faiss"))
    (folder / "index.tmp.faiss").replace(folder / INDEX_FILE)
    meta = read_meta(folder)
    meta["table_hash"] = table_hash(folder, meta)  # recorded once for tables written before it was
    meta["index"] = {"kind": kind, "n_items": int(index.ntotal), "table_hash": meta["table_hash"],
                     "params": cfg.model_dump(), "build_s": round(build_s, 2),
                     "bytes": (folder / INDEX_FILE).stat().st_size}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta["index"]


def load_table_index(folder, cfg: ann.RetrievalConfig | dict | None = None):
    """The table's ANN index, its search parameters from ``cfg`` (default: those it was built with).

    Refuses (one-line errors) a missing or unreadable index, one built from other table contents
    and one of another kind than ``cfg`` serves: rebuild it (``ensure_table_index``).
    """
    import faiss

    folder = Path(folder)
    meta, path = read_meta(folder), folder / INDEX_FILE
    info = meta.get("index")
    if info is None or not path.exists():
        raise NotFoundError(f"no ANN index at {folder} (build it: `sim hllm embed-items --index ivf`)")
    rebuild = f"rebuild it (`sim hllm embed-items --index {info['kind']}`)"
    if info["table_hash"] != table_hash(folder, meta) or info["n_items"] != meta["n_items"]:
        then = (f"{info['n_items']:,} items then, {meta['n_items']:,} now" if info["n_items"] != meta["n_items"]
                else "same size, other contents")
        raise DataError(f"the ANN index was built for another version of the item table ({then}): {rebuild}",
                        file=str(path))
    want = None if cfg is None else ann.retrieval_config(cfg).kind(meta["n_items"])
    if want is not None and want != info["kind"]:
        raise DataError(f"the ANN index is {info['kind']!r}, the retrieval config serves this table with "
                        f"{want!r}: rebuild it (`sim hllm embed-items --index {want}`)", file=str(path))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError:
        raise DataError(f"not a readable faiss index: {rebuild}", file=str(path)) from None
    ann.set_search_params(index, ann.retrieval_config(info["params"] if cfg is None else cfg))
    return index


def _index_is_fresh(folder: Path, meta: dict, kind: str, cfg: ann.RetrievalConfig) -> bool:
    """Whether the recorded index is there, of ``kind`` and ``cfg``'s build settings, over this table."""
    info = meta.get("index")
    return (info is not None and (folder / INDEX_FILE).exists() and info["kind"] == kind
            and info["table_hash"] == table_hash(folder, meta)
            and ann.retrieval_config(info["params"]).build_params() == cfg.build_params())


def ensure_table_index(folder, cfg: ann.RetrievalConfig | dict | None = None) -> dict | None:
    """Make the table's index match ``cfg``: build it when ANN serves this size and the index is
    missing, stale or of other build settings; drop it when exact serves. Returns its meta.json entry."""
    folder, cfg = Path(folder), ann.retrieval_config(cfg)
    meta = read_meta(folder)
    kind, info = cfg.kind(meta["n_items"]), meta.get("index")
    if kind == "exact":
        if info is not None:
            (folder / INDEX_FILE).unlink(missing_ok=True)
            meta.pop("index")
            (folder / "meta.json").write_text(json.dumps(meta))
        return None
    return info if _index_is_fresh(folder, meta, kind, cfg) else build_table_index(folder, cfg, kind)


def search_table(folder, users: np.ndarray, k: int, exclude: list[np.ndarray] | None = None,
                 cfg: ann.RetrievalConfig | dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items of the table at ``folder`` for ``users`` (B, D): exact or ANN by ``cfg``."""
    cfg = ann.retrieval_config(cfg)
    table = open_item_table(folder)
    if cfg.kind(len(table)) == "exact":
        return topk_inner_product(users, table, k, exclude)
    return ann.search(load_table_index(folder, cfg), users, k, exclude, table=table, refine=cfg.refine)
