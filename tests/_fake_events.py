"""Synthetic event tables with a known injected lift (tests, benchmarks, demos).

Writes the simulator's event schema (runs, arms, assignments, requests, exposures, feedback)
plus a tiny dataset schema (items with a 'topic' attribute, interactions before ``sim_start``
for CUPED) into a DuckDB connection. Everything is vectorised numpy -> Arrow -> DuckDB.

Model: user u has a propensity ``a_u ~ LogNormal(0, sigma)``; a slate position p is clicked with
probability ``base_ctr * a_u * lift_arm / (1 + p)**0.5`` (capped at 0.9); a click is consumed
with probability 0.5. The pre-period log holds ``Poisson(5 * a_u)`` interactions per user, so it
correlates with the outcome (CUPED has something to remove).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from simulator.core.catalog import dataset_schema
from simulator.core.schema import migrate


def ensure_event_schema(con) -> None:
    """Create the catalog's tables if absent (the simulator's own DDL: one definition)."""
    migrate(con)


def write_fake_dataset(con, name: str, n_users: int, n_items: int, propensity: np.ndarray,
                       sim_start: float, rng: np.random.Generator, n_topics: int = 8) -> None:
    """A minimal dataset schema: items(item_id, raw_id, text, topic), users, pre-period interactions."""
    s = dataset_schema(name)
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{s}"')
    items = pd.DataFrame({"item_id": np.arange(n_items, dtype=np.int64),
                          "raw_id": [str(i) for i in range(n_items)],
                          "text": [f"item {i}" for i in range(n_items)],
                          "topic": [f"t{t}" for t in rng.integers(0, n_topics, n_items)]})
    users = pd.DataFrame({"user_id": np.arange(n_users, dtype=np.int64),
                          "raw_id": [str(u) for u in range(n_users)]})
    counts = rng.poisson(5.0 * propensity)
    uid = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    pop = rng.zipf(1.3, uid.size) % n_items
    inter = pd.DataFrame({"user_id": uid, "item_id": pop.astype(np.int64),
                          "ts": sim_start - rng.uniform(1.0, 86400.0, uid.size),
                          "event": "rating", "value": 1.0, "seq": np.arange(uid.size, dtype=np.int64)})
    for tname, df in (("items", items), ("users", users), ("interactions", inter)):
        con.register("_tmp_df", df)
        con.execute(f'CREATE OR REPLACE TABLE "{s}".{tname} AS SELECT * FROM _tmp_df')
        con.unregister("_tmp_df")


def make_fake_run(con, run_id: str = "fake-run", *, n_users: int = 2000, n_items: int = 500,
                  requests_per_user: float = 5.0, slate: int = 10, base_ctr: float = 0.05,
                  lifts: dict[str, float] | None = None, weights: dict[str, float] | None = None,
                  sigma: float = 0.5, seed: int = 0, dataset: str = "fake",
                  write_dataset: bool = True, config: dict | None = None) -> dict:
    """Write one fake run; ``lifts`` maps arm -> multiplicative CTR lift (control = first arm).

    Returns a dict with the per-arm true lift and the number of exposures written.
    """
    rng = np.random.default_rng(seed)
    lifts = lifts or {"control": 1.0, "treatment": 1.05}
    arms = list(lifts)
    weights = weights or {a: 1.0 / len(arms) for a in arms}
    ensure_event_schema(con)
    sim_start = 1_000_000.0
    a_u = rng.lognormal(0.0, sigma, n_users)
    w = np.array([weights[a] for a in arms], dtype=float)
    arm_idx = rng.choice(len(arms), size=n_users, p=w / w.sum())
    req, r_user, first_ts = _requests(rng, run_id, arms, arm_idx, n_users, requests_per_user, sim_start)
    exp, feedback = _exposures_and_feedback(rng, run_id, arms, req, r_user, a_u, lifts, n_items, slate, base_ctr)
    users_with_req = np.unique(r_user)
    arm_names = np.array(arms, dtype=object)
    asg = pd.DataFrame({"run_id": run_id, "user_id": users_with_req.astype(np.int64),
                        "arm": arm_names[arm_idx[users_with_req]], "first_ts": first_ts[users_with_req]})
    runs_df, arms_df = _run_rows(run_id, arms, lifts, weights, dataset, seed, config, sim_start, req)
    for name, df in (("runs", runs_df), ("arms", arms_df), ("assignments", asg), ("requests", req),
                     ("exposures", exp), ("feedback", feedback)):
        con.register("_tmp_df", df)
        con.execute(f"INSERT OR REPLACE INTO {name} BY NAME SELECT * FROM _tmp_df")
        con.unregister("_tmp_df")
    if write_dataset:
        write_fake_dataset(con, dataset, n_users, n_items, a_u, sim_start, rng)
    return {"run_id": run_id, "lifts": lifts, "n_exposures": len(exp), "n_requests": len(req),
            "n_users": int(users_with_req.size)}


def _requests(rng, run_id, arms, arm_idx, n_users, requests_per_user, sim_start):
    """Requests over half a day; a slower serving time for each later arm (a known latency effect)."""
    first_ts = sim_start + rng.uniform(0, 43_200.0, n_users)
    n_req = 1 + rng.poisson(requests_per_user - 1, n_users)
    R = int(n_req.sum())
    r_user = np.repeat(np.arange(n_users), n_req)
    r_k = np.arange(R) - np.repeat(np.cumsum(n_req) - n_req, n_req)  # request index within user
    r_ts = np.repeat(first_ts, n_req) + r_k * rng.exponential(600.0, R)
    order = np.lexsort((r_user, r_ts))
    r_user, r_ts, r_k = r_user[order], r_ts[order], r_k[order]
    r_arm = arm_idx[r_user]
    r_lat = (5.0 + 3.0 * r_arm) * rng.lognormal(0, 0.3, R)
    req = pd.DataFrame({"run_id": run_id, "request_id": np.arange(R, dtype=np.int64),
                        "user_id": r_user.astype(np.int64), "arm": np.array(arms, dtype=object)[r_arm], "ts": r_ts,
                        "session_id": (r_user * 1000 + r_k // 3).astype(np.int64), "latency_ms": r_lat,
                        "batch_no": ((r_ts - sim_start) // 600.0).astype(np.int64), "_arm": r_arm})
    return req, r_user, first_ts


def _exposures_and_feedback(rng, run_id, arms, req, r_user, a_u, lifts, n_items, slate, base_ctr):
    """Slates of ``slate`` items; position p clicked with base_ctr * a_u * lift / sqrt(1 + p); half consumed."""
    R, r_arm = len(req), req.pop("_arm").to_numpy()
    arm_names = np.array(arms, dtype=object)
    e_req, e_pos = np.repeat(np.arange(R), slate), np.tile(np.arange(slate), R)
    E = R * slate
    e_item = (rng.zipf(1.5, E) - 1) % n_items
    exp = pd.DataFrame({"run_id": run_id, "request_id": e_req.astype(np.int64),
                        "user_id": r_user[e_req].astype(np.int64), "arm": arm_names[r_arm[e_req]],
                        "position": e_pos.astype(np.int32), "item_id": e_item.astype(np.int64),
                        "channel": np.array(["ann", "popular", "item2item"], dtype=object)[rng.integers(0, 3, E)],
                        "score": rng.normal(size=E), "latency_ms": req["latency_ms"].to_numpy()[e_req],
                        "ts": req["ts"].to_numpy()[e_req]})
    lift_vec = np.array([lifts[a] for a in arms])[r_arm[e_req]]
    p = np.minimum(base_ctr * a_u[r_user[e_req]] * lift_vec / np.sqrt(1 + e_pos), 0.9)
    ci = np.flatnonzero(rng.random(E) < p)
    _, first = np.unique(e_req[ci] * n_items + e_item[ci], return_index=True)  # one event per (request, item)
    ci = ci[np.sort(first)]
    consumed = ci[rng.random(ci.size) < 0.5]
    fb = [pd.DataFrame({"run_id": run_id, "request_id": e_req[idx].astype(np.int64),
                        "user_id": r_user[e_req[idx]].astype(np.int64), "arm": arm_names[r_arm[e_req[idx]]],
                        "item_id": e_item[idx].astype(np.int64), "position": e_pos[idx].astype(np.int32),
                        "event": ev, "value": val, "ts": req["ts"].to_numpy()[e_req[idx]] + 5.0})
          for ev, idx, val in (("click", ci, np.ones(ci.size)),
                               ("consume", consumed, rng.uniform(0.5, 1.0, consumed.size)))]
    return exp, pd.concat(fb, ignore_index=True)


def _run_rows(run_id, arms, lifts, weights, dataset, seed, config, sim_start, req):
    arms_df = pd.DataFrame({"run_id": run_id, "arm": arms, "role": ["control"] + ["treatment"] * (len(arms) - 1),
                            "weight": [float(weights[a]) for a in arms],
                            "pipeline_json": [json.dumps({"arm": a, "lift": lifts[a]}) for a in arms]})
    cfg = config or {"name": "fake", "dataset": dataset, "seed": seed,
                     "arms": [{"name": a, "weight": weights[a]} for a in arms]}
    runs_df = pd.DataFrame({"run_id": [run_id], "dataset": [dataset], "config_json": [json.dumps(cfg)],
                            "config_hash": ["fake" + str(seed).zfill(12)], "seed": [seed],
                            "git_rev": ["fake"], "started_at": [pd.Timestamp("2026-01-01")],
                            "finished_at": [pd.Timestamp("2026-01-01 00:01")], "status": ["complete"],
                            "sim_start": [sim_start], "sim_end": [float(req["ts"].max())], "n_requests": [len(req)]})
    return runs_df, arms_df
