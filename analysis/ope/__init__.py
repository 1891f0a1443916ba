"""Off-policy evaluation (OPE): estimate a target policy's value from logs with propensities.

``data`` the checked feedback shapes, ``bandit``/``slate`` the estimators (one contract each),
``registry`` the one table of estimators, ``reward_model`` the reward models of DM/DR,
``logs`` reading a run's propensity logs from the catalog.
"""

from .data import BanditFeedback, OpeInputError, SlateFeedback
from .estimate import Estimate
from .registry import ESTIMATORS, estimate_all, get

__all__ = ["BanditFeedback", "SlateFeedback", "OpeInputError", "Estimate", "ESTIMATORS", "estimate_all", "get"]
