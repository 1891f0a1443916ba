"""HLLM serving cost: item-embedding throughput, user-embedding throughput and exact top-k
retrieval latency per 1,000 users over a 1M-item table (random normalised embeddings, memory-mapped
from .npy as in production). Prints JSON.

    python bench/hllm_serving.py [--items 1000000] [--dim 256] [--texts 1000] [--item-llm minilm]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hllm import serving  # noqa: E402
from hllm.configuration_hllm import HLLMConfig  # noqa: E402
from hllm.modeling_hllm import HLLMModel  # noqa: E402
from hllm.train import encode_items  # noqa: E402


def item_throughput(item_llm: str, n: int, max_text_len: int, dim: int) -> dict:
    m = HLLMModel(HLLMConfig(item_llm=item_llm, max_text_len=max_text_len, user_hidden=dim, user_heads=4)).eval()
    rng = np.random.default_rng(0)
    words = ["love", "war", "night", "star", "city", "dream", "story", "man", "woman", "return", "dark", "life"]
    texts = [f"title: {' '.join(rng.choice(words, 3))} ({1950 + i % 50}) genre: Drama" for i in range(n)]
    t0 = time.perf_counter()
    tok = m.item_encoder.tokenize(texts)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = encode_items(m, tok, batch_size=256)
    with torch.no_grad():
        m.project(feats)
    t_enc = time.perf_counter() - t0
    return {"item_llm": item_llm, "n_texts": n, "max_text_len": max_text_len, "tokenize_s": round(t_tok, 3),
            "encode_s": round(t_enc, 3), "items_per_s": round(n / (t_tok + t_enc), 1)}, m


def user_throughput(m: HLLMModel, n_users: int, seq_len: int, dim: int) -> dict:
    x = torch.randn(n_users, seq_len, dim)
    mask = torch.ones(n_users, seq_len, dtype=torch.bool)
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n_users, 512):
            m.user_states(x[s:s + 512], mask[s:s + 512])[:, -1]
    dt = time.perf_counter() - t0
    return {"n_users": n_users, "seq_len": seq_len, "seconds": round(dt, 3), "users_per_s": round(n_users / dt, 1)}


def retrieval(n_items: int, dim: int, n_users: int, k: int, reps: int) -> dict:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        emb = rng.standard_normal((n_items, dim), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        t0 = time.perf_counter()
        serving.write_item_table(d, emb)
        t_write = time.perf_counter() - t0
        del emb
        table = serving.open_item_table(d)
        users = rng.standard_normal((n_users, dim), dtype=np.float32)
        users /= np.linalg.norm(users, axis=1, keepdims=True)
        exclude = [rng.choice(n_items, 50, replace=False) for _ in range(n_users)]
        serving.topk_inner_product(users[:8], table, k)  # warm the page cache
        mem = torch.from_numpy(np.array(table))  # in-RAM copy of the table
        times_mm, times_ram = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            serving.topk_inner_product(users, table, k, exclude)
            times_mm.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ids, _ = serving.topk_inner_product(users, mem, k, exclude)
            times_ram.append(time.perf_counter() - t0)
        assert ids.shape == (n_users, k)
    per1k = 1000 / n_users
    return {"n_items": n_items, "dim": dim, "n_users": n_users, "k": k, "exact": True,
            "table_write_s": round(t_write, 2),
            "latency_per_1000_users_s_mmap": round(min(times_mm) * per1k, 3),
            "latency_per_1000_users_s_ram": round(min(times_ram) * per1k, 3),
            "per_user_ms_ram": round(min(times_ram) / n_users * 1000, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--max-text-len", type=int, default=48)
    ap.add_argument("--item-llm", default="minilm")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import os

    res = {"threads": args.threads, "load_avg_at_start": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    res["item_embedding"], m = item_throughput(args.item_llm, args.texts, args.max_text_len, args.dim)
    res["user_embedding"] = user_throughput(m, 2000, 50, args.dim)
    res["retrieval"] = retrieval(args.items, args.dim, args.users, args.k, args.reps)
    res["load_avg_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
