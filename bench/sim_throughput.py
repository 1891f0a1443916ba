"""Simulator throughput, every arm pair timed the same way (one timer, one process).

Each pair is the two arms of ``sim run --treatment X --control sasrec`` on the same world
(default: ``synthetic``, 2,000 users x 1,000 items), trained once before timing (cached under the
work directory), served by the same runtime. Every run is one ``run_experiment`` call, split into
the same phases by one :class:`PhaseTimer`:

- ``startup_s``: the runtime's start (``_start_runtime``: pipelines built, Ray actors started,
  the policies' work before the first request: HLLM ``tables`` builds its table as of the start);
- ``simulate_s``: from the main story's start to the end of its final event flush (SimPy loop,
  both arms' pipelines, user model, event writes to DuckDB): **the throughput phase**;
- ``oracle_s``: the world oracle (``run_truth``: counterfactual passes), separate; its CPU time
  (``oracle_cpu_s``) counts the forked workers its passes ran in (``--oracle-workers``);
- ``rss_mb``: the process's resident memory after the run and its peak so far.

Pairs (``--pairs``): ``popularity`` (the ID pair: popularity vs SASRec), ``hstu`` (HSTU vs
SASRec), ``sasrec`` (an A/A: SASRec vs SASRec), ``hllm:<serving>`` (HLLM vs SASRec, HLLM serving in
each user-state serving mode of ``hllm.user_state.SERVING_MODES``; ``hllm:online:10``: with a
``window_step`` of 10). Rounds run every pair in
alternating order; per pair the best of N rounds (the machine is shared: best-of-N is the least
disturbed run) and each pair's throughput ratio to the ID pair **of the same round**
(``ratio_to_id_pair``) and of the bests.

    nice -n 10 python bench/sim_throughput.py --rounds 3 --workdir /tmp/simbench > out.json
    nice -n 10 python bench/sim_throughput.py --pairs popularity,hllm:online --items 1000,50000,500000

``--items``: a catalog-size curve (synthetic worlds with that many items, same users), ID and HLLM
pairs, plus the ANN recall@100 of HLLM's served candidates vs exact retrieval.
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
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_with_children() -> float:
    """CPU seconds of this process and of its children that ended (the oracle's forked workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class PhaseTimer:
    """Wall time of one ``run_experiment`` call by phase (module doc), by wrapping the library's
    functions for the duration of the run (the library code stays untouched); ``snapshot()``'s value
    at the main story's last flush is kept (``at_flush``: the simulate phase's own counters)."""

    def __init__(self, snapshot=lambda: None) -> None:
        self.snapshot = snapshot

    def __enter__(self):
        from simulator.engine import run as run_mod
        from simulator.engine.eventlog import EventLog
        from simulator.engine.story import Simulation

        self.t: dict[str, float] = {}
        self.stage_ms: dict[str, float] = {}
        self.in_oracle, self.at_flush = False, None
        self.saved = [(run_mod, "_start_runtime"), (run_mod, "run_truth"), (Simulation, "run"),
                      (EventLog, "flush")]
        self.saved = [(o, n, getattr(o, n)) for o, n in self.saved]
        (_, _, start), (_, _, truth), (_, _, sim_run), (_, _, flush) = self.saved
        me = self

        def start_w(*a, **k):
            t = time.perf_counter()
            try:
                return start(*a, **k)
            finally:
                me.t["startup"] = time.perf_counter() - t

        def truth_w(*a, **k):
            t, c, me.in_oracle = time.perf_counter(), cpu_with_children(), True
            try:
                return truth(*a, **k)
            finally:
                me.t["oracle"], me.t["oracle_cpu"] = time.perf_counter() - t, cpu_with_children() - c
                me.in_oracle = False

        def sim_w(self_, *a, **k):
            if not me.in_oracle:
                me.t["sim_start"], me.t["sim_start_cpu"] = time.perf_counter(), time.process_time()
            return sim_run(self_, *a, **k)

        def flush_w(self_):
            out = flush(self_)
            if not me.in_oracle:
                me.t["flush_end"], me.t["flush_end_cpu"] = time.perf_counter(), time.process_time()
                me.at_flush = me.snapshot()
            return out

        run_mod._start_runtime, run_mod.run_truth = start_w, truth_w
        Simulation.run, EventLog.flush = sim_w, flush_w
        return self

    def __exit__(self, *exc) -> None:
        for o, n, f in self.saved:
            setattr(o, n, f)

    def phases(self) -> dict[str, float]:
        return {"startup_s": round(self.t.get("startup", 0.0), 3),
                "simulate_s": round(self.t["flush_end"] - self.t["sim_start"], 3),
                "oracle_s": round(self.t.get("oracle", 0.0), 3),
                # CPU time of the process (all its threads): what the load on a shared machine moves least
                "simulate_cpu_s": round(self.t["flush_end_cpu"] - self.t["sim_start_cpu"], 3),
                "oracle_cpu_s": round(self.t.get("oracle_cpu", 0.0), 3)}


def pair_config(treatment: str, dataset: str, n_requests: int, art: str, oracle_reps: int, runtime: str):
    """``sim run --treatment <treatment> --control sasrec`` with the bench's request budget."""
    from simulator.commands.run import build_config

    over = {"n_requests": n_requests, "artifacts": art, "oracle_reps": oracle_reps, "dataset": dataset}
    if runtime != "local":
        over.update(runtime="ray", actors_per_arm=2)
    return build_config(treatment, "sasrec", None, None, over)


def serve_as(pols: dict, serving: str | None) -> None:
    """HLLM's user-state serving for the next run: a mode of ``hllm.user_state.SERVING_MODES``,
    optionally ``:S`` a ``window_step`` (``online:10``)."""
    if serving is not None:
        from hllm.user_state import UserStateConfig

        mode, _, step = serving.partition(":")
        pols["hllm"].set_serving(UserStateConfig(serving=mode, window_step=int(step or 1)))


class Variant:
    """``before``: the serving code of a baseline git revision inside this process: its user-LLM
    runner (``baseline_runner``) and an oracle that does not start from the run's slates and whose
    identical arms share none (its passes reuse only each arm's own: ``ReusingRuntime`` without the
    ``SlateRecorder``'s memo, ``Pipeline.slate_key`` per arm); ``after`` (or None): the code as it is."""

    def __init__(self, name: str | None, runner_cls=None, pols: dict | None = None) -> None:
        self.name, self.runner_cls, self.pols = name, runner_cls, pols or {}

    def __enter__(self):
        import hllm.policy as hp
        from simulator.engine import pipeline
        from simulator.engine import run as run_mod

        self.saved = [(hp, "UserLLMRunner", hp.UserLLMRunner), (run_mod, "ReusingRuntime", run_mod.ReusingRuntime),
                      (pipeline.Pipeline, "slate_key", pipeline.Pipeline.slate_key)]
        if self.name == "before":
            reusing = run_mod.ReusingRuntime
            hp.UserLLMRunner, run_mod.ReusingRuntime = self.runner_cls, lambda inner, memo=None: reusing(inner)
            pipeline.Pipeline.slate_key = lambda pipe: pipe.arm.name  # identical arms share nothing
        self._drop_states()
        return self

    def __exit__(self, *exc) -> None:
        for o, n, f in self.saved:
            setattr(o, n, f)
        self._drop_states()

    def _drop_states(self) -> None:
        if "hllm" in self.pols:  # user states are the runner's: built again by the next run's runner
            self.pols["hllm"]._states = None


def truth_of(cat, run_id: str) -> list:
    return cat.con.execute("SELECT arm, metric, rep, value FROM truth WHERE run_id = ? ORDER BY ALL",
                           [run_id]).fetchall()


def timed_pair(cfg, cat, pols, serving: str | None) -> dict:
    from simulator.engine.run import run_experiment

    serve_as(pols, serving)
    hl = pols.get("hllm") if "hllm" in cfg.all_policies() else None  # another pair's: not this run's

    def states() -> dict | None:
        return None if hl is None or hl._states is None else hl._states.report()

    with PhaseTimer(states) as pt:
        rid = run_experiment(cfg, cat, progress=False, policies=pols)
    n = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [rid]).fetchall()[0][0]
    out = {"run_id": rid, "requests": int(n), **pt.phases()}
    out["simulate_rps"] = round(n / out["simulate_s"], 1)
    out["startup_and_simulate_rps"] = round(n / (out["startup_s"] + out["simulate_s"]), 1)
    out["truth"] = truth_of(cat, rid)
    if pt.at_flush is not None:  # HLLM's serving during the simulate phase (the oracle's passes excluded)
        out["hllm_simulate"] = pt.at_flush
        if serving.startswith("tables"):  # the table's refresh job (run inline here) apart: the request path alone
            out["table_refresh_s"] = pt.at_flush["user_llm_s"]
            out["request_path_rps"] = round(n / (out["simulate_s"] - out["table_refresh_s"]), 1)
    out["oracle_over_simulate"] = round(out["oracle_s"] / out["simulate_s"], 3)
    out["oracle_over_simulate_cpu"] = round(out["oracle_cpu_s"] / out["simulate_cpu_s"], 3)
    out["simulate_rps_cpu"] = round(n / out["simulate_cpu_s"], 1)
    out["rss_mb"], out["peak_rss_mb"] = round(rss_mb(), 1), round(peak_rss_mb(), 1)
    if hl is not None and hl._states is not None:
        out["hllm_with_oracle"] = hl._states.report()
    return out


def parse_pair(spec: str) -> tuple[str, str | None]:
    """'popularity' -> ('popularity', None); 'hllm:tables' -> ('hllm', 'tables');
    'hllm:online:10' -> ('hllm', 'online:10') (a window_step)."""
    name, _, serving = spec.partition(":")
    return name, (serving or None)


def train(cat, dataset: str, art: str, treatments: set[str], n_requests: int, runtime: str) -> dict:
    from simulator.engine.run import prepare, train_arms

    pols: dict = {}
    for t in sorted(treatments):
        cfg = pair_config(t, dataset, n_requests, art, 0, runtime)
        pols.update(train_arms(cfg, prepare(cfg, cat), progress=False))
    return pols


def variant_specs(baseline: str | None, workers: list[int | None]) -> list[tuple[str | None, str | None, int | None]]:
    """(label, code variant for ``Variant``, oracle workers) of every variant a pair runs as."""
    if baseline is not None:
        return [("after", "after", workers[0]), ("before", "before", workers[0])]
    if len(workers) > 1:
        return [(f"oracle_workers={w or 'auto'}", None, w) for w in workers]
    return [(None, None, workers[0])]


def side_by_side(cat, dataset: str, art: str, pairs: list[str], rounds: int, n_requests: int,
                 oracle_reps: int, runtime: str, baseline: str | None = None,
                 oracle_workers: list[int | None] = (None,)) -> dict:
    """Every pair, ``rounds`` times in alternating order (and every variant of it, alternating);
    best-of-N and ratios to the ID pair."""
    t = time.perf_counter()
    pols = train(cat, dataset, art, {parse_pair(p)[0] for p in pairs}, n_requests, runtime)
    res: dict = {"dataset": dataset, "runtime": runtime, "requests_per_run": n_requests,
                 "oracle_reps": oracle_reps, "prepare_train_s": round(time.perf_counter() - t, 1),
                 "runs": {p: [] for p in pairs}}
    variants = variant_specs(baseline, list(oracle_workers))
    runner_cls = baseline_runner(baseline) if baseline is not None else None
    res["variants"] = {v: {"runs": {p: [] for p in pairs}} for v, _, _ in variants if v is not None}
    for r in range(rounds):
        for p in pairs if r % 2 == 0 else pairs[::-1]:
            name, serving = parse_pair(p)
            cfg = pair_config(name, dataset, n_requests, art, oracle_reps, runtime)
            for v, code, w in variants if r % 2 == 0 else variants[::-1]:
                with Variant(code, runner_cls, pols):
                    out = timed_pair(cfg.model_copy(update={"oracle_workers": w}), cat, pols, serving)
                (res["runs"] if v is None else res["variants"][v]["runs"])[p].append(out)
                print(f"[bench] {dataset} round {r} {p} {v or ''}: {json.dumps(out)}", file=sys.stderr)
    if len(variants) == 1:
        res["summary"] = pair_summary(res["runs"], rounds)
        del res["variants"]
    else:
        del res["runs"]
        for d in res["variants"].values():
            d["summary"] = pair_summary(d["runs"], rounds)
        first = res["variants"][variants[0][0]]["runs"]
        res["truth_identical_across_variants"] = all(
            a["truth"] == b["truth"] for d in res["variants"].values() for p in pairs
            for a, b in zip(first[p], d["runs"][p], strict=True))
    if "hllm" in pols:
        res["user_llm_rate"] = user_llm_rate(pols["hllm"], baseline=baseline)
        print(f"[bench] user LLM rate: {json.dumps(res['user_llm_rate'])}", file=sys.stderr)
    return res


def pair_summary(runs: dict, rounds: int) -> dict:
    ref = runs["popularity"]
    best = {p: max(r["simulate_rps"] for r in rs) for p, rs in runs.items()}
    out = {"best_simulate_rps": best,
           "ratio_to_id_pair_of_bests": {p: round(v / best["popularity"], 3) for p, v in best.items()},
           "ratio_to_id_pair_per_round": {p: [round(rs[i]["simulate_rps"] / ref[i]["simulate_rps"], 3)
                                              for i in range(rounds)] for p, rs in runs.items()},
           "with_startup_ratio_to_id_pair_per_round": {  # tables: the table built at the start counted too
               p: [round(rs[i]["startup_and_simulate_rps"] / ref[i]["startup_and_simulate_rps"], 3)
                   for i in range(rounds)] for p, rs in runs.items()},
           "request_path_ratio_to_id_pair_per_round": {
               p: [round(rs[i]["request_path_rps"] / ref[i]["simulate_rps"], 3) for i in range(rounds)]
               for p, rs in runs.items() if "request_path_rps" in rs[0]},
           "ratio_to_id_pair_per_round_cpu": {p: [round(rs[i]["simulate_rps_cpu"] / ref[i]["simulate_rps_cpu"], 3)
                                                  for i in range(rounds)] for p, rs in runs.items()},
           "oracle_over_simulate_per_round": {p: [r["oracle_over_simulate"] for r in rs] for p, rs in runs.items()},
           "oracle_over_simulate_cpu_per_round": {p: [r["oracle_over_simulate_cpu"] for r in rs]
                                                  for p, rs in runs.items()},
           "oracle_over_simulate_best": {p: min(r["oracle_over_simulate"] for r in rs) for p, rs in runs.items()},
           "startup_s_best": {p: min(r["startup_s"] for r in rs) for p, rs in runs.items()},
           "peak_rss_mb": max(r["peak_rss_mb"] for rs in runs.values() for r in rs)}
    return out


def best_s(fn, n: int = 5, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(n):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def baseline_runner(rev: str):
    """``hllm.user_state.UserLLMRunner`` as of git revision ``rev`` (``git show``), imported beside
    the current one: the two runners timed in one process."""
    import importlib.util
    import subprocess

    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:hllm/user_state.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="runner-")) / "user_state_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("user_state_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.UserLLMRunner


def user_llm_rate(pol, n_users: int = 64, baseline: str | None = None, rounds: int = 3) -> dict:
    """The user-LLM runner's achieved GFLOP/s on full passes over ``n_users`` full windows, against
    torch's GEMM rate at the shapes of its projections (64-row blocks x hidden x width), in this
    process (``baseline``: the runner of that git revision too, timed alternately with the current one
    and the GEMMs). FLOPs: the transformer's (projections, MLP, causal attention over the window: each
    query against the keys before it), the last layer for the last position only (the FLOPs the
    runner needs, not the padded ones it computes)."""
    import numpy as np
    import torch

    from hllm.user_state import ROWS, UserLLMRunner

    runners = {"current": UserLLMRunner(pol.model, pol.table, pol.prior_user)}
    if baseline is not None:
        runners[f"baseline_{baseline}"] = baseline_runner(baseline)(pol.model, pol.table, pol.prior_user)
    c = pol.model.user_llm.model.config
    D, F, H, Hkv, P = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, pol.model.config.max_len
    hd, L = pol.model.user_llm.model.layers[0].self_attn.head_dim, c.num_hidden_layers
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, len(pol.table), P) for _ in range(n_users)]
    times = [np.cumsum(rng.exponential(60.0, P)) for _ in range(n_users)] if pol.hf_config.use_time else None
    proj = 2 * D * (H + 2 * Hkv) * hd + 2 * H * hd * D + 6 * D * F  # per token per layer
    attn = 2 * 2 * H * hd * (P + 1) / 2  # per query: scores + values over the keys it sees
    kv_only = 2 * D * 2 * Hkv * hd
    flops = n_users * ((L - 1) * P * (proj + attn) + P * kv_only + (proj - kv_only + 2 * 2 * H * hd * P))
    a, w1, w2 = torch.randn(ROWS, D), torch.randn(D, F), torch.randn(D, (H + 2 * Hkv) * hd)
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}  # cpu: this thread's (torch: 1 thread)
    run_s = {c: {k: float("inf") for k in runners} for c in clocks}
    gemm = dict.fromkeys(clocks, 0.0)
    for _ in range(rounds):  # alternating: the load moves all of them alike
        for c, clock in clocks.items():
            for k, r in runners.items():
                t = best_s(lambda r=r: r.extend([None] * n_users, windows, times, False), 2, clock)
                run_s[c][k] = min(run_s[c][k], t)
            g1 = best_s(lambda: [a @ w1 for _ in range(50)], 3, clock) / 50
            g2 = best_s(lambda: [a @ w2 for _ in range(50)], 3, clock) / 50
            gemm[c] = max(gemm[c], 2 * ROWS * D * F / g1 / 1e9, 2 * ROWS * D * (H + 2 * Hkv) * hd / g2 / 1e9)
    out = {"users": n_users, "window": P, "layers": L, "hidden": D, "intermediate": F, "gflop": round(flops / 1e9, 3),
           "gemm_shapes": [[ROWS, D, F], [ROWS, D, (H + 2 * Hkv) * hd]], "rounds": rounds}
    for c in clocks:
        d = out[c] = {"torch_gemm_gflops": round(gemm[c], 2), "runners": {}}
        for k, s in run_s[c].items():
            got = flops / s / 1e9
            d["runners"][k] = {"full_pass_s": round(s, 4), "achieved_gflops": round(got, 2),
                               "achieved_over_gemm": round(got / gemm[c], 3)}
        if baseline is not None:
            d["speedup_over_baseline"] = round(run_s[c][f"baseline_{baseline}"] / run_s[c]["current"], 2)
    return out


def parse_workers(text: str) -> list[int | None]:
    """'1,auto' -> [1, None] (--oracle-workers)."""
    out = []
    for w in text.split(","):
        if w != "auto" and not (w.isdigit() and int(w) >= 1):
            raise argparse.ArgumentTypeError(f"{w!r} is not a number of processes >= 1 or 'auto'")
        out.append(None if w == "auto" else int(w))
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="popularity,hllm:online,hllm:tables",
                    help="comma-separated: popularity (the ID pair, required), hllm:<serving mode>, hstu, ...")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--oracle-reps", type=int, default=1, help="the oracle's passes per arm (sim run's default)")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--runtime", default="local", choices=["local", "ray"])
    ap.add_argument("--baseline", default=None, help="git revision: also run its user-LLM runner and an oracle "
                    "that does not start from the run's slates (variant 'before') beside the current code "
                    "('after'), alternating")
    ap.add_argument("--oracle-workers", default="auto", type=parse_workers,
                    help="comma-separated: the oracle's processes (ExperimentConfig.oracle_workers; auto = the "
                    "cores); two or more values: each pair runs once per value, alternating")
    ap.add_argument("--workdir", default=None, help="catalog + trained artifacts (reused across invocations)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="simbench-"))
    work.mkdir(parents=True, exist_ok=True)
    from simulator.core import Catalog

    pairs = [p for p in args.pairs.split(",") if p]
    if "popularity" not in pairs:
        raise SystemExit("--pairs must include 'popularity' (the ID pair every ratio is taken to)")
    if args.baseline is not None and len(args.oracle_workers) > 1:
        raise SystemExit("--baseline and several --oracle-workers: one kind of variant at a time")
    if args.runtime == "ray":
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cat = Catalog(str(work / "bench.duckdb"))
    out: dict = {"command": "python bench/sim_throughput.py " + " ".join(sys.argv[1:]),
                 "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}, "torch_threads": 1}
    try:
        out["pairs"] = side_by_side(cat, args.dataset, str(work / "artifacts"), pairs, args.rounds,
                                    args.requests, args.oracle_reps, args.runtime, args.baseline,
                                    args.oracle_workers)
    finally:
        cat.close()
    out["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
