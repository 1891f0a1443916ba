"""Scheduled retraining during a run: every ``retrain_every`` simulated seconds the arms' policies
are refitted on the data logged so far (the pre-period plus what users consumed from the slates they
were shown, i.e. the arms' own exposures), so feedback loops and new items reaching ID models can be
studied. Fits go through the model store (same data, same config: the same model), so a resumed or
repeated run refits identically.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from tqdm.auto import tqdm

from policies.store import fit_or_load
from simulator.core.sequences import LeaveOneOut, Sequences


class Retrainer:
    """Owns the refit schedule of one Simulation; ``start`` restores the initial policies (every
    pass of the story begins with the models the run began with)."""

    def __init__(self, cfg, scenario, policies: dict, progress: bool = False) -> None:
        self.cfg, self.scenario, self.initial, self.progress = cfg, scenario, policies, progress
        self.next_at = float("inf")
        self.refits = 0

    def start(self, runtime) -> None:
        """Serve with the initial policies (a runtime shared by several passes, such as the oracle's,
        may still hold an earlier pass's refits) and schedule the first refit."""
        self.next_at = self.scenario.sim_start + self.cfg.retrain_every
        runtime.reload(self.initial, self.scenario.availability(self.initial, self.scenario.train_dataset))
        self.refits = 0

    def maybe_refit(self, now: float, histories: list, times: list, runtime) -> bool:
        """Refit when the schedule is due at ``now`` (between batches); True when it did."""
        if now < self.next_at:
            return False
        while self.next_at <= now:
            self.next_at += self.cfg.retrain_every
        ds = self.logged(histories, times)
        split = LeaveOneOut.from_sequences(ds.sequences)
        if self.progress:
            tqdm.write(f"[sim] retraining on {len(ds.sequences)} interactions logged so far ...",
                       file=sys.stderr)
        pols = {name: fit_or_load(name, ds, split, self.cfg.policies.get(name), root=self.cfg.artifacts,
                                  progress=False) for name in self.cfg.all_policies()}
        runtime.reload(pols, self.scenario.availability(pols, ds))
        self.refits += 1
        return True

    def logged(self, histories: list, times: list):
        """The training dataset with every user's history as the simulation holds it now."""
        seqs = Sequences.from_lists([np.asarray(h, np.int64) for h in histories],
                                    [np.asarray(t, np.float64) for t in times])
        return dataclasses.replace(self.scenario.train_dataset, sequences=seqs, values=None)
