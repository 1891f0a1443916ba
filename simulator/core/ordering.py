"""Is a log's order real? Pseudo-sequential data (ratings entered in bulk, many per second) carry
little next-item signal in their order (Woolridge et al. 2021): a replay's "next logged items" and a
sequential model's training targets then partly follow the order of a form, not of consumption."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.core.sequences import Sequences

SAME_SECOND_LIMIT = 0.2  # flagged when at least this share of consecutive interactions share one second
SPAN_LIMIT_S = 3600.0  # or when the median user's whole history spans less than an hour


@dataclass(frozen=True)
class OrderStats:
    same_second_share: float  # of consecutive pairs (same user) with one timestamp second
    median_span_s: float  # per user: last - first interaction time (users with >= 2 interactions)

    @property
    def pseudo_sequential(self) -> bool:
        return self.same_second_share >= SAME_SECOND_LIMIT or self.median_span_s < SPAN_LIMIT_S

    def sentence(self, dataset: str) -> str:
        return (f"dataset {dataset!r} looks pseudo-sequential: {self.same_second_share:.0%} of consecutive "
                f"interactions share one second and the median user's history spans "
                f"{self.median_span_s / 60:,.0f} minutes, so its order is weak evidence of what came next "
                "(replay rewards and sequential models read it as such)")


def order_stats(seqs: Sequences) -> OrderStats:
    """Share of same-second consecutive interactions and the median span per user."""
    lengths = seqs.lengths
    if len(seqs.ts) < 2:
        return OrderStats(0.0, float("inf"))
    sec = np.floor(seqs.ts)
    same = sec[1:] == sec[:-1]
    uid = np.repeat(np.arange(seqs.n_users), lengths)
    within = uid[1:] == uid[:-1]  # consecutive interactions of one user
    pairs = int(within.sum())
    share = float((same & within).sum() / pairs) if pairs else 0.0
    many = lengths >= 2
    if not many.any():
        return OrderStats(share, float("inf"))
    first, last = seqs.ts[seqs.indptr[:-1][many]], seqs.ts[seqs.indptr[1:][many] - 1]
    return OrderStats(share, float(np.median(last - first)))
