"""Sample-ratio mismatch: chi-square of assignment counts against the configured arm weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.core.errors import NotFoundError

from .dist import chi2_sf

SRM_THRESHOLD = 0.001  # conventional: flag SRM when p < 0.001


@dataclass
class SRMResult:
    counts: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p: float
    threshold: float = SRM_THRESHOLD
    what: str = "sample ratio"  # what is counted ("team-draft first pick" for interleaving)

    @property
    def failed(self) -> bool:
        return bool(self.p < self.threshold)

    def message(self) -> str:
        obs = ", ".join(f"{a}={n} (expected {self.expected[a]:.1f})" for a, n in self.counts.items())
        state = f"{self.what.upper()} MISMATCH" if self.failed else f"no {self.what} mismatch"
        return f"{state}: chi2={self.chi2:.2f}, p={self.p:.3g}; {obs}"


def srm_test(counts: dict[str, int], weights: dict[str, float], threshold: float = SRM_THRESHOLD) -> SRMResult:
    """Chi-square goodness of fit of observed users per arm against weights (normalised)."""
    arms = list(weights)
    n = np.array([counts.get(a, 0) for a in arms], dtype=float)
    w = np.array([weights[a] for a in arms], dtype=float)
    if w.sum() <= 0 or (w < 0).any():
        raise ValueError(f"arm weights must be non-negative with a positive sum, got {weights}")
    exp = n.sum() * w / w.sum()
    if ((w == 0) & (n > 0)).any():  # users in an arm configured with weight 0: certain mismatch
        return SRMResult({a: int(c) for a, c in zip(arms, n, strict=True)}, dict(zip(arms, map(float, exp), strict=True)),
                         float("inf"), 0.0, threshold)
    keep = w > 0
    if n.sum() == 0 or keep.sum() < 2:
        return SRMResult({a: int(c) for a, c in zip(arms, n, strict=True)}, dict(zip(arms, exp, strict=True)), 0.0, 1.0, threshold)
    chi2 = float((((n - exp) ** 2)[keep] / exp[keep]).sum())  # scipy.stats.chisquare, without its import
    p = float(chi2_sf(chi2, int(keep.sum()) - 1))
    return SRMResult({a: int(c) for a, c in zip(arms, n, strict=True)}, dict(zip(arms, map(float, exp), strict=True)), float(chi2), float(p),
                     threshold)


def srm_for_run(con, run_id: str) -> SRMResult:
    """SRM of one run from ``arms`` (weights) and ``assignments`` (counts)."""
    w = dict(con.execute("SELECT arm, weight FROM arms WHERE run_id = ? ORDER BY arm", [run_id]).fetchall())
    if not w:
        raise NotFoundError(f"run {run_id!r} has no arms")
    c = dict(con.execute("SELECT arm, count(*) FROM assignments WHERE run_id = ? GROUP BY arm", [run_id]).fetchall())
    return srm_test({a: int(c.get(a, 0)) for a in w}, w)
