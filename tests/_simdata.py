"""Tiny synthetic world + tiny configs shared by the simulator tests."""

from __future__ import annotations

from simulator.core import Catalog
from simulator.core.synthetic import WorldConfig, write_world
from simulator.engine.config import parse_config

TINY_WORLD = WorldConfig(n_users=120, n_items=80, n_topics=4, dim=8, days=20, sessions_per_user=3,
                         choices_per_session=4, seed=3)


def tiny_catalog(path) -> Catalog:
    cat = Catalog(path)
    if not cat.has_dataset("synthetic-tiny"):
        write_world(cat, "synthetic-tiny", TINY_WORLD)
    return cat


def tiny_arm(name: str, policy: str, role: str = "treatment") -> dict:
    chans = [{"policy": policy, "quota": 20}]
    if policy != "popularity":
        chans.append({"policy": "popularity", "quota": 10})
    return {"name": name, "role": role, "channels": chans, "coarse": {"policy": policy, "keep": 20},
            "fine": {"policy": policy, "keep": 12}, "slate_size": 5}


def retrieval_arm(name: str, policy: str, role: str = "treatment") -> dict:
    """An arm with one retrieval channel and no ranker (the policy's own ranking, slate of 5)."""
    return {"name": name, "role": role, "channels": [{"policy": policy, "quota": 20}], "slate_size": 5}


def tiny_config(artifacts, **top):
    data = {"dataset": "synthetic-tiny", "n_requests": 300, "seed": 1, "artifacts": str(artifacts),
            "batch_window_s": 120.0, "start_horizon_s": 600.0,
            "policies": {"sasrec": {"max_len": 8, "hidden": 16, "n_layers": 1, "epochs": 1, "batch_size": 64}},
            "arms": [tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "sasrec")]}
    data.update(top)
    return parse_config(data, "test")


EVENT_TABLES = {
    "assignments": "user_id",
    "requests": "request_id",
    "exposures": "request_id, position",
    "feedback": "request_id, item_id, event",
}


def event_frames(cat, run_id, drop_latency: bool = True) -> dict:
    """All event tables of a run as DataFrames (run_id and the wall-clock times dropped)."""
    out = {}
    for t, key in EVENT_TABLES.items():
        df = cat.con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY {key}", [run_id]).df()
        clocks = [c for c in ("latency_ms", "nearline_ms") if drop_latency and c in df]
        df = df.drop(columns=["run_id"] + clocks)
        out[t] = df.reset_index(drop=True)
    return out
