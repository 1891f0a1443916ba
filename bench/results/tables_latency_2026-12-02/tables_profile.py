"""Where the HLLM tables arm's request time goes in the default run (simulate phase, no oracle).

    python tables_profile.py > tables_profile.json   (catalog and artifacts of the runs in README.md)
"""

import json
import time

import torch

from simulator.core import Catalog
from simulator.engine.config import load_config, parse_config
from simulator.engine.pipeline import Pipeline
from simulator.engine.run import prepare, run_experiment, train_arms

torch.set_num_threads(1)
cfg = load_config("bench/results/tables_latency_2026-12-02/hllm_tables.yaml")
cfg = parse_config({**cfg.model_dump(mode="json"), "oracle_reps": 0, "artifacts": "/tmp/ann26/art2"}, "x")
cat = Catalog("/tmp/ann26/sim_tables.duckdb")
pols = train_arms(cfg, prepare(cfg, cat), progress=False)
acc: dict = {}
orig = Pipeline.run


def run(pipe, users):
    t, c = time.perf_counter(), time.process_time()
    res = orig(pipe, users)
    a = acc.setdefault(pipe.arm.name, {"requests": 0, "wall_ms": 0.0, "nearline_ms": 0.0, "cpu_ms": 0.0,
                                       **{k: 0.0 for k in res.stage_ms}})
    a["requests"] += len(users)
    a["wall_ms"] += (time.perf_counter() - t) * 1e3
    a["cpu_ms"] += (time.process_time() - c) * 1e3
    a["nearline_ms"] += res.nearline_ms
    for k, v in res.stage_ms.items():
        a[k] += v
    return res


Pipeline.run = run
run_experiment(cfg, cat, progress=False, policies=pols)
for a in acc.values():
    n = a["requests"]
    for k in list(a):
        if k != "requests":
            a[k + "_per_request"] = round(a.pop(k) / n, 4)
    a["request_path_ms_per_request"] = round(a["wall_ms_per_request"] - a["nearline_ms_per_request"], 4)
print(json.dumps({"command": "python tables_profile.py (the hllm_tables.yaml run, oracle_reps 0)", "arms": acc,
                  "hllm_states": pols["hllm"]._states.report()}, indent=1))
