"""Experiment designs: which arm serves each request, and what the user is shown.

A :class:`Design` turns one batch of requests into per-arm work (``split``) and the arms'
slates back into the slates shown (``combine``), as a :class:`SlateBatch` that records the arm
and retrieval channel of origin of every position. The simulation loop knows nothing else
about the design, so a new design (interleaving) is one class.

- :class:`ABDesign`   each user is hashed (salted) to one arm for the whole run.
- :class:`TeamDraft`  team-draft interleaving (Radlinski, Kurup and Joachims 2008): both arms
                      rank for every request; the shown slate merges the two rankings by team
                      draft, a seeded coin deciding who picks first whenever the teams are even;
                      every position records the team (arm) that picked it.
- :class:`SingleArm`  every user served by one arm: the world oracle's counterfactual pass.
``DESIGNS`` maps a config's ``design`` to its class (``from_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from policies.base import PAD, Propensity, Slate
from simulator.engine.assignment import assign


@dataclass(frozen=True)
class SlateBatch:
    """What one batch of requests was shown: (B, K) arrays, padded with -1 / -inf / ''."""

    item_ids: np.ndarray  # (B, K) int64
    scores: np.ndarray  # (B, K) float32
    channel: np.ndarray  # (B, K) object: retrieval channel of origin
    arm: np.ndarray  # (B, K) int64: arm of origin (index into the design's arm names), -1 = padding
    latency_ms: np.ndarray  # (B,) float64: serving time per request (the arm call, amortised)
    propensity: Propensity | None = None  # logging propensities (NaN where the slate is deterministic)
    shadow: dict[int, tuple[np.ndarray, np.ndarray]] | None = None  # target arm -> (rows, (r, K) ids): not shown
    found_by: np.ndarray | None = None  # (B, K) object: every channel that retrieved the item, 'a,b'
    nearline_ms: np.ndarray | None = None  # (B,) float64: the arms' work outside the request path

    @property
    def shape(self) -> tuple[int, int]:
        return self.item_ids.shape


class Design(Protocol):
    arm_names: tuple[str, ...]

    def labels(self, user_ids: np.ndarray) -> np.ndarray:
        """What ``assignments`` and ``requests`` record for each user (A/B: the user's arm)."""

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Rows of the batch each arm must serve: arm index -> row indices."""

    def combine(self, n: int, served: dict[int, tuple[np.ndarray, Slate, np.ndarray]],
                rng: np.random.Generator) -> SlateBatch:
        """The shown slates from each arm's (rows, slate, ms per request)."""


def place(n: int, served: dict[int, tuple[np.ndarray, Slate, np.ndarray]]) -> SlateBatch:
    """Each row shows the slate of the one arm that served it (rows of different arms are disjoint)."""
    K = max(sl.item_ids.shape[1] for _, sl, _ in served.values()) if served else 0
    ids = np.full((n, K), PAD, np.int64)
    scores = np.full((n, K), -np.inf, np.float32)
    channel = np.full((n, K), "", dtype=object)
    found = np.full((n, K), "", dtype=object)
    arm = np.full((n, K), -1, np.int64)
    lat = np.zeros(n)
    props = None
    if any(sl.propensity is not None for _, sl, _ in served.values()):
        props = Propensity(np.full((n, K), np.nan), np.full((n, K), np.nan), np.full(n, np.nan))
    for a, (rows, sl, ms) in served.items():
        k = sl.item_ids.shape[1]
        ids[rows, :k], scores[rows, :k], lat[rows] = sl.item_ids, sl.scores, ms
        if sl.propensity is not None:
            props.position[rows, :k], props.cascade[rows, :k] = sl.propensity.position, sl.propensity.cascade
            props.slate[rows] = sl.propensity.slate
        names = np.array(list(sl.channel_names) + [""], dtype=object)
        ch = sl.channel if sl.channel is not None else np.full(sl.item_ids.shape, -1)
        channel[rows, :k] = names[np.where(ch >= 0, ch, len(names) - 1)]
        found[rows, :k] = channel[rows, :k] if sl.found_by is None else channel_lists(sl.found_by, sl.channel_names)
        arm[rows, :k] = np.where(sl.item_ids >= 0, a, -1)
    return SlateBatch(ids, scores, channel, arm, lat, props, found_by=found)


def channel_lists(mask: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """A ``found_by`` bitmask as the channels' names joined by ',' (in merge priority), e.g.
    'hllm,popularity'; '' where no channel is set (PAD). One join per distinct mask."""
    uniq, inv = np.unique(mask, return_inverse=True)
    words = [",".join(n for c, n in enumerate(names) if int(m) >> c & 1) for m in uniq]
    return np.array(words, dtype=object)[inv.reshape(mask.shape)]


class ABDesign:
    """A/B(/n): a salted hash of the user id picks the arm, in proportion to the weights."""

    def __init__(self, arm_names: tuple[str, ...], weights: list[float], salt: str) -> None:
        self.arm_names, self.weights, self.salt = tuple(arm_names), list(weights), salt

    @classmethod
    def from_config(cls, cfg) -> ABDesign:
        return cls(tuple(a.name for a in cfg.arms), [a.weight for a in cfg.arms], cfg.salt)

    @staticmethod
    def check_roles(roles: list[str]) -> None:
        """ValueError unless exactly one control and at least one treatment (an A/B(/n) compares
        every treatment with the one control)."""
        if roles.count("control") != 1 or "treatment" not in roles:
            raise ValueError(f"design 'ab' needs exactly one control arm and at least one treatment, got roles "
                             f"{roles}")

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """Arm index per user (the randomisation unit)."""
        return assign(np.asarray(user_ids, np.int64), self.weights, self.salt)

    def labels(self, user_ids: np.ndarray) -> np.ndarray:
        return np.array(self.arm_names, dtype=object)[self.assign(user_ids)]

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        arms = self.assign(user_ids)
        return {int(a): np.flatnonzero(arms == a) for a in np.unique(arms)}

    def combine(self, n, served, rng) -> SlateBatch:
        return place(n, served)


class SingleArm(ABDesign):
    """Every user is served by arm ``index`` (the counterfactual "everyone gets this arm")."""

    def __init__(self, arm_names: tuple[str, ...], index: int) -> None:
        super().__init__(arm_names, [1.0 if i == index else 0.0 for i in range(len(arm_names))], "")
        self.index = index

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        return np.full(len(user_ids), self.index, np.int64)


def _rows_of(sl: Slate, part: slice) -> Slate:
    p = sl.propensity
    props = None if p is None else Propensity(p.position[part], p.cascade[part], p.slate[part])
    ch = None if sl.channel is None else sl.channel[part]
    found = None if sl.found_by is None else sl.found_by[part]
    return Slate(sl.item_ids[part], sl.scores[part], ch, sl.channel_names, props, found)


class WithShadows:
    """An A/B design whose ``targets`` arms also rank every request of the ``logging`` (exploring)
    arms, for off-policy evaluation: those slates travel in ``SlateBatch.shadow`` (recorded in
    ``ope_slates``), never shown. A target's own users are served first, then the shadow rows."""

    def __init__(self, inner: ABDesign, logging: tuple[int, ...], targets: tuple[int, ...]) -> None:
        self.inner, self.logging, self.targets = inner, logging, targets
        self.arm_names = inner.arm_names
        self._own: dict[int, int] = {}

    @classmethod
    def from_config(cls, cfg) -> WithShadows:
        names = [a.name for a in cfg.arms]
        logging = tuple(i for i, a in enumerate(cfg.arms) if a.explore is not None)
        return cls(ABDesign.from_config(cfg), logging, tuple(names.index(t) for t in cfg.ope.targets))

    def labels(self, user_ids: np.ndarray) -> np.ndarray:
        return self.inner.labels(user_ids)

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        rows = self.inner.split(user_ids)
        self._own = {a: len(r) for a, r in rows.items()}  # combine() runs on the same batch, right after
        logged = np.sort(np.concatenate([rows[a] for a in self.logging if a in rows] + [np.zeros(0, np.int64)]))
        for t in self.targets:
            extra = np.setdiff1d(logged, rows.get(t, []), assume_unique=True)
            if len(extra):
                rows[t] = np.concatenate([rows.get(t, np.zeros(0, np.int64)), extra])
        return rows

    def combine(self, n, served, rng) -> SlateBatch:
        shown, shadow = {}, {}
        for a, (rows, sl, ms) in served.items():
            own = self._own.get(a, 0)
            if own:
                shown[a] = (rows[:own], _rows_of(sl, slice(0, own)), ms[:own])
            if len(rows) > own:
                shadow[a] = (rows[own:], sl.item_ids[own:])
        return replace(self.inner.combine(n, shown, rng), shadow=shadow)


def make_design(cfg) -> Design:
    """The design of a run: ``DESIGNS[cfg.design]``, with shadow target slates when ``cfg.ope`` is set."""
    return WithShadows.from_config(cfg) if cfg.ope is not None else DESIGNS[cfg.design].from_config(cfg)


INTERLEAVED = "interleaved"  # the label of every user and request of an interleaving run


class TeamDraft:
    """Team-draft interleaving of two arms: each request shows one slate drafted from both rankings."""

    def __init__(self, arm_names: tuple[str, ...]) -> None:
        if len(arm_names) != 2:
            raise ValueError("team-draft interleaving compares exactly two arms")
        self.arm_names = tuple(arm_names)

    @classmethod
    def from_config(cls, cfg) -> TeamDraft:
        return cls(tuple(a.name for a in cfg.arms))

    @staticmethod
    def check_roles(roles: list[str]) -> None:
        if roles != ["control", "treatment"]:
            raise ValueError("design 'interleave' compares exactly two arms: a control, then a treatment")

    def labels(self, user_ids: np.ndarray) -> np.ndarray:
        return np.full(len(user_ids), INTERLEAVED, dtype=object)

    def split(self, user_ids: np.ndarray) -> dict[int, np.ndarray]:
        rows = np.arange(len(user_ids))
        return {0: rows, 1: rows}

    def combine(self, n, served, rng) -> SlateBatch:
        (_, a, ms_a), (_, b, ms_b) = served[0], served[1]
        K = max(a.item_ids.shape[1], b.item_ids.shape[1])
        out = place(n, {0: (np.arange(n), _pad(a, K), ms_a)})  # arrays of the right shape and types
        first = rng.random((n, K)) < 0.5  # the coin of each round in which the teams are even
        found = [place(n, {0: (np.arange(n), sl, ms_a)}).found_by for sl in (a, b)]  # each team's finders
        for r in range(n):
            picks = team_draft(a.item_ids[r], b.item_ids[r], K, first[r])
            for pos, (team, j) in enumerate(picks):
                src = (a, b)[team]
                out.item_ids[r, pos], out.scores[r, pos], out.arm[r, pos] = src.item_ids[r, j], src.scores[r, j], team
                out.channel[r, pos], out.found_by[r, pos] = _channel(src, r, j), found[team][r, j]
            out.item_ids[r, len(picks):], out.arm[r, len(picks):], out.channel[r, len(picks):] = PAD, -1, ""
            out.found_by[r, len(picks):] = ""
            out.scores[r, len(picks):] = -np.inf
        out.latency_ms[:] = np.maximum(ms_a, ms_b)  # both rankers run side by side for every request
        return out


def team_draft(ranking_a: np.ndarray, ranking_b: np.ndarray, k: int, a_first: np.ndarray) -> list[tuple[int, int]]:
    """(team, index in that team's ranking) of each of the first ``k`` positions.

    The team with fewer picks picks next; when they are even, ``a_first[round]`` (a coin) says
    whether A picks first. Each team picks its highest-ranked item not yet shown; a team with
    nothing left lets the other pick."""
    ranks, shown, picks, counts, cursor = (ranking_a, ranking_b), set(), [], [0, 0], [0, 0]
    rnd = 0
    while len(picks) < k:
        team = (0 if a_first[min(rnd, len(a_first) - 1)] else 1) if counts[0] == counts[1] else int(counts[0] > counts[1])
        if counts[0] == counts[1]:
            rnd += 1
        for t in (team, 1 - team):
            while cursor[t] < len(ranks[t]) and (ranks[t][cursor[t]] < 0 or int(ranks[t][cursor[t]]) in shown):
                cursor[t] += 1
            if cursor[t] < len(ranks[t]):
                break
        else:
            return picks  # both rankings exhausted
        shown.add(int(ranks[t][cursor[t]]))
        picks.append((t, cursor[t]))
        counts[t] += 1
    return picks


def _pad(sl: Slate, k: int) -> Slate:
    pad = k - sl.item_ids.shape[1]
    if pad <= 0:
        return sl
    ch = sl.channel if sl.channel is not None else np.full(sl.item_ids.shape, -1, np.int16)
    return Slate(np.pad(sl.item_ids, ((0, 0), (0, pad)), constant_values=PAD),
                 np.pad(sl.scores, ((0, 0), (0, pad)), constant_values=-np.inf),
                 np.pad(ch, ((0, 0), (0, pad)), constant_values=-1), sl.channel_names, None,
                 None if sl.found_by is None else np.pad(sl.found_by, ((0, 0), (0, pad))))


def _channel(sl: Slate, r: int, j: int) -> str:
    c = -1 if sl.channel is None else int(sl.channel[r, j])
    return sl.channel_names[c] if 0 <= c < len(sl.channel_names) else ""


DESIGNS = {"ab": ABDesign, "interleave": TeamDraft}
