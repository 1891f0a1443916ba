"""Simulator throughput: end-to-end requests/s of a two-arm run (popularity vs SASRec, K=10).

Workloads: ML-100K replay and a synthetic world (``--scale 20`` ~ 1M logged interactions);
runtimes: in-process vs Ray (ratio, bar >= 0.7x); scaling with Ray actors and catalog size;
memory (RSS) sampled during the run (flat = events streamed to DuckDB).
Policies are trained once before timing (``policies=``); the timed part is the simulation
(dataset load, SimPy clock, pipelines, user model, event writes). Prints one JSON object.

    python bench/sim_throughput.py --quick           # ~minutes on 2 cores
    python bench/sim_throughput.py --scale 20        # the 1M-interaction world
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def two_arm_config(dataset: str, n_requests: int, artifacts: str, **top):
    from simulator.config import parse_config

    arms = [{"name": "popularity", "role": "control", "channels": [{"policy": "popularity", "quota": 100}],
             "fine": {"policy": "popularity", "keep": 50}, "slate_size": 10},
            {"name": "sasrec", "channels": [{"policy": "sasrec", "quota": 100}, {"policy": "popularity", "quota": 50}],
             "coarse": {"policy": "sasrec", "keep": 100}, "fine": {"policy": "sasrec", "keep": 50}, "slate_size": 10}]
    data = {"dataset": dataset, "n_requests": n_requests, "artifacts": artifacts, "arms": arms,
            "policies": {"sasrec": {"epochs": 1, "max_len": 50, "hidden": 64, "batch_size": 256,
                                    "loss": "sampled_ce"}},  # throughput bench: training quality is not measured
            "batch_window_s": 3600.0, "start_horizon_s": 3600.0, "chunk_size": 512, **top}
    return parse_config(data, "bench")


def timed_run(cfg, cat, policies, sample_every: int = 0) -> dict:
    from simulator.run import run_experiment

    samples, ticks, first = [], [0], []

    def hook(batch_no, runtime):
        ticks[0] += 1
        if not first:
            first.append(time.perf_counter())
        if sample_every and batch_no % sample_every == 0:
            samples.append(round(rss_mb(), 1))

    t0 = time.perf_counter()
    rid = run_experiment(cfg, cat, progress=False, policies=policies, on_batch=hook)
    dt = time.perf_counter() - t0
    n = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [rid]).fetchall()[0][0]
    t_end = time.perf_counter()
    n_first = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ? AND request_id < ?",
                              [rid, int(n / max(ticks[0], 1))]).fetchall()[0][0]
    out = {"requests": int(n), "seconds": round(dt, 2), "rps": round(n / dt, 1),
           "steady_rps": round((n - n_first) / max(t_end - first[0], 1e-9), 1) if first else None,
           "startup_s": round(first[0] - t0, 2) if first else None,
           "mean_requests_per_tick": round(n / max(ticks[0], 1), 1)}
    if samples:
        out["rss_mb_samples"] = samples
    return out


def workload(name: str, dataset: str, cat, art: str, n_requests: int, ray_actors: list[int], **top) -> dict:
    from simulator.run import prepare, train_arms

    cfg = two_arm_config(dataset, n_requests, art, **top)
    t = time.perf_counter()
    setup = prepare(cfg, cat)
    pols = train_arms(cfg, setup, progress=False)
    res = {"dataset": dataset, "n_items": setup.dataset.n_items, "n_users": setup.dataset.n_users,
           "n_interactions": int(len(setup.dataset.sequences)), "prepare_train_s": round(time.perf_counter() - t, 1)}
    res["local"] = timed_run(cfg, cat, pols, sample_every=20)
    for k in ray_actors:
        rcfg = cfg.model_copy(update={"runtime": "ray", "actors_per_arm": k})
        res[f"ray_actors_{k}"] = timed_run(rcfg, cat, pols)
    if ray_actors:
        r = res[f"ray_actors_{ray_actors[0]}"]
        res["ray_over_local"] = round(r["rps"] / res["local"]["rps"], 3)  # incl. actor start-up
        res["ray_over_local_steady"] = round(r["steady_rps"] / res["local"]["steady_rps"], 3)
    print(f"[bench] {name}: {json.dumps(res)}", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small request counts")
    ap.add_argument("--scale", type=float, default=20.0, help="synthetic world scale (20 ~ 1M interactions)")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--sizes", default="1,5", help="extra world scales for the catalog-size curve")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--only-ml100k", action="store_true")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="simbench-"))
    work.mkdir(parents=True, exist_ok=True)
    from simulator.data import Catalog
    from simulator.data.paths import find_ml100k
    from simulator.data.synthetic import WorldConfig, write_world

    n = 4000 if args.quick else args.requests
    actors = [int(a) for a in args.actors.split(",") if a]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cat = Catalog(str(work / "bench.duckdb"))
    art = str(work / "artifacts")
    out: dict = {"machine": {"cpus": os.cpu_count()}, "requests_per_run": n, "K": 10}
    if not args.skip_ml100k and find_ml100k() is not None:
        out["ml100k_replay"] = workload("ml100k", "ml-100k", cat, art, n, actors, batch_window_s=86400.0)
    if args.only_ml100k:
        cat.close()
        ray.shutdown()
        print(json.dumps(out, indent=1))
        return
    sizes = sorted({float(s) for s in args.sizes.split(",") if s} | {args.scale})
    curve = {}
    for s in sizes:
        name = f"synthetic-x{s:g}"
        if not cat.has_dataset(name):
            t = time.perf_counter()
            write_world(cat, name, WorldConfig(scale=s))
            print(f"[bench] built {name} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        res = workload(name, name, cat, art, n, actors if s == args.scale else [])
        curve[name] = res
    out["synthetic"] = curve
    big = curve[f"synthetic-x{args.scale:g}"]
    out["summary"] = {
        "ml100k_local_rps": out.get("ml100k_replay", {}).get("local", {}).get("rps"),
        "ml100k_ray_over_local": out.get("ml100k_replay", {}).get("ray_over_local"),
        "ml100k_ray_over_local_steady": out.get("ml100k_replay", {}).get("ray_over_local_steady"),
        "world_interactions": big["n_interactions"],
        "world_local_rps": big["local"]["rps"],
        "world_steady_rps": big["local"]["steady_rps"],
        "world_ray_over_local": big.get("ray_over_local"),
        "world_ray_over_local_steady": big.get("ray_over_local_steady"),
        "rps_by_catalog_items": {v["n_items"]: v["local"]["rps"] for v in curve.values()},
        "rps_by_ray_actors": {k: big[f"ray_actors_{k}"]["rps"] for k in actors},
        "steady_rps_by_ray_actors": {k: big[f"ray_actors_{k}"]["steady_rps"] for k in actors},
    }
    cat.close()
    ray.shutdown()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
