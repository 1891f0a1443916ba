"""Offline quality of every registered policy on one dataset (leave-one-out, full ranking).

    python bench/quality.py --data ml-100k [--models sasrec,hstu] [--include hllm]
                            [--set sasrec.loss=bce] [--artifacts DIR] [--threads 2]

Prints one JSON object: per model HR/NDCG@{10,50,200}, MRR, fit seconds, eval seconds,
epochs run; plus the machine load so times can be read in context. Models train fresh unless
``--artifacts`` is given (then the ``policies.store`` cache is used). ``hllm`` and ``hllm_rank`` are skipped
unless ``--include hllm,hllm_rank`` (they need minutes to hours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from policies import registry  # noqa: E402
from policies.evaluate import evaluate  # noqa: E402
from policies.store import fit_or_load  # noqa: E402
from simulator.commands.train import parse_overrides  # noqa: E402


def per_model_overrides(sets: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in sets:
        key, _, val = s.partition("=")
        model, _, field = key.partition(".")
        if not field:
            raise SystemExit(f"--set expects model.key=value, got {s!r}")
        out.setdefault(model, {}).update(parse_overrides([f"{field}={val}"], None, None))
    return out


def run_one(name: str, overrides: dict, ds, split, artifacts: str | None) -> dict:
    t0 = time.perf_counter()
    if artifacts:
        pol = fit_or_load(name, ds, split, overrides, root=artifacts, progress=False)
    else:
        pol = registry.create(name, overrides).fit(ds, split, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = evaluate(pol, split, which="test")
    eval_s = time.perf_counter() - t0
    hist = getattr(pol, "history", []) or []
    best_valid = max((h["valid_ndcg@10"] for h in hist if "valid_ndcg@10" in h), default=None)
    return {"model": name, **{k: round(v, 4) for k, v in r.summary.items() if k != "n_users"},
            "n_users": int(r.summary["n_users"]), "fit_s": round(fit_s, 1), "eval_s": round(eval_s, 3),
            "epochs": len(hist) or None, "best_valid_ndcg@10": None if best_valid is None else round(best_valid, 4),
            "overrides": overrides}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-100k")
    ap.add_argument("--catalog", default=None)
    ap.add_argument("--models", default=None, help="comma-separated subset (default: all registered)")
    ap.add_argument("--include", default="", help="comma-separated extras normally skipped (hllm)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="model.key=value")
    ap.add_argument("--artifacts", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from simulator.core import Catalog, LeaveOneOut, get_dataset

    cat = Catalog(args.catalog)
    ds = get_dataset(args.data, cat)
    cat.close()
    split = LeaveOneOut.from_sequences(ds.sequences)
    skip = {"hllm", "hllm_rank"} - set(filter(None, args.include.split(",")))
    names = args.models.split(",") if args.models else [n for n in registry.names() if n not in skip]
    over = per_model_overrides(args.sets)
    rows = []
    load0 = os.getloadavg()[0]
    for n in names:
        rows.append(run_one(n, over.get(n, {}), ds, split, args.artifacts))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    pop = next((r["ndcg@10"] for r in rows if r["model"] == "popularity"), None)
    if pop:
        for r in rows:
            r["ndcg@10_vs_popularity"] = round(r["ndcg@10"] / pop, 2)
    print(json.dumps({"dataset": args.data, "protocol": "leave-one-out, full ranking, history excluded",
                      "n_items": ds.n_items, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2),
                      "device": "cuda" if torch.cuda.is_available() else "cpu", "results": rows}, indent=1))


if __name__ == "__main__":
    main()
