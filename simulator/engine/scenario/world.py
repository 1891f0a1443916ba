"""A synthetic world: the ground-truth user model answers any slate; the oracle knows the truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import FullScorePolicy
from simulator.core.sequences import Dataset
from simulator.engine.availability import ItemAvailability
from simulator.engine.env import Leaving, tracked, world_sessions
from simulator.engine.scenario.base import Scenario
from simulator.engine.users import WorldUser, raw_to_world

DAY = 86400.0


@dataclass
class WorldScenario(Scenario):
    """Arms train on the whole logged period; the simulation starts at its end; users arrive in
    generated sessions (abandonment, session gaps) and the world's multinomial logit answers."""

    name = "world"
    has_truth = True

    @classmethod
    def accepts(cls, meta: dict) -> bool:
        return "world" in meta

    @classmethod
    def build(cls, cfg, catalog, ds: Dataset) -> WorldScenario:
        from simulator.core.synthetic import world_for

        world = world_for(catalog, cfg.dataset)
        sim_start = float(ds.sequences.ts.max()) if len(ds.sequences) else 0.0
        split, hist, times = cls.histories_of(ds)
        user_model = WorldUser(world, raw_to_world(ds.user_raw_ids), raw_to_world(ds.item_raw_ids))
        return cls(ds, ds, split, sim_start, hist, times, user_model, np.arange(ds.n_users))

    def availability(self, policies: dict, fitted_on: Dataset):
        """With items released during the run: nothing is served before its release; an ID policy
        scores only the items of the data it was fitted on (a new item once a retrain has seen it), a
        policy that embeds item text every released item."""
        release = np.asarray(self.dataset.item_attrs.get("release_ts", ()), np.float64)
        if not len(release) or release.max(initial=0.0) <= self.sim_start:
            return None
        seen = np.bincount(fitted_on.sequences.items, minlength=self.dataset.n_items) > 0
        known = {name: seen for name, pol in policies.items()
                 if not (isinstance(pol, FullScorePolicy) and pol.embeds_item_text)}
        return ItemAvailability(release, known)

    def arrivals(self, clock, timing, seed: int) -> None:
        rng = np.random.default_rng(seed)
        leaving = Leaving(timing.abandon_prob, DAY / timing.sessions_per_day, timing.satisfaction,
                          timing.satisfaction_ref)
        for u in self.users:
            tracked(clock, world_sessions(clock, int(u), np.random.default_rng([seed, int(u)]),
                                          timing.session_gap_s, leaving, float(rng.uniform(0, timing.start_horizon_s))))
