"""Trained-model cache: ``artifacts/<dataset>/<name>-<config hash>/`` keyed by the resolved
config and the training data fingerprint, so the same arm is trained once and reused."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from policies import registry

# bump when training code changes what a config learns from the same data (a cached model of older
# code must not be reused): 2 = issue 16 (untrained items no negatives, HSTU official time bias,
# second-resolution timestamps, values reach the ranker); 3 = HLLM keeps the average training user
# for users with no history (prior_user)
TRAINING_VERSION = 3


def config_hash(name: str, cfg: Any, extra: dict | None = None) -> str:
    # serving settings (a config's SERVING_FIELDS) change how a trained model is served, not what it learns
    trained = cfg.model_dump(mode="json", exclude=set(getattr(cfg, "SERVING_FIELDS", ())))
    payload = json.dumps({"policy": name, "config": trained, "training": TRAINING_VERSION,
                          **(extra or {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def data_fingerprint(dataset, split) -> str:
    h = hashlib.sha256()
    arrays = [split.train.indptr, split.train.items, split.train.ts, split.valid_targets,
              split.eval_histories("valid").items]
    if getattr(dataset, "values", None) is not None:  # labels of the ranker's extra tasks
        arrays.append(np.asarray(dataset.values, np.float64))
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(str(dataset.n_items).encode())
    return h.hexdigest()[:12]


def fit_or_load(name: str, dataset, split, overrides: dict | None = None, root: str | Path = "artifacts",
                progress: bool = True) -> Any:
    """Return policy ``name`` trained on ``split`` (from the cache when present)."""
    cfg = registry.make_config(name, overrides)
    entry = registry.get(name)
    h = config_hash(name, cfg, {"data": data_fingerprint(dataset, split)})
    path = Path(root) / dataset.name / f"{name}-{h}"
    if (path / "DONE").exists():
        if progress:
            tqdm.write(f"[sim] {name}: loaded from the cache ({path})", file=sys.stderr)
        pol = entry.cls.load(path)
        serving = {f: getattr(cfg, f) for f in getattr(cfg, "SERVING_FIELDS", ())}
        if serving:  # the cached model serves as this run asks, not as it was saved
            pol.cfg = pol.cfg.model_copy(update=serving)
        return pol
    if progress:
        tqdm.write(f"[sim] training {name} on {len(split.train)} interactions ...", file=sys.stderr)
    t0 = time.perf_counter()
    pol = entry.cls(cfg)
    pol.fit(dataset, split, progress=progress)
    pol.save(path)
    (path / "DONE").write_text(json.dumps({"seconds": round(time.perf_counter() - t0, 2)}))
    return pol
