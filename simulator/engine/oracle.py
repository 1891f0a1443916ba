"""The world oracle: each arm's true metric values, from the synthetic world's ground truth.

A counterfactual pass re-tells the run's story (same users, same window of simulated time,
same pipelines) with EVERY user served by one arm, and sums the world's click probability of
each slate position instead of counting sampled clicks: expected clicks per request carry no
click-sampling noise (by the tower rule, the sum of each request's click probability has the
same expectation as the clicks). Trajectories (session lengths, histories, fatigue) still
depend on sampled choices, so each arm gets ``reps`` passes with their own seeds, independent
of the run's; the truth is their mean and its Monte-Carlo standard error is reported with it
(one pass, the default: that pass's own SE, a grouped jackknife over its users).

The passes are where the oracle's time goes (arms x reps stories, each serving every user), and
many of their requests repeat one another: a user's first request of every pass has the same
history, and so has every request after a request without a click. :class:`ReusingRuntime`
serves such a repeat (same user and history, and the same arm or one identical to it:
``Pipeline.slate_key``, as in an A/A test) with the slate computed the first time, for an arm whose
slate reads nothing else (``Pipeline.history_only``). The run itself served many of
those requests (every user's first one, from the history the run started from): :class:`SlateRecorder`
keeps the run's slates of such arms and the passes start from them. A slate is a function of the
request there, so reuse changes no result, only the time (a resumed oracle, without the run's
slates, computes them again).

Estimand: the metric's value over the run's window if every user were served by the arm,
in expectation over the simulation's randomness (arrivals, choices). The A/B test of the run
estimates the same quantity from half the users each.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np

from policies.base import Slate, UserBatch
from simulator.core.metrics import TRUTH_METRICS, UserSums, truth_values
from simulator.engine.design import SingleArm, SlateBatch
from simulator.engine.forked import Workers
from simulator.engine.runtime import Served
from simulator.engine.users import Response

DAY = 86400.0
RECORD_BYTES = 256 * 2**20  # SlateRecorder keeps the run's slates up to this size
JACKKNIFE_GROUPS = 20  # user groups of a pass's own Monte-Carlo SE (TruthLog.standard_errors)


class TruthLog:
    """Per-user sums of one counterfactual pass (same interface as EventLog, writes nothing)."""

    def __init__(self, user_model, n_users: int) -> None:
        self.user_model = user_model
        self.next_id = 0
        self.requests = np.zeros(n_users)
        self.exposures = np.zeros(n_users)
        self.clicks = np.zeros(n_users)  # expected
        self.dcg = np.zeros(n_users)  # expected
        self.sampled = np.zeros(n_users)  # sampled clicks (click_any)
        self.sessions: list[np.ndarray] = []  # per batch: (B, 2) (user, session) of each request
        self.days: list[np.ndarray] = []  # per batch: (B, 2) (user, day) of each request

    def new_requests(self, n: int) -> np.ndarray:
        self.next_id += n
        return np.arange(self.next_id - n, self.next_id, dtype=np.int64)

    def record(self, batch_no, rid, users, now, sess, labels, slates: SlateBatch,
               resp: Response, history_len: np.ndarray) -> None:
        shown = slates.item_ids >= 0
        p = np.where(shown, self.user_model.click_probs(users, slates.item_ids, now), 0.0)  # (B, K)
        gain = 1.0 / np.log2(np.arange(p.shape[1]) + 2.0)  # one click per slate: NDCG = DCG
        np.add.at(self.requests, users, 1.0)
        np.add.at(self.exposures, users, shown.sum(1))
        np.add.at(self.clicks, users, p.sum(1))
        np.add.at(self.dcg, users, p @ gain)
        np.add.at(self.sampled, users, (resp.position >= 0).astype(float))
        self.sessions.append(np.stack([users, np.asarray(sess, np.int64)], 1))
        self.days.append(np.stack([users, np.floor(np.asarray(now) / DAY).astype(np.int64)], 1))

    def flush(self) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        """Each known metric's value in this pass (the definitions: simulator/core/metrics.py)."""
        return truth_values(self._sums())

    def standard_errors(self, groups: int = JACKKNIFE_GROUPS) -> dict[str, float]:
        """Each metric's Monte-Carlo SE within this pass: a grouped jackknife over its users (users'
        trajectories are independent given the arm; group g = users with id % groups == g), so one
        pass carries its own precision. It also counts how users differ from one another, which
        every pass shares, so it is conservative (0.85-2.9x the spread of independent passes in
        ``test_one_pass_carries_its_own_monte_carlo_se...``)."""
        full = self._sums()
        users = np.arange(len(full.requests)) % groups
        drop = [truth_values(UserSums(*(np.where(users == g, 0.0, a) for a in astuple(full))))
                for g in range(groups)]
        out = {}
        for m in TRUTH_METRICS:
            v = np.array([d[m] for d in drop], float)
            out[m] = float(np.sqrt((groups - 1) / groups * ((v - v.mean()) ** 2).sum()))
        return out

    def _sums(self) -> UserSums:
        return UserSums(self.requests, self.exposures, self.clicks, self.dcg, self.sampled,
                        self._per_user(self.sessions), self._per_user(self.days))

    def _per_user(self, pairs: list[np.ndarray]) -> np.ndarray:
        """How many distinct (user, session) or (user, day) pairs of ``pairs`` each user has."""
        users = (np.unique(np.concatenate(pairs), axis=0)[:, 0] if pairs else np.zeros(0, np.int64))
        return np.bincount(users, minlength=len(self.requests))


Memo = dict[str, dict[tuple[int, bytes], tuple]]  # slate key -> (user, history bytes) -> one slate row


def _key(user, history) -> tuple[int, bytes]:
    return int(user), np.asarray(history, np.int64).tobytes()


class SlateRecorder:
    """The run's runtime (``inner``, local or Ray: serving and latency are its own), keeping the
    slates its history-only arms (``history_only``: arm -> ``Pipeline.slate_key``) served by (user,
    history) in ``memo`` for the oracle's passes, until a retrain (the passes start from the run's
    first policies) or ``max_bytes`` ends it."""

    def __init__(self, inner, history_only: dict[str, str], max_bytes: int = RECORD_BYTES) -> None:
        self.inner, self.arms, self.max_bytes = inner, dict(history_only), max_bytes
        self.memo: Memo = {}
        self.nbytes, self.recording = 0, bool(history_only)
        self.served_ms: dict[str, list[float]] = {}  # arm -> [request-path + nearline ms, requests]

    def __getattr__(self, name: str):  # the inner runtime's attributes (a test hook reads its actors)
        return getattr(self.inner, name)

    def reload(self, policies: dict, availability=None) -> None:
        self.recording = False  # slates of refitted policies are not the passes' slates
        self.inner.reload(policies, availability)

    def close(self) -> None:
        self.inner.close()

    def ms_per_request(self) -> dict[str, float]:
        """Each arm's serving time per request in the run so far (what a pass of it will cost)."""
        return {a: ms / max(n, 1.0) for a, (ms, n) in self.served_ms.items()}

    def serve(self, work: dict[str, UserBatch]) -> dict[str, Served]:
        out = self.inner.serve(work)
        for a, got in out.items():
            tot = self.served_ms.setdefault(a, [0.0, 0.0])
            tot[0] += float(got.latency_ms.sum() + got.nearline_ms.sum())
            tot[1] += len(got.latency_ms)
        for a in sorted(self.arms.keys() & work.keys()) if self.recording else ():
            s, memo = out[a].slate, self.memo.setdefault(self.arms[a], {})
            for i, (u, h) in enumerate(zip(work[a].user_ids, work[a].histories, strict=True)):
                k = _key(u, h)
                if k not in memo:
                    memo[k] = (s.item_ids[i].copy(), s.scores[i].copy(), s.channel[i].copy(), s.channel_names)
                    self.nbytes += len(k[1]) + s.item_ids[i].nbytes + s.scores[i].nbytes + s.channel[i].nbytes
            if self.nbytes > self.max_bytes:
                self.recording = False
        return out


class ReusingRuntime:
    """A runtime for the counterfactual passes (module doc): a request served before by the same
    history-only arm (same user and history), in a pass or in the run (``memo``: a SlateRecorder's),
    gets the same slate again; every other request goes to the wrapped runtime (``inner``: a
    LocalRuntime), in one call per arm and batch."""

    def __init__(self, inner, memo: Memo | None = None) -> None:
        self.inner = inner
        self.memo: Memo = memo if memo is not None else {}
        self.stats = {"reused": 0, "served": 0, "from_run": sum(len(m) for m in self.memo.values())}

    def reload(self, policies: dict, availability=None) -> None:
        """Refitted policies (a scheduled retrain): nothing served before is reused."""
        self.inner.reload(policies, availability)
        self.memo.clear()

    def close(self) -> None:
        self.inner.close()

    def serve(self, work: dict[str, UserBatch]) -> dict[str, Served]:
        keys = {a: [_key(u, h) for u, h in zip(b.user_ids, b.histories, strict=True)]
                for a, b in work.items() if self.inner.pipes[a].history_only()}
        slot = {a: self.inner.pipes[a].slate_key() for a in keys}
        miss = {a: np.array([i for i, k in enumerate(keys[a]) if k not in self.memo.get(slot[a], {})], np.int64)
                if a in keys else np.arange(len(b)) for a, b in work.items()}
        new = self.inner.serve({a: _rows(work[a], m) for a, m in miss.items() if len(m) or not len(work[a])})
        out = {}
        for a, b in work.items():
            self.stats["served"] += len(miss[a])
            self.stats["reused"] += len(b) - len(miss[a])
            out[a] = new[a] if a not in keys or not len(b) else self._reuse(slot[a], keys[a], miss[a], new.get(a))
        return out

    def _reuse(self, slot: str, keys: list, miss: np.ndarray, new: Served | None) -> Served:
        """An arm's slates for a batch: the rows at ``miss`` just served (``new``, kept under the arm's
        slate key ``slot``), the others as served before; times 0 for a reused row (the passes store
        no times)."""
        memo = self.memo.setdefault(slot, {})
        lat, near = np.zeros(len(keys)), np.zeros(len(keys))
        if new is not None:
            s, lat[miss], near[miss] = new
            for j, i in enumerate(miss.tolist()):
                memo.setdefault(keys[i], (s.item_ids[j], s.scores[j], s.channel[j], s.channel_names))
        got = [memo[k] for k in keys]
        ids, sc, ch = (np.stack([g[f] for g in got]) for f in range(3))
        return Served(Slate(ids, sc, ch, got[0][3], None), lat, near)


def _rows(b: UserBatch, rows: np.ndarray) -> UserBatch:
    if len(rows) == len(b):
        return b
    return UserBatch(b.user_ids[rows], [b.histories[i] for i in rows],
                     None if b.timestamps is None else [b.timestamps[i] for i in rows],
                     None if b.now is None else b.now[rows])


@dataclass(frozen=True)
class Truth:
    """Per arm, metric and pass: the value of one counterfactual pass. Pass r of every arm uses the
    same seed (common random numbers: the same arrivals), so lifts are compared pass by pass."""

    passes: dict[str, list[dict[str, float]]]  # arm -> one dict of metric values per pass
    window: tuple[float, float]
    ses: dict[str, list[dict[str, float]]]  # ... each pass's own Monte-Carlo SE (same shape)

    @property
    def values(self) -> dict[str, dict[str, float]]:
        return {a: {m: float(np.mean([p[m] for p in ps])) for m in TRUTH_METRICS}
                for a, ps in self.passes.items()}

    def rows(self) -> list[tuple[str, str, int, float, float | None]]:
        """(arm, metric, pass, value, the pass's own SE) for the truth table."""
        return [(arm, m, r, p[m], self.ses[arm][r][m])
                for arm, ps in self.passes.items() for r, p in enumerate(ps) for m in TRUTH_METRICS]


def oracle_seed(seed: int, rep: int) -> int:
    """Seeds of the oracle passes: never the run's own seed (independent randomness)."""
    return int(np.random.SeedSequence([seed, 0x0A11E, rep]).generate_state(1)[0])


def world_truth(make_simulation, arm_names: tuple[str, ...], n_users: int, user_model, seed: int,
                reps: int, window: tuple[float, float], *, shares: tuple | None = None,
                workers: Workers = Workers()) -> Truth:
    """Run ``reps`` counterfactual passes per arm. ``make_simulation(design, log, seed)`` builds the
    run's Simulation with another design/log/seed (everything else unchanged). ``shares``: per arm,
    a key; the passes of arms with one key (the same slates: ``Pipeline.slate_key``) and the reps of
    an arm run in one process, one after the other (they reuse one another's slates); such groups
    run in up to ``workers.n`` processes at once (``simulator.engine.forked``: same results; a job
    is ``(arm index, rep)``)."""
    if reps < 1:
        raise ValueError("world_truth needs reps >= 1")
    groups: dict = {}
    for i, key in enumerate(shares or arm_names):
        groups.setdefault(key, []).extend((i, r) for r in range(reps))

    def one_pass(job: tuple[int, int]) -> tuple[dict[str, float], dict[str, float]]:
        i, r = job
        log = TruthLog(user_model, n_users)
        make_simulation(SingleArm(arm_names, i), log, oracle_seed(seed, r)).run()
        return log.metrics(), log.standard_errors()

    done = workers.run(one_pass, list(groups.values()))
    passes = {a: [done[i, r][0] for r in range(reps)] for i, a in enumerate(arm_names)}
    ses = {a: [done[i, r][1] for r in range(reps)] for i, a in enumerate(arm_names)}
    return Truth(passes, window, ses)
