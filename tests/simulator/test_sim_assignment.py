import numpy as np
from scipy import stats

from simulator.engine.assignment import assign, bucket


def test_assignment_stable_and_salted():
    users = np.arange(50_000)
    a1 = assign(users, [1, 1], "exp-a")
    a2 = assign(users[::-1].copy(), [1, 1], "exp-a")[::-1]
    assert np.array_equal(a1, a2)  # a pure function of (user, salt, weights), order-free
    b = assign(users, [1, 1], "exp-b")
    assert 0.45 < (a1 == b).mean() < 0.55  # a new salt re-randomises
    u = bucket(users, "exp-a")
    assert u.min() >= 0 and u.max() < 1


def test_assignment_balanced_chi_square():
    users = np.arange(60_000)
    for weights in ([1, 1], [1, 1, 1], [0.2, 0.3, 0.5]):
        arms = assign(users, weights, "salt")
        obs = np.bincount(arms, minlength=len(weights))
        exp = np.asarray(weights) / np.sum(weights) * len(users)
        assert stats.chisquare(obs, exp).pvalue > 0.001, (weights, obs)


def test_assignment_bucket_uniform_ks():
    u = bucket(np.arange(20_000), "x")
    assert stats.kstest(u, "uniform").pvalue > 0.001
