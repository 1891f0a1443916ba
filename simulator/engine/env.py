"""SimPy processes: request arrivals (generated sessions or log replay) and the batcher.

Users' processes put requests into a queue; the batcher wakes every ``batch_window_s`` of
simulated time, serves everything that arrived (sorted by (time, user) so request ids are
deterministic) and answers each waiting user with the position they clicked (-1 = none).
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


def world_sessions(clock: Clock, user_id: int, rng: np.random.Generator, gap_s: float, abandon: float,
                   first_at: float, session_every_s: float, max_per_session: int = 20):
    """A synthetic user: sessions of requests; a session ends on abandonment or at its cap."""
    env = clock.env
    yield env.timeout(first_at)
    session = 0
    while True:
        for _ in range(max_per_session):
            ev = clock.request(user_id, session)
            if ev is None:
                return
            clicked = yield ev
            if clicked < 0 and rng.random() < abandon:
                break
            yield env.timeout(rng.exponential(gap_s))
        session += 1
        yield env.timeout(rng.exponential(session_every_s))


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
    """Every ``window_s``: serve all pending requests (``serve_batch(list[Request]) -> clicks``)."""
    env = clock.env
    while True:
        yield env.timeout(window_s)
        if clock.pending:
            batch = sorted(clock.pending)
            clock.pending = []
            clicks = serve_batch(batch)
            for r, c in zip(batch, clicks, strict=True):
                r.reply.succeed(int(c))
        over = clock.issued >= clock.n_requests or env.now >= clock.stop_at
        if (over or clock.active_users == 0) and not clock.pending:
            if not clock.done.triggered:
                clock.done.succeed()
            return
