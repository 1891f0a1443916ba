"""A run's off-policy logs, read from the catalog: the exploring (logging) arm's exposures with
their propensities, the clicks, and a target arm's slates on the same requests (``ope_slates``),
turned into :class:`SlateFeedback` (per slate) and :class:`BanditFeedback` (per exposure) for a
deterministic target, both clustered by user (the unit of randomisation: a user's requests are
dependent, so standard errors over requests would be too small). The reward model is cross-fitted
over requests.

Only requests whose logged slate and target slate are full (K positions) are used; the rest are
counted in ``dropped``. The target's probability of a logged item at a position is 1 when the
target shows that item there, else 0; of a prefix / a slate, 1 when they match throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.views import run_info

from .data import BanditFeedback, OpeInputError, SlateFeedback
from .reward_model import cross_fit


@dataclass(frozen=True)
class OpeLogs:
    run_id: str
    logging: str  # the logging arm
    target: str
    slate_size: int
    slates: SlateFeedback
    exposures: BanditFeedback  # one row per (request, position), cluster = user
    logged_reward: np.ndarray  # (n, K) clicks of the logged slates (the logging policy's on-policy value)
    dropped: int  # logged requests left out (a short logged or target slate)
    truth: dict[str, float]  # world oracle's CTR per arm (empty without an oracle)


def _logging_arm(con, run_id: str, arms: list[str], logging: str | None) -> str:
    found = [r[0] for r in con.execute("SELECT DISTINCT arm FROM exposures WHERE run_id = ? "
                                       "AND pscore IS NOT NULL ORDER BY arm", [run_id]).fetchall()]
    if not found:
        raise OpeInputError(f"run {run_id!r} has no propensities: no arm logged with `explore` (give the logging "
                            "arm an explore block and name the targets in [ope])")
    if logging is None:
        return found[0]
    if logging not in found:
        raise OpeInputError(f"run {run_id!r}: arm {logging!r} logged no propensities (arms that did: "
                            f"{', '.join(found)})")
    return logging


def _arms(con, run_id: str) -> list[str]:
    run_info(con, run_id)  # NotFoundError naming the recent runs
    return [r[0] for r in con.execute("SELECT arm FROM arms WHERE run_id = ? ORDER BY arm", [run_id]).fetchall()]


def _matrix(rows, n: int, k: int, fill) -> np.ndarray:
    out = np.full((n, k), fill, dtype=float)
    for i, p, v in rows:
        out[i, p] = v
    return out


def _grid(con, run_id: str, logging: str, target: str):
    """Per logged request (in request order): logged items, propensities, clicks, target items."""
    df = con.execute("""
        SELECT e.request_id, e.user_id, e.position, e.item_id, e.pscore, e.pscore_cascade, e.pscore_slate,
               (f.request_id IS NOT NULL)::DOUBLE AS click, s.item_id AS target_item
        FROM exposures e
        LEFT JOIN feedback f ON f.run_id = e.run_id AND f.request_id = e.request_id AND f.position = e.position
             AND f.event = 'click'
        LEFT JOIN ope_slates s ON s.run_id = e.run_id AND s.request_id = e.request_id AND s.position = e.position
             AND s.arm = $target
        WHERE e.run_id = $run AND e.arm = $logging AND e.pscore IS NOT NULL
        ORDER BY e.request_id, e.position""", {"run": run_id, "logging": logging, "target": target}).df()
    return df


def _check_positive(df, run_id: str, logging: str) -> None:
    bad = df[(df["pscore"] <= 0) | (df["pscore_cascade"] <= 0) | (df["pscore_slate"] <= 0)]
    if len(bad):
        r = bad.iloc[0]
        raise OpeInputError(f"run {run_id!r}: arm {logging!r} logged a zero propensity (request {int(r.request_id)}, "
                            f"position {int(r.position)}): off-policy estimates need a positive propensity for every "
                            "logged action")


def load_logs(con, run_id: str, target: str, logging: str | None = None, prior: float = 20.0) -> OpeLogs:
    arms = _arms(con, run_id)
    if target not in arms:
        raise OpeInputError(f"run {run_id!r} has no arm {target!r} (arms: {', '.join(arms)})")
    logging = _logging_arm(con, run_id, arms, logging)
    if target == logging:
        raise OpeInputError(f"run {run_id!r}: arm {target!r} is the logging arm itself (its CTR is the logged CTR); "
                            "choose another target")
    has_shadow = con.execute(
        "SELECT count(*) FROM ope_slates WHERE run_id = ? AND arm = ?", [run_id, target]).fetchall()[0][0] > 0
    if not has_shadow:
        raise OpeInputError(f"run {run_id!r} did not record arm {target!r}'s slates on the logged requests (name it "
                            "in the run config's [ope] targets)")
    df = _grid(con, run_id, logging, target)
    _check_positive(df, run_id, logging)
    k = int(df["position"].max()) + 1
    full = df.groupby("request_id").filter(lambda g: len(g) == k and g["target_item"].notna().all())
    req = full["request_id"].to_numpy()
    dropped = df["request_id"].nunique() - len(np.unique(req))
    if not len(full):
        raise OpeInputError(f"run {run_id!r}: no logged request of arm {logging!r} has a full slate of {k} with "
                            f"arm {target!r}'s slate beside it")
    n = len(full) // k
    shape = (n, k)
    col = {c: full[c].to_numpy().reshape(shape) for c in ("item_id", "pscore", "pscore_cascade", "click",
                                                           "target_item")}
    slate_p = full["pscore_slate"].to_numpy().reshape(shape)[:, 0]
    users = full["user_id"].to_numpy().reshape(shape)[:, 0]
    return _feedback(run_id, logging, target, col, slate_p, users, dropped, prior, truth_ctr(con, run_id))


def _feedback(run_id, logging, target, col, slate_p, users, dropped, prior, truth) -> OpeLogs:
    n, k = col["item_id"].shape
    a, t, r = col["item_id"].astype(np.int64), col["target_item"].astype(np.int64), col["click"]
    match = (a == t).astype(float)
    casc = np.cumprod(match, axis=1)
    units = np.repeat(np.arange(n), k)
    pos = np.tile(np.arange(k), n)
    q_a, q_t = cross_fit(units, a.ravel(), pos, r.ravel(), [(a.ravel(), pos), (t.ravel(), pos)], prior=prior)
    q_a, q_t = q_a.reshape(n, k), q_t.reshape(n, k)
    future = np.concatenate([np.cumsum(q_t[:, ::-1], axis=1)[:, ::-1][:, 1:], np.zeros((n, 1))], axis=1)
    slates = SlateFeedback(r, col["pscore"], col["pscore_cascade"], slate_p, match, casc, casc[:, -1],
                           q_a + future, q_t + future, users)
    expo = BanditFeedback(r.ravel(), col["pscore"].ravel(), match.ravel(), q_a.ravel(), q_t.ravel(),
                          np.repeat(users, k))
    return OpeLogs(run_id, logging, target, k, slates, expo, r, dropped, truth)


def truth_ctr(con, run_id: str) -> dict[str, float]:
    rows = con.execute("SELECT arm, avg(value) FROM truth WHERE run_id = ? AND metric = 'ctr' GROUP BY arm",
                       [run_id]).fetchall()
    return {a: float(v) for a, v in rows}
