"""Stochastic slates for off-policy evaluation logs: an arm with ``explore`` samples its slate
from the reranker's best ``pool`` candidates and records the propensities of what it shows.

- :class:`EpsilonGreedy`  the ranking's top K with probability 1 - eps, else a uniformly random
  ordered K-subset of the pool; every propensity exact.
- :class:`PlackettLuce`   sampling without replacement, each position choosing among the items
  left in proportion to exp(z / temperature) (z: the pool's scores standardised per request);
  the cascade and slate propensities are exact products of the choice probabilities, the
  position marginals are estimated from ``mc_draws`` seeded draws (the shown slate counted too,
  so never 0).

Randomness comes from a generator per request seeded by (seed, user, request time): a function
of the request only, so slates are identical in every runtime, chunking and resumed run.
``EXPLORERS`` maps a config's ``kind`` to its class.
"""

from __future__ import annotations

import numpy as np

from policies.base import PAD, Propensity, Slate, UserBatch


def request_rngs(seed: int, users: UserBatch) -> list[np.random.Generator]:
    bits = np.asarray(users.now, np.float64).view(np.uint64)
    return [np.random.default_rng([seed, int(u), int(b)]) for u, b in zip(users.user_ids, bits, strict=True)]


def _gather(pool: Slate, order: np.ndarray, props: Propensity) -> Slate:
    """The slate of (B, K) pool column indices ``order`` (-1 = PAD)."""
    ok = order >= 0
    idx = np.clip(order, 0, None)
    ids = np.where(ok, np.take_along_axis(pool.item_ids, idx, 1), PAD).astype(np.int64)
    sc = np.where(ok, np.take_along_axis(pool.scores, idx, 1), -np.inf).astype(np.float32)
    ch = None if pool.channel is None else np.where(ok, np.take_along_axis(pool.channel, idx, 1), -1).astype(np.int16)
    return Slate(ids, sc, ch, pool.channel_names, props)


def _buffers(B: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Empty outputs of a sampler: order (B, k) -1, position and prefix propensities (B, k) NaN, slate (B,) NaN."""
    return np.full((B, k), -1, np.int64), np.full((B, k), np.nan), np.full((B, k), np.nan), np.full(B, np.nan)


class EpsilonGreedy:
    def __init__(self, cfg) -> None:
        self.eps, self.seed = cfg.epsilon, cfg.seed

    def sample(self, pool: Slate, users: UserBatch, k: int) -> Slate:
        order, pos_p, casc_p, slate_p = _buffers(pool.item_ids.shape[0], k)
        for b, rng in enumerate(request_rngs(self.seed, users)):
            m = int((pool.item_ids[b] >= 0).sum())  # valid candidates lead the pool (sorted by the reranker)
            kb = min(k, m)
            if kb == 0:
                continue
            explore = rng.random() < self.eps
            o = rng.permutation(m)[:kb] if explore else np.arange(kb)
            greedy = o == np.arange(kb)
            order[b, :kb] = o
            pos_p[b, :kb] = (1 - self.eps) * greedy + self.eps / m
            uniform_prefix = np.cumprod(1.0 / (m - np.arange(kb)))
            casc_p[b, :kb] = (1 - self.eps) * np.cumprod(greedy) + self.eps * uniform_prefix
            slate_p[b] = casc_p[b, kb - 1]
        return _gather(pool, order, Propensity(pos_p, casc_p, slate_p))


class PlackettLuce:
    def __init__(self, cfg) -> None:
        self.temp, self.draws, self.seed = cfg.temperature, cfg.mc_draws, cfg.seed

    def logits(self, scores: np.ndarray) -> np.ndarray:
        sd = scores.std()
        z = (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
        return z / self.temp

    def sample(self, pool: Slate, users: UserBatch, k: int) -> Slate:
        order, pos_p, casc_p, slate_p = _buffers(pool.item_ids.shape[0], k)
        for b, rng in enumerate(request_rngs(self.seed, users)):
            m = int((pool.item_ids[b] >= 0).sum())
            kb = min(k, m)
            if kb == 0:
                continue
            lg = self.logits(pool.scores[b, :m].astype(np.float64))
            o = np.argsort(-(lg + rng.gumbel(size=m)), kind="stable")[:kb]  # Gumbel top-k = PL sampling
            order[b, :kb] = o
            casc_p[b, :kb] = np.exp(np.cumsum(self._choice_logp(lg, o)))
            slate_p[b] = casc_p[b, kb - 1]
            draws = np.argsort(-(lg + rng.gumbel(size=(self.draws, m))), axis=1, kind="stable")[:, :kb]
            pos_p[b, :kb] = ((draws == o).sum(0) + 1.0) / (self.draws + 1.0)
        return _gather(pool, order, Propensity(pos_p, casc_p, slate_p))

    @staticmethod
    def _choice_logp(lg: np.ndarray, o: np.ndarray) -> np.ndarray:
        """log P(o_j | o_1..o_j-1) for each position j of the sampled order."""
        left = np.ones(len(lg), bool)
        out = np.empty(len(o))
        for j, i in enumerate(o):
            rest = lg[left]
            mx = rest.max()
            out[j] = lg[i] - (mx + np.log(np.exp(rest - mx).sum()))
            left[i] = False
        return out


EXPLORERS = {"epsilon_greedy": EpsilonGreedy, "plackett_luce": PlackettLuce}


def make_explorer(cfg):
    return None if cfg is None else EXPLORERS[cfg.kind](cfg)
