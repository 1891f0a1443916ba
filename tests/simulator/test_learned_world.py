"""The learned world: a response model fitted on a log answers any slate; the oracle works on it."""

import numpy as np
import pytest
from _simdata import tiny_catalog, tiny_config

from simulator.engine.learned import LearnedConfig, fit, fit_or_load
from simulator.engine.scenario import SCENARIOS, LearnedScenario, scenario_class
from simulator.engine.users import LearnedUser, calibrate_no_click, interaction_rate

SMALL = LearnedConfig(dim=8, context=5, text_buckets=64, epochs=3, batch_size=256)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("lw")
    cat = tiny_catalog(str(d / "cat.duckdb"))
    yield cat, d
    cat.close()


def test_fit_is_deterministic_and_cached(data, tmp_path):
    cat, _ = data
    ds = cat.load_dataset("synthetic-tiny")
    a = fit(ds.sequences, ds.n_users, ds.n_items, ds.item_text, SMALL)
    b = fit_or_load(ds.sequences, ds.n_users, ds.n_items, ds.item_text, SMALL, tmp_path, ds.name)
    c = fit_or_load(ds.sequences, ds.n_users, ds.n_items, ds.item_text, SMALL, tmp_path, ds.name)
    assert np.array_equal(a.item, b.item) and np.array_equal(b.user, c.user)
    assert len(list((tmp_path / ds.name).glob("learned-*.npz"))) == 1
    # the fit learned something: the logged next items score above the average item
    users = np.arange(ds.n_users)
    lg = a.logits(users, [ds.sequences.seq(u)[:-1] for u in users])
    last = np.array([ds.sequences.seq(u)[-1] for u in users])
    assert (lg[users, last] > lg.mean(1)).mean() > 0.6


def test_learned_user_answers_any_slate_with_position_bias_fatigue_and_calibrated_no_click(data):
    cat, _ = data
    ds = cat.load_dataset("synthetic-tiny")
    p = fit(ds.sequences, ds.n_users, ds.n_items, ds.item_text, SMALL)
    hist = [ds.sequences.seq(u) for u in range(ds.n_users)]
    target = interaction_rate(ds.sequences.lengths, ds.n_items, 5)
    c = calibrate_no_click(p, hist, ds.n_items, 5, target)
    m = LearnedUser(p, hist, c)
    rng = np.random.default_rng(0)
    slates = np.stack([rng.choice(ds.n_items, 5, replace=False) for _ in range(2000)])
    users = rng.integers(0, ds.n_users, 2000)
    probs = m.choice_probs(users, slates)
    assert np.allclose(probs.sum(1), 1.0) and np.allclose(m.click_probs(users, slates, None), probs[:, :-1])
    fresh = LearnedUser(p, [np.zeros(0, np.int64)] * ds.n_users, c)
    fresh.hist = [list(h) for h in hist]  # no seen items: the calibration's condition
    assert abs(fresh.click_probs(users, slates, None).sum(1).mean() - target) < 0.03
    one = np.array([[7, 7]])  # the same item at two positions: the first is more likely (position bias)
    pb = fresh.click_probs(np.array([0]), one, None)
    assert pb[0, 0] > pb[0, 1]
    before = m.click_probs(np.array([0]), np.array([[3]]), None)[0, 0]
    m.update(np.array([0]), np.array([3]), None)
    assert m.click_probs(np.array([0]), np.array([[3]]), None)[0, 0] < before  # fatigue
    m.reset()
    assert m.click_probs(np.array([0]), np.array([[3]]), None)[0, 0] == pytest.approx(before)
    r = m.respond(users[:50], slates[:50], None, np.random.default_rng(1))
    r2 = m.respond(users[:50], slates[:50], None, np.random.default_rng(1))
    assert np.array_equal(r.position, r2.position) and ((r.position >= -1) & (r.position < 5)).all()


def test_learned_is_asked_for_by_name_and_has_truth():
    assert SCENARIOS["learned"] is LearnedScenario and LearnedScenario.has_truth
    assert scenario_class("auto", {}, "ml-100k").name == "replay"  # auto never picks the learned world
    assert scenario_class("learned", {}, "ml-100k") is LearnedScenario  # no synthetic world needed


def test_a_learned_world_run_has_the_oracles_truth(data, monkeypatch):
    import simulator.engine.scenario.learned as lm

    monkeypatch.setattr(lm, "LearnedConfig", lambda: SMALL)
    cat, d = data
    from analysis.report import summarize
    from simulator.engine.run import run_experiment

    cfg = tiny_config(d / "art", user_model="learned", n_requests=200, oracle_reps=1)
    rid = run_experiment(cfg, cat, progress=False)
    truth = cat.con.execute("SELECT count(DISTINCT arm) FROM truth WHERE run_id = ?", [rid]).fetchall()[0][0]
    assert truth == 2
    s = summarize(cat.con, rid)
    assert np.isfinite(s.loc[s.metric == "ctr", "true_rel_lift"]).all()


def test_the_temperature_is_fitted_on_held_out_interactions_and_divides_every_utility(data):
    """The calibrated fit holds each user's last interaction out, finds the T that maximises its
    likelihood and folds 1/T into item vectors and biases; calibrate=False is the raw fit (T = 1)."""
    import torch

    from dataclasses import replace

    from simulator.engine.learned import fit_temperature, last_per_user

    assert last_per_user(np.array([0, 0, 0, 1, 2, 2])).tolist() == [False, False, True, False, False, True]
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 30, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(true, 1), 1, generator=g)[:, 0]
    assert fit_temperature(true * 3.0, y) == pytest.approx(3.0, rel=0.1)  # over-confident by 3x: T = 3
    cat, _ = data
    ds = cat.load_dataset("synthetic-tiny")
    cal = fit(ds.sequences, ds.n_users, ds.n_items, ds.item_text, SMALL)
    raw = fit(ds.sequences, ds.n_users, ds.n_items, ds.item_text, replace(SMALL, calibrate=False))
    assert raw.temperature == 1.0 and cal.temperature != 1.0 and 0.05 <= cal.temperature <= 50
    # the served model is the fit on all the logs (the same seed and rows as the raw fit), tempered
    assert np.array_equal(cal.user, raw.user) and np.array_equal(cal.ctx, raw.ctx)
    assert np.allclose(cal.item * cal.temperature, raw.item) and np.allclose(cal.bias * cal.temperature, raw.bias)
