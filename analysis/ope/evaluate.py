"""The target arm's off-policy estimates from a run's logs: every estimator side by side as a
per-exposure CTR, with its lift over the logging policy (the same rows: paired), interval and
effective sample size, and the warnings (heavy weights, dropped requests)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .bandit import BanditEstimator
from .estimate import Estimate, Terms, from_terms
from .logs import OpeLogs
from .registry import BANDIT, SLATE, get


@dataclass(frozen=True)
class OpeRow:
    estimate: Estimate  # the target's CTR (per exposure)
    lift: Estimate  # target CTR - logging policy's CTR
    kind: str  # "exposure" (per-position bandit estimators) | "slate"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.estimate.to_dict(),
                "lift": {k: getattr(self.lift, k) for k in ("value", "se", "ci_low", "ci_high")}}


@dataclass(frozen=True)
class OpeResult:
    run_id: str
    logging: str
    target: str
    slate_size: int
    n_requests: int
    logged_ctr: Estimate
    rows: list[OpeRow]
    true_ctr: float | None  # world oracle's CTR of the target (None: no oracle)
    true_logged_ctr: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "logging": self.logging, "target": self.target, "slate_size": self.slate_size,
                "n_requests": self.n_requests, "logged_ctr": asdict(self.logged_ctr),
                "true_ctr": self.true_ctr, "true_logged_ctr": self.true_logged_ctr,
                "estimators": [r.to_dict() for r in self.rows], "warnings": self.warnings}


def _scaled(t: Terms, s: float) -> Terms:
    return Terms(t.value * s, t.centred * s, t.weight)


def evaluate(logs: OpeLogs, alpha: float = 0.05) -> OpeResult:
    k = logs.slate_size
    fb, sl = logs.exposures, logs.slates
    base_rows = Terms.of_mean(fb.reward, None)  # logging policy's CTR, per exposure
    base_slates = Terms.of_mean(logs.logged_reward.sum(1) / k, None)
    logged = from_terms("logged", base_rows, cluster=fb.cluster, alpha=alpha)
    rows = []
    for name in BANDIT:
        est: BanditEstimator = get(name)
        t = est.terms(fb)
        rows.append(OpeRow(from_terms(est.name, t, cluster=fb.cluster, alpha=alpha),
                           from_terms(est.name, t.minus(base_rows), cluster=fb.cluster, alpha=alpha), "exposure"))
    for name in SLATE:
        est = get(name)
        t = _scaled(est.terms(sl), 1.0 / k)
        rows.append(OpeRow(from_terms(est.name, t, cluster=sl.cluster, alpha=alpha),
                           from_terms(est.name, t.minus(base_slates), cluster=sl.cluster, alpha=alpha), "slate"))
    return OpeResult(logs.run_id, logs.logging, logs.target, k, sl.n, logged, rows, logs.truth.get(logs.target),
                     logs.truth.get(logs.logging), _warnings(logs, rows))


def _warnings(logs: OpeLogs, rows: list[OpeRow]) -> list[str]:
    out = []
    heavy = [r.estimate for r in rows if r.estimate.heavy_weights]
    for e in heavy:
        out.append(f"{e.estimator}: heavy importance weights (effective sample size {e.ess:.0f} of {e.n}, largest "
                   f"weight {e.max_weight:.3g}): its interval is unreliable")
    match = float(np.mean(logs.slates.target_prob_slate))
    if match < 0.01:
        out.append(f"the target's slate equals the logged one in {match:.2%} of requests: slate-level estimators "
                   "(sips) see almost no data")
    if logs.dropped:
        out.append(f"{logs.dropped} logged requests with a short slate were left out")
    return out
