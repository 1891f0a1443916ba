"""Off-policy estimators for (position-wise) bandit feedback, one contract:
``Estimator().estimate(feedback: BanditFeedback, alpha=0.05) -> Estimate``.

With w_i = target_prob_i / pscore_i (Dudik et al. 2014; Su et al. 2020; OBP's formulas):

  DirectMethod (dm)                  mean(q_target)
  InverseProbabilityWeighting (ips)  mean(w r)
  SelfNormalizedIPS (snips)          sum(w r) / sum(w)
  DoublyRobust (dr)                  mean(q_target + w (r - q_logged))
  DoublyRobustWithShrinkage (dr_os)  DR with w shrunk to lam w / (w^2 + lam); ``lam=None`` picks lam
                                     on a grid by the estimated MSE (bias bound^2 + variance/n)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import BanditFeedback, OpeInputError
from .estimate import Estimate, Terms, from_terms


class BanditEstimator:
    """The contract: ``terms(feedback)`` (value, influence terms, weights); ``estimate`` adds the
    standard error over the feedback's clusters and the interval."""

    name: str

    def terms(self, fb: BanditFeedback) -> Terms:
        raise NotImplementedError

    def estimate(self, fb: BanditFeedback, alpha: float = 0.05) -> Estimate:
        return from_terms(self.name, self.terms(fb), cluster=fb.cluster, alpha=alpha)


@dataclass(frozen=True)
class DirectMethod(BanditEstimator):
    name: str = "dm"

    def terms(self, fb: BanditFeedback) -> Terms:
        _, qt = fb.require_model(self.name)
        return Terms.of_mean(qt, None)


@dataclass(frozen=True)
class InverseProbabilityWeighting(BanditEstimator):
    name: str = "ips"

    def terms(self, fb: BanditFeedback) -> Terms:
        w = fb.weight
        return Terms.of_mean(w * fb.reward, w)


@dataclass(frozen=True)
class SelfNormalizedIPS(BanditEstimator):
    name: str = "snips"

    def terms(self, fb: BanditFeedback) -> Terms:
        w = fb.weight
        if w.sum() <= 0:
            raise OpeInputError("snips: every importance weight is 0 (the target never takes a logged action)")
        v = float((w * fb.reward).sum() / w.sum())
        return Terms(v, w * (fb.reward - v) / w.mean(), w)  # the ratio's linearisation (delta method)


@dataclass(frozen=True)
class DoublyRobust(BanditEstimator):
    name: str = "dr"

    def terms(self, fb: BanditFeedback) -> Terms:
        ql, qt = fb.require_model(self.name)
        w = fb.weight
        return Terms.of_mean(qt + w * (fb.reward - ql), w)


LAMBDA_GRID = tuple(float(x) for x in np.geomspace(1e-2, 1e4, 25))


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(BanditEstimator):
    """DR with optimistic shrinkage (Su, Dimakopoulou, Krishnamurthy and Dudik 2020)."""

    lam: float | None = None
    name: str = "dr_os"

    def terms(self, fb: BanditFeedback) -> Terms:
        ql, qt = fb.require_model(self.name)
        w = fb.weight
        lam = self.lam if self.lam is not None else self.tune(fb)
        ws = w if np.isinf(lam) else lam * w / (w ** 2 + lam)
        return Terms.of_mean(qt + ws * (fb.reward - ql), ws)

    @staticmethod
    def tune(fb: BanditFeedback) -> float:
        """The lam minimising bias bound^2 + var/n, the bias bound being |mean((w - w_lam)(r - q))|
        (the gap to the unbiased DR); lam = inf (plain DR) is a candidate."""
        w, res = fb.weight, fb.reward - fb.q_logged
        best, best_mse = float("inf"), np.var(fb.q_target + w * res) / fb.n
        for lam in LAMBDA_GRID:
            ws = lam * w / (w ** 2 + lam)
            mse = float(np.mean((w - ws) * res) ** 2 + np.var(fb.q_target + ws * res) / fb.n)
            if mse < best_mse:
                best, best_mse = lam, mse
        return best
