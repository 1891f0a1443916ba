"""Runtimes execute arm pipelines: in-process (:class:`LocalRuntime`) or on Ray actors
(:class:`RayRuntime`). Same interface, same batches, bit-identical slates.

A batch for an arm is split into ``actors_per_arm`` contiguous chunks (in both runtimes, so
results agree); each Ray actor owns its pipeline (policies shipped through the object store:
no shared local state, so ``--ray-address`` is the only change for a cluster). Actors restart
on failure and calls are retried (``max_restarts``/``max_task_retries``); pipelines are pure,
so a retried call returns the same slates and the driver's keyed writes never duplicate.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from policies.base import Propensity, Slate, UserBatch
from simulator.engine.config import ArmConfig
from simulator.engine.pipeline import Pipeline

# ids, scores, channel, names, ms, propensity (None: a deterministic slate), found_by (channel
# bitmask), nearline ms (the policies' work outside the request path during the call)
SlateParts = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], float, Propensity | None,
                   np.ndarray | None, float]


class Served(NamedTuple):
    """One arm's answer to a batch: its slates and, per request, the time of the request path
    and of the work a deployment does outside it (a table refresh; 0 for most policies), both
    amortised over the pipeline call's requests."""

    slate: Slate
    latency_ms: np.ndarray  # (B,) float64
    nearline_ms: np.ndarray  # (B,) float64


def _chunks(n: int, size: int) -> list[slice]:
    """Fixed-size chunks: a function of the batch only (not of the runtime or the actor count),
    so every runtime feeds the models identical sub-batches and gets bit-identical floats."""
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


class _threads:
    """Pin torch's intra-op threads while serving: float reductions depend on the thread
    count, so every runtime scores with the same number (bit-identical results)."""

    def __init__(self, n: int) -> None:
        self.n, self.prev = n, None

    def __enter__(self):
        try:
            import torch
        except ImportError:  # pragma: no cover
            return self
        self.prev = torch.get_num_threads()
        if self.prev != self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> None:
        if self.prev is not None and self.prev != self.n:
            import torch

            torch.set_num_threads(self.prev)


def _run_pipeline(pipe: Pipeline, users: UserBatch) -> SlateParts:
    t = time.perf_counter()
    res = pipe.run(users)
    s = res.slate
    ms = (time.perf_counter() - t) * 1e3 - res.nearline_ms  # the request path's time (a table refresh apart)
    return s.item_ids, s.scores, s.channel, s.channel_names, ms, s.propensity, s.found_by, res.nearline_ms


def _per_request(parts: list[SlateParts], field: int) -> np.ndarray:
    """A per-call time of each part spread evenly over its requests (ms per request)."""
    return np.concatenate([np.full(len(p[0]), p[field] / max(len(p[0]), 1)) for p in parts])


def _join(parts: list[SlateParts]) -> Served:
    ids = np.concatenate([p[0] for p in parts])
    sc = np.concatenate([p[1] for p in parts])
    ch = np.concatenate([p[2] for p in parts])
    props = None
    if parts[0][5] is not None:
        props = Propensity(*(np.concatenate([getattr(p[5], f) for p in parts]) for f in ("position", "cascade", "slate")))
    found = None if parts[0][6] is None else np.concatenate([p[6] for p in parts])
    return Served(Slate(ids, sc, ch, parts[0][3], props, found), _per_request(parts, 4),
                  _per_request(parts, 7))


def _pack(u: UserBatch) -> tuple:
    """A UserBatch as a few flat arrays (CSR histories): cheap to serialise for an actor call."""
    lengths = np.fromiter((len(h) for h in u.histories), np.int64, len(u.histories))
    items = np.concatenate(u.histories).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
    ts = None
    if u.timestamps is not None:
        ts = np.concatenate(u.timestamps).astype(np.float64) if lengths.sum() else np.zeros(0)
    return u.user_ids, lengths, items, ts, u.now


def _unpack(p: tuple) -> UserBatch:
    user_ids, lengths, items, ts, now = p
    cuts = np.cumsum(lengths)[:-1]
    return UserBatch(user_ids, np.split(items, cuts), None if ts is None else np.split(ts, cuts), now)


class LocalRuntime:
    name = "local"

    def __init__(self, arms: list[ArmConfig], policies: dict, dataset=None, actors_per_arm: int = 1,
                 chunk_size: int = 128, threads: int = 1, availability=None) -> None:
        self.arms, self.dataset = arms, dataset
        self.chunk = chunk_size
        self.threads = threads
        self.reload(policies, availability)

    def reload(self, policies: dict, availability=None) -> None:
        """Serve with these (refitted) policies and item availability from the next batch on."""
        self.pipes = {a.name: Pipeline(a, {p: policies[p] for p in a.policies()}, self.dataset, availability)
                      for a in self.arms}

    def start(self, users: UserBatch) -> None:
        """Before the first request: the users and their histories at the run's start
        (``Pipeline.start``: each policy object once)."""
        started: set[int] = set()
        with _threads(self.threads):
            for pipe in self.pipes.values():
                pipe.start(users, started)

    def serve(self, work: dict[str, UserBatch]) -> dict[str, Served]:
        with _threads(self.threads):
            return {arm: _join([_run_pipeline(self.pipes[arm], u.slice(sl)) for sl in _chunks(len(u), self.chunk)])
                    for arm, u in work.items()}

    def close(self) -> None:
        pass


class RayRuntime:
    name = "ray"

    def __init__(self, arms: list[ArmConfig], policies: dict, dataset=None, actors_per_arm: int = 1,
                 chunk_size: int = 128, threads: int = 1, address: str | None = None, max_restarts: int = -1,
                 max_task_retries: int = 5, availability=None) -> None:
        import ray

        from simulator.engine.raycluster import init_ray

        init_ray(address)  # no address: a fresh local instance; an address: bounded, one-line failures
        self.ray = ray
        self.actor_cls = ray.remote(num_cpus=0, max_restarts=max_restarts,
                                    max_task_retries=max_task_retries)(_PipelineActor)
        self.arms, self.dataset, self.threads = arms, ray.put(dataset), threads
        self.k = actors_per_arm
        self.chunk = chunk_size
        self.actors: dict = {}
        self.reload(policies, availability)

    def reload(self, policies: dict, availability=None) -> None:
        """New actors serving these (refitted) policies and item availability from the next batch on."""
        self.close()
        refs = {p: self.ray.put(policies[p]) for a in self.arms for p in a.policies()}
        # the driver keeps the constructor arguments alive so a killed actor can be rebuilt
        self._keep = (refs, self.dataset)
        self.actors = {a.name: [self.actor_cls.remote(a.model_dump_json(), {p: refs[p] for p in a.policies()},
                                                      self.dataset, self.threads, availability)
                                for _ in range(self.k)] for a in self.arms}
        self.ray.get([a.ping.remote() for actors in self.actors.values() for a in actors])  # started and loaded

    def start(self, users: UserBatch) -> None:
        """Before the first request (``Pipeline.start``), in every actor: each holds its own policies."""
        packed = self.ray.put(_pack(users))
        self.ray.get([a.start_packed.remote(packed) for actors in self.actors.values() for a in actors])

    def serve(self, work: dict[str, UserBatch]) -> dict[str, Served]:
        futures = {}
        for arm, u in work.items():
            futures[arm] = [self.actors[arm][i % self.k].run_packed.remote(_pack(u.slice(sl)))
                            for i, sl in enumerate(_chunks(len(u), self.chunk))]
        return {arm: _join(self.ray.get(fs)) for arm, fs in futures.items()}

    def close(self) -> None:
        for actors in self.actors.values():
            for a in actors:
                self.ray.kill(a, no_restart=True)


class _PipelineActor:
    """One arm's pipeline inside a Ray actor (policies arrive through the object store)."""

    def __init__(self, arm_json: str, policy_refs: dict, dataset, threads: int = 1, availability=None) -> None:
        import ray

        _threads(threads).__enter__()  # for the actor's lifetime
        arm = ArmConfig.model_validate_json(arm_json)
        pols = {k: (ray.get(v) if isinstance(v, ray.ObjectRef) else v) for k, v in policy_refs.items()}
        self.pipe = Pipeline(arm, pols, dataset, availability)

    def run_packed(self, packed: tuple) -> SlateParts:
        return _run_pipeline(self.pipe, _unpack(packed))

    def start_packed(self, packed: tuple) -> None:
        self.pipe.start(_unpack(packed))

    def ping(self) -> bool:
        return True


RUNTIMES = {"local": LocalRuntime, "ray": RayRuntime}
