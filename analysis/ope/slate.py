"""Off-policy estimators for slates, one contract:
``Estimator().estimate(feedback: SlateFeedback, alpha=0.05) -> Estimate`` (the value is the
expected total reward of a slate; divide by the slate size for a per-position CTR).

Per logged slate i, with per-position rewards r_k and ratios of target to logging probability
of the logged item at position k (marginal: w_k), of the prefix a_1..a_k (cascade: w_1:k) and of
the slate (w):

  SlateStandardIPS (sips)            w * sum_k r_k
  SlateIndependentIPS (iips)         sum_k w_k r_k                 (Li et al. 2018)
  SlateRewardInteractionIPS (rips)   sum_k w_1:k r_k               (McInerney et al. 2020)
  SlatePseudoInverse (pi)            (sum_k w_k - K + 1) sum_k r_k (Swaminathan et al. 2017, the
                                     closed form for an additive slate reward; exact when the
                                     logging policy factorises over positions)
  SlateCascadeDR (cascade_dr)        sum_k w_1:k (r_k - Q_k) + w_1:k-1 E_target[Q_k]
                                     (Kiyohara et al. 2022; w_1:0 = 1)
  SlateDirectMethod (slate_dm)       E_target[Q_1] (the reward model's slate value)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SlateFeedback
from .estimate import Estimate, Terms, from_terms


def _ratio(target: np.ndarray, logging: np.ndarray) -> np.ndarray:
    return target / logging


class SlateEstimator:
    """The contract: ``terms(feedback)`` per slate; ``estimate`` adds the standard error over
    the feedback's clusters (default: slates) and the interval."""

    name: str

    def terms(self, fb: SlateFeedback) -> Terms:
        raise NotImplementedError

    def estimate(self, fb: SlateFeedback, alpha: float = 0.05) -> Estimate:
        return from_terms(self.name, self.terms(fb), cluster=fb.cluster, alpha=alpha)


@dataclass(frozen=True)
class SlateStandardIPS(SlateEstimator):
    name: str = "sips"

    def terms(self, fb: SlateFeedback) -> Terms:
        w = _ratio(fb.target_prob_slate, fb.pscore_slate)
        return Terms.of_mean(w * fb.reward.sum(1), w)


@dataclass(frozen=True)
class SlateIndependentIPS(SlateEstimator):
    name: str = "iips"

    def terms(self, fb: SlateFeedback) -> Terms:
        w = _ratio(fb.target_prob, fb.pscore)
        return Terms.of_mean((w * fb.reward).sum(1), w.mean(1))


@dataclass(frozen=True)
class SlateRewardInteractionIPS(SlateEstimator):
    name: str = "rips"

    def terms(self, fb: SlateFeedback) -> Terms:
        w = _ratio(fb.target_prob_cascade, fb.pscore_cascade)
        return Terms.of_mean((w * fb.reward).sum(1), w.mean(1))


@dataclass(frozen=True)
class SlatePseudoInverse(SlateEstimator):
    name: str = "pi"

    def terms(self, fb: SlateFeedback) -> Terms:
        w = _ratio(fb.target_prob, fb.pscore)
        g = w.sum(1) - fb.slate_size + 1
        return Terms.of_mean(g * fb.reward.sum(1), g)


@dataclass(frozen=True)
class SlateCascadeDR(SlateEstimator):
    name: str = "cascade_dr"

    def terms(self, fb: SlateFeedback) -> Terms:
        ql, qt = fb.require_model(self.name)
        w = _ratio(fb.target_prob_cascade, fb.pscore_cascade)
        w_prev = np.concatenate([np.ones((fb.n, 1)), w[:, :-1]], axis=1)
        psi = (w * (fb.reward - ql) + w_prev * qt).sum(1)
        return Terms.of_mean(psi, w.mean(1))


@dataclass(frozen=True)
class SlateDirectMethod(SlateEstimator):
    name: str = "slate_dm"

    def terms(self, fb: SlateFeedback) -> Terms:
        _, qt = fb.require_model(self.name)
        return Terms.of_mean(qt[:, 0], None)
