"""A replay of logs, as it happened: users request at their logged times after the start cut; a
shown item is consumed if it is among the user's next logged interactions; before each request the
arms see the user's logged interactions up to that moment merged (in time order) with what the user
consumed in the simulation.

Empty histories: every replay request is made at the time of one of the user's logged interactions,
and that interaction is already in what the arms see, so no arm ever serves an empty history in a
replay (no arm's own cold-start fallback is measured). Users with no interaction before the cut
("new" users) are still a stratum of their own: the report breaks every effect down by new vs
returning users (analysis/segments.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.core.sequences import Dataset
from simulator.engine.env import replay_requests, tracked
from simulator.engine.scenario.base import Scenario
from simulator.engine.users import ReplayUser


@dataclass
class ReplayScenario(Scenario):
    """Arms train on the logs before the ``replay_start_quantile`` of log time; every later logged
    interaction is a request at its logged time."""

    name = "replay"
    times: list[np.ndarray] = field(default_factory=list)  # per user: the logged request times

    @classmethod
    def accepts(cls, meta: dict) -> bool:
        return True  # any log can be replayed

    @classmethod
    def build(cls, cfg, catalog, ds: Dataset) -> ReplayScenario:
        sim_start = float(np.quantile(ds.sequences.ts, cfg.replay_start_quantile))
        train = ds.until(sim_start)  # values kept: hllm_rank's like labels
        split, hist, hist_times = cls.histories_of(train)
        user_model = ReplayUser(ds.sequences, cfg.replay_window, ds.values)
        times = [ds.sequences.times(u)[ds.sequences.times(u) > sim_start] for u in range(ds.n_users)]
        users = np.array([u for u in range(ds.n_users) if len(times[u])], dtype=np.int64)
        return cls(ds, train, split, sim_start, hist, hist_times, user_model, users, times)

    def arrivals(self, clock, timing, seed: int) -> None:
        for u in self.users:
            tracked(clock, replay_requests(clock, int(u), self.times[u]))

    def seen(self, users, now, histories, history_times) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per request: the logged interactions up to ``now`` (inclusive: the request is the one made at
        that logged time) merged in time order with the simulated consumption; a logged interaction
        of an item the simulation already made the user consume earlier is not counted twice."""
        log = self.dataset.sequences
        items_out, times_out = [], []
        for u, t in zip(users.tolist(), now.tolist(), strict=True):
            n0 = len(self.histories[u])
            sim_i = np.asarray(histories[u][n0:], np.int64)
            sim_t = np.asarray(history_times[u][n0:], np.float64)
            ts = log.times(u)
            lo, hi = np.searchsorted(ts, self.sim_start, side="right"), np.searchsorted(ts, t, side="right")
            log_i, log_t = log.seq(u)[lo:hi].astype(np.int64), ts[lo:hi].astype(np.float64)
            if len(sim_i) and len(log_i):
                first: dict[int, float] = {}
                for it, st in zip(sim_i.tolist(), sim_t.tolist(), strict=True):
                    first.setdefault(it, st)
                keep = np.array([first.get(it, np.inf) >= lt for it, lt in zip(log_i.tolist(), log_t.tolist(),
                                                                                 strict=True)], bool)
                log_i, log_t = log_i[keep], log_t[keep]
            new_i, new_t = np.concatenate([log_i, sim_i]), np.concatenate([log_t, sim_t])
            order = np.argsort(new_t, kind="stable")  # ties: the logged interaction first
            items_out.append(np.concatenate([np.asarray(self.histories[u], np.int64), new_i[order]]))
            times_out.append(np.concatenate([self.history_times[u][:n0], new_t[order]]))
        return items_out, times_out

    def warnings(self, cfg) -> list[str]:
        """Pseudo-sequential data (the base's), a log shorter than the run, or a run that reaches only the
        users active first after the cut."""
        out = super().warnings(cfg)
        available, users = int(sum(len(t) for t in self.times)), len(self.users)
        if available < cfg.n_requests:
            out.append(f"the replay log of {cfg.dataset!r} holds only {available:,} requests after the start cut "
                       f"(replay_start_quantile {cfg.replay_start_quantile:g}): serving {available:,} of the "
                       f"{cfg.n_requests:,} asked for")
        elif available > cfg.n_requests:
            out.append(f"the replay log of {cfg.dataset!r} holds {available:,} requests from {users:,} users after "
                       f"the start cut; this run serves the first {cfg.n_requests:,}, which reach "
                       f"{self.users_reached(int(cfg.n_requests)):,} of the {users:,} users (--requests {available} "
                       "serves them all)")
        return out

    def users_reached(self, n: int) -> int:
        """Distinct users among the first ``n`` logged requests after the cut (in time order)."""
        ts = np.concatenate([self.times[u] for u in self.users])
        us = np.concatenate([np.full(len(self.times[u]), u) for u in self.users])
        return int(len(np.unique(us[np.argsort(ts, kind="stable")[:n]])))
