"""The story of a simulated experiment, on a SimPy clock.

The scenario's users send requests (generated sessions in a world, logged times in a replay); every
``batch_window_s`` the batcher serves what arrived: the design splits the batch over the arms,
the runtime runs the arms' pipelines (in a seeded random arm order per batch, so no arm is
always served first on a warm cache), the design combines their slates, the user model
answers, the log records, and only then does the state change (the world's fatigue now, the
users' histories after the feedback delay).

:class:`Simulation` wires the parts; it owns no policy, no table and no statistics.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from policies.base import UserBatch
from simulator.engine import signals
from simulator.engine.design import Design
from simulator.engine.env import Clock, batcher
from simulator.engine.scenario import Scenario


@dataclass(frozen=True)
class Timing:
    """The clock settings of a run (from ExperimentConfig); ``stop_at`` overrides the duration."""

    sim_start: float
    n_requests: int | float
    stop_at: float | None
    batch_window_s: float
    max_batch: int
    session_gap_s: float
    abandon_prob: float
    start_horizon_s: float
    sessions_per_day: float
    feedback_delay_s: float
    satisfaction: float = 0.0
    satisfaction_ref: float = 1.0

    @classmethod
    def from_config(cls, cfg, sim_start: float) -> Timing:
        stop = sim_start + cfg.duration_s if cfg.duration_s is not None else None
        return cls(sim_start, cfg.n_requests, stop, cfg.batch_window_s, cfg.max_batch, cfg.session_gap_s,
                   cfg.abandon_prob, cfg.start_horizon_s, cfg.sessions_per_day, cfg.feedback_delay_s,
                   cfg.satisfaction, cfg.satisfaction_ref)


class Simulation:
    def __init__(self, timing: Timing, design: Design, runtime, scenario: Scenario, log, *, seed: int,
                 retrainer=None) -> None:
        self.t, self.design, self.runtime, self.log = timing, design, runtime, log
        self.retrainer = retrainer  # a simulator.engine.retrain.Retrainer, or None (never refit)
        self.scenario, self.user_model, self.seed = scenario, scenario.user_model, seed
        self.histories = [list(h) for h in scenario.histories]  # this run's copy: grows with consumption
        # and the matching times, grown with the consumption times (arrays are replaced, not edited)
        self.history_times = list(scenario.history_times)
        self.batch_no = 0

    def run(self, progress: bool = False, on_batch=None) -> int:
        """Simulate until the request budget or the stop time; returns the requests served."""
        with frozen_heap():
            return self._run(progress, on_batch)

    def _run(self, progress: bool, on_batch) -> int:
        t = self.t
        clock = Clock(t.sim_start, t.n_requests, None if t.stop_at is None else t.stop_at - t.sim_start)
        self.user_model.reset()
        if self.retrainer is not None:
            self.retrainer.start(self.runtime)
        self.scenario.arrivals(clock, t, self.seed)
        bar = tqdm(total=t.n_requests if np.isfinite(t.n_requests) else None, desc="simulate", unit="req",
                   disable=not progress)
        served = [0]

        def serve_batch(batch) -> np.ndarray:
            signals.check()  # Ctrl-C / SIGTERM stop the run here, between batches
            if self.retrainer is not None:  # refits see the histories as they are before this batch
                self.retrainer.maybe_refit(clock.env.now, self.histories, self.history_times, self.runtime)
            clicks = np.full(len(batch), -1, np.int64)
            sat = np.zeros(len(batch))
            for s in range(0, len(batch), t.max_batch):
                part = batch[s:s + t.max_batch]
                clicks[s:s + len(part)], sat[s:s + len(part)] = self._serve(clock, part)
                if on_batch is not None:
                    on_batch(self.batch_no, self.runtime)
            bar.update(len(batch))
            served[0] += len(batch)
            signals.fault_point("simulate")
            return list(zip(clicks.tolist(), sat.tolist(), strict=True))  # each user's reply

        clock.env.process(batcher(clock, t.batch_window_s, serve_batch))
        clock.env.run(until=clock.done)
        bar.close()
        return served[0]


    def _serve(self, clock: Clock, part) -> tuple[np.ndarray, np.ndarray]:
        """One batch: design -> runtime -> design -> user model -> log -> state."""
        users = np.array([r.user_id for r in part], np.int64)
        now = np.array([r.ts for r in part], np.float64)
        sess = np.array([r.session_id for r in part], np.int64)
        batch_no = self.batch_no
        rid = self.log.new_requests(len(part))
        rows = self.design.split(users)
        order = np.random.default_rng([self.seed, 11, batch_no]).permutation(sorted(rows))
        names = self.design.arm_names
        # once per batch (arms may share rows): what the scenario lets the arms see before each request
        hist, times = self.scenario.seen(users, now, self.histories, self.history_times)
        work = {names[a]: UserBatch(users[rows[a]], [hist[i] for i in rows[a]], [times[i] for i in rows[a]],
                                    now[rows[a]])
                for a in order}
        results = self.runtime.serve(work)
        served = {int(a): (rows[a], results[names[a]].slate, results[names[a]].latency_ms) for a in order}
        slates = self.design.combine(len(part), served, np.random.default_rng([self.seed, 13, batch_no]))
        slates = replace(slates, nearline_ms=_nearline(len(part), rows, results, names))
        resp = self.user_model.respond(users, slates.item_ids, now, np.random.default_rng([self.seed, 7, batch_no]))
        self.log.record(batch_no, rid, users, now, sess, self.design.labels(users), slates, resp,
                        np.fromiter(map(len, hist), np.int64, len(hist)))
        self.batch_no += 1
        hit = np.flatnonzero(resp.position >= 0)
        items = np.full(len(part), -1, np.int64)
        items[hit] = slates.item_ids[hit, resp.position[hit]]
        self.user_model.update(users, items, now)
        if len(hit):
            clock.env.process(_deliver(clock.env, self.t.feedback_delay_s, self.histories, self.history_times,
                                       users[hit], items[hit], now[hit]))
        return resp.position, (np.zeros(len(part)) if resp.satisfaction is None else resp.satisfaction)


@contextmanager
def frozen_heap():
    """The objects alive when a story starts (models, data, the catalog's caches) are out of the cyclic
    collector's reach while it runs (``gc.freeze``): the story allocates many short-lived SimPy events
    and generators, and each full collection they trigger would otherwise walk the whole heap (about
    0.3 s per collection here with a trained model loaded). Nothing is freed later than it would be:
    those objects are alive for the whole story anyway."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _deliver(env, delay: float, histories: list, times: list, users: np.ndarray, items: np.ndarray,
             clicked_at: np.ndarray):
    """Delayed feedback: the consumed items (with the time of their click) reach the users'
    histories (what the arms see on the next request) only ``delay`` simulated seconds after the click."""
    yield env.timeout(delay)
    for u, it, t in zip(users.tolist(), items.tolist(), clicked_at.tolist(), strict=True):
        histories[u].append(it)
        times[u] = np.append(times[u], t)  # a new array: the setup's and other runs' stay as they were


def _nearline(n: int, rows: dict[int, np.ndarray], results: dict, names: tuple[str, ...]) -> np.ndarray:
    """Each request's share of the arms' work outside the request path (ms): the sum over the
    arms that served its row (one arm in an A/B test, both in interleaving)."""
    out = np.zeros(n)
    for a, r in rows.items():
        np.add.at(out, r, results[names[a]].nearline_ms)
    return out
