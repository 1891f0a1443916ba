"""SimPy processes: request arrivals (generated sessions or log replay) and the batcher.

Users' processes put requests into a queue; the batcher wakes every ``batch_window_s`` of
simulated time, serves everything that arrived (sorted by (time, user) so request ids are
deterministic) and answers each waiting user with (the position they clicked (-1 = none), the
slate's satisfaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy


@dataclass(order=True)
class Request:
    ts: float
    user_id: int
    session_id: int = field(compare=False)
    reply: simpy.Event = field(compare=False, repr=False)


class Clock:
    """Owns the SimPy environment, the pending queue and the stop condition."""

    def __init__(self, start: float, n_requests: int, duration_s: float | None = None) -> None:
        self.env = simpy.Environment(initial_time=start)
        self.stop_at = start + duration_s if duration_s is not None else float("inf")
        self.pending: list[Request] = []
        self.issued = 0
        self.n_requests = n_requests
        self.done = self.env.event()
        self.active_users = 0

    def request(self, user_id: int, session_id: int) -> simpy.Event | None:
        if self.issued >= self.n_requests or self.env.now >= self.stop_at:
            return None
        self.issued += 1
        ev = self.env.event()
        self.pending.append(Request(self.env.now, user_id, session_id, ev))
        return ev


def tracked(clock: Clock, gen):
    """Start a user process and count it as active until it returns."""
    clock.active_users += 1

    def proc():
        try:
            yield from gen
        finally:
            clock.active_users -= 1

    return clock.env.process(proc())


@dataclass(frozen=True)
class Leaving:
    """When a world user ends a session and returns. ``satisfaction`` 0: a session ends after a slate
    with no click with probability ``abandon``, the next starts after an exponential gap of mean
    ``session_every_s``. ``satisfaction`` > 0 (KuaiSim-style leave and return): after every slate the
    user leaves with probability sigmoid(logit(abandon) - satisfaction * (s - ref)), s the slate's
    satisfaction, and the mean gap to the next session is ``session_every_s * exp(-satisfaction *
    (mean s of the session - ref))``: better slates keep users longer and bring them back sooner."""

    abandon: float
    session_every_s: float
    satisfaction: float = 0.0
    ref: float = 1.0

    def leaves(self, clicked: int, s: float, rng: np.random.Generator) -> bool:
        if self.satisfaction == 0:
            return clicked < 0 and rng.random() < self.abandon
        a = min(max(self.abandon, 1e-6), 1 - 1e-6)
        logit = np.log(a / (1 - a)) - self.satisfaction * (s - self.ref)
        return rng.random() < 1.0 / (1.0 + np.exp(-logit))

    def gap(self, sats: list[float], rng: np.random.Generator) -> float:
        if self.satisfaction == 0 or not sats:
            return rng.exponential(self.session_every_s)
        z = float(np.clip(-self.satisfaction * (np.mean(sats) - self.ref), -5, 5))
        return rng.exponential(self.session_every_s * np.exp(z))


def world_sessions(clock: Clock, user_id: int, rng: np.random.Generator, gap_s: float, leaving: Leaving,
                   first_at: float, max_per_session: int = 20):
    """A synthetic user: sessions of requests; a session ends when the user leaves or at its cap."""
    env = clock.env
    yield env.timeout(first_at)
    session = 0
    while True:
        sats: list[float] = []
        for _ in range(max_per_session):
            ev = clock.request(user_id, session)
            if ev is None:
                return
            clicked, s = yield ev
            sats.append(s)
            if leaving.leaves(clicked, s, rng):
                break
            yield env.timeout(rng.exponential(gap_s))
        session += 1
        yield env.timeout(leaving.gap(sats, rng))


def replay_requests(clock: Clock, user_id: int, times: np.ndarray, session_gap_s: float = 1800.0):
    """A logged user: one request at each logged interaction time (after the start), open loop."""
    env = clock.env
    session = 0
    prev = None
    for t in times:
        if t > env.now:
            yield env.timeout(t - env.now)
        if prev is not None and t - prev > session_gap_s:
            session += 1
        prev = t
        if clock.request(user_id, session) is None:
            return
        # open loop: logged arrival times do not depend on the slates shown, so the user does not
        # wait for the reply (several requests of a user may share a batch window; what they
        # consumed reaches their history through the delayed feedback)


def batcher(clock: Clock, window_s: float, serve_batch):
    """Every ``window_s``: serve all pending requests (``serve_batch(list[Request]) -> replies``)."""
    env = clock.env
    while True:
        yield env.timeout(window_s)
        if clock.pending:
            batch = sorted(clock.pending)
            clock.pending = []
            clicks = serve_batch(batch)
            for r, c in zip(batch, clicks, strict=True):
                r.reply.succeed(c)
        over = clock.issued >= clock.n_requests or env.now >= clock.stop_at
        if (over or clock.active_users == 0) and not clock.pending:
            if not clock.done.triggered:
                clock.done.succeed()
            return
