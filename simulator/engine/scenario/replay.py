"""A replay of logs: users request at their logged times after the start cut; a shown item is
consumed if it is among the user's next logged interactions."""

from __future__ import annotations

import sys
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

    def announce(self, cfg) -> None:
        """Say (one line, stderr) when the log holds fewer requests than asked for, or more than this
        run serves (the run then reaches only the users active first after the cut)."""
        available, users = int(sum(len(t) for t in self.times)), len(self.users)
        if available > cfg.n_requests:
            print(f"note: the replay log of {cfg.dataset!r} holds {available:,} requests from {users:,} users "
                  f"after the start cut; this run serves the first {cfg.n_requests:,} (--requests {available} "
                  "serves them all)", file=sys.stderr)
        if available < cfg.n_requests:
            print(f"warning: the replay log of {cfg.dataset!r} holds only {available:,} requests after the start "
                  f"cut (replay_start_quantile {cfg.replay_start_quantile:g}): serving {available:,} of the "
                  f"{cfg.n_requests:,} asked for", file=sys.stderr)
