"""The simulation core's parts, each without a catalog: design, user model, event log, story, oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.truth import paired_lift
from policies.base import Slate, UserBatch
from simulator.core.synthetic import World, WorldConfig
from simulator.engine.design import ABDesign, SingleArm, place
from simulator.engine.eventlog import EventLog
from simulator.engine.oracle import TruthLog
from simulator.engine.scenario import WorldScenario
from simulator.engine.runtime import Served
from simulator.engine.story import Simulation, Timing
from simulator.engine.users import Response, WorldUser

WORLD = WorldConfig(n_users=60, n_items=40, n_topics=3, dim=4, days=5, seed=5)


def _slate(ids, arm_channel="x"):
    ids = np.asarray(ids, np.int64)
    return Slate(ids, np.where(ids >= 0, 1.0, -np.inf).astype(np.float32), np.where(ids >= 0, 0, -1).astype(np.int16),
                 (arm_channel,))


def test_ab_design_splits_by_salted_hash_and_places_each_arms_slate():
    d = ABDesign(("c", "t"), [1.0, 1.0], "salt")
    users = np.arange(200)
    rows = d.split(users)
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(200))  # every row served once
    assert (d.assign(users)[rows[1]] == 1).all() and 60 < len(rows[1]) < 140
    assert (ABDesign(("c", "t"), [1.0, 1.0], "other").assign(users) != d.assign(users)).any()
    sb = place(3, {0: (np.array([0, 2]), _slate([[5, 6], [7, -1]], "pop"), np.array([1.0, 1.0])),
                   1: (np.array([1]), _slate([[8, 9, 4]], "sasrec"), np.array([2.0]))})
    assert sb.item_ids.tolist() == [[5, 6, -1], [8, 9, 4], [7, -1, -1]]
    assert sb.arm.tolist() == [[0, 0, -1], [1, 1, 1], [0, -1, -1]]
    assert sb.channel[1].tolist() == ["sasrec"] * 3 and sb.channel[2].tolist() == ["pop", "", ""]
    assert sb.latency_ms.tolist() == [1.0, 2.0, 1.0]
    assert (SingleArm(("c", "t"), 1).assign(users) == 1).all()


def test_world_user_answers_without_side_effects_and_update_tires():
    w = World(WORLD)
    um = WorldUser(w)
    users, now = np.array([0, 1]), np.array([1e5, 1e5])
    slate = np.tile(np.arange(8), (2, 1))
    p0 = um.click_probs(users, slate, now)
    a = um.respond(users, slate, now, np.random.default_rng(0))
    assert isinstance(a, Response) and np.allclose(um.click_probs(users, slate, now), p0)  # answering changes nothing
    b = um.respond(users, slate, now, np.random.default_rng(0))
    assert (a.position == b.position).all()
    um.update(users, np.array([3, -1]), now)  # user 0 consumed item 3; user 1 nothing
    p1 = um.click_probs(users, slate, now)
    assert p1[0, 3] < p0[0, 3] and np.allclose(p1[1], p0[1])
    um.reset()
    assert np.allclose(um.click_probs(users, slate, now), p0)


class _Sink:
    def __init__(self):
        self.rows = {}

    def add(self, table, **cols):
        self.rows.setdefault(table, []).append(cols)

    def flush(self):
        pass

    def frame(self, table):
        parts = []
        for c in self.rows.get(table, []):
            n = max(len(v) for v in c.values() if hasattr(v, "__len__") and not isinstance(v, str))
            parts.append(pd.DataFrame({k: (v if hasattr(v, "__len__") and not isinstance(v, str) else [v] * n)
                                       for k, v in c.items()}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def test_event_log_numbers_requests_and_writes_each_event_once():
    sink = _Sink()
    log = EventLog(sink, ("c", "t"), feedback_delay_s=5.0, consume_delay_s=10.0)
    rid = log.new_requests(2)
    sb = place(2, {0: (np.array([0]), _slate([[4, 5]]), np.array([1.0])),
                   1: (np.array([1]), _slate([[6, 7]]), np.array([3.0]))})
    log.record(0, rid, np.array([10, 11]), np.array([100.0, 101.0]), np.array([0, 0]), np.array(["c", "t"], object), sb,
               Response(np.array([-1, 1]), np.array([1.0, 0.5])), np.array([3, 0]))
    log.record(1, log.new_requests(1), np.array([10]), np.array([200.0]), np.array([1]), np.array(["c"], object),
               place(1, {0: (np.array([0]), _slate([[4, 5]]), np.array([1.0]))}), Response(np.array([0]), np.ones(1)),
               np.array([4]))
    req, asg, fb = sink.frame("requests"), sink.frame("assignments"), sink.frame("feedback")
    assert req.request_id.tolist() == [0, 1, 2] and req.batch_no.tolist() == [0, 0, 1]
    assert req.history_len.tolist() == [3, 0, 4]  # what the arms were given with each request
    assert asg.user_id.tolist() == [10, 11] and asg.first_ts.tolist() == [100.0, 101.0]  # first seen only
    assert asg.arm.tolist() == ["c", "t"] and req.arm.tolist() == ["c", "t", "c"]
    clicks, consumes = fb[fb.event == "click"], fb[fb.event == "consume"]
    assert clicks.item_id.tolist() == [7, 4] and consumes.value.tolist() == [0.5, 1.0]
    assert clicks.ts.tolist() == [106.0, 205.0] and consumes.ts.tolist() == [116.0, 215.0]
    assert len(sink.frame("exposures")) == 6


class _Runtime:
    """Records the order arms were served in; every arm shows the items 0..K-1."""

    def __init__(self, k=5):
        self.k, self.orders, self.batches = k, [], []

    def serve(self, work):
        self.orders.append(tuple(work))
        self.batches.extend(work.values())
        return {a: Served(_slate(np.tile(np.arange(self.k), (len(u), 1))), np.ones(len(u)), np.zeros(len(u)))
                for a, u in work.items()}


def _simulation(design, log, runtime, um, seed=0, n=400, history_times=None):
    timing = Timing(sim_start=5 * 86400.0, n_requests=n, stop_at=None, batch_window_s=60.0, max_batch=512,
                    session_gap_s=30.0, abandon_prob=0.3, start_horizon_s=600.0, sessions_per_day=2.0,
                    feedback_delay_s=5.0)
    n_users = WORLD.n_users
    times = history_times or [np.zeros(0) for _ in range(n_users)]
    scenario = WorldScenario(None, None, None, timing.sim_start, [[] for _ in range(n_users)], times, um,
                             np.arange(n_users))
    return Simulation(timing, design, runtime, scenario, log, seed=seed)


def test_arm_order_is_random_per_batch_and_seeded():
    rt = _Runtime()
    _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(_Sink(), ("c", "t"), 5.0, 10.0), rt,
                WorldUser(World(WORLD))).run()
    both = [o for o in rt.orders if len(o) == 2]
    first_c = np.mean([o[0] == "c" for o in both])
    assert len(both) >= 10 and 0.2 < first_c < 0.8  # neither arm is always served first
    rt2 = _Runtime()
    _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(_Sink(), ("c", "t"), 5.0, 10.0), rt2,
                WorldUser(World(WORLD))).run()
    assert rt2.orders == rt.orders


def test_story_histories_grow_only_by_clicks_after_the_delay_and_runs_are_independent():
    um = WorldUser(World(WORLD))
    sink = _Sink()
    sim = _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(sink, ("c", "t"), 5.0, 10.0), _Runtime(), um)
    start = [list(h) for h in sim.histories]
    sim.run()
    clicks = sink.frame("feedback").query("event == 'click'")
    grown = {u: len(h) for u, h in enumerate(sim.histories) if h}
    assert sum(grown.values()) <= len(clicks) and len(clicks) > 0
    sim2 = _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(_Sink(), ("c", "t"), 5.0, 10.0), _Runtime(), um)
    assert sim2.histories == start  # each simulation starts from the same histories and a reset world


def test_arms_see_the_time_of_every_history_item():
    """HSTU's time bias and HLLM's use_time need the history's times in simulation too: a consumed
    item carries the time of the request it was clicked in."""
    sink, rt = _Sink(), _Runtime()
    sim = _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(sink, ("c", "t"), 5.0, 10.0), rt,
                      WorldUser(World(WORLD)), history_times=[np.zeros(0) for _ in range(WORLD.n_users)])
    sim.run()
    clicks = sink.frame("feedback").query("event == 'click'").merge(sink.frame("requests")[["request_id", "ts"]],
                                                                   on="request_id", suffixes=("", "_request"))
    seen = [(u, len(h)) for b in rt.batches for u, h in zip(b.user_ids, b.histories, strict=True) if len(h)]
    assert seen and all(b.timestamps is not None and len(t) == len(h) and np.all(t <= now)
                        for b in rt.batches for t, h, now in zip(b.timestamps, b.histories, b.now, strict=True))
    u = int(clicks.user_id.iloc[0])
    first = clicks[clicks.user_id == u].sort_values("ts")
    n = len(sim.histories[u])
    assert sim.history_times[u].tolist() == first.ts_request.tolist()[:n] and sim.histories[u] == first.item_id.tolist()[:n]


def test_a_story_runs_with_the_heap_frozen_and_unfreezes_it():
    import gc

    um = WorldUser(World(WORLD))
    sim = _simulation(SingleArm(("c",), 0), TruthLog(um, WORLD.n_users), _Runtime(k=5), um, n=50)
    during: list[int] = []
    sim.run(on_batch=lambda *_: during.append(gc.get_freeze_count()))
    assert during and min(during) > 0 and gc.get_freeze_count() == 0


def test_truth_log_sums_click_probabilities_not_samples():
    um = WorldUser(World(WORLD))
    log = TruthLog(um, WORLD.n_users)
    sim = _simulation(SingleArm(("c",), 0), log, _Runtime(k=5), um, n=300)
    sim.run()
    m = log.metrics()
    assert log.requests.sum() == 300 and log.exposures.sum() == 1500
    assert 0 < m["ctr"] < 1 and m["ctr"] == pytest.approx(log.clicks.sum() / 1500)
    assert m["session_length"] >= 1 and m["consumption"] == pytest.approx(log.clicks.sum() / (log.requests > 0).sum())


def test_one_pass_carries_its_own_monte_carlo_se_and_it_matches_the_spread_of_passes():
    """Issue 26: the oracle's default is one pass per arm (its time at most the simulate phase's);
    that pass's SE (a grouped jackknife over its users) must not understate what independent passes
    vary by. It also counts how users differ from one another (the passes all serve the same
    users), so it is conservative: 0.85-2.9x the passes' spread here."""
    um = WorldUser(World(WORLD))
    vals, ses = [], []
    for seed in range(40):
        log = TruthLog(um, WORLD.n_users)
        _simulation(SingleArm(("c",), 0), log, _Runtime(k=5), um, seed=seed, n=300).run()
        vals.append(log.metrics())
        ses.append(log.standard_errors())
    for m in ("ctr", "ndcg", "consumption", "session_length"):
        spread, own = np.std([v[m] for v in vals], ddof=1), np.mean([s[m] for s in ses])
        assert 0.6 < own / spread < 4.0, (m, own, spread)
    rel, se = paired_lift(np.array([vals[0]["ctr"]]), np.array([vals[1]["ctr"]]),
                          np.array([ses[0]["ctr"]]), np.array([ses[1]["ctr"]]))
    assert np.isfinite(se) and se > 0 and rel == pytest.approx(vals[1]["ctr"] / vals[0]["ctr"] - 1)
    assert np.isnan(paired_lift(np.array([1.0]), np.array([1.1]))[1])  # one pass, no SE known


def test_paired_lift_uses_the_pairing():
    c = np.array([1.0, 2.0, 3.0, 4.0])
    rel, se = paired_lift(c, c * 1.1)
    assert rel == pytest.approx(0.1) and se < 1e-6  # perfectly paired: (almost) no MC error
    rel, se = paired_lift(c, c[::-1] * 1.1)
    assert rel == pytest.approx(0.1) and se > 0.1
    assert np.isnan(paired_lift(np.zeros(3), np.ones(3))[0])


def test_user_batch_is_what_the_runtime_receives():
    class Spy(_Runtime):
        def serve(self, work):
            for u in work.values():
                assert isinstance(u, UserBatch) and u.now is not None and len(u.histories) == len(u)
            return super().serve(work)

    _simulation(ABDesign(("c", "t"), [1, 1], "s"), EventLog(_Sink(), ("c", "t"), 5.0, 10.0), Spy(),
                WorldUser(World(WORLD)), n=50).run()


class _Pipe:
    def __init__(self, pure: bool, key: str | None = None) -> None:
        self.pure, self.key = pure, key

    def history_only(self) -> bool:
        return self.pure

    def slate_key(self) -> str:
        return self.key or str(id(self))


class _CountingRuntime:
    """Slates that are a function of (user, history, now): shows what the wrapper reused."""

    def __init__(self) -> None:
        self.pipes, self.rows = {"pure": _Pipe(True), "timed": _Pipe(False)}, []

    def serve(self, work):
        out = {}
        for arm, b in work.items():
            self.rows.append((arm, len(b)))
            ids = np.array([[u, len(h), int(t)] for u, h, t in zip(b.user_ids, b.histories, b.now, strict=True)])
            out[arm] = Served(_slate(ids, arm), np.ones(len(b)), np.zeros(len(b)))
        return out

    def reload(self, policies, availability=None) -> None:
        pass


def test_reusing_runtime_serves_a_repeated_request_as_before_and_only_for_history_only_arms():
    from simulator.engine.oracle import ReusingRuntime

    inner = _CountingRuntime()
    rt = ReusingRuntime(inner)

    def batch(users, lens, now):
        return UserBatch(np.array(users), [np.arange(n) for n in lens], None, np.full(len(users), float(now)))

    first = rt.serve({"pure": batch([1, 2], [3, 0], 5), "timed": batch([3], [1], 5)})
    assert first["pure"][0].item_ids.tolist() == [[1, 3, 5], [2, 0, 5]]
    again = rt.serve({"pure": batch([2, 1, 4], [0, 4, 1], 9), "timed": batch([3], [1], 9)})
    assert again["pure"][0].item_ids.tolist() == [[2, 0, 5], [1, 4, 9], [4, 1, 9]]  # user 2: reused
    assert again["timed"][0].item_ids.tolist() == [[3, 1, 9]]  # reads the time: served again
    assert inner.rows[2:] == [("pure", 2), ("timed", 1)] and rt.stats == {"reused": 1, "served": 6, "from_run": 0}
    everything = rt.serve({"pure": batch([2, 1], [0, 4], 11)})
    assert everything["pure"][0].item_ids.tolist() == [[2, 0, 5], [1, 4, 9]] and len(inner.rows) == 4
    rt.reload({})  # refitted policies: nothing is reused
    assert rt.serve({"pure": batch([2], [0], 12)})["pure"][0].item_ids.tolist() == [[2, 0, 12]]


def test_the_oracle_starts_from_the_slates_the_run_served_until_a_retrain():
    from simulator.engine.oracle import ReusingRuntime, SlateRecorder

    def batch(users, lens, now):
        return UserBatch(np.array(users), [np.arange(n) for n in lens], None, np.full(len(users), float(now)))

    run_rt = _CountingRuntime()
    rec = SlateRecorder(run_rt, {"pure": run_rt.pipes["pure"].slate_key()})
    served = rec.serve({"pure": batch([1, 2], [3, 0], 5), "timed": batch([3], [1], 5)})
    assert served["pure"][0].item_ids.tolist() == [[1, 3, 5], [2, 0, 5]] and rec.pipes is run_rt.pipes
    key = run_rt.pipes["pure"].slate_key()
    assert set(rec.memo) == {key} and len(rec.memo[key]) == 2  # the time-reading arm: not kept
    passes = _CountingRuntime()
    passes.pipes["pure"] = run_rt.pipes["pure"]
    rt = ReusingRuntime(passes, rec.memo)
    got = rt.serve({"pure": batch([2, 1], [0, 4], 9), "timed": batch([3], [1], 9)})
    assert got["pure"][0].item_ids.tolist() == [[2, 0, 5], [1, 4, 9]]  # user 2 as the run served it
    assert passes.rows == [("pure", 1), ("timed", 1)] and rt.stats == {"reused": 1, "served": 2, "from_run": 2}
    kept = len(rec.memo[key])
    rec.reload({})  # a retrain in the run: its later slates are not the passes' slates
    rec.serve({"pure": batch([5], [2], 13)})
    assert len(rec.memo[key]) == kept and not rec.recording
    small = SlateRecorder(_CountingRuntime(), {"pure": "k"}, max_bytes=1)
    small.serve({"pure": batch([1, 2], [3, 0], 5)})
    small.serve({"pure": batch([4], [1], 6)})
    assert len(small.memo["k"]) == 2 and not small.recording  # the byte budget ends the recording


def test_identical_arms_share_their_slates_in_the_oracle():
    from simulator.engine.oracle import ReusingRuntime

    inner = _CountingRuntime()
    inner.pipes = {"a": _Pipe(True, "same"), "b": _Pipe(True, "same"), "c": _Pipe(True, "other")}
    rt = ReusingRuntime(inner)
    h = UserBatch(np.array([1]), [np.arange(3)], None, np.array([5.0]))
    rt.serve({"a": h})
    rt.serve({"b": h, "c": h})  # b as a served it; c is another pipeline: served
    assert inner.rows == [("a", 1), ("c", 1)] and rt.stats["reused"] == 1
