"""Power and minimum detectable effect before a run (statsmodels power classes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from simulator.core.errors import ConfigError


@dataclass
class PowerResult:
    kind: str
    baseline: float
    sd: float
    alpha: float
    power: float
    n_per_arm: float
    mde_abs: float
    mde_rel: float
    ratio: float = 1.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check(alpha: float, power: float | None, baseline: float, kind: str, sd: float | None) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if power is not None and not 0 < power < 1:
        raise ConfigError(f"power must be in (0, 1), got {power}")
    if kind == "proportion" and not 0 < baseline < 1:
        raise ConfigError(f"baseline proportion must be in (0, 1), got {baseline}")
    if kind == "mean" and not (sd and sd > 0):
        raise ConfigError("a mean metric needs --sd > 0 (per-user standard deviation)")
    if kind not in ("proportion", "mean"):
        raise ConfigError(f"kind must be 'proportion' or 'mean', got {kind!r}")


def sample_size(baseline: float, mde_rel: float, *, kind: str = "proportion", sd: float | None = None,
                alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0) -> PowerResult:
    """Users per (control) arm to detect a relative lift ``mde_rel`` with two-sided ``alpha``."""
    _check(alpha, power, baseline, kind, sd)
    if mde_rel == 0:
        raise ConfigError("mde must be non-zero")
    target = baseline * (1 + mde_rel)
    if kind == "proportion":
        if not 0 < target < 1:
            raise ConfigError(f"baseline*(1+mde) = {target} is not a proportion")
        es = proportion_effectsize(target, baseline)
        n = NormalIndPower().solve_power(effect_size=es, alpha=alpha, power=power, ratio=ratio)
        sd = float(np.sqrt(baseline * (1 - baseline)))
    else:
        es = baseline * mde_rel / sd
        n = TTestIndPower().solve_power(effect_size=es, alpha=alpha, power=power, ratio=ratio)
    return PowerResult(kind, baseline, float(sd), alpha, power, float(np.ceil(n)), baseline * mde_rel, mde_rel, ratio)


def mde(baseline: float, n_per_arm: float, *, kind: str = "proportion", sd: float | None = None,
        alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0) -> PowerResult:
    """Smallest relative lift detectable with ``n_per_arm`` users per arm."""
    _check(alpha, power, baseline, kind, sd)
    if n_per_arm < 2:
        raise ConfigError(f"n per arm must be >= 2, got {n_per_arm}")
    if kind == "proportion":
        es = NormalIndPower().solve_power(nobs1=n_per_arm, alpha=alpha, power=power, ratio=ratio)
        # invert Cohen's h: h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p0))
        p1 = np.sin(np.arcsin(np.sqrt(baseline)) + es / 2) ** 2
        d = p1 - baseline
        sd = float(np.sqrt(baseline * (1 - baseline)))
    else:
        es = TTestIndPower().solve_power(nobs1=n_per_arm, alpha=alpha, power=power, ratio=ratio)
        d = es * sd
    return PowerResult(kind, baseline, float(sd), alpha, power, float(n_per_arm), float(d), float(d / baseline), ratio)


def power_from_se(effect: float, se: float, alpha: float = 0.05) -> float:
    """Power of a two-sided z test for a true ``effect`` whose estimate has standard error ``se``."""
    if not (np.isfinite(effect) and np.isfinite(se) and se > 0):
        return float("nan")
    z = stats.norm.ppf(1 - alpha / 2)
    k = abs(effect) / se
    return float(stats.norm.sf(z - k) + stats.norm.cdf(-z - k))


def plan_from_run(rel_se: float, n_per_arm: float, control: float, *, mde_rel: float | None = None,
                  n: float | None = None, alpha: float = 0.05, power: float = 0.8) -> PowerResult:
    """Sample size (for ``mde_rel``) or MDE (for ``n`` users per arm) at a finished run's observed
    variance: the relative lift's SE scales as 1/sqrt(users per arm)."""
    if (mde_rel is None) == (n is None):
        raise ConfigError("give exactly one of --mde (-> sample size) or --n (-> MDE)")
    if not (np.isfinite(rel_se) and rel_se > 0 and n_per_arm >= 2):
        raise ConfigError("the run's primary metric has no usable standard error")
    k = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    unit_sd = rel_se * np.sqrt(n_per_arm)  # SE of the relative lift with one user per arm
    if mde_rel is not None:
        if mde_rel == 0:
            raise ConfigError("mde must be non-zero")
        n = float(np.ceil((k * unit_sd / abs(mde_rel)) ** 2))
    else:
        mde_rel = float(k * unit_sd / np.sqrt(n))
    return PowerResult("run", control, float(unit_sd * control), alpha, power, float(n), float(mde_rel * control),
                       float(mde_rel))
