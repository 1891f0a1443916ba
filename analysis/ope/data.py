"""Logged feedback for off-policy evaluation, checked on construction (one-line errors).

Two shapes, as in the Open Bandit Pipeline (OBP):

- :class:`BanditFeedback`  one row per (round, position): reward, the logging policy's marginal
  probability of the logged action at that position (``pscore``), the target's probability of
  that same action (``target_prob``) and, for model-based estimators, the reward model at the
  logged action (``q_logged``) and its expectation under the target (``q_target``). ``cluster``
  names the independent unit (a user: their requests and positions are dependent); default every row.
- :class:`SlateFeedback`   one row per slate, (n, K) arrays: per-position rewards; the logging and
  target probabilities of the logged item at each position (marginal), of the logged prefix up to
  each position (cascade, the joint of positions 1..k) and of the whole slate; cumulative reward
  models ``q_logged`` = Q_k(x, a_1..a_k) and ``q_target`` = E_{a ~ target}[Q_k(x, a_1..a_{k-1}, a)].

Only what the estimators read is stored, so a target's distribution over thousands of items never
has to be materialised (a deterministic target needs one probability per logged position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.core.errors import SimError


class OpeInputError(SimError):
    """Invalid logged feedback for an off-policy estimator (one line, exit 2)."""


def _array(name: str, v, n: int | None, ndim: int) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != ndim:
        raise OpeInputError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise OpeInputError(f"{name}: length {a.shape[0]} does not match reward's {n}")
    if a.size and not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a.ravel()))[0])
        raise OpeInputError(f"{name}: value {a.ravel()[i]} at index {i} is not a finite number")
    return a


def _probability(name: str, a: np.ndarray, positive: bool) -> None:
    bad = (a <= 0) | (a > 1) if positive else (a < 0) | (a > 1)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        want = "in (0, 1]" if positive else "in [0, 1]"
        hint = " (the logging policy never shows this action: off-policy estimates need a positive " \
               "propensity for every logged action)" if positive and a.ravel()[i] <= 0 else ""
        raise OpeInputError(f"{name}: value {a.ravel()[i]:g} at index {i} is not a probability {want}{hint}")


def _optional(name: str, v, n: int, ndim: int, shape: tuple | None = None) -> np.ndarray | None:
    if v is None:
        return None
    a = _array(name, v, n, ndim)
    if shape is not None and a.shape != shape:
        raise OpeInputError(f"{name}: shape {a.shape} does not match reward's {shape}")
    return a


def _cluster(v, n: int) -> np.ndarray | None:
    cl = None if v is None else np.asarray(v)
    if cl is not None and cl.shape != (n,):
        raise OpeInputError(f"cluster: length {len(cl)} does not match reward's {n}")
    return cl


@dataclass(frozen=True)
class BanditFeedback:
    reward: np.ndarray  # (n,)
    pscore: np.ndarray  # (n,) logging policy's probability of the logged action, in (0, 1]
    target_prob: np.ndarray  # (n,) target policy's probability of the logged action, in [0, 1]
    q_logged: np.ndarray | None = None  # (n,) reward model at the logged action
    q_target: np.ndarray | None = None  # (n,) reward model's expectation under the target
    cluster: np.ndarray | None = None  # (n,) independent unit of each row (default: the row)

    def __post_init__(self) -> None:
        r = _array("reward", self.reward, None, 1)
        if len(r) == 0:
            raise OpeInputError("reward: no logged rounds")
        n = len(r)
        p, t = _array("pscore", self.pscore, n, 1), _array("target_prob", self.target_prob, n, 1)
        _probability("pscore", p, positive=True)
        _probability("target_prob", t, positive=False)
        ql, qt = _optional("q_logged", self.q_logged, n, 1), _optional("q_target", self.q_target, n, 1)
        if (ql is None) != (qt is None):
            raise OpeInputError("q_logged and q_target: give both reward-model arrays or neither")
        cl = _cluster(self.cluster, n)
        for k, v in (("reward", r), ("pscore", p), ("target_prob", t), ("q_logged", ql), ("q_target", qt),
                     ("cluster", cl)):
            object.__setattr__(self, k, v)

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def weight(self) -> np.ndarray:
        return self.target_prob / self.pscore

    def require_model(self, who: str) -> tuple[np.ndarray, np.ndarray]:
        if self.q_logged is None:
            raise OpeInputError(f"{who} needs a reward model: q_logged and q_target are missing")
        return self.q_logged, self.q_target


_SLATE_PROBS = ("pscore", "pscore_cascade", "target_prob", "target_prob_cascade")


@dataclass(frozen=True)
class SlateFeedback:
    reward: np.ndarray  # (n, K) reward at each position
    pscore: np.ndarray  # (n, K) logging marginal of the logged item at position k
    pscore_cascade: np.ndarray  # (n, K) logging joint of the logged prefix a_1..a_k
    pscore_slate: np.ndarray  # (n,) logging probability of the whole logged slate
    target_prob: np.ndarray  # (n, K) target marginal of the logged item at position k
    target_prob_cascade: np.ndarray  # (n, K) target joint of the logged prefix
    target_prob_slate: np.ndarray  # (n,)
    q_logged: np.ndarray | None = None  # (n, K) Q_k(x, a_1..a_k): expected reward from k on
    q_target: np.ndarray | None = None  # (n, K) E_{a ~ target}[Q_k(x, a_1..a_{k-1}, a)]
    cluster: np.ndarray | None = None  # (n,) independent unit of each slate (default: the slate)

    def __post_init__(self) -> None:
        r = _array("reward", self.reward, None, 2)
        if r.shape[0] == 0 or r.shape[1] == 0:
            raise OpeInputError(f"reward: no logged slates (shape {r.shape})")
        n, shape = r.shape[0], r.shape
        vals = {"reward": r}
        for k in _SLATE_PROBS:
            a = _optional(k, getattr(self, k), n, 2, shape)
            _probability(k, a, positive=k.startswith("pscore"))
            vals[k] = a
        for k in ("pscore_slate", "target_prob_slate"):
            a = _array(k, getattr(self, k), n, 1)
            _probability(k, a, positive=k == "pscore_slate")
            vals[k] = a
        for k in ("q_logged", "q_target"):
            vals[k] = _optional(k, getattr(self, k), n, 2, shape)
        if (vals["q_logged"] is None) != (vals["q_target"] is None):
            raise OpeInputError("q_logged and q_target: give both reward-model arrays or neither")
        vals["cluster"] = _cluster(self.cluster, n)
        for k, v in vals.items():
            object.__setattr__(self, k, v)

    @property
    def n(self) -> int:
        return self.reward.shape[0]

    @property
    def slate_size(self) -> int:
        return self.reward.shape[1]

    def require_model(self, who: str) -> tuple[np.ndarray, np.ndarray]:
        if self.q_logged is None:
            raise OpeInputError(f"{who} needs a reward model: q_logged and q_target are missing")
        return self.q_logged, self.q_target
