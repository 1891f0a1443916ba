"""The one registry of off-policy estimators: name -> class, by kind of feedback."""

from __future__ import annotations

from .bandit import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedIPS,
)
from .data import BanditFeedback, OpeInputError, SlateFeedback
from .estimate import Estimate
from .slate import (
    SlateCascadeDR,
    SlateDirectMethod,
    SlateIndependentIPS,
    SlatePseudoInverse,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)

BANDIT = {c().name: c for c in (DirectMethod, InverseProbabilityWeighting, SelfNormalizedIPS, DoublyRobust,
                                DoublyRobustWithShrinkage)}
SLATE = {c().name: c for c in (SlateDirectMethod, SlateStandardIPS, SlateIndependentIPS, SlateRewardInteractionIPS,
                               SlatePseudoInverse, SlateCascadeDR)}
ESTIMATORS = {**BANDIT, **SLATE}
MODEL_BASED = frozenset({"dm", "dr", "dr_os", "slate_dm", "cascade_dr"})


def get(name: str):
    try:
        return ESTIMATORS[name]()
    except KeyError:
        raise OpeInputError(f"unknown off-policy estimator {name!r} (known: {', '.join(ESTIMATORS)})") from None


def estimate_all(feedback: BanditFeedback | SlateFeedback, names: list[str] | None = None,
                 alpha: float = 0.05) -> list[Estimate]:
    """Every estimator of the feedback's kind (model-based ones only with a reward model)."""
    table = BANDIT if isinstance(feedback, BanditFeedback) else SLATE
    names = names or [n for n in table if feedback.q_logged is not None or n not in MODEL_BASED]
    return [get(n).estimate(feedback, alpha) for n in names]
