"""Simulator throughput: end-to-end requests/s of a two-arm run (popularity vs SASRec, K=10),
and of HLLM vs SASRec on the default world (``--hllm``).

Workloads: ML-100K replay and a synthetic world (``--scale 20`` ~ 1M logged interactions);
runtimes: in-process vs Ray (ratio, bar >= 0.7x); scaling with Ray actors and catalog size;
memory (RSS) sampled during the run (flat = events streamed to DuckDB).
Policies are trained once before timing (``policies=``); the timed part is the simulation
(dataset load, SimPy clock, pipelines, user model, event writes). Prints one JSON object.

    python bench/sim_throughput.py --quick           # ~minutes on 2 cores
    python bench/sim_throughput.py --scale 20        # the 1M-interaction world
    python bench/sim_throughput.py --hllm-only       # HLLM vs SASRec (`sim run` defaults, 8,000 requests)

HLLM section: the arms of ``sim run --treatment hllm --control sasrec`` (its training budget, the
default world, oracle off), one run per user-state serving mode side by side (``incremental``:
the cache with incremental extension, ``cached``: reuse only, ``recompute``: no cache; and
``padded``: the pre-cache serving path, a left-padded batch forward, for reference), rounds in
alternating order; per run the simulate-phase requests/s (the SimPy loop only: no training, no
oracle), a per-stage time breakdown (local runtime) and whether its event tables equal the
``recompute`` run's (same seed).
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
    from simulator.engine.config import parse_config

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
    from simulator.engine.run import run_experiment

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
    from simulator.engine.run import prepare, train_arms

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


TABLES = {"assignments": "user_id", "requests": "request_id", "exposures": "request_id, position",
          "feedback": "request_id, item_id, event"}


def same_tables(con, a: str, b: str) -> bool:
    """Event tables of runs a and b equal (every column but run_id and wall-clock latency)."""
    for t in TABLES:
        cols = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {t})").fetchall()
                if c not in ("run_id", "latency_ms")]
        sel = ", ".join(cols)
        q = (f"SELECT count(*) FROM ((SELECT {sel} FROM {t} WHERE run_id = ? EXCEPT ALL SELECT {sel} FROM {t} "
             f"WHERE run_id = ?) UNION ALL (SELECT {sel} FROM {t} WHERE run_id = ? EXCEPT ALL SELECT {sel} FROM {t} "
             f"WHERE run_id = ?))")
        if con.execute(q, [a, b, b, a]).fetchall()[0][0]:
            return False
    return True


def padded_user_embeddings(self, users):
    """The serving path before the user-state cache (reference only): a left-padded batch forward."""
    import torch

    from policies.tensors import pad_left

    self.model.eval()
    ids, ts = pad_left(users.histories, self.hf_config.max_len, users.timestamps)
    ids_t = torch.from_numpy(ids).to(self.table.device)
    mask = ids_t > 0
    seq = self.table[(ids_t - 1).clamp(min=0)] * mask[..., None]  # (B, T, D)
    h = self.model.user_states(seq, mask, torch.from_numpy(ts).to(self.table.device))
    return self.model.unit(h[:, -1])


class Meter:
    """Wall time of the simulate phase, of each arm's pipeline stages and of HLLM's user LLM,
    by wrapping the methods for the duration of one run (the library code stays untouched)."""

    def __init__(self, padded: bool = False) -> None:
        self.padded, self.ms, self.phases = padded, {}, []

    def add(self, key: str, ms: float) -> None:
        self.ms[key] = self.ms.get(key, 0.0) + ms

    def __enter__(self):
        from hllm.policy import HLLMPolicy
        from simulator.engine.pipeline import Pipeline
        from simulator.engine.story import Simulation

        self.saved = [(Simulation, "run"), (Pipeline, "run"), (HLLMPolicy, "user_embeddings")]
        self.saved = [(c, n, getattr(c, n)) for c, n in self.saved]
        (_, _, sim_run), (_, _, pipe_run), (_, _, user_emb) = self.saved
        meter = self
        user_emb = padded_user_embeddings if self.padded else user_emb

        def sim(self_, *a, **k):
            t = time.perf_counter()
            try:
                return sim_run(self_, *a, **k)
            finally:
                meter.phases.append(time.perf_counter() - t)

        def pipe(self_, users):
            res = pipe_run(self_, users)
            for stage, ms in res.stage_ms.items():
                meter.add(f"{self_.arm.name}.{stage}", ms)
            return res

        def emb(self_, users):
            t = time.perf_counter()
            out = user_emb(self_, users)
            meter.add("hllm.user_llm", (time.perf_counter() - t) * 1e3)
            return out

        Simulation.run, Pipeline.run, HLLMPolicy.user_embeddings = sim, pipe, emb
        return self

    def __exit__(self, *exc) -> None:
        for c, n, f in self.saved:
            setattr(c, n, f)


def hllm_run(cfg, cat, pols, mode: str) -> tuple[str, dict]:
    """One run with the HLLM policy serving in ``mode``; (run_id, measurements)."""
    from hllm.user_state import UserStateConfig
    from simulator.engine.run import run_experiment

    pols["hllm"].set_serving(UserStateConfig(mode="recompute" if mode == "padded" else mode))
    with Meter(padded=mode == "padded") as m:
        rid = run_experiment(cfg, cat, progress=False, policies=pols)
    n = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [rid]).fetchall()[0][0]
    sim_s = m.phases[0]
    out = {"requests": int(n), "simulate_s": round(sim_s, 3), "simulate_rps": round(n / sim_s, 1)}
    if cfg.runtime == "local":  # hllm.user_llm is part of hllm.retrieve (its first score_all of a batch)
        out["stage_s"] = {k: round(v / 1e3, 3) for k, v in sorted(m.ms.items())}
        piped = sum(v for k, v in m.ms.items() if k != "hllm.user_llm") / 1e3
        out["stage_s"]["outside_pipelines"] = round(sim_s - piped, 3)  # SimPy, design, user model, event log
        st = pols["hllm"]._states
        if st is not None and mode != "padded":
            out["user_states"] = {**st.stats, "cached_users": len(st.cache), "cached_mib": round(st.bytes / 2**20, 1)}
    return rid, out


def hllm_workload(cat, art: str, n_requests: int, rounds: int, ray_actors: list[int]) -> dict:
    """HLLM vs SASRec, `sim run` defaults, each serving mode side by side (module doc)."""
    from simulator.commands.run import build_config
    from simulator.engine.run import prepare, train_arms

    cfg = build_config("hllm", "sasrec", None, None, {"n_requests": n_requests, "artifacts": art,
                                                       "oracle_reps": 0})
    t = time.perf_counter()
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    res: dict = {"config": f"sim run --treatment hllm --control sasrec -n {n_requests} (oracle off)",
                 "prepare_train_s": round(time.perf_counter() - t, 1), "local": {}}
    modes = ["incremental", "recompute", "cached", "padded"]
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            rid, out = hllm_run(cfg, cat, pols, mode)
            res["local"].setdefault(mode, []).append({"run_id": rid, **out})
            print(f"[bench] hllm {mode}: {json.dumps(out)}", file=sys.stderr)
    ref = res["local"]["recompute"][0]["run_id"]
    for runs in res["local"].values():
        for run in runs:
            run["tables_equal_recompute"] = same_tables(cat.con, run["run_id"], ref)
    for k in ray_actors:
        rcfg = cfg.model_copy(update={"runtime": "ray", "actors_per_arm": k})
        for mode in ("incremental", "recompute"):
            rid, out = hllm_run(rcfg, cat, pols, mode)
            res.setdefault(f"ray_actors_{k}", {})[mode] = {"run_id": rid, **out,
                                                          "tables_equal_recompute": same_tables(cat.con, rid, ref)}
            print(f"[bench] hllm ray x{k} {mode}: {json.dumps(out)}", file=sys.stderr)
    res["summary"] = hllm_summary(res, ray_actors)
    return res


def hllm_summary(res: dict, ray_actors: list[int]) -> dict:
    import statistics

    med = {m: statistics.median(r["simulate_rps"] for r in runs) for m, runs in res["local"].items()}
    local = res["local"]
    rounds = range(len(local["incremental"]))
    out = {"simulate_rps_median": {m: round(v, 1) for m, v in med.items()},
           "per_round_incremental_over_padded": [round(local["incremental"][r]["simulate_rps"]
                                                       / local["padded"][r]["simulate_rps"], 2) for r in rounds],
           "per_round_incremental_over_recompute": [round(local["incremental"][r]["simulate_rps"]
                                                          / local["recompute"][r]["simulate_rps"], 2) for r in rounds],
           "incremental_over_recompute": round(med["incremental"] / med["recompute"], 2),
           "incremental_over_padded": round(med["incremental"] / med["padded"], 2),
           "cached_over_recompute": round(med["cached"] / med["recompute"], 2),
           "tables_equal_recompute": {m: all(r["tables_equal_recompute"] for r in runs)
                                      for m, runs in res["local"].items()}}
    for k in ray_actors:
        ray = res[f"ray_actors_{k}"]
        out[f"ray_actors_{k}_simulate_rps"] = {m: r["simulate_rps"] for m, r in ray.items()}
        out[f"ray_actors_{k}_tables_equal_recompute"] = all(r["tables_equal_recompute"] for r in ray.values())
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small request counts")
    ap.add_argument("--scale", type=float, default=20.0, help="synthetic world scale (20 ~ 1M interactions)")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--sizes", default="1,5", help="extra world scales for the catalog-size curve")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--only-ml100k", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--hllm", action="store_true", help="also HLLM vs SASRec on the default world")
    ap.add_argument("--hllm-only", action="store_true", help="only HLLM vs SASRec")
    ap.add_argument("--hllm-requests", type=int, default=8000)
    ap.add_argument("--hllm-rounds", type=int, default=2, help="side-by-side rounds of every serving mode")
    ap.add_argument("--hllm-actors", default="1,2", help="Ray actors per arm for the HLLM runs ('' = none)")
    return ap.parse_args()


def world_curve(cat, art: str, args, n: int, actors: list[int]) -> dict:
    """Popularity vs SASRec on synthetic worlds of several scales (Ray actors on the largest)."""
    from simulator.core.synthetic import WorldConfig, write_world

    curve = {}
    for s in sorted({float(s) for s in args.sizes.split(",") if s} | {args.scale}):
        name = f"synthetic-x{s:g}"
        if not cat.has_dataset(name):
            t = time.perf_counter()
            write_world(cat, name, WorldConfig(scale=s))
            print(f"[bench] built {name} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        curve[name] = workload(name, name, cat, art, n, actors if s == args.scale else [])
    return curve


def summary(out: dict, big: dict, curve: dict, actors: list[int]) -> dict:
    ml = out.get("ml100k_replay", {})
    return {
        "ml100k_local_rps": ml.get("local", {}).get("rps"),
        "ml100k_ray_over_local": ml.get("ray_over_local"),
        "ml100k_ray_over_local_steady": ml.get("ray_over_local_steady"),
        "world_interactions": big["n_interactions"],
        "world_local_rps": big["local"]["rps"],
        "world_steady_rps": big["local"]["steady_rps"],
        "world_ray_over_local": big.get("ray_over_local"),
        "world_ray_over_local_steady": big.get("ray_over_local_steady"),
        "rps_by_catalog_items": {v["n_items"]: v["local"]["rps"] for v in curve.values()},
        "rps_by_ray_actors": {k: big[f"ray_actors_{k}"]["rps"] for k in actors},
        "steady_rps_by_ray_actors": {k: big[f"ray_actors_{k}"]["steady_rps"] for k in actors},
    }


def main() -> None:
    args = parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="simbench-"))
    work.mkdir(parents=True, exist_ok=True)
    from simulator.core import Catalog
    from simulator.core.paths import find_ml100k

    n = 4000 if args.quick else args.requests
    actors = [int(a) for a in args.actors.split(",") if a]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cat = Catalog(str(work / "bench.duckdb"))
    art = str(work / "artifacts")
    out: dict = {"machine": {"cpus": os.cpu_count()}, "torch_threads": 1}
    try:
        if not args.hllm_only:
            out.update(requests_per_run=n, K=10)
        if args.hllm or args.hllm_only:
            out["hllm_vs_sasrec"] = hllm_workload(cat, art, args.hllm_requests, args.hllm_rounds,
                                                  [int(a) for a in args.hllm_actors.split(",") if a])
        if not args.hllm_only and not args.skip_ml100k and find_ml100k() is not None:
            out["ml100k_replay"] = workload("ml100k", "ml-100k", cat, art, n, actors, batch_window_s=86400.0)
        if not (args.hllm_only or args.only_ml100k):
            curve = world_curve(cat, art, args, n, actors)
            out["synthetic"] = curve
            out["summary"] = summary(out, curve[f"synthetic-x{args.scale:g}"], curve, actors)
    finally:
        cat.close()
        ray.shutdown()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
