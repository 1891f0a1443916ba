"""Analysis of a team-draft interleaving run: which ranker do users prefer, and is the draft fair?

Every request shows one slate drafted from both rankers; each position belongs to the team (arm)
that picked it and a click credits that team. A request is a **win** for the treatment when its
team got more clicks than the control's, a **loss** in the opposite case, a **tie** otherwise
(no click, or as many for both). Users are the units (a user's requests are not independent):

- **preference share** = wins / (wins + losses) over all users, with a delta-method CI over users
  and a z-test of "no preference" (0.5); the per-user **sign test** (users with more wins than
  losses vs the reverse) is shown beside it;
- **balance** (the interleaving analogue of SRM): the team picking first is a fair coin per
  request, so its counts are tested against 50/50; the exposure share per team is shown;
- **per-position credit**: clicks per team and slate position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import dist as stats
from .estimators import influence
from .srm import SRMResult, srm_test

_PER_USER = """
WITH clicks AS (
  SELECT request_id, count(*) FILTER (WHERE arm = $t) AS ct, count(*) FILTER (WHERE arm = $c) AS cc
  FROM feedback WHERE run_id = $run_id AND event = 'click' GROUP BY ALL)
SELECT r.user_id, count(*) AS requests,
       count(*) FILTER (WHERE coalesce(ct, 0) > coalesce(cc, 0)) AS wins,
       count(*) FILTER (WHERE coalesce(cc, 0) > coalesce(ct, 0)) AS losses
FROM requests r LEFT JOIN clicks USING (request_id)
WHERE r.run_id = $run_id GROUP BY ALL ORDER BY r.user_id"""


@dataclass(frozen=True)
class Preference:
    control: str
    treatment: str
    share: float  # wins / (wins + losses): > 0.5 = the treatment is preferred
    ci: tuple[float, float]
    se: float
    p: float
    users: int
    wins: int
    losses: int
    ties: int
    sign_test_p: float  # users preferring the treatment vs users preferring the control
    users_for: int
    users_against: int
    alpha: float

    @property
    def significant(self) -> bool:
        return bool(self.p < self.alpha)

    @property
    def winner(self) -> str | None:
        return (self.treatment if self.share > 0.5 else self.control) if self.significant else None


def user_outcomes(con, run_id: str, control: str, treatment: str) -> pd.DataFrame:
    """Per user: requests, wins and losses of the treatment's team (ties = the rest)."""
    return con.execute(_PER_USER, {"run_id": run_id, "t": treatment, "c": control}).df()


def preference(users: pd.DataFrame, control: str, treatment: str, alpha: float = 0.05) -> Preference:
    """The preference share with its delta-method CI over users, and the per-user sign test."""
    w, lo = users["wins"].to_numpy(float), users["losses"].to_numpy(float)
    decided = w + lo
    n = len(users)
    if decided.sum() == 0 or n < 2:
        share, se, p = float("nan"), float("nan"), float("nan")
    else:
        share, phi = influence(w, decided)  # share = sum(w) / sum(w + l); phi: each user's influence
        se = float(phi.std(ddof=1) / np.sqrt(n))
        p = float(2 * stats.norm.sf(abs(share - 0.5) / se)) if se > 0 else float("nan")
    z = stats.norm.ppf(1 - alpha / 2)
    k_for, k_against = int((w > lo).sum()), int((lo > w).sum())
    sign_p = stats.sign_test_p(k_for, k_for + k_against) if k_for + k_against else float("nan")
    return Preference(control, treatment, share, (share - z * se, share + z * se), se, p, n, int(w.sum()),
                      int(lo.sum()), int(users["requests"].sum() - decided.sum()), sign_p, k_for, k_against, alpha)


def balance(con, run_id: str, control: str, treatment: str) -> tuple[SRMResult, dict]:
    """Chi-square of the team that picked first against a fair coin; exposure shares per team."""
    first = dict(con.execute("SELECT arm, count(*) FROM exposures WHERE run_id = ? AND position = 0 GROUP BY ALL",
                             [run_id]).fetchall())
    shown = dict(con.execute("SELECT arm, count(*) FROM exposures WHERE run_id = ? GROUP BY ALL", [run_id]).fetchall())
    res = srm_test({a: int(first.get(a, 0)) for a in (control, treatment)}, {control: 1.0, treatment: 1.0})
    res.what = "team-draft first pick"
    total = max(sum(shown.values()), 1)
    return res, {a: shown.get(a, 0) / total for a in (control, treatment)}


def position_credit(con, run_id: str) -> pd.DataFrame:
    """Clicks and exposures per team and slate position."""
    return con.execute("""
        SELECT e.position, e.arm AS team, count(*) AS exposures, count(f.request_id) AS clicks
        FROM exposures e LEFT JOIN feedback f
          ON f.run_id = e.run_id AND f.request_id = e.request_id AND f.position = e.position AND f.event = 'click'
        WHERE e.run_id = ? GROUP BY ALL ORDER BY e.position, team""", [run_id]).df()


def headline(pref: Preference, true_lift: float | None = None, metric: str = "ctr") -> str:
    """The answer in one sentence."""
    pct = f"{pref.share * 100:.1f}% of decided requests [{pref.ci[0] * 100:.1f}%, {pref.ci[1] * 100:.1f}%]"
    if not np.isfinite(pref.share):
        out = f"No interleaving verdict for {pref.treatment} vs {pref.control}: no request had a click"
    elif pref.winner is None:
        out = (f"No detectable preference between {pref.treatment} and {pref.control} in interleaving: "
               f"{pref.treatment} won {pct}, p={pref.p:.2g}")
    else:
        loser = pref.control if pref.winner == pref.treatment else pref.treatment
        out = (f"Users prefer {pref.winner} over {loser} in interleaving: {pref.treatment} won {pct}, "
               f"p={pref.p:.2g}")
    if true_lift is not None and np.isfinite(true_lift):
        out += f"; world oracle's true A/B lift of {metric}: {true_lift * 100:+.1f}%"
    return out + "."
