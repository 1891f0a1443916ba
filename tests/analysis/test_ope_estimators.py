"""Off-policy estimators against hand computations on tiny logs (OBP's formulas), their
unbiasedness on a simulated bandit, and the table of invalid inputs with the exact message."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.ope import ESTIMATORS, BanditFeedback, OpeInputError, SlateFeedback, estimate_all, get
from analysis.ope.bandit import DoublyRobustWithShrinkage
from analysis.ope.reward_model import ItemPositionModel, cross_fit


def _bandit(**kw):
    base = dict(reward=[1, 0, 1], pscore=[0.5, 0.25, 1.0], target_prob=[1, 0, 0.5],
                q_logged=[0.6, 0.2, 0.8], q_target=[0.7, 0.3, 0.4])
    return BanditFeedback(**{**base, **kw})


def _slate(**kw):
    base = dict(reward=[[1, 0], [0, 1]], pscore=[[0.5, 0.5], [0.25, 0.5]],
                pscore_cascade=[[0.5, 0.25], [0.25, 0.1]], pscore_slate=[0.25, 0.1],
                target_prob=[[1, 1], [0, 1]], target_prob_cascade=[[1, 1], [0, 0]], target_prob_slate=[1, 0],
                q_logged=[[0.5, 0.2], [0.3, 0.4]], q_target=[[0.6, 0.25], [0.7, 0.35]])
    return SlateFeedback(**{**base, **kw})


# w = [2, 0, 0.5]; by hand:
BANDIT_HAND = {"dm": 1.4 / 3, "ips": 2.5 / 3, "snips": 1.0, "dr": 2.3 / 3}
# slate weights: marginal [[2,2],[0,2]], cascade [[2,4],[0,0]], slate [4,0]
SLATE_HAND = {"sips": 2.0, "iips": 2.0, "rips": 1.0, "pi": 2.0, "cascade_dr": 1.0, "slate_dm": 0.65}


@pytest.mark.parametrize("name,value", BANDIT_HAND.items())
def test_bandit_estimators_by_hand(name, value):
    assert get(name).estimate(_bandit()).value == pytest.approx(value)


def test_dr_os_by_hand_and_limits():
    fb = _bandit()
    # lam = 1: shrunk weights [0.4, 0, 0.4] -> (0.7 + 0.16 + 0.3 + 0.4 + 0.08) / 3
    assert DoublyRobustWithShrinkage(lam=1.0).estimate(fb).value == pytest.approx(1.64 / 3)
    assert DoublyRobustWithShrinkage(lam=np.inf).estimate(fb).value == pytest.approx(BANDIT_HAND["dr"])
    assert DoublyRobustWithShrinkage(lam=1e-12).estimate(fb).value == pytest.approx(BANDIT_HAND["dm"])


@pytest.mark.parametrize("name,value", SLATE_HAND.items())
def test_slate_estimators_by_hand(name, value):
    assert get(name).estimate(_slate()).value == pytest.approx(value)


def test_interval_and_weight_diagnostics_by_hand():
    e = get("ips").estimate(_bandit())
    se = np.std([2, 0, 0.5], ddof=1) / np.sqrt(3)
    assert e.se == pytest.approx(se)
    q = 4.302653  # t with 3 - 1 dof: three rounds, each its own unit
    assert (e.ci_low, e.ci_high) == pytest.approx((2.5 / 3 - q * se, 2.5 / 3 + q * se), rel=1e-5)
    assert e.ess == pytest.approx(2.5 ** 2 / 4.25) and e.max_weight == 2 and e.mean_weight == pytest.approx(2.5 / 3)
    assert e.n == 3 and not e.heavy_weights
    assert get("dm").estimate(_bandit()).ess == 3


def test_clusters_make_positions_of_a_request_one_unit():
    fb = _bandit(cluster=[7, 7, 9])
    e = get("ips").estimate(fb)
    assert e.value == pytest.approx(2.5 / 3) and (e.n, e.units) == (3, 2)
    # unit sums of centred terms: [2 + 0 - 2v, 0.5 - v]; se = sqrt(sum^2 * 2 / 1) / 3
    v = 2.5 / 3
    assert e.se == pytest.approx(np.sqrt(((2 - 2 * v) ** 2 + (0.5 - v) ** 2) * 2) / 3)


def test_registry_runs_every_estimator_of_a_kind():
    assert set(ESTIMATORS) == {"dm", "ips", "snips", "dr", "dr_os", "sips", "iips", "rips", "pi", "cascade_dr",
                               "slate_dm"}
    assert [e.estimator for e in estimate_all(_bandit())] == ["dm", "ips", "snips", "dr", "dr_os"]
    assert [e.estimator for e in estimate_all(_bandit(q_logged=None, q_target=None))] == ["ips", "snips"]
    assert len(estimate_all(_slate())) == 6


def test_unbiased_on_a_simulated_bandit():
    """Uniform logging over 5 actions, a deterministic target: IPS, SNIPS and DR cover the truth."""
    rng = np.random.default_rng(0)
    n, A = 20000, 5
    ctx = rng.integers(0, 3, n)
    mean = rng.uniform(0.05, 0.5, (3, A))
    act = rng.integers(0, A, n)
    target = mean.argmax(1)[ctx]
    r = rng.random(n) < mean[ctx, act]
    truth = mean.max(1)[ctx].mean()
    q = mean.mean(0)  # a context-free (biased) reward model
    fb = BanditFeedback(r.astype(float), np.full(n, 1 / A), (act == target).astype(float), q[act], q[target])
    for e in estimate_all(fb):
        if e.estimator != "dm":
            assert abs(e.value - truth) < 3.5 * e.se, e
    assert abs(get("dm").estimate(fb).value - truth) > 0.05  # the biased model alone misses


def test_slate_estimators_unbiased_on_enumerated_plackett_luce():
    """Logging = independent uniform choice per position (a factorised policy); deterministic target;
    additive reward: every slate estimator is unbiased."""
    rng = np.random.default_rng(1)
    n, A, K = 30000, 4, 2
    a = rng.integers(0, A, (n, K))
    p = np.array([[0.1, 0.3, 0.2, 0.4], [0.05, 0.1, 0.3, 0.2]])  # click prob of action at position
    r = (rng.random((n, K)) < p[np.arange(K), a]).astype(float)
    t = np.array([3, 2])
    match = (a == t).astype(float)
    casc = np.cumprod(match, 1)
    truth = p[0, 3] + p[1, 2]
    fb = SlateFeedback(r, np.full((n, K), 1 / A), np.cumprod(np.full((n, K), 1 / A), 1), np.full(n, 1 / A ** K),
                       match, casc, casc[:, -1], np.zeros((n, K)), np.zeros((n, K)))
    for name in ("sips", "iips", "rips", "pi", "cascade_dr"):
        e = get(name).estimate(fb)
        assert abs(e.value - truth) < 3.5 * e.se, e


def test_reward_model_shrinks_to_the_position_rate_and_cross_fits():
    items, pos, r = np.array([1, 1, 2, 2]), np.array([0, 0, 0, 1]), np.array([1.0, 1.0, 0.0, 1.0])
    m = ItemPositionModel(prior=2.0).fit(items, pos, r)
    # position 0 rate 2/3; item 1 at 0: (2 + 2 * 2/3) / (2 + 2)
    assert m.predict(np.array([1, 9]), np.array([0, 0])) == pytest.approx([(2 + 4 / 3) / 4, 2 / 3])
    (q,) = cross_fit(np.array([0, 0, 1, 1]), items, pos, r, [(items, pos)], n_folds=2, prior=2.0)
    assert q.shape == (4,) and np.isfinite(q).all()


BAD = [
    ("zero propensity", _bandit, dict(pscore=[0.5, 0.0, 1.0]),
     "pscore: value 0 at index 1 is not a probability in (0, 1] (the logging policy never shows this action: "
     "off-policy estimates need a positive propensity for every logged action)"),
    ("negative propensity", _bandit, dict(pscore=[-0.5, 0.2, 1.0]),
     "pscore: value -0.5 at index 0 is not a probability in (0, 1] (the logging policy never shows this action: "
     "off-policy estimates need a positive propensity for every logged action)"),
    ("propensity above one", _bandit, dict(pscore=[0.5, 1.5, 1.0]),
     "pscore: value 1.5 at index 1 is not a probability in (0, 1]"),
    ("NaN reward", _bandit, dict(reward=[1, 0, np.nan]), "reward: value nan at index 2 is not a finite number"),
    ("infinite model", _bandit, dict(q_logged=[0.1, np.inf, 0.2]),
     "q_logged: value inf at index 1 is not a finite number"),
    ("mismatched lengths", _bandit, dict(pscore=[0.5, 0.5]), "pscore: length 2 does not match reward's 3"),
    ("target probability above one", _bandit, dict(target_prob=[1, 2, 0]),
     "target_prob: value 2 at index 1 is not a probability in [0, 1]"),
    ("half a reward model", _bandit, dict(q_target=None),
     "q_logged and q_target: give both reward-model arrays or neither"),
    ("no rounds", _bandit, dict(reward=[], pscore=[], target_prob=[], q_logged=[], q_target=[]),
     "reward: no logged rounds"),
    ("2-d bandit reward", _bandit, dict(reward=[[1, 0, 1]]), "reward: expected a 1-d array, got shape (1, 3)"),
    ("cluster length", _bandit, dict(cluster=[1, 2]), "cluster: length 2 does not match reward's 3"),
    ("slate shape", _slate, dict(pscore=[[0.5], [0.5]]), "pscore: shape (2, 1) does not match reward's (2, 2)"),
    ("zero slate propensity", _slate, dict(pscore_slate=[0.25, 0.0]),
     "pscore_slate: value 0 at index 1 is not a probability in (0, 1] (the logging policy never shows this "
     "action: off-policy estimates need a positive propensity for every logged action)"),
    ("zero cascade propensity", _slate, dict(pscore_cascade=[[0.5, 0.0], [0.25, 0.1]]),
     "pscore_cascade: value 0 at index 1 is not a probability in (0, 1] (the logging policy never shows this "
     "action: off-policy estimates need a positive propensity for every logged action)"),
]


@pytest.mark.parametrize("case,make,kw,message", BAD, ids=[b[0] for b in BAD])
def test_invalid_inputs_give_one_line(case, make, kw, message):
    with pytest.raises(OpeInputError) as e:
        make(**kw)
    assert str(e.value) == message and "\n" not in str(e.value)


def test_estimator_errors():
    with pytest.raises(OpeInputError, match=r"^dr needs a reward model: q_logged and q_target are missing$"):
        get("dr").estimate(_bandit(q_logged=None, q_target=None))
    with pytest.raises(OpeInputError, match=r"^unknown off-policy estimator 'ipw' \(known: dm, ips, "):
        get("ipw")
    with pytest.raises(OpeInputError, match=r"^snips: every importance weight is 0 "):
        get("snips").estimate(_bandit(target_prob=[0, 0, 0]))
