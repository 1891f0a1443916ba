"""The Scenario entity: where the users, their requests and their answers come from.

A scenario owns what differs between a world and a replay of logs: the training cut (what the
arms may learn from), the users who send requests and when (their SimPy arrival processes), the
user model that answers slates, and whether a ground truth exists (the world oracle). The story
(:mod:`simulator.engine.story`) and the run never ask which scenario they hold.

A new scenario is one subclass registered in :data:`simulator.engine.scenario.SCENARIOS`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from simulator.core.ordering import order_stats
from simulator.core.sequences import Dataset, LeaveOneOut


@dataclass
class Scenario:
    """Everything a run needs, derived deterministically from the config and the dataset."""

    name: ClassVar[str]
    has_truth: ClassVar[bool] = False  # the world oracle can compute each arm's true value

    dataset: Dataset
    train_dataset: Dataset  # the logs the arms are trained on (the pre-period)
    split: LeaveOneOut
    sim_start: float
    histories: list[list[int]]  # per user at the simulation start (each Simulation grows its own copy)
    history_times: list[np.ndarray]  # (float64) the times of ``histories`` (HSTU's time bias, HLLM use_time)
    user_model: object
    users: np.ndarray  # the users who will send requests

    @classmethod
    def accepts(cls, meta: dict) -> bool:
        """Whether ``user_model = "auto"`` picks this scenario for a dataset with these metadata."""
        return False

    @classmethod
    def applies(cls, meta: dict) -> bool:
        """Whether the scenario can be asked for by name on such a dataset (a ground truth needs a world)."""
        return not cls.has_truth or cls.accepts(meta)

    @classmethod
    def build(cls, cfg, catalog, ds: Dataset) -> Scenario:  # pragma: no cover - abstract
        raise NotImplementedError

    def arrivals(self, clock, timing, seed: int) -> None:  # pragma: no cover - abstract
        """Start one SimPy request process per user in :attr:`users` on ``clock``."""
        raise NotImplementedError

    def availability(self, policies: dict, fitted_on: Dataset):
        """The :class:`~simulator.engine.pipeline.ItemAvailability` of arms serving ``policies`` fitted
        on ``fitted_on``, or None when every item can be served all along (no release schedule)."""
        return None

    def announce(self, cfg) -> None:
        """Say (stderr, one line each) what the user should know before the run starts: its warnings."""
        for w in self.warnings(cfg):
            print(f"warning: {w}", file=sys.stderr)

    def warnings(self, cfg) -> list[str]:
        """Sentences about this run's data a report must show (stored with the run: ``runs.warnings_json``)."""
        order = order_stats(self.dataset.sequences)
        return [order.sentence(cfg.dataset)] if order.pseudo_sequential else []

    def seen(self, users: np.ndarray, now: np.ndarray, histories: list[list[int]],
             history_times: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What the arms see before each request of a batch (items, times per request).

        ``histories``/``history_times`` are the simulation's: :attr:`histories` grown with what each
        user consumed in the simulation (after the feedback delay). By default that is all they see."""
        return [np.asarray(histories[u], np.int64) for u in users], [history_times[u] for u in users]

    @staticmethod
    def histories_of(train: Dataset) -> tuple[LeaveOneOut, list[list[int]], list[np.ndarray]]:
        """The training split and every user's history (items, times) at the simulation start."""
        pre = train.sequences
        hist = [list(pre.seq(u)) for u in range(train.n_users)]
        times = [pre.times(u).astype(np.float64) for u in range(train.n_users)]
        return LeaveOneOut.from_sequences(pre), hist, times
