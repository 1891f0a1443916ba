"""Why IVF recall is low for the tiny random HLLM at 500k items: the item table's geometry and
recall for item-like queries vs the model's user vectors (the 500k world's trained policy from
`bench/ann_scale.py --workdir W`). Usage: python geometry_probe.py W/artifacts/ann-500000/hllm-*"""
import sys

import numpy as np
import torch

from hllm.policy import HLLMPolicy
from policies import ann
from policies.base import UserBatch

torch.set_num_threads(1)
pol = HLLMPolicy.load(sys.argv[1])
T = pol.item_table()
rng = np.random.default_rng(0)
print("items", T.shape, "distinct rows", len(np.unique(T.round(5), axis=0)))
mean = T.mean(0) / np.linalg.norm(T.mean(0))
print("item . mean direction: median", round(float(np.median(T @ mean)), 3))
index = ann.build_index(T, ann.RetrievalConfig())
queries = {"item-like (an item's vector + noise 0.05)":
           T[rng.choice(len(T), 200)] + rng.normal(size=(200, T.shape[1])).astype(np.float32) * 0.05,
           "user vectors (random 8-item histories)":
           pol.embed_users(UserBatch(np.arange(200), [rng.integers(0, len(T), 8) for _ in range(200)]))}
for name, q in queries.items():
    q = q.astype(np.float32)
    S = q @ T.T
    exact = np.argsort(-S, axis=1, kind="stable")[:, :100]
    print(name, "| query . mean direction: median", round(float(np.median(q @ mean / np.linalg.norm(q, axis=1))), 3))
    for nprobe in (48, 512):
        index.nprobe = nprobe
        got, _ = ann.search(index, q, 100, table=T, refine=2.0)
        print(f"   nprobe {nprobe}: recall@100 {ann.recall_at_k(got, exact):.3f}")
