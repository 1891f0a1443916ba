"""RecBole's SASRec on the same ML-100K leave-one-out full-ranking split, for comparison.

RecBole is NOT a dependency of hllm-sim: run this in an environment where ``recbole==1.2.1``
is installed (e.g. a venv with ``--system-site-packages`` and ``pip install --no-deps
recbole==1.2.1 colorlog tabulate texttable thop tensorboard``):

    python bench/recbole_sasrec.py [--data-path ../shared/data] [--epochs 100] [--loss CE]

Protocol as in ``policies.evaluate``: order by time, last item = test, second last = valid,
every item ranked, history items masked (RecBole's full-sort default). Prints JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

# RecBole 1.2.1 predates torch's weights_only=True default and numpy 2's removed aliases
torch.load = functools.partial(torch.load, weights_only=False)
for alias, typ in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_),
                   ("float", float), ("int", int), ("bool", bool), ("long", int)):
    try:
        getattr(np, alias)
    except AttributeError:
        setattr(np, alias, typ)


def main() -> None:
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data-path", default=os.path.join(here, "..", "..", "shared", "data"))
    # defaults = RecBole 1.2.1's own SASRec.yaml / overall.yaml values (its "out of the box" SASRec)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--loss", default="CE", choices=["CE", "BPR"])
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-step", type=int, default=1)
    ap.add_argument("--stopping-step", type=int, default=10)
    ap.add_argument("--log-level", default="WARNING", help="INFO logs every epoch to ./log/SASRec/")
    args = ap.parse_args()
    sys.argv = sys.argv[:1]  # RecBole reads sys.argv as config overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    from recbole.quick_start import run_recbole

    work = tempfile.mkdtemp(prefix="recbole-")
    cfg = {
        "data_path": os.path.abspath(args.data_path), "checkpoint_dir": work, "log_wandb": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10, 50], "valid_metric": "NDCG@10",
        "train_neg_sample_args": None if args.loss == "CE" else {"distribution": "uniform", "sample_num": 1},
        "loss_type": args.loss, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": args.heads,
        "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout,
        "learning_rate": 1e-3, "train_batch_size": args.batch_size, "eval_batch_size": 4096,
        "epochs": args.epochs, "stopping_step": args.stopping_step, "eval_step": args.eval_step,
        "device": "cpu", "use_gpu": False, "gpu_id": "", "seed": 0, "reproducibility": True,
        "show_progress": False, "state": args.log_level, "save_dataset": False, "save_dataloaders": False,
    }
    t0 = time.perf_counter()
    res = run_recbole(model="SASRec", dataset="ml-100k", config_dict=cfg, saved=True)
    secs = time.perf_counter() - t0
    test = {k: round(float(v), 4) for k, v in res["test_result"].items()}
    print(json.dumps({"model": "recbole-sasrec", "recbole": "1.2.1", "args": vars(args), "seconds": round(secs, 1),
                      "best_valid_ndcg@10": round(float(res["best_valid_score"]), 4), "test": test}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
