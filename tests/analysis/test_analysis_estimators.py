"""Estimators against straightforward reference computations, and invalid inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from analysis.estimators import (
    Cuped,
    DeltaRatio,
    EstimationError,
    TwoProportion,
    WelchT,
)
from analysis.multiple import adjust
from analysis.power import mde, sample_size
from analysis.sequential import MSPRT, msprt_pvalues
from analysis.srm import srm_test
from analysis.views import Metric
from simulator.core.errors import ConfigError

MEAN = Metric(name="m", kind="mean", num="y")
RATIO = Metric(name="r", kind="ratio", num="y", den="x")
PROP = Metric(name="p", kind="proportion", num="b")


def table(n=500, seed=0, lift=0.0, pre=True):
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0, 0.5, n)
    arm = np.where(np.arange(n) % 2 == 0, "control", "treatment")
    x = 1 + rng.poisson(10 * a)
    y = rng.binomial(x, np.minimum(0.1 * a * np.where(arm == "treatment", 1 + lift, 1), 1)).astype(float)
    d = pd.DataFrame({"arm": arm, "y": y, "x": x.astype(float), "b": (y > 1).astype(int)})
    if pre:
        d["pre"] = rng.poisson(5 * a)
    d.attrs["control"] = "control"
    return d


def test_welch_equals_reference():
    d = table()
    e = WelchT().estimate(d, MEAN)
    yt, yc = d.y[d.arm == "treatment"].to_numpy(), d.y[d.arm == "control"].to_numpy()
    vt, vc = yt.var(ddof=1) / yt.size, yc.var(ddof=1) / yc.size
    diff, se = yt.mean() - yc.mean(), np.sqrt(vt + vc)
    df = (vt + vc) ** 2 / (vt**2 / (yt.size - 1) + vc**2 / (yc.size - 1))
    p = 2 * stats.t.sf(abs(diff / se), df)
    q = stats.t.ppf(0.975, df)
    assert e.abs_lift == pytest.approx(diff, abs=1e-9)
    assert e.p == pytest.approx(p, abs=1e-9)
    assert e.ci[0] == pytest.approx(diff - q * se, abs=1e-9)
    assert e.ci[1] == pytest.approx(diff + q * se, abs=1e-9)
    assert e.n_by_arm == {"control": 250, "treatment": 250}
    # relative lift via the delta method
    rel_se = np.sqrt(vt / yc.mean() ** 2 + yt.mean() ** 2 * vc / yc.mean() ** 4)
    assert e.rel_lift == pytest.approx(yt.mean() / yc.mean() - 1, abs=1e-12)
    assert e.rel_se == pytest.approx(rel_se, abs=1e-12)
    # relative CI: Fieller's, at Welch's quantile: (d - rho c)^2 = q^2 Var(d - rho c) at both ends
    c = yc.mean()
    for rho in e.rel_ci:
        assert (diff - rho * c) ** 2 == pytest.approx(q**2 * (vt + vc + 2 * rho * vc + rho**2 * vc), rel=1e-9)


def test_delta_ratio_equals_reference():
    d = table(seed=1)
    e = DeltaRatio().estimate(d, RATIO)

    def ref(arm):  # linearisation: Var(R) = Var((y - R x) / mean x) / n
        s = d[d.arm == arm]
        r = s.y.sum() / s.x.sum()
        lin = (s.y - r * s.x) / s.x.mean()
        h = s.x / s.x.sum()  # HC2: each user's squared residual over 1 - its leverage
        return r, float(((lin - lin.mean()) ** 2 / (1 - h)).sum() / len(s) ** 2)

    (rt, vt), (rc, vc) = ref("treatment"), ref("control")
    z = (rt - rc) / np.sqrt(vt + vc)
    assert e.treatment == pytest.approx(rt, abs=1e-12) and e.control == pytest.approx(rc, abs=1e-12)
    assert e.se == pytest.approx(np.sqrt(vt + vc), abs=1e-9)
    xs = [d.x[d.arm == a].to_numpy() for a in ("control", "treatment")]
    w = np.concatenate([x / x.sum() ** 2 for x in xs])  # small-sample dof: working model Var ~ x
    dof = w.sum() ** 2 / (w**2).sum() - 2
    assert e.dof == pytest.approx(dof) and dof < len(d) - 2
    assert e.p == pytest.approx(2 * stats.t.sf(abs(z), dof), abs=1e-9)
    rel_se = np.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    assert e.rel_se == pytest.approx(rel_se, abs=1e-12)
    q, diff = stats.t.ppf(0.975, dof), rt - rc
    for rho in e.rel_ci:  # Fieller: (d - rho c)^2 = q^2 (Var t + (1 + rho)^2 Var c) at both ends
        assert (diff - rho * rc) ** 2 == pytest.approx(q**2 * (vt + (1 + rho) ** 2 * vc), rel=1e-9)


def test_two_proportion_reference():
    d = table(seed=2)
    e = TwoProportion().estimate(d, PROP)
    bt, bc = d.b[d.arm == "treatment"], d.b[d.arm == "control"]
    pp = (bt.sum() + bc.sum()) / len(d)
    z = (bt.mean() - bc.mean()) / np.sqrt(pp * (1 - pp) * (1 / len(bt) + 1 / len(bc)))
    assert e.p == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-9)


def test_cuped_variance_reduction_matches_rho2():
    """Across experiments, Var(CUPED lift) / Var(plain lift) ~ the reported variance reduction."""
    plain, cup, red = [], [], []
    for s in range(200):
        rng = np.random.default_rng(100 + s)
        a = rng.lognormal(0, 0.4, 400)
        d = pd.DataFrame({"arm": np.where(rng.random(400) < 0.5, "treatment", "control"),
                          "y": a + rng.normal(0, 0.5, 400), "pre": rng.poisson(5 * a)})
        plain.append(WelchT().estimate(d, MEAN).abs_lift)
        e = Cuped().estimate(d, MEAN)
        cup.append(e.abs_lift)
        red.append(e.extra["var_reduction"])
    ratio = np.var(cup) / np.var(plain)
    expected = 1 - np.mean(red)
    assert len(red) == 200
    assert expected < 0.9  # the covariate really matters in this data
    assert abs(ratio - expected) < 2 * np.sqrt(2 / 200) * ratio


def test_msprt_always_valid_p_is_conservative_and_monotone():
    d = table(seed=4, lift=0.2)
    e, f = MSPRT().estimate(d, RATIO), DeltaRatio().estimate(d, RATIO)
    assert e.p >= f.p and (e.ci[1] - e.ci[0]) > (f.ci[1] - f.ci[0])
    rng = np.random.default_rng(0)
    p = msprt_pvalues(rng.normal(size=(3, 50)), np.full((3, 50), 1.0), 1.0)
    assert (np.diff(p, axis=1) <= 0).all()


def test_msprt_controls_peeking_where_naive_t_does_not():
    rng = np.random.default_rng(5)
    E, n, looks = 400, 1000, 20
    y, arm = rng.normal(size=(E, n)), rng.random((E, n)) < 0.5
    at = np.linspace(n / looks, n, looks).astype(int) - 1
    c = lambda v: np.cumsum(v, axis=1)[:, at]  # noqa: E731
    nt, nc = c(arm), c(~arm)
    mt, mc = c(np.where(arm, y, 0)) / nt, c(np.where(arm, 0, y)) / nc
    v = 1 / nt + 1 / nc
    z = (mt - mc) / np.sqrt(v)
    naive = (2 * stats.norm.sf(np.abs(z)) < 0.05).any(axis=1).mean()
    msprt = (msprt_pvalues(mt - mc, v, 0.1**2) < 0.05).any(axis=1).mean()
    assert naive > 0.12 and msprt < 0.06


BAD = [  # (description, table builder, estimator, metric, exact expected message fragment)
    ("arm with zero users", lambda: table().assign(arm="control"), WelchT(treatment="treatment"), MEAN,
     "metric 'm': arm 'treatment' has zero users"),
    ("zero-variance metric", lambda: table().assign(y=1.0), WelchT(), MEAN,
     "metric 'm' has zero variance in both arms: no test possible"),
    ("zero-variance ratio", lambda: table().assign(y=0.0), DeltaRatio(), RATIO,
     "metric 'r' has zero variance in both arms: no test possible"),
    ("zero-variance proportion", lambda: table().assign(b=0), TwoProportion(), PROP,
     "metric 'p' has zero variance in both arms: no test possible"),
    ("non-binary proportion", lambda: table().assign(b=2), TwoProportion(), PROP,
     "metric 'p': two-proportion test needs 0/1 per-user values"),
    ("zero denominator", lambda: table().assign(x=0.0), DeltaRatio(), RATIO,
     "ratio metric has a zero denominator in one arm"),
    ("three arms, no treatment given", lambda: table().assign(arm=np.arange(500) % 3).astype({"arm": str}), WelchT(),
     MEAN, "need exactly one treatment arm besides"),
]


@pytest.mark.parametrize("desc,build,est,metric,msg", BAD, ids=[b[0] for b in BAD])
def test_invalid_inputs(desc, build, est, metric, msg):
    with pytest.raises(EstimationError) as ei:
        est.estimate(build(), metric)
    assert msg in str(ei.value)


CUPED_FALLBACK = [
    ("no covariate column", dict(pre=False), None, "CUPED fallback: no pre-experiment covariate column 'pre'"),
    ("all-missing covariate", dict(), np.nan, "CUPED fallback: no pre-experiment data"),
    ("constant covariate", dict(), 3, "CUPED fallback: pre-experiment covariates are constant"),
]


@pytest.mark.parametrize("desc,kw,pre,msg", CUPED_FALLBACK, ids=[c[0] for c in CUPED_FALLBACK])
def test_cuped_falls_back_and_says_so(desc, kw, pre, msg):
    d = table(**kw)
    if pre is not None:
        d["pre"] = pre
    e = Cuped().estimate(d, MEAN)
    ref = WelchT().estimate(d, MEAN)
    assert e.note == msg and "fallback" in e.method
    assert e.p == pytest.approx(ref.p, abs=1e-12)


def test_holm_bh_reference():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    holm = adjust(p, "holm")
    # Holm by hand: sorted 0.01,0.03,0.04,0.2 x (4,3,2,1), running max
    order = np.argsort(p[:4])
    ref = np.maximum.accumulate(np.minimum(1, p[:4][order] * (4 - np.arange(4))))
    out = np.empty(4)
    out[order] = ref
    assert np.allclose(holm[:4], out) and np.isnan(holm[4])
    bh = adjust(p, "bh")
    ranks = np.arange(1, 5)
    r = np.minimum.accumulate((p[:4][order] * 4 / ranks)[::-1])[::-1]
    out[order] = np.minimum(r, 1)
    assert np.allclose(bh[:4], out)
    with pytest.raises(ValueError):
        adjust(p, "bonferonni")


def test_srm():
    assert not srm_test({"a": 5000, "b": 5050}, {"a": 0.5, "b": 0.5}).failed
    r = srm_test({"a": 5000, "b": 5400}, {"a": 0.5, "b": 0.5})
    assert r.failed and "SAMPLE RATIO MISMATCH" in r.message()
    assert srm_test({"a": 9000, "b": 1000}, {"a": 0.9, "b": 0.1}).p > 0.01
    assert srm_test({"a": 100, "b": 0}, {"a": 0.5, "b": 0.5}).failed
    assert not srm_test({"a": 100, "b": 104, "c": 0}, {"a": 0.5, "b": 0.5, "c": 0.0}).failed  # zero-weight arm
    assert srm_test({"a": 100, "b": 104, "c": 3}, {"a": 0.5, "b": 0.5, "c": 0.0}).failed


def test_power_roundtrip_and_errors():
    r = sample_size(0.05, 0.1)
    back = mde(0.05, r.n_per_arm)
    assert back.mde_rel == pytest.approx(0.1, rel=0.01)
    m = sample_size(2.0, 0.05, kind="mean", sd=1.0)
    assert TTestIndPower().power(0.1, nobs1=m.n_per_arm, alpha=0.05) == pytest.approx(0.8, abs=0.01)
    for kw, msg in [(dict(baseline=1.5, mde_rel=0.1), "baseline proportion must be in (0, 1)"),
                    (dict(baseline=2.0, mde_rel=0.1, kind="mean"), "needs --sd"),
                    (dict(baseline=0.05, mde_rel=0.1, alpha=2), "alpha must be in (0, 1)"),
                    (dict(baseline=0.05, mde_rel=0.0), "mde must be non-zero")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            sample_size(**kw)


# ---------------------------------------------------------------- trust: CUPED levels, signs, batches, looks

def _ratio_table(rng, n=2000, lift=0.3, exp_t=2.0):
    """Treatment users see ``exp_t`` x more exposures and click ``1 + lift`` x more often per exposure."""
    a = rng.lognormal(0, 0.5, n)
    arm = np.where(rng.random(n) < 0.5, "treatment", "control")
    x = 1 + rng.poisson(10 * a * np.where(arm == "treatment", exp_t, 1.0))
    y = rng.binomial(x, np.minimum(0.05 * a * np.where(arm == "treatment", 1 + lift, 1.0), 1)).astype(float)
    d = pd.DataFrame({"arm": arm, "y": y, "x": x.astype(float), "pre": rng.poisson(5 * a).astype(float)})
    d.attrs["control"] = "control"
    return d


def test_cuped_ratio_is_linearised_per_arm_and_unbiased_under_a_real_effect():
    """Linearising around the pooled ratio scaled the lift by mean(x_t)/mean(x) (+222% vs +272%)."""
    rng = np.random.default_rng(7)
    cup, plain = [], []
    for _ in range(150):
        d = _ratio_table(rng)
        c, p = Cuped().estimate(d, RATIO), DeltaRatio().estimate(d, RATIO)
        assert c.control == pytest.approx(p.control) and c.treatment == pytest.approx(p.treatment)  # raw levels
        cup.append(c.rel_lift)
        plain.append(p.rel_lift)
    assert np.mean(cup) == pytest.approx(np.mean(plain), abs=0.01)
    assert np.std(cup) <= np.std(plain) * 1.02


def test_cuped_is_never_switched_off_by_the_sign_of_its_result():
    """Choosing the estimator by whether the adjusted lift agrees in sign with the raw one is a
    data-dependent test (it inflated a replayed A/A to 8.2%): CUPED stands, and the note says when
    the signs differ."""
    rng = np.random.default_rng(3)
    flips = 0
    for _ in range(300):  # A/A with a strong covariate: adjustments often exceed tiny raw differences
        d = _ratio_table(rng, n=300, lift=0.0, exp_t=1.0)
        e = Cuped().estimate(d, RATIO)
        assert e.method == "cuped"
        if np.sign(e.rel_lift) != np.sign(e.treatment - e.control):
            flips += 1
            assert "differ in sign" in e.note
    assert 0 < flips < 60


def test_relative_lift_undefined_when_the_control_is_not_positive():
    d = table(seed=9).assign(y=lambda t: np.where(t.arm == "control", 0.0, t.y))
    for est in (WelchT(), DeltaRatio(), Cuped()):
        e = est.estimate(d, MEAN if est.name == "welch" else RATIO)
        assert np.isnan(e.rel_lift) and "control mean is not positive" in e.note and e.abs_lift > 0


def test_batch_ratio_is_calibrated_where_per_user_latency_is_not():
    """Latency is one wall time per call: a shared per-batch load makes per-user tests anti-conservative."""
    from analysis.estimators import BatchRatio

    rng = np.random.default_rng(11)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")
    per_user = Metric(name="lat_user", kind="ratio", num="latency_sum", den="requests")
    rej_b = rej_u = 0
    E = 300
    for _ in range(E):
        B = 30
        load = rng.lognormal(0, 0.5, B)  # the machine's load per batch (shared by both arms)
        rows, users = [], []
        for b in range(B):
            for arm in ("control", "treatment"):
                n = rng.integers(20, 40)
                ms = load[b] * rng.lognormal(0, 0.1) * n  # one call: time proportional to its requests
                rows.append({"batch_no": b, "arm": arm, "latency_sum": ms, "requests": float(n)})
                users.append(pd.DataFrame({"arm": arm, "latency_sum": np.full(n, ms / n), "requests": 1.0}))
        bt, ut = pd.DataFrame(rows), pd.concat(users)
        bt.attrs["control"] = ut.attrs["control"] = "control"
        rej_b += BatchRatio().estimate(bt, lat).p < 0.05
        rej_u += DeltaRatio().estimate(ut, per_user).p < 0.05
    assert rej_b / E < 0.09 and rej_u / E > 0.2


def test_batch_ratio_pairs_time_windows_when_batches_hold_one_arm():
    """Issue 21 item 12: in a replay most serving batches hold one arm; pairing within a batch then
    compared an arm with nothing (A/A latency p < 0.05 in 9 of 20 runs; 57% in this simulation).
    Windows of consecutive batches holding both arms keep the A/A at its level under a drifting
    machine load."""
    from analysis.estimators import BatchRatio, paired_windows

    rng = np.random.default_rng(5)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")
    E, rej = 200, 0
    for _ in range(E):
        B = 400
        load = np.exp(np.cumsum(rng.normal(0, 0.05, B)))  # drift: neighbouring batches share the load
        arm: list[str] = []  # one arm per batch, in bursts (a replayed user's requests come together)
        while len(arm) < B:
            arm += [str(rng.choice(["control", "treatment"]))] * int(rng.geometric(0.1))
        n = rng.integers(1, 4, B).astype(float)
        bt = pd.DataFrame({"batch_no": np.arange(B), "arm": arm[:B], "requests": n,
                           "latency_sum": load * n * rng.lognormal(0, 0.2, B)})
        bt.attrs["control"] = "control"
        e = BatchRatio().estimate(bt, lat)
        rej += e.p < 0.05
    assert 0.02 < rej / E < 0.08, rej / E
    assert "time windows" in e.note
    wide = pd.DataFrame({("r", "c"): [1, 0, 0, 1, 1], ("r", "t"): [0, 1, 1, 1, 0]})
    assert paired_windows(wide, "r", "c", "t")[("r", "c")].tolist() == [1, 2]  # [0, 1], [2, 3] + the unfinished [4]


def test_msprt_monitor_is_stateful_over_looks():
    full = table(n=4000, seed=4, lift=0.0)
    mon = MSPRT()
    ps, widths = [], []
    for k in range(1, 11):
        e = mon.estimate(full.iloc[: 400 * k], RATIO)
        ps.append(e.p)
        widths.append(e.ci[1] - e.ci[0])
    assert all(b <= a for a, b in zip(ps, ps[1:], strict=False)) and mon.looks == 10
    assert all(b <= a + 1e-12 for a, b in zip(widths, widths[1:], strict=False))


GUARDRAILS = [  # (rel lift, rel se, margin, higher is better) -> status
    (0.00, 0.01, 0.05, True, "ok"),
    (-0.03, 0.02, 0.05, True, "inconclusive"),
    (-0.09, 0.01, 0.05, True, "violated"),
    (0.30, 0.02, 0.10, False, "violated"),  # latency +30% with a 10% margin
    (0.05, 0.04, 0.10, False, "inconclusive"),
    (-0.20, 0.05, 0.10, False, "ok"),
    (float("nan"), 0.01, 0.05, True, "inconclusive"),
]


@pytest.mark.parametrize("rel,se,margin,hib,status", GUARDRAILS)
def test_guardrail_non_inferiority(rel, se, margin, hib, status):
    from analysis.decision import guardrail_status

    row = {"rel_lift": rel, "abs_lift": rel, "se": se, "control": 1.0, "margin": margin, "higher_is_better": hib}
    assert guardrail_status(row, 0.05) == status  # a known control level: the old relative test


def test_decision_rule_families():
    from scipy import stats

    from analysis.decision import decide
    from analysis.views import AnalysisConfig

    p = np.array([0.04, 0.01, 0.02, 0.5, 0.001])
    rel = 0.04 * stats.norm.isf(p / 2)  # the decision statistic (rel / rel_se) that gives these p
    df = pd.DataFrame({"metric": ["ctr", "a", "b", "c", "lat"], "role": ["primary", "secondary", "secondary",
                                                                         "secondary", "guardrail"],
                       "rel_lift": rel, "abs_lift": rel, "rel_se": [0.04] * 5, "se": [0.04] * 5, "control": 1.0,
                       "higher_is_better": [True, True, True, True, False]})
    out = decide(df, AnalysisConfig())
    assert out.p.tolist() == pytest.approx(p.tolist())
    assert out.p_adj.tolist()[:4] == pytest.approx([0.04, 0.03, 0.03, 0.5])  # primary at alpha; BH on the rest
    assert out.significant.tolist() == [True, True, True, False, False]
    assert out.guardrail_status.tolist() == ["", "", "", "", "violated"] and np.isnan(out.p_adj[4])
    # BH with 2 of 3 rejected: the secondaries' CIs at 1 - 2 * 0.05 / 3 (FCR-adjusted)
    assert out.ci_level.tolist()[1:4] == pytest.approx([1 - 0.1 / 3] * 3)


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjusted_levels_agree_with_adjusted_p(method, monkeypatch):
    """The CI level of each hypothesis rejects exactly when its adjusted p does (and p_adj equals
    statsmodels' multipletests)."""
    import gc

    from statsmodels.stats.multitest import multipletests

    # multipletests calls gc.collect() on every call: 400 full collections of the whole suite's heap
    # ran past the 600 s timeout on a loaded machine; the reference values do not depend on it
    monkeypatch.setattr(gc, "collect", lambda *a: 0)

    from analysis.multiple import adjust, levels

    rng = np.random.default_rng(1)
    for _ in range(400):
        p = rng.uniform(0, 0.2, rng.integers(1, 8)) ** rng.uniform(0.5, 2)
        adj = adjust(p, method)
        assert adj == pytest.approx(multipletests(p, method={"holm": "holm", "bh": "fdr_bh"}[method])[1])
        assert ((adj < 0.05) == (p < levels(p, method, 0.05))).all()


def test_significant_exactly_when_the_ci_excludes_zero_in_a_b_n():
    """Item 8/13 of issue 21: 10 arms on tiny groups, a Holm-adjusted winner never sits beside a CI
    that contains 0, and an unadjusted one neither (p and CI from the one decision statistic)."""
    from analysis.decision import decide
    from analysis.views import AnalysisConfig

    rng = np.random.default_rng(3)
    for _ in range(200):
        k = int(rng.integers(1, 10))
        rel = rng.normal(0.3, 0.5, k)
        se = rng.uniform(0.05, 0.4, k)
        df = pd.DataFrame({"metric": ["ctr"] * k, "role": ["primary"] * k, "rel_lift": rel, "rel_se": se,
                           "abs_lift": rel * 0.04, "se": se * 0.04, "control": [0.04] * k})
        out = decide(df, AnalysisConfig())
        excludes = (out.rel_ci_low > 0) | (out.rel_ci_high < 0)
        assert (out.significant == excludes).all()


def test_mde_comes_from_the_se_under_no_effect():
    """Issue 21 item 14: the MDE does not grow with the observed lift."""
    from analysis.decision import power_numbers

    base = {"control": 0.04, "se": 0.004, "n_control": 500, "n_treatment": 500}
    small = power_numbers({**base, "rel_lift": 0.01, "rel_se": 0.1}, 0.05, 0.8)
    huge = power_numbers({**base, "rel_lift": 5.0, "rel_se": 1.8}, 0.05, 0.8)
    assert small["mde_rel"] == pytest.approx(huge["mde_rel"]) == pytest.approx(2.8016 * 0.1, rel=1e-3)


def test_guardrail_status_uses_the_t_distribution_of_batches():
    """Issue 21 item 15: with 16 batches the guardrail's one-sided test is a t test, like latency's p."""
    from analysis.decision import guardrail_status

    row = {"rel_lift": 0.0, "abs_lift": 0.0, "se": 0.059, "control": 1.0, "margin": 0.1, "higher_is_better": False}
    assert guardrail_status(row, 0.05) == "ok"  # normal: 0.1 / 0.059 = 1.69 > 1.645
    assert guardrail_status({**row, "dof": 15}, 0.05) == "inconclusive"  # t(15): 1.69 < 1.753


FIELLER = [  # (d, c, var_d, var_c, cov_dc, q) -> interval, checked by hand
    (0.0, 1.0, 0.01, 0.0, 0.0, 2.0, (-0.2, 0.2)),  # a known control level: d/c +- q se/c
    (0.5, 2.0, 0.04, 0.0, 0.0, 1.0, (0.15, 0.35)),
    (0.1, 1.0, 0.01, 0.25, 0.0, 2.0, (float("nan"), float("nan"))),  # c not distinguishable from 0
    (0.1, -1.0, 0.01, 0.0, 0.0, 2.0, (float("nan"), float("nan"))),  # control not positive
]


@pytest.mark.parametrize("d,c,vd,vc,cov,q,expected", FIELLER)
def test_fieller_interval(d, c, vd, vc, cov, q, expected):
    from analysis.estimators import fieller

    assert fieller(d, c, vd, vc, cov, q) == pytest.approx(expected, nan_ok=True)


def test_fieller_excludes_zero_exactly_when_the_difference_test_rejects():
    """Issue 21: one decision. Fieller's relative CI contains 0 exactly when |d| / se <= q, and it is
    skewed (wider above) where the control level is noisy, unlike the symmetric delta interval."""
    from analysis.estimators import fieller

    rng = np.random.default_rng(3)
    for _ in range(2000):
        d, vd, vc = rng.normal(0, 0.1), rng.uniform(1e-4, 0.01), rng.uniform(0, 0.01)
        lo, hi = fieller(d, 1.0, vd, vc, -vc, 1.96)
        assert (lo <= 0 <= hi) == (abs(d) / np.sqrt(vd) <= 1.96)
    lo, hi = fieller(0.3, 1.0, 0.01, 0.01, -0.01, 1.96)
    assert hi - 0.3 > 0.3 - lo


def test_small_sample_dof_keeps_a_heavy_tailed_replay_at_its_level():
    """Issue 21 item 13: 120 users whose request counts are as unequal as the ML-100K replay's first
    4,000 requests (median 14, top user 262). Re-randomising the arms 400 times, the CUPED ratio test
    (HC2 variance, working-model dof) stays near 5%; the relative delta-method z test it replaced
    rejects in about 15% of the splits of this table."""
    from analysis.decision import p_value

    rng = np.random.default_rng(3)
    n = 120
    x = 10 * np.minimum(np.ceil(np.exp(rng.normal(np.log(14), 1.5, n))), 262)
    y = rng.binomial(x.astype(int), rng.beta(1, 8, n)).astype(float)
    base = pd.DataFrame({"y": y, "x": x, "pre": rng.poisson(3, n).astype(float)})
    new, old = [], []
    for _ in range(400):
        t = base.assign(arm=np.where(rng.random(n) < 0.5, "control", "treatment"))
        t.attrs["control"] = "control"
        r = Cuped().estimate(t, RATIO).as_row()
        new.append(p_value(r) < 0.05)
        old.append(2 * stats.norm.sf(abs(r["rel_lift"]) / r["rel_se"]) < 0.05)
    assert 0.02 <= np.mean(new) <= 0.075 and np.mean(old) > 0.1


def test_batch_ratio_clusters_by_user_where_a_users_requests_share_their_cost():
    """Issue 21: in a replay a user's requests come in bursts of one-arm batches and share their cost
    (history length), so windows of consecutive batches are not independent: clustering by window
    alone rejected an A/A too often; clustering by window and by user keeps it at its level."""
    from analysis.estimators import BatchRatio

    rng = np.random.default_rng(8)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")
    E, rej, rej_windows = 200, 0, 0
    for _ in range(E):
        U = 60
        cost, arm_of = rng.lognormal(0, 0.6, U), rng.choice(["control", "treatment"], U)
        users: list[int] = []  # batches in time order, each one user's (bursts of a user's requests)
        while len(users) < 600:
            users += [int(rng.integers(U))] * int(rng.geometric(0.15))
        users = np.array(users[:600])
        n = rng.integers(1, 4, len(users)).astype(float)
        bt = pd.DataFrame({"batch_no": np.arange(len(users)), "arm": arm_of[users], "user_id": users,
                           "requests": n, "latency_sum": cost[users] * n * rng.lognormal(0, 0.2, len(users))})
        bt.attrs["control"] = "control"
        e = BatchRatio().estimate(bt, lat)
        rej += e.p < 0.05
        rej_windows += BatchRatio().estimate(bt.drop(columns="user_id"), lat).p < 0.05
    assert 0.02 < rej / E < 0.08, rej / E
    assert rej_windows / E > 0.15, rej_windows / E


def test_batch_ratio_compares_arms_at_the_same_call_size():
    """Issue 24: a call costs a fixed part plus a part per request, and the random user split gives
    one arm more of the traffic, so larger calls and a lower per-request time. The raw per-request
    ratios then differed more than their variance said (learned-world A/A at 16,000 requests: 20.5%
    rejections; 49% in this simulation); each arm's line of call time on call size, read at the
    pooled mean size, keeps the A/A at its level, and a real per-request difference is still found."""
    from analysis.estimators import BatchRatio

    rng = np.random.default_rng(3)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")

    def run(per_request_t: float) -> pd.DataFrame:
        U, B = 400, 150
        treated = rng.random(U) < 0.5
        frames = []
        for b in range(B):
            users = rng.choice(U, rng.integers(4, 40), replace=False)
            load = rng.lognormal(0, 0.3)  # the machine's load, shared by both arms' calls
            for a, us in (("control", users[~treated[users]]), ("treatment", users[treated[users]])):
                ms = load * (0.5 + (per_request_t if a == "treatment" else 0.05) * len(us)) * rng.lognormal(0, 0.1)
                frames.append(pd.DataFrame({"batch_no": b, "arm": a, "user_id": us, "requests": 1.0,
                                            "latency_sum": ms / max(len(us), 1)}))
        bt = pd.concat(frames, ignore_index=True)
        bt.attrs["control"] = "control"
        return bt

    E = 100
    rej = sum(BatchRatio().estimate(run(0.05), lat).p < 0.05 for _ in range(E))
    assert rej / E < 0.12, rej / E  # the raw ratios: 0.46
    e = BatchRatio().estimate(run(0.08), lat)  # each request costs 60% more in the treatment
    assert e.p < 0.01 and e.abs_lift > 0 and "same call size" in e.note


def test_batch_ratio_compares_arms_at_the_same_history_load():
    """Issue 24: a request's cost grows with its user's history (seen-item filters), histories
    differ many-fold between users, and a call holds many users, so the user split gives one arm
    the longer histories; sharing a call's time evenly among its rows hides that from the user
    clustering (learned ML-100K A/A, 80 seeds: 12.5% rejections; 33% in this simulation). Reading
    each arm's line at the pooled call size and history items keeps the A/A at its level, and a
    treatment that costs more per history item is still found."""
    from analysis.estimators import BatchRatio

    rng = np.random.default_rng(4)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")

    def run(slower: float) -> pd.DataFrame:
        U, B = 300, 120
        treated, hist = rng.random(U) < 0.5, np.ceil(20 * rng.lognormal(0, 1.0, U))
        frames = []
        for b in range(B):
            users = rng.choice(U, rng.integers(4, 40), replace=False)
            load = rng.lognormal(0, 0.3)  # the machine's, shared by both arms' calls
            for a, us in (("control", users[~treated[users]]), ("treatment", users[treated[users]])):
                work = (0.02 + 0.001 * hist[us]).sum() * (1 + slower * (a == "treatment"))
                ms = load * (0.5 + work) * rng.lognormal(0, 0.1)
                frames.append(pd.DataFrame({"batch_no": b, "arm": a, "user_id": us, "requests": 1.0,
                                            "history_items": hist[us], "latency_sum": ms / max(len(us), 1)}))
        bt = pd.concat(frames, ignore_index=True)
        bt.attrs["control"] = "control"
        return bt

    E, rej, rej_size_only = 80, 0, 0
    for _ in range(E):
        bt = run(0.0)
        rej += BatchRatio().estimate(bt, lat).p < 0.05
        rej_size_only += BatchRatio().estimate(bt.drop(columns="history_items"), lat).p < 0.05
    assert rej / E < 0.12 and rej_size_only / E > 0.2, (rej / E, rej_size_only / E)
    e = BatchRatio().estimate(run(0.3), lat)  # 30% more per history item in the treatment
    assert e.p < 0.01 and e.abs_lift > 0 and "history items per call" in e.note


def test_batch_ratio_keeps_its_level_in_a_short_run_with_few_calls():
    """A short run has few serving calls (the default world: ~27 an arm); each arm's line on its
    call size and history load then follows its own calls, and plain residuals understate the
    variance (6 calls an arm here: 9.3% rejections). With HC3 residuals (each divided by 1 - its
    leverage) the A/A keeps its level (1.0%: conservative at this extreme)."""
    from analysis.estimators import BatchRatio

    rng = np.random.default_rng(11)
    lat = Metric(name="latency_ms", kind="ratio", num="latency_sum", den="requests", unit="batch")

    def run() -> pd.DataFrame:
        U, B = 400, 6
        treated, hist = rng.random(U) < 0.5, rng.normal(30, 2, U).round()
        frames = []
        for b in range(B):
            users = rng.choice(U, rng.integers(20, 80), replace=False)
            for a, us in (("control", users[~treated[users]]), ("treatment", users[treated[users]])):
                ms = (0.5 + (0.02 + 0.001 * hist[us]).sum()) * rng.lognormal(0, 0.15)
                frames.append(pd.DataFrame({"batch_no": b, "arm": a, "user_id": us, "requests": 1.0,
                                            "history_items": hist[us], "latency_sum": ms / max(len(us), 1)}))
        bt = pd.concat(frames, ignore_index=True)
        bt.attrs["control"] = "control"
        return bt

    E = 300
    rej = sum(BatchRatio().estimate(run(), lat).p < 0.05 for _ in range(E)) / E
    assert rej < 0.06, rej
