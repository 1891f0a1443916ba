"""Scenarios: one registry, keyed by the config's ``user_model`` (``auto`` picks by the data)."""

from __future__ import annotations

from simulator.core.errors import ConfigError
from simulator.engine.scenario.base import Scenario
from simulator.engine.scenario.learned import LearnedScenario
from simulator.engine.scenario.replay import ReplayScenario
from simulator.engine.scenario.world import WorldScenario

# in the order ``auto`` tries them: the first that accepts the dataset's metadata
SCENARIOS: dict[str, type[Scenario]] = {"world": WorldScenario, "replay": ReplayScenario,
                                        "learned": LearnedScenario}

__all__ = ["SCENARIOS", "LearnedScenario", "ReplayScenario", "Scenario", "WorldScenario", "build_scenario",
           "scenario_class"]


def scenario_class(user_model: str, meta: dict, dataset: str) -> type[Scenario]:
    """The scenario for a config's ``user_model`` on a dataset (ConfigError when it cannot apply)."""
    if user_model == "auto":
        return next(cls for cls in SCENARIOS.values() if cls.accepts(meta))
    cls = SCENARIOS[user_model]
    if not cls.applies(meta):
        raise ConfigError(f"user_model {user_model!r} needs a synthetic dataset; {dataset!r} has no ground truth")
    return cls


def build_scenario(cfg, catalog) -> Scenario:
    """Load the config's dataset (built-ins on demand) and build its scenario."""
    from simulator.core import ensure_dataset

    ensure_dataset(cfg.dataset, catalog)
    ds = catalog.load_dataset(cfg.dataset)
    cls = scenario_class(cfg.user_model, catalog.info(cfg.dataset).meta, cfg.dataset)
    return cls.build(cfg, catalog, ds)
