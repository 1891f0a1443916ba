"""A `sim run` with HLLM served through the user-state cache writes the tables it writes without it."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from _simdata import event_frames, tiny_arm, tiny_config

import simulator.engine.run as run_mod
from hllm.user_state import UserStateConfig
from simulator.engine.pipeline import Pipeline
from simulator.engine.run import prepare, run_experiment, train_arms


def test_user_state_cache_leaves_the_event_tables_unchanged(tiny_world, tmp_path, monkeypatch):
    cat, _ = tiny_world
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path / "artifacts", n_requests=400, oracle_reps=1,
                      arms=[tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "hllm")],
                      policies={"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "max_len": 12}})
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    runs, stats = {}, {}
    for mode in ("recompute", "incremental", "cached"):
        pols["hllm"].set_serving(UserStateConfig(mode=mode))
        runs[mode] = run_experiment(cfg, cat, progress=False, policies=pols)
        stats[mode] = dict(pols["hllm"]._states.stats)
    # the cache was used: repeated windows hit, clicks extended states (the oracle's passes included)
    assert stats["incremental"]["hit"] > 0 and stats["incremental"]["extend"] > 0
    assert stats["recompute"]["hit"] == stats["recompute"]["extend"] == 0
    want = event_frames(cat, runs["recompute"])
    assert len(want["feedback"]) > 0
    for mode in ("incremental", "cached"):
        got = event_frames(cat, runs[mode])
        for table, df in want.items():
            pd.testing.assert_frame_equal(got[table], df, check_exact=True, obj=f"{mode} {table}")
    truth = [cat.con.execute("SELECT * EXCLUDE (run_id) FROM truth WHERE run_id = ? ORDER BY ALL", [r]).df()
             for r in (runs["recompute"], runs["incremental"])]
    pd.testing.assert_frame_equal(truth[1], truth[0], check_exact=True)  # the oracle's passes share the cache
    # the oracle's passes reuse a repeated request's slate (history-only arms): the truth of serving it again
    arms = {a.name: Pipeline(a, {p: pols[p] for p in a.policies()}) for a in cfg.arms}
    assert arms["control"].history_only() and arms["treatment"].history_only()
    monkeypatch.setattr(run_mod, "ReusingRuntime", lambda inner, memo=None: inner)  # nor the run's
    plain = run_experiment(cfg, cat, progress=False, policies=pols)
    again = cat.con.execute("SELECT * EXCLUDE (run_id) FROM truth WHERE run_id = ? ORDER BY ALL", [plain]).df()
    pd.testing.assert_frame_equal(again, truth[0], check_exact=True)
    pols["hllm"].set_serving(UserStateConfig(serving="tables"))  # reads the request time: never reused
    assert not Pipeline(cfg.arms[1], {p: pols[p] for p in cfg.arms[1].policies()}).history_only()


def test_tables_serving_leaves_the_table_refresh_out_of_the_request_latency(monkeypatch):
    """tables: the user LLM's passes are the table's refresh job (run inline at first use), not the
    request path: the pipeline reports them as nearline and the latency leaves them out; online:
    the user LLM is the request path."""
    import sys
    import time
    from pathlib import Path

    import numpy as np

    import hllm.user_state as us
    from policies import registry
    from policies.base import UserBatch
    from simulator.engine.config import parse_config
    from simulator.engine.runtime import _run_pipeline

    sys.path.insert(0, str(Path(__file__).parents[1] / "hllm"))
    from _tinydata import tiny_dataset

    torch.set_num_threads(1)
    ds = tiny_dataset(n_users=20)
    pol = registry.create("hllm", {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1})
    split = ds.leave_one_out()
    pol.fit(ds, split, progress=False)
    extend = us.UserLLMRunner.extend
    monkeypatch.setattr(us.UserLLMRunner, "extend", lambda *a: (time.sleep(0.3), extend(*a))[1])
    arm = parse_config({"arms": [tiny_arm("a", "hllm", "control"), tiny_arm("b", "popularity")]}, "test").arms[0]
    pipe = Pipeline(arm, {"hllm": pol, "popularity": registry.create("popularity").fit(ds, split, progress=False)})
    users = UserBatch.from_sequences(ds.sequences, now=np.full(ds.n_users, 1e6))
    for serving in ("online", "tables"):
        pol.set_serving(UserStateConfig(serving=serving))
        res = pipe.run(users)
        assert (res.nearline_ms >= 300) == (serving == "tables") and (res.nearline_ms == 0) == (serving == "online")
        assert pipe.run(users).nearline_ms == 0.0  # again: every state cached, nothing refreshed
        pol._states = None
        t = time.perf_counter()
        ms = _run_pipeline(pipe, users)[4]
        wall = (time.perf_counter() - t) * 1e3
        assert (ms <= wall - 300) == (serving == "tables")


def test_a_run_serves_a_catalog_above_the_ann_threshold_through_the_index(tiny_world, tmp_path, monkeypatch):
    """`sim run`'s config sets HLLM's retrieval threshold (80 items, threshold 50): the whole run is
    served through the ANN index (retrieve + candidate scores), never a catalog-wide score matrix."""
    import pytest

    from hllm.policy import HLLMPolicy

    pytest.importorskip("faiss")
    cat, _ = tiny_world
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path / "artifacts", n_requests=200, oracle_reps=1,
                      arms=[tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "hllm")],
                      policies={"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1,
                                         "retrieval": {"ann_min_items": 50}}})
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    monkeypatch.setattr(HLLMPolicy, "score_all", lambda *a: pytest.fail("scored the whole catalog"))
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    n = cat.con.execute("SELECT count(*) FROM requests WHERE run_id = ? AND arm = 'treatment'", [rid]).fetchall()
    assert n[0][0] > 0 and pols["hllm"]._ann.index.ntotal == 80


def test_a_run_stores_each_requests_nearline_time_apart_from_its_latency(tiny_world, tmp_path):
    """tables: the refresh job's time lands in requests.nearline_ms of the HLLM arm's requests
    (popularity's are 0), so the run keeps what its latency leaves out."""
    cat, _ = tiny_world
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path / "artifacts", n_requests=200, oracle_reps=0,
                      arms=[tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "hllm")],
                      policies={"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1,
                                         "user_states": {"serving": "tables"}}})
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    before = pols["hllm"].nearline_seconds()
    rid = run_experiment(cfg, cat, progress=False, policies=pols)
    got = dict(cat.con.execute("SELECT arm, sum(nearline_ms) FROM requests WHERE run_id = ? GROUP BY arm",
                               [rid]).fetchall())
    assert got["control"] == 0.0 and got["treatment"] > 0.0
    assert got["treatment"] == pytest.approx((pols["hllm"].nearline_seconds() - before) * 1e3,
                                                rel=1e-6)
    from analysis.report import write_report

    md = open(write_report(cat, rid, tmp_path / "rep")["md"]).read()
    assert "| nearline ms |" in md  # the arm table shows it where an arm did such work


def test_tables_built_before_the_run_serve_what_the_requests_would_have_computed(tiny_world, tmp_path,
                                                                                   monkeypatch):
    """tables: the table as of the run's start (``HLLMPolicy.start_serving``, before the first
    request) changes no event and no truth, only where the user LLM's time goes: first requests
    find their users' rows."""
    from hllm.policy import HLLMPolicy

    cat, _ = tiny_world
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path / "artifacts", n_requests=300, oracle_reps=1,
                      arms=[tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "hllm")],
                      policies={"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "max_len": 12,
                                         "user_states": {"serving": "tables"}}})
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    runs, stats = {}, {}
    for warm in (True, False):
        with monkeypatch.context() as m:
            if not warm:
                m.setattr(HLLMPolicy, "start_serving", lambda self, users: None)
            pols["hllm"].set_serving(UserStateConfig(serving="tables"))
            runs[warm] = run_experiment(cfg, cat, progress=False, policies=pols)
            stats[warm] = pols["hllm"]._states.report()
    n_users = cat.con.execute("SELECT count(DISTINCT user_id) FROM requests WHERE run_id = ?",
                              [runs[True]]).fetchall()[0][0]
    assert stats[True]["warm"] >= n_users and stats[False]["warm"] == 0 and stats[True]["warm_s"] > 0
    assert stats[True]["full"] < stats[False]["full"] and stats[True]["hit"] > stats[False]["hit"]
    assert stats[True]["staleness"]["requests"] == stats[False]["staleness"]["requests"]  # warming is no request
    want, got = event_frames(cat, runs[False]), event_frames(cat, runs[True])
    for table, df in want.items():
        pd.testing.assert_frame_equal(got[table], df, check_exact=True, obj=table)
    truth = [cat.con.execute("SELECT * EXCLUDE (run_id) FROM truth WHERE run_id = ? ORDER BY ALL", [r]).df()
             for r in (runs[False], runs[True])]
    pd.testing.assert_frame_equal(truth[1], truth[0], check_exact=True)
