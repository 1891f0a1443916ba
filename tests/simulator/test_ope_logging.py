"""Logs with propensities: exploring arms' slates and their exact (or estimated) propensities,
shadow target slates, determinism (local and Ray), and `sim ope` on such a run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _simdata import event_frames, tiny_arm, tiny_catalog, tiny_config

from policies.base import Slate, UserBatch
from simulator.core.errors import ConfigError
from simulator.engine.config import EpsilonGreedyConfig, PlackettLuceConfig
from simulator.engine.explore import EpsilonGreedy, PlackettLuce
from simulator.engine.run import run_experiment


def _pool(m: int, k: int = 2, B: int = 1) -> Slate:
    ids = np.tile(np.arange(m, dtype=np.int64) + 10, (B, 1))
    return Slate(ids, np.tile(np.linspace(2.0, 0.0, m, dtype=np.float32), (B, 1)), None, ())


def _users(n: int) -> UserBatch:
    return UserBatch(np.arange(n, dtype=np.int64), [np.zeros(0, np.int64)] * n, None, np.linspace(1.0, 2.0, n))


def _frequencies(explorer, m: int, k: int, n: int = 6000):
    s = explorer.sample(_pool(m, k, n), _users(n), k)
    freq = np.stack([np.bincount(s.item_ids[:, j] - 10, minlength=m) / n for j in range(k)])
    return s, freq


def test_epsilon_greedy_propensities_are_exact_and_match_the_draws():
    eg = EpsilonGreedy(EpsilonGreedyConfig(kind="epsilon_greedy", epsilon=0.4, pool=4))
    s, freq = _frequencies(eg, m=4, k=2)
    expect = np.full((2, 4), 0.4 / 4)
    expect[0, 0] += 0.6
    expect[1, 1] += 0.6
    assert np.abs(freq - expect).max() < 0.03
    p = s.propensity
    first = s.item_ids[:, 0] == 10
    assert np.allclose(p.position[first, 0], 0.6 + 0.1) and np.allclose(p.position[~first, 0], 0.1)
    greedy = (s.item_ids == [10, 11]).all(1)
    assert np.allclose(p.slate[greedy], 0.6 + 0.4 / 12) and np.allclose(p.slate[~greedy], 0.4 / 12)
    assert np.allclose(p.cascade[:, 1], p.slate)


def test_plackett_luce_cascade_is_exact_and_marginals_match_the_draws():
    pl = PlackettLuce(PlackettLuceConfig(kind="plackett_luce", temperature=0.7, pool=4, mc_draws=400))
    s, freq = _frequencies(pl, m=4, k=2)
    lg = pl.logits(np.linspace(2.0, 0.0, 4))
    e = np.exp(lg)
    # exact first-position probabilities; the first cascade propensity is exactly that
    assert np.abs(freq[0] - e / e.sum()).max() < 0.03
    assert np.allclose(s.propensity.cascade[:, 0], (e / e.sum())[s.item_ids[:, 0] - 10])
    i, j = s.item_ids[0] - 10
    assert s.propensity.slate[0] == pytest.approx(e[i] / e.sum() * e[j] / (e.sum() - e[i]))
    est = s.propensity.position[:, 1]  # Monte-Carlo marginals of position 2 vs the observed frequencies
    assert np.abs(est - freq[1][s.item_ids[:, 1] - 10]).mean() < 0.04


def test_explorer_draws_depend_on_the_request_only():
    eg = EpsilonGreedy(EpsilonGreedyConfig(kind="epsilon_greedy", epsilon=0.5, pool=6))
    whole = eg.sample(_pool(6, 3, 8), _users(8), 3)
    u = _users(8)
    part = eg.sample(_pool(6, 3, 3), UserBatch(u.user_ids[5:], u.histories[5:], None, u.now[5:]), 3)
    assert np.array_equal(whole.item_ids[5:], part.item_ids) and np.allclose(whole.propensity.slate[5:],
                                                                             part.propensity.slate)


def _ope_config(art, **top):
    logger = {**tiny_arm("logger", "popularity", "control"),
              "explore": {"kind": "epsilon_greedy", "epsilon": 0.3, "pool": 10}}
    arms = [logger, tiny_arm("greedy", "popularity"), tiny_arm("knn", "itemknn")]
    return tiny_config(art, arms=arms, ope={"targets": ["greedy", "knn"]}, oracle_reps=1, **top)


@pytest.mark.parametrize("change,message", [
    ({"arms": [{**tiny_arm("a", "popularity", "control"), "explore": {"kind": "epsilon_greedy", "pool": 3}}]},
     "test: arms.0: arm 'a': explore.pool=3 must be between the slate size 5 and the 12 candidates available"),
    ({"ope": {"targets": ["nope"]}}, "test: config: ope.targets: unknown arm 'nope' (arms: control, treatment)"),
    ({"ope": {"targets": ["treatment"]}}, "test: config: ope: no arm explores; give the logging arm an `explore` block"),
    ({"arms": [{**tiny_arm("a", "popularity", "control"), "explore": {"kind": "softmax"}}]},
     None),
])
def test_bad_ope_configs(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        tiny_config(tmp_path, **change)
    if message is not None:
        assert str(e.value) == message
    assert "\n" not in str(e.value)


class _Env:
    """The catalog path and runs; ``cat`` opens it (closed again before `sim` reads it read-only)."""

    def __init__(self, d, rid, plain):
        self.d, self.rid, self.plain, self.path = d, rid, plain, str(d / "cat.duckdb")

    def cat(self):
        return tiny_catalog(self.path)


@pytest.fixture(scope="module")
def ope_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("ope")
    with tiny_catalog(str(d / "cat.duckdb")) as cat:
        rid = run_experiment(_ope_config(d / "art"), cat, progress=False)
        plain = run_experiment(tiny_config(d / "art", n_requests=50), cat, progress=False)
    return _Env(d, rid, plain)


def _shadows(cat, rid):
    return cat.con.execute("SELECT request_id, arm, position, item_id FROM ope_slates WHERE run_id = ? "
                           "ORDER BY ALL", [rid]).df()


def test_exploring_run_logs_propensities_and_shadow_slates(ope_env):
    rid, plain = ope_env.rid, ope_env.plain
    with ope_env.cat() as cat:
        _check_logs(cat, rid, plain)


def _check_logs(cat, rid, plain):
    exp = event_frames(cat, rid)["exposures"]
    logged = exp[exp.arm == "logger"]
    assert len(logged) and logged.pscore.between(0, 1, inclusive="right").all()
    assert (logged.pscore_cascade <= logged.pscore + 1e-12).all() and logged.pscore_slate.notna().all()
    assert exp[exp.arm != "logger"].pscore.isna().all()  # deterministic arms: NULL
    sh = _shadows(cat, rid)
    assert set(sh.arm) == {"greedy", "knn"}
    assert set(sh.request_id) == set(logged.request_id)  # every logged request, never another
    assert event_frames(cat, plain)["exposures"].pscore.isna().all()  # runs without explore: unchanged


def _same_run(cat, a, b):
    for t, df in event_frames(cat, a).items():
        pd.testing.assert_frame_equal(df, event_frames(cat, b)[t], check_exact=True, obj=t)
    pd.testing.assert_frame_equal(_shadows(cat, a), _shadows(cat, b))


def test_exploring_run_is_deterministic(ope_env):
    with ope_env.cat() as cat:
        _same_run(cat, ope_env.rid, run_experiment(_ope_config(ope_env.d / "art"), cat, progress=False))


@pytest.mark.ray
def test_exploring_run_on_ray_equals_in_process(ope_env):
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with ope_env.cat() as cat:
            cfg = _ope_config(ope_env.d / "art", runtime="ray", actors_per_arm=2)
            _same_run(cat, ope_env.rid, run_experiment(cfg, cat, progress=False))
    finally:
        if started:
            ray.shutdown()


def test_sim_ope_prints_every_estimator(ope_env, sim):
    rid, path = ope_env.rid, ope_env.path
    r = sim("ope", "--logs", rid, "--target", "greedy", "--catalog", path)
    assert r.code == 0, r.err
    for name in ("dm", "ips", "snips", "dr", "dr_os", "sips", "iips", "rips", "pi", "cascade_dr"):
        assert f"\n{name} " in r.out
    j = json.loads(sim("ope", "--logs", rid, "--target", "knn", "--format", "json", "--catalog", path).out)
    assert j["target"] == "knn" and j["logging"] == "logger" and j["true_ctr"] > 0
    ips = next(e for e in j["estimators"] if e["estimator"] == "ips")
    assert ips["ci_low"] <= ips["value"] <= ips["ci_high"] and 0 < ips["ess"] <= ips["n"]
    assert set(ips["lift"]) == {"value", "se", "ci_low", "ci_high"}


def test_sim_ope_one_line_errors(ope_env, sim, tmp_path):
    rid, plain, path = ope_env.rid, ope_env.plain, ope_env.path
    cases = [
        (["--logs", plain, "--target", "treatment"], f"error: run '{plain}' has no propensities: no arm logged with "
         "`explore` (give the logging arm an explore block and name the targets in [ope])"),
        (["--logs", rid, "--target", "nope"], f"error: run '{rid}' has no arm 'nope' (arms: greedy, knn, logger)"),
        (["--logs", rid, "--target", "logger"], f"error: run '{rid}': arm 'logger' is the logging arm itself (its "
         "CTR is the logged CTR); choose another target"),
    ]
    for args, line in cases:
        r = sim("ope", *args, "--catalog", path)
        assert r.code == 2 and r.err.strip() == line, r.err
    zero = tmp_path / "zero.duckdb"
    shutil.copy(path, zero)
    import duckdb

    with duckdb.connect(str(zero)) as con:
        req = con.execute("SELECT min(request_id) FROM exposures WHERE run_id = ? AND arm = 'logger'",
                          [rid]).fetchall()[0][0]
        con.execute("UPDATE exposures SET pscore = 0 WHERE run_id = ? AND request_id = ? AND position = 1",
                    [rid, req])
    r = sim("ope", "--logs", rid, "--target", "greedy", "--catalog", str(zero))
    assert r.code == 2 and r.err.strip() == (f"error: run '{rid}': arm 'logger' logged a zero propensity (request "
                                             f"{req}, position 1): off-policy estimates need a positive propensity "
                                             "for every logged action"), r.err
