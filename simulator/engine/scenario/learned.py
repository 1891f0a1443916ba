"""A world learned from a real log: the arms train on the whole log, users arrive in generated
sessions after its end (as in a synthetic world), and a user-response model fitted on the log
(:mod:`simulator.engine.learned`, of another kind than the arms) answers any slate, including ones
the log never saw. It knows each position's click probability, so the world oracle, CUPED and every
statistic work on it unchanged. The world is a property of the data: it does not change with the
run's seed (fitted once per dataset, cached under ``artifacts``)."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.core.sequences import Dataset
from simulator.engine.learned import LearnedConfig, fit_or_load
from simulator.engine.scenario.world import WorldScenario
from simulator.engine.users import LearnedUser, calibrate_no_click, interaction_rate


@dataclass
class LearnedScenario(WorldScenario):
    name = "learned"
    has_truth = True

    @classmethod
    def accepts(cls, meta: dict) -> bool:
        return False  # never picked by ``auto``: asked for by name

    @classmethod
    def applies(cls, meta: dict) -> bool:
        return True  # any log can be learned from

    @classmethod
    def build(cls, cfg, catalog, ds: Dataset) -> LearnedScenario:
        import numpy as np

        sim_start = float(ds.sequences.ts.max()) if len(ds.sequences) else 0.0
        split, hist, times = cls.histories_of(ds)
        return cls(ds, ds, split, sim_start, hist, times, learned_user(ds, hist, cfg), np.arange(ds.n_users))


def learned_user(ds: Dataset, histories: list, cfg, settings: LearnedConfig | None = None) -> LearnedUser:
    """The response model of dataset ``ds`` (fitted or from the cache) with its calibrated no-click."""
    params = fit_or_load(ds.sequences, ds.n_users, ds.n_items, ds.item_text, settings or LearnedConfig(),
                         cfg.artifacts, ds.name)
    k = max(a.slate_size for a in cfg.arms)
    target = interaction_rate(ds.sequences.lengths, ds.n_items, k)
    return LearnedUser(params, histories, calibrate_no_click(params, histories, ds.n_items, k, target))
