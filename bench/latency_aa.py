"""Where an A/A's latency difference comes from: every seed run twice (issue 24). Prints JSON.

    python bench/latency_aa.py --seeds 40 --variants product,gc_off --out latency_aa.json

Two identical popularity arms on the learned ML-100K world (what `bench/sim_calibration.py
--user-model learned` runs), 16,000 requests a run. Each seed (same users, assignment, batches and
answers) is run once per variant, the variants alternating their order from seed to seed, in one
process. For every run the report's own latency test (``summarize``'s ``latency_ms`` row: the
difference in per-request time at the pooled call size, its SE clustered by batch and user) is kept.

Across seeds: the rejection rate, the SD of z, and var(difference) / mean(SE^2) per variant (1 when
the SE is right). Between two runs of one seed only the machine's timing is drawn again, so the
correlation of their differences is the share of the difference's variance the seed decides (what
the calls hold and their order), the rest is timing noise.

Variants (``VARIANTS``): ``product`` (as `sim run` serves) and ``product2`` (the same once more: the
seed's share within one variant); ``gc_off`` (Python's cyclic collector off while a run serves: its
collections fire at allocation counts, so at the same calls for the same seed); ``warm`` (every call
served once untimed, then timed: its cost once the caches hold what it touches); ``one_pipeline``
(both arms served by one Pipeline object: whether an arm's own objects, their place in memory
included, carry the difference). glibc's allocator
settings (``MALLOC_*`` environment variables) apply to the whole process; the JSON's command
records them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sim_calibration as sc  # noqa: E402
from sim_calibration import wilson  # noqa: E402

from analysis.views import install_views  # noqa: E402
from simulator.core import Catalog, ensure_dataset  # noqa: E402
from simulator.engine.run import prepare, train_arms  # noqa: E402


@contextlib.contextmanager
def _gc_off():
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@contextlib.contextmanager
def _warm():
    """Each call served once untimed, then timed: its cost no longer depends on what ran before."""
    from simulator.engine import runtime

    timed = runtime._run_pipeline

    def twice(pipe, users):
        pipe.run(users)
        return timed(pipe, users)

    runtime._run_pipeline = twice
    try:
        yield
    finally:
        runtime._run_pipeline = timed


@contextlib.contextmanager
def _one_pipeline():
    """Both (identical) arms served by one Pipeline object: an arm's own objects ruled in or out."""
    from simulator.engine.runtime import LocalRuntime

    reload = LocalRuntime.reload

    def shared(self, policies, availability=None):
        reload(self, policies, availability)
        first, *rest = self.pipes
        self.pipes.update({name: self.pipes[first] for name in rest})

    LocalRuntime.reload = shared
    try:
        yield
    finally:
        LocalRuntime.reload = reload


VARIANTS = {"product": contextlib.nullcontext, "product2": contextlib.nullcontext, "gc_off": _gc_off,
            "warm": _warm, "one_pipeline": _one_pipeline}


def summary(runs: list[dict], alpha: float) -> dict:
    d = np.array([r["abs_lift"] for r in runs])
    se = np.array([r["se"] for r in runs])
    k = int(sum(r["p"] < alpha for r in runs))
    return {"runs": len(runs), "rejections": k / len(runs), "rejections_ci95": wilson(k, len(runs)),
            "sd_z": float(np.std(d / se, ddof=1)),
            "var_d_over_mean_se2": float(np.var(d, ddof=1) / np.mean(se**2)),
            "mean_control_ms": float(np.mean([r["control_ms"] for r in runs]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--first", type=int, default=1400,
                    help="seeds 1000 + first ... (sim_calibration's offset)")
    ap.add_argument("--requests", type=int, default=16000)
    ap.add_argument("--variants", default="product,gc_off", help=f"two or more of {sorted(VARIANTS)}")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out")
    args = ap.parse_args()
    names = args.variants.split(",")
    if len(names) < 2 or any(n not in VARIANTS for n in names):
        sys.exit(f"error: --variants needs two or more of {sorted(VARIANTS)}, got {args.variants!r}")
    if args.seeds < 3 or args.requests < 100:
        sys.exit(f"error: --seeds needs >= 3 (got {args.seeds}), --requests >= 100 (got {args.requests})")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        sys.exit(f"error: --out {args.out}: no such folder (nothing would be saved after the runs)")
    if not sc._available("ml-100k"):
        sys.exit("error: ml-100k not found (set HLLM_SIM_ML100K or install the recbole==1.2.1 wheel, "
                 "--no-deps)")
    work = Path(tempfile.mkdtemp(prefix="latency-aa-"))
    cat = Catalog(str(work / "catalog.duckdb"))
    sc.DATASET["name"], sc.RUN_EXTRA["user_model"] = "ml-100k", "learned"
    ensure_dataset("ml-100k", cat)
    install_views(cat.con)
    art = str(work / "artifacts")
    arms = [sc.arm("a", "popularity", "control"), sc.arm("b", "popularity", "treatment")]
    cfg0 = sc.config(arms, seed=1, salt="pilot", artifacts=art)
    policies = train_arms(cfg0, prepare(cfg0, cat), progress=False)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for i in tqdm(range(args.first, args.first + args.seeds), desc="seeds", file=sys.stderr):
        for n in (names if i % 2 == 0 else names[::-1]):
            cfg = sc.config(arms, seed=1000 + i, salt=f"aa-{i}", artifacts=art, n_requests=args.requests)
            with VARIANTS[n]():
                row = sc.replicate(cat, cfg, policies, sequential=False)[0]["latency_ms"]  # the report's test
            runs[n].append({"seed": 1000 + i, **{k: float(row[k]) for k in ("abs_lift", "se", "p", "dof")},
                            "control_ms": float(row["control"])})
    d = {n: np.array([r["abs_lift"] for r in runs[n]]) for n in names}
    pairs = {f"{a}~{b}": float(np.corrcoef(d[a], d[b])[0, 1])
             for j, a in enumerate(names) for b in names[j + 1:]}
    env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}  # glibc allocator settings, if any
    out = {"command": " ".join([*(f"{k}={v}" for k, v in env.items()), "python", "bench/latency_aa.py",
                                *sys.argv[1:]]), "requests_per_run": args.requests,
           "variants": {n: summary(runs[n], args.alpha) for n in names},
           "same_seed_correlation_of_difference": pairs, "per_run": runs}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(json.dumps({k: v for k, v in out.items() if k != "per_run"}, indent=1))


if __name__ == "__main__":
    main()
