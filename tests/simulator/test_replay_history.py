"""Replay as it happened: before each request the arms see the user's logged interactions up to
that moment merged in time order with what they consumed in the simulation."""

import numpy as np
import pytest
from _simdata import tiny_catalog, tiny_config

from simulator.engine.scenario import ReplayScenario


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    d = tmp_path_factory.mktemp("rp")
    cat = tiny_catalog(str(d / "cat.duckdb"))
    cfg = tiny_config(d / "art", user_model="replay", replay_start_quantile=0.5)
    sc = ReplayScenario.build(cfg, cat, cat.load_dataset("synthetic-tiny"))
    yield sc
    cat.close()


def _user_with_log_after_cut(sc, n: int = 3) -> int:
    return next(int(u) for u in sc.users if len(sc.times[u]) >= n)


def test_arms_see_logged_interactions_up_to_the_request(replay):
    sc = replay
    u = _user_with_log_after_cut(sc)
    log = sc.dataset.sequences
    t = float(sc.times[u][1])  # the user's second logged request after the cut
    hist = [list(h) for h in sc.histories]
    times = list(sc.history_times)
    (items,), (ts,) = sc.seen(np.array([u]), np.array([t]), hist, times)
    upto = log.times(u) <= t
    assert items.tolist() == log.seq(u)[upto].tolist()  # the whole logged past, nothing of the future
    assert (np.diff(ts) >= 0).all() and ts[-1] == t


def test_simulated_consumption_is_merged_in_time_order_and_not_doubled(replay):
    sc = replay
    u = _user_with_log_after_cut(sc)
    log = sc.dataset.sequences
    after = log.times(u) > sc.sim_start
    t1, t2 = (float(x) for x in log.times(u)[after][:2])
    later_item = int(log.seq(u)[after][1])  # the simulation makes the user consume it before it is logged
    other = next(i for i in range(sc.dataset.n_items) if i not in set(log.seq(u).tolist()))
    hist = [list(h) for h in sc.histories]
    times = list(sc.history_times)
    mid = (t1 + t2) / 2 if t2 > t1 else t1
    hist[u] += [other, later_item]
    times[u] = np.append(times[u], [t1, mid])
    (items,), (ts,) = sc.seen(np.array([u]), np.array([t2]), hist, times)
    n0 = len(sc.histories[u])
    assert items[:n0].tolist() == sc.histories[u]  # the pre-cut log first, unchanged
    assert (np.diff(ts) >= 0).all()  # time order
    assert other in items[n0:].tolist()
    assert items.tolist().count(later_item) == 1 + sc.histories[u].count(later_item)  # logged copy dropped


def test_replay_report_shows_scenario_warnings_and_segments(tmp_path):
    import json

    from analysis.report import write_report
    from simulator.engine.run import run_experiment

    cat = tiny_catalog(str(tmp_path / "cat.duckdb"))
    cfg = tiny_config(tmp_path / "art", user_model="replay", replay_start_quantile=0.5, n_requests=150)
    rid = run_experiment(cfg, cat, progress=False)
    out = write_report(cat, rid, tmp_path / "rep")
    js = json.loads(open(out["json"]).read())
    assert any("this run serves the first 150" in w and "of the" in w for w in js["warnings"])
    assert any("this run serves the first 150" in w for w in open(out["md"]).read().split("WARNING: ")[1:])
    seg = js["segments"]
    assert seg is not None and set(seg["users"]) == {"new", "returning"}
    ctr = [e for e in seg["effects"] if e["metric"] == "ctr"]
    assert {e["segment"] for e in ctr} == {"new", "returning"}
    by = {e["segment"]: e for e in ctr}
    assert by["returning"]["p_adj"] is not None and by["returning"]["p_adj"] >= by["returning"]["p"]
    assert by["new"]["p"] is not None or by["new"]["note"]  # estimated, or why not
    assert "by segment (ctr" in out["text"]
    cat.close()
