"""When does HLLM pay off? The crossover map of HLLM vs SASRec over the world's text signal and
new-item arrivals. Prints JSON (and writes a plot with --plot).

    nice -n 10 python bench/text_signal.py --out bench/results/text_signal_2026-12-01/text_signal.json \
        --plot bench/results/text_signal_2026-12-01/text_signal.png

For every RHO (``--text-signal``: share of the within-topic utility variance the item text
explains) x arrivals (share of the catalog released during the run) x seed: a synthetic world
(``sim data synth --text-signal RHO --arrivals FRAC``) and one A/B/n run through
``run_experiment`` (what `sim run` calls) with satisfaction-driven leaving on. Arms: SASRec
(control), HLLM preset ``fast`` (the pretrained MiniLM item LLM, frozen), text-kNN (the same
frozen encoder, no user model: the content-only bar) and popularity. SASRec and HLLM train under
the same step-budget rule (``policies.train.StepBudget``: up to 200 epochs, validation every 2,
patience 5), recorded per arm. Per arm and metric: the world oracle's true relative lift over SASRec
(paired passes, with its Monte-Carlo SE) and the A/B estimate with its CI (what `sim report`
prints; Holm across the three treatments). ``--arms hllm`` runs the two-arm A/B only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import summarize  # noqa: E402
from policies.train import training_record  # noqa: E402
from simulator.core import Catalog  # noqa: E402
from simulator.core.synthetic import WorldConfig, write_world  # noqa: E402
from simulator.engine.config import parse_config  # noqa: E402
from simulator.engine.run import run_experiment  # noqa: E402

METRICS = ("ctr", "consumption", "session_length", "return_rate")
# one budget rule for both trained families (each policy's default StepBudget), one window length
POLICIES = {"sasrec": {"max_len": 20}, "hllm": {"preset": "fast", "max_len": 20},
            "textknn": {"history": 20}, "popularity": {}}
TREATMENTS = ("hllm", "textknn", "popularity")


def arm(name: str, policy: str, role: str) -> dict:
    return {"name": name, "role": role, "channels": [{"policy": policy, "quota": 50}], "slate_size": 10}


def one(cat, rho: float, arrivals: float, seed: int, args, art: str) -> dict:
    name = f"ts-{int(rho * 100)}-{int(arrivals * 100)}-{seed}"
    wc = WorldConfig(n_users=args.users, n_items=args.items, n_topics=10, seed=seed, text_signal=rho,
                     arrivals=arrivals, arrival_window_s=args.window_s, sessions_per_user=3.0)
    write_world(cat, name, wc, replace=True)
    cfg = parse_config({"name": name, "dataset": name, "seed": seed, "n_requests": args.requests,
                        "artifacts": art, "policies": POLICIES, "oracle_reps": args.reps, "satisfaction": 1.0,
                        "sessions_per_day": 24.0, "start_horizon_s": args.window_s / 2,
                        "arms": [arm("sasrec", "sasrec", "control"),
                                 *(arm(t, t, "treatment") for t in args.arms)]}, "bench")
    rid = run_experiment(cfg, cat, progress=False)
    rows = summarize(cat.con, rid)
    arms = {}
    for t in args.arms:
        out = {}
        for m in METRICS:
            r = rows[(rows.arm == t) & (rows.metric == m)].iloc[0]
            out[m] = {"true_rel_lift": float(r["true_rel_lift"]), "true_mc_se": float(r["true_rel_se"]),
                      "ab_rel_lift": float(r["rel_lift"]), "ab_ci": [float(r["rel_ci_low"]), float(r["rel_ci_high"])],
                      "ab_ci_level": float(r["ci_level"]), "ab_p_adj": float(r["p_adj"]),
                      "significant": bool(r["significant"])}
        arms[t] = out
    new = cat.con.execute("""SELECT avg(CASE WHEN i.release_ts > r.sim_start THEN 1 ELSE 0 END), e.arm
        FROM exposures e JOIN runs r USING (run_id) JOIN ds_{}.items i ON i.item_id = e.item_id
        WHERE e.run_id = ? GROUP BY e.arm""".format(name.replace("-", "_")), [rid]).fetchall()
    return {"rho": rho, "arrivals": arrivals, "seed": seed, "run_id": rid, "arms": arms,
            "training": training(Path(art) / name), "new_item_share_of_exposures": {a: float(v) for v, a in new}}


def training(root: Path) -> dict:
    """Every trained arm's steps, epochs, best step and whether a cap bound (its saved history)."""
    out = {}
    for f in sorted([*root.glob("*/policy.json"), *root.glob("*/config.json")]):  # HLLM's, the ID models'
        hist = json.loads(f.read_text()).get("history") or []
        out[f.parent.name.rsplit("-", 1)[0]] = training_record(hist)
    return out


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for key in sorted({(r["rho"], r["arrivals"]) for r in rows}):
        rs = [r for r in rows if (r["rho"], r["arrivals"]) == key]
        cell = {"rho": key[0], "arrivals": key[1], "seeds": len(rs)}
        for arm in rs[0]["arms"]:
            cell[arm] = {}
            for m in METRICS:
                got = [r["arms"][arm][m] for r in rs]
                t = np.array([g["true_rel_lift"] for g in got])
                a = np.array([g["ab_rel_lift"] for g in got])
                cell[arm][m] = {"true_rel_lift_mean": float(t.mean()), "true_rel_lift_seeds": t.round(4).tolist(),
                                "ab_rel_lift_mean": float(a.mean()), "ab_rel_lift_seeds": a.round(4).tolist(),
                                "ab_significant_positive": sum(g["significant"] and g["ab_rel_lift"] > 0 for g in got),
                                "ab_significant_negative": sum(g["significant"] and g["ab_rel_lift"] < 0 for g in got)}
        out.append(cell)
    return out


def plot(cells: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arr, style in ((0.0, "o-"), (0.2, "s--")):
        cs = sorted((c for c in cells if c["arrivals"] == arr), key=lambda c: c["rho"])
        if cs:
            for arm, colour in (("hllm", "C0"), ("textknn", "C2"), ("popularity", "C7")):
                if arm in cs[0]:
                    ax.plot([c["rho"] for c in cs], [100 * c[arm]["ctr"]["true_rel_lift_mean"] for c in cs], style,
                            color=colour, label=f"{arm}, arrivals {arr:g} (oracle)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("text signal RHO")
    ax.set_ylabel("true CTR lift over SASRec (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merge(paths: list[str], out_path: str | None, plot_path: str | None) -> None:
    """One table from several invocations (e.g. one per seed): their runs, the cells recomputed."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    rows = [r for p in parts for r in p["runs"]]
    out = {"commands": [p["command"] for p in parts], "args": [p["args"] for p in parts], "policies": POLICIES,
           "seconds": sum(p["seconds"] for p in parts), "cells": summary(rows), "runs": rows}
    if out_path:
        Path(out_path).write_text(json.dumps(out, indent=2) + "\n")
    if plot_path:
        plot(out["cells"], plot_path)
    print(json.dumps(out["cells"], indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--arrivals", type=float, nargs="+", default=[0.0, 0.2])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--seed-offset", type=int, default=0, help="first seed (one invocation per seed, then --merge)")
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=2, help="oracle passes per arm")
    ap.add_argument("--window-s", type=float, default=7200.0, help="arrival window (and 2x the start horizon)")
    ap.add_argument("--arms", type=lambda v: tuple(v.split(",")), default=TREATMENTS,
                    help="treatment arms beside SASRec (comma-separated, from hllm,textknn,popularity)")
    ap.add_argument("--merge", nargs="+", default=None, help="merge the runs of these result JSONs and exit")
    ap.add_argument("--out")
    ap.add_argument("--plot")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out, args.plot)
    import torch

    torch.set_num_threads(1)  # 2 shared cores: more threads oversubscribe them
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cat = Catalog(str(Path(d) / "c.duckdb"))
        seeds = range(args.seed_offset, args.seed_offset + args.seeds)
        grid = [(r, a, s) for r in args.rho for a in args.arrivals for s in seeds]
        for rho, arr, seed in tqdm(grid, desc="text_signal", file=sys.stderr):
            rows.append(one(cat, rho, arr, seed, args, str(Path(d) / "art")))
        cat.close()
    cells = summary(rows)
    out = {"command": "python " + " ".join(sys.argv), "args": vars(args), "policies": POLICIES,
           "seconds": round(time.perf_counter() - t0, 1), "cells": cells, "runs": rows}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.plot:
        plot(cells, args.plot)
    print(text)


if __name__ == "__main__":
    main()
