"""The default metrics, defined once: name, kind, SQL over ``v_user_metrics`` and the world truth.

Each :class:`MetricDef` says how the analysis tests the metric (``kind``, ``num``/``den``: SQL
expressions over the per-user columns of analysis/views.sql; analysis.views.DEFAULT_METRICS is
built from :data:`METRICS`) and, when the world oracle knows it, how its true value follows from
one counterfactual pass (``truth``: a numpy function of the pass's per-user sums,
simulator/engine/oracle.py). A new metric is one entry here (plus its column in views.sql when it
needs a new one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class UserSums:
    """Per-user sums of one oracle pass (arrays over all users; users without a request are 0)."""

    requests: np.ndarray
    exposures: np.ndarray
    clicks: np.ndarray  # expected clicks (the world's click probabilities, summed)
    dcg: np.ndarray  # expected DCG (one click per slate: NDCG = DCG)
    sampled_clicks: np.ndarray  # the clicks sampled on the way (trajectories depend on them)
    sessions: np.ndarray  # distinct sessions per user
    days: np.ndarray  # distinct days with a request per user

    @property
    def active(self) -> np.ndarray:
        return self.requests > 0

    @property
    def n_active(self) -> int:
        return max(int(self.active.sum()), 1)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Literal["mean", "proportion", "ratio"]
    num: str
    den: str | None = None
    unit: Literal["user", "batch"] = "user"
    higher_is_better: bool = True
    description: str = ""
    truth: Callable[[UserSums], float] | None = None  # the world oracle's value (None: not known)


def _click_any(s: UserSums) -> float:
    return float((s.sampled_clicks[s.active] > 0).mean()) if s.active.any() else float("nan")


METRICS: tuple[MetricDef, ...] = (
    MetricDef("ctr", "ratio", "clicks", "exposures", description="clicks / exposures",
              truth=lambda s: s.clicks.sum() / max(s.exposures.sum(), 1.0)),
    MetricDef("ndcg", "ratio", "ndcg_sum", "requests",
              description="mean slate NDCG (clicks as gains)",
              truth=lambda s: s.dcg.sum() / max(s.requests.sum(), 1.0)),
    MetricDef("consumption", "mean", "consumption", description="consumed value per user",
              truth=lambda s: s.clicks.sum() / s.n_active),  # each click consumed, value 1
    MetricDef("click_any", "proportion", "any_click", description="users with >=1 click",
              truth=_click_any),
    MetricDef("session_length", "ratio", "requests", "sessions", description="requests per session",
              truth=lambda s: s.requests.sum() / max(s.sessions.sum(), 1)),
    MetricDef("return_rate", "proportion", "returned",
              description="users who came back for a second session",
              truth=lambda s: float(np.sum(s.sessions[s.active] >= 2)) / s.n_active),
    MetricDef("active_days", "mean", "active_days", description="days with a request per user",
              truth=lambda s: float(np.sum(s.days[s.active])) / s.n_active),
    MetricDef("novelty", "ratio", "novelty_sum", "exposures",
              description="mean -log2 popularity of exposed items"),
    MetricDef("diversity", "ratio", "ild_sum", "requests",
              description="intra-list diversity (1 - share of same-attribute pairs)"),
    MetricDef("latency_ms", "ratio", "latency_sum", "requests", unit="batch",
              higher_is_better=False,
              description="serving time per request (pipeline calls, amortised), tested over "
                          "serving batches"),
)
TRUTH_METRICS = tuple(m.name for m in METRICS if m.truth is not None)  # the world oracle's metrics


def truth_values(sums: UserSums) -> dict[str, float]:
    """Every known metric's value in one oracle pass."""
    return {m.name: m.truth(sums) for m in METRICS if m.truth is not None}
