"""An HLLM arm at catalog scale: `sim run` through ANN retrieval, its recall and its cost per request.

For each catalog size (``--items``, default 1k, 50k and 500k items) the bench writes a synthetic
world (``simulator.core.synthetic.WorldConfig``: the same users and sessions, only the catalog
grows), trains an HLLM arm and the popularity arm on it (``sim run --treatment hllm --control
popularity``'s pipelines), and runs a short simulation of that experiment (``run_experiment``, no
oracle passes) in this process. The HLLM policy serves with the product's default retrieval setting
(``policies.ann.RetrievalConfig``: exact below ``ANN_MIN_ITEMS`` = 500k items, IVF at or above), so
the 500k world is served through ``retrieve`` on the ANN index, as `sim run` serves it.

Measured per size, in CPU time (``time.process_time``: the machine is shared):

- ``arm_cpu_ms_per_request``: each arm's pipeline calls (``Pipeline.run``) over its requests;
  ``simulate_cpu_ms_per_request``: the whole simulate phase (both arms, user model, events);
- ``index_build_cpu_s``: the ANN index's build (at the first retrieval, warmed before the run);
- ``recall_at_100``: for the users the HLLM arm served (their requests as served, histories
  excluded as the pipeline excludes them), the share of the exact top-100 (the full-score path,
  ``FullScorePolicy.retrieve``) that the served retrieval found; with the two paths' CPU ms a user
  (the user states cached first: the retrieval itself);
- ``nprobe_sweep`` (IVF sizes): the same users' recall and ANN cost at other ``nprobe`` values;
- each per-request cost over the first (1k-item) world's (``over_first``).

The HLLM arm is the ``tiny`` preset (a tiny random item LLM, 1 stage-2 epoch): this measures serving
speed and ANN recall, not quality (MiniLM over 500k item texts takes hours on 2 CPU cores).

    nice -n 10 python bench/ann_scale.py --workdir /tmp/annscale > ann_scale.json
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HLLM = {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ArmTimer:
    """CPU time of each arm's ``Pipeline.run`` calls while active, and the HLLM arm's batches
    (their users as served), by wrapping the library function (the library stays untouched)."""

    def __init__(self, keep_arm: str, keep_users: int) -> None:
        self.keep_arm, self.keep_users = keep_arm, keep_users
        self.cpu: dict[str, float] = {}
        self.requests: dict[str, int] = {}
        self.batches: list = []

    def __enter__(self):
        from simulator.engine.pipeline import Pipeline

        self.orig, timer = Pipeline.run, self

        def run(pipe, users):
            t = time.process_time()
            out = timer.orig(pipe, users)
            name = pipe.arm.name
            timer.cpu[name] = timer.cpu.get(name, 0.0) + time.process_time() - t
            timer.requests[name] = timer.requests.get(name, 0) + len(users)
            if name == timer.keep_arm and sum(len(b) for b in timer.batches) < timer.keep_users:
                timer.batches.append(users)
            return out

        Pipeline.run = run
        return self

    def __exit__(self, *exc) -> None:
        from simulator.engine.pipeline import Pipeline

        Pipeline.run = self.orig


def world(cat, n_items: int, n_users: int, sessions: float) -> str:
    from simulator.core.synthetic import WorldConfig, write_world

    name = f"ann-{n_items}"
    cfg = WorldConfig(n_users=n_users, n_items=n_items, sessions_per_user=sessions, seed=0)
    if not cat.has_dataset(name) or cat.info(name).meta.get("world") != json.loads(cfg.model_dump_json()):
        write_world(cat, name, cfg, replace=True)
    return name


def recall(pol, batches, k: int, chunk: int = 64) -> dict:
    """The served retrieval (``pol.retrieve``: ANN at this size, or exact) against the exact path:
    recall of the exact top-k ids, and tie-aware (the share of served items scoring at least the
    exact k-th score: the tiny random item LLM gives many items the same text and embedding)."""
    from policies.ann import recall_at_k
    from policies.base import FullScorePolicy

    served, exact, hit, t_served, t_exact = [], [], [], 0.0, 0.0
    for b in batches:
        for s in range(0, len(b), chunk):
            u = b.slice(slice(s, s + chunk))
            ex = [np.asarray(h) for h in u.histories]
            pol.user_vectors(u)  # user states cached: both paths below time the retrieval itself
            t = time.process_time()
            got = pol.retrieve(u, k, ex)
            t_served += time.process_time() - t
            t = time.process_time()
            want = FullScorePolicy.retrieve(pol, u, k, ex)
            t_exact += time.process_time() - t
            served.append(got.item_ids)
            exact.append(want.item_ids)
            hit.append(((got.scores >= want.scores[:, -1:] - 1e-5) & (got.item_ids >= 0)).mean(1))
    n = sum(len(x) for x in served)
    return {"users": n, f"recall_at_{k}": round(recall_at_k(np.concatenate(served), np.concatenate(exact)), 4),
            f"tie_aware_recall_at_{k}": round(float(np.concatenate(hit).mean()), 4),
            "served_cpu_ms_per_user": round(t_served / n * 1e3, 3),
            "exact_cpu_ms_per_user": round(t_exact / n * 1e3, 3)}


def nprobe_sweep(pol, batches, k: int, values: list[int]) -> list[dict]:
    """IVF only: the same users' recall and ANN cost at other ``nprobe`` (lists scanned a query)."""
    index = pol._index().index
    if index is None or not hasattr(index, "nprobe"):
        return []
    default, out = index.nprobe, []
    for v in values:
        index.nprobe = min(v, index.nlist)
        out.append({"nprobe": index.nprobe, "nlist": index.nlist, **recall(pol, batches, k)})
    index.nprobe = default
    return out


def one_size(cat, n_items: int, args, art: str) -> dict:
    from policies.base import UserBatch
    from simulator.commands.run import build_config
    from simulator.engine.run import prepare, run_experiment, train_arms

    t = time.process_time()
    name = world(cat, n_items, args.users, args.sessions)
    out: dict = {"n_items": n_items, "world_cpu_s": round(time.process_time() - t, 1)}
    cfg = build_config("hllm", "popularity", None, None,
                       {"dataset": name, "n_requests": args.requests, "oracle_reps": 0, "artifacts": art,
                        "policies": {"hllm": HLLM}}, n_items=n_items)
    t = time.process_time()
    setup = prepare(cfg, cat)
    pols = train_arms(cfg, setup, progress=False)
    out["prepare_train_cpu_s"] = round(time.process_time() - t, 1)
    pol = pols["hllm"]
    out["retrieval"] = pol.retrieval.kind(pol.n_items)  # what serves this catalog: exact | ivf
    t = time.process_time()
    pol.retrieve(UserBatch.from_sequences(setup.train_dataset.sequences, np.arange(1)), 1)  # builds the ANN index
    out["index_build_cpu_s"] = round(time.process_time() - t, 2)
    with ArmTimer("hllm", args.recall_users) as at:
        t = time.process_time()
        run_experiment(cfg, cat, progress=False, policies=pols)
        sim_cpu = time.process_time() - t
    n = sum(at.requests.values())
    out["requests"] = at.requests
    out["simulate_cpu_ms_per_request"] = round(sim_cpu / n * 1e3, 3)
    out["arm_cpu_ms_per_request"] = {a: round(at.cpu[a] / at.requests[a] * 1e3, 3) for a in at.cpu}
    out["served_vs_exact"] = recall(pol, at.batches, args.k)
    out["nprobe_sweep"] = nprobe_sweep(pol, at.batches, args.k, [int(x) for x in args.nprobe.split(",") if x])
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", default="1000,50000,500000", help="comma-separated catalog sizes (the first: the "
                                                                 "reference the costs are divided by)")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--sessions", type=float, default=2.0, help="the world's mean logged sessions per user")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--recall-users", type=int, default=512, help="users (as served) the recall is measured on")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--nprobe", default="16,128,512,2048", help="IVF sizes: recall and cost at these nprobe too")
    ap.add_argument("--workdir", default=None, help="catalog + trained artifacts (reused across invocations)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="annscale-"))
    work.mkdir(parents=True, exist_ok=True)
    from simulator.core import Catalog

    cat = Catalog(str(work / "bench.duckdb"))
    out: dict = {"command": "python bench/ann_scale.py " + " ".join(sys.argv[1:]), "hllm": HLLM,
                 "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}, "torch_threads": 1,
                 "sizes": []}
    try:
        for n in [int(x) for x in args.items.split(",") if x]:
            out["sizes"].append(one_size(cat, n, args, str(work / "artifacts")))
            print(f"[bench] {json.dumps(out['sizes'][-1])}", file=sys.stderr)
    finally:
        cat.close()
    ref = out["sizes"][0]
    for s in out["sizes"]:
        s["over_first"] = {"simulate_cpu_ms_per_request": round(s["simulate_cpu_ms_per_request"]
                                                                / ref["simulate_cpu_ms_per_request"], 2),
                           "hllm_arm_cpu_ms_per_request": round(s["arm_cpu_ms_per_request"]["hllm"]
                                                                / ref["arm_cpu_ms_per_request"]["hllm"], 2)}
    out["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
