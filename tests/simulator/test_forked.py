"""The oracle's passes in forked processes: the same truth as in one process; failures and stops."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import torch
from _simdata import tiny_arm, tiny_config

from simulator.engine import forked
from simulator.engine.run import oracle_workers, prepare, run_experiment, train_arms

needs_fork = pytest.mark.skipif(not forked.can_fork(1), reason="forked workers: Linux only")


def test_balance_deals_the_costliest_groups_first_to_the_cheapest_lane():
    assert forked.balance([["a"], ["b", "c", "d"], ["e", "f"]], 2) == [["b", "c", "d"], ["e", "f", "a"]]
    assert forked.balance([["a"], ["b"]], 4) == [["a"], ["b"]]  # no empty lanes
    assert forked.balance([["a"], ["b"]], 1) == [["a", "b"]]
    assert forked.balance([], 3) == []
    cost = {"a": 5.0, "b": 1.0, "c": 1.0, "d": 2.0}.get  # the costliest lane first (this process's)
    assert forked.balance([["b"], ["a"], ["c", "d"]], 2, cost) == [["a"], ["c", "d", "b"]]
    assert forked.balance([["b"], ["c", "d"]], 2, cost) == [["c", "d"], ["b"]]


def test_oracle_workers_are_one_where_forking_is_not_safe():
    cfg = tiny_config("art")
    assert oracle_workers(cfg.model_copy(update={"oracle_workers": 1})) == 1
    assert oracle_workers(cfg.model_copy(update={"threads": 2, "oracle_workers": 4})) == 1
    if forked.can_fork(1):
        assert oracle_workers(cfg.model_copy(update={"oracle_workers": 3})) == 3
        assert oracle_workers(cfg) == forked.cores()


@needs_fork
def test_lanes_run_in_other_processes_and_results_come_back_by_job():
    got = forked.map_lanes(lambda j: (j, os.getpid()), [[1, 2], [3], [4]])
    assert {j: v[0] for j, v in got.items()} == {1: 1, 2: 2, 3: 3, 4: 4}
    assert got[1][1] == got[2][1] == os.getpid() and len({got[3][1], got[4][1], os.getpid()}) == 3


PARENT = os.getpid()


def _fail(j):
    if j == "bad":
        raise ValueError("no such item 7")
    if j == "dies" and os.getpid() != PARENT:  # a worker killed (the OOM killer): not this process
        os._exit(3)
    return j


@needs_fork
def test_a_worker_that_dies_costs_time_not_the_result():
    said = []
    assert forked.map_lanes(_fail, [["ok"], ["dies", "also"]], on_retry=said.append) == {
        "ok": "ok", "dies": "dies", "also": "also"}
    assert said == ["a worker process died (exit code 3); its passes run in this process"]


@needs_fork
def test_a_failing_job_raises_its_own_error_here():
    said = []
    with pytest.raises(ValueError, match="no such item 7"):
        forked.map_lanes(_fail, [["ok"], ["bad"]], on_retry=said.append)
    assert said == ["a worker process failed (ValueError: no such item 7); its passes run in this process"]


@needs_fork
def test_a_stop_signal_recorded_while_waiting_stops_the_wait():
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt

    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        forked.map_lanes(lambda j: time.sleep(60 if j == "slow" else 0), [["fast"], ["slow"]], check=check)
    assert time.perf_counter() - t < 30


@needs_fork
def test_a_stop_here_kills_the_workers(tmp_path):
    def job(j):
        if j == "here":
            raise KeyboardInterrupt
        (tmp_path / str(os.getpid())).write_text("")
        time.sleep(60)

    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        forked.map_lanes(job, [["here"], ["sleeps"]])
    assert time.perf_counter() - t < 30  # not waited for
    for f in tmp_path.iterdir():
        with pytest.raises(ProcessLookupError):
            os.kill(int(f.name), 0)  # gone (killed and reaped)


@needs_fork
def test_forked_oracle_passes_give_the_truth_of_one_process(tiny_world, tmp_path, monkeypatch):
    cat, _ = tiny_world
    torch.set_num_threads(1)
    arms = [tiny_arm("control", "popularity", "control"), tiny_arm("treatment", "hllm"),
            tiny_arm("again", "popularity", "treatment")]  # same slates as control: one lane with it
    cfg = tiny_config(tmp_path / "artifacts", n_requests=300, oracle_reps=2, arms=arms,
                      policies={"hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "max_len": 12}})
    pols = train_arms(cfg, prepare(cfg, cat), progress=False)
    seen = []
    real = forked.map_lanes
    monkeypatch.setattr(forked, "map_lanes", lambda fn, lanes, **kw: seen.append(lanes) or real(fn, lanes, **kw))
    truth = {}
    for w in (1, 2):
        rid = run_experiment(cfg.model_copy(update={"oracle_workers": w}), cat, progress=False, policies=pols)
        truth[w] = cat.con.execute("SELECT * EXCLUDE (run_id) FROM truth WHERE run_id = ? ORDER BY ALL", [rid]).df()
    assert [len(lanes) for lanes in seen] == [1, 2] and len(seen[0][0]) == 6
    assert sorted(map(sorted, seen[1])) == [[(0, 0), (0, 1), (2, 0), (2, 1)], [(1, 0), (1, 1)]]
    assert len(truth[1]) > 0
    pd.testing.assert_frame_equal(truth[2], truth[1], check_exact=True)
