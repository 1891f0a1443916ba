"""Offline evaluation results in the catalog (DuckDB main schema; tables declared in
simulator/core/schema.py), for analysis to compare models per user with significance tests.

  eval_summary(eval_id, dataset, model, config_hash, split, exclude_history, metric, value,
               n_users, created_at)                          key (eval_id, metric)
  eval_results(eval_id, dataset, model, config_hash, split, user_id, metric, value)
                                                             key (eval_id, user_id, metric)

The model's training (``policies.train.training_record``: ``train_steps``, ``train_epochs``,
``train_best_step``, ``train_capped`` as 0/1) is stored as summary metrics beside the quality ones.

``eval_id`` is deterministic in (dataset, model, config hash, split, exclude flag), so a
re-run replaces its own rows instead of duplicating them.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from policies.train import training_record


def eval_id_for(dataset: str, model: str, config_hash: str, split: str, exclude_history: bool) -> str:
    key = f"{dataset}|{model}|{config_hash}|{split}|{int(exclude_history)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def training_metrics(history: list[dict]) -> dict[str, float | None]:
    """The summary rows that say how a model trained (steps, epochs, best step, capped 0/1)."""
    rec = training_record(history)
    return {"train_steps": rec["steps"], "train_epochs": rec["epochs"], "train_best_step": rec["best_step"],
            "train_capped": float(rec["capped"])}


def save_eval(catalog, result, *, dataset: str, model: str, config_hash: str, split: str = "test",
              exclude_history: bool = True, history: list[dict] | None = None) -> str:
    """Write ``result`` (an :class:`~policies.evaluate.EvalResult`) and the model's training
    (``history``: the policy's training history) to the catalog; returns eval_id."""
    eid = eval_id_for(dataset, model, config_hash, split, exclude_history)
    n = int(result.summary.get("n_users", len(result.per_user)))
    values = {**{k: v for k, v in result.summary.items() if k != "n_users"}, **training_metrics(history or [])}
    summ = pd.DataFrame({"metric": list(values)})
    summ["value"] = pd.array([values[m] for m in summ["metric"]], dtype="Float64")
    metrics = [c for c in result.per_user.columns if c not in ("user_id",)]
    long = result.per_user.melt(id_vars=["user_id"], value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = long["value"].astype("float64")
    con = catalog.con
    with catalog.transaction():
        con.execute("DELETE FROM eval_summary WHERE eval_id = ?", [eid])
        con.execute("DELETE FROM eval_results WHERE eval_id = ?", [eid])
        con.register("_summ", summ)
        con.execute("INSERT INTO eval_summary(eval_id, dataset, model, config_hash, split, exclude_history, "
                    "metric, value, n_users) SELECT ?, ?, ?, ?, ?, ?, metric, value, ? FROM _summ",
                    [eid, dataset, model, config_hash, split, exclude_history, n])
        con.register("_long", long)
        con.execute("INSERT INTO eval_results SELECT ?, ?, ?, ?, ?, user_id, metric, value FROM _long",
                    [eid, dataset, model, config_hash, split])
        con.unregister("_summ")
        con.unregister("_long")
    return eid
