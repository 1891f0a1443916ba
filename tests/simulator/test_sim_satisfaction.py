"""Leave and return driven by satisfaction: with ``satisfaction`` > 0 a better ranker keeps users
longer and brings them back sooner (the oracle's truth says so, and the SQL metrics agree with it);
the retention metrics are computed the same way by the SQL views and the oracle."""

from __future__ import annotations

import numpy as np
from _simdata import tiny_arm, tiny_config

from analysis.views import install_views
from simulator.engine.env import Leaving
from simulator.engine.run import run_experiment


def _truth(cat, rid) -> dict:
    rows = cat.con.execute("SELECT arm, metric, avg(value) FROM truth WHERE run_id = ? GROUP BY ALL", [rid]).fetchall()
    return {(a, m): v for a, m, v in rows}


def test_better_slates_keep_users_longer_and_bring_them_back(tiny_world, tmp_path):
    cat, _ = tiny_world
    arms = [tiny_arm("control", "random", "control"), tiny_arm("treatment", "popularity")]
    cfg = tiny_config(tmp_path / "art", arms=arms, n_requests=900, sessions_per_day=96.0, oracle_reps=2,
                      satisfaction=3.0, satisfaction_ref=0.3)
    t = _truth(cat, run_experiment(cfg, cat, progress=False))
    assert t[("treatment", "session_length")] > t[("control", "session_length")]
    assert t[("treatment", "return_rate")] >= t[("control", "return_rate")]
    assert 0 <= t[("control", "return_rate")] <= 1 and t[("control", "active_days")] >= 1
    # at satisfaction 0 what was shown does not change how long sessions are (within noise)
    flat = _truth(cat, run_experiment(cfg.model_copy(update={"satisfaction": 0.0}), cat, progress=False))
    gap0 = flat[("treatment", "session_length")] - flat[("control", "session_length")]
    assert t[("treatment", "session_length")] - t[("control", "session_length")] > gap0


def test_retention_metrics_in_sql_match_the_oracle_definition(tiny_world, tmp_path):
    cat, _ = tiny_world
    cfg = tiny_config(tmp_path / "art", n_requests=400, sessions_per_day=96.0, oracle_reps=0)
    rid = run_experiment(cfg, cat, progress=False)
    install_views(cat.con)
    got = cat.con.execute("SELECT avg(returned), avg(active_days) FROM v_user_metrics WHERE run_id = ?",
                          [rid]).fetchall()[0]
    want = cat.con.execute("""SELECT avg(CASE WHEN s >= 2 THEN 1 ELSE 0 END), avg(d) FROM (
        SELECT user_id, count(DISTINCT session_id) s, count(DISTINCT floor(ts / 86400)) d
        FROM requests WHERE run_id = ? GROUP BY user_id)""", [rid]).fetchall()[0]
    assert np.allclose(got, want) and 0 < got[0] < 1


def test_leaving_at_zero_is_the_old_rule():
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    lv = Leaving(0.3, 100.0)
    got = [lv.leaves(c, 5.0, a) for c in (-1, 0, -1, -1, 2)] + [lv.gap([9.0], a)]
    want = [c < 0 and b.random() < 0.3 for c in (-1, 0, -1, -1, 2)] + [b.exponential(100.0)]
    assert got == want
    keen = Leaving(0.3, 100.0, satisfaction=2.0, ref=1.0)
    r = np.random.default_rng(0)
    assert np.mean([keen.leaves(0, 3.0, r) for _ in range(2000)]) < np.mean([keen.leaves(0, 0.0, r) for _ in range(2000)])
