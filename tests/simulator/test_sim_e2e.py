"""End-to-end runs on a tiny synthetic world: determinism, resume, Ray parity, actor kill."""

import numpy as np
import pandas as pd
import pytest
from _simdata import event_frames, tiny_catalog, tiny_config

from simulator.engine.run import resume_experiment, run_experiment


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    cat = tiny_catalog(str(d / "cat.duckdb"))
    art = d / "artifacts"
    base = run_experiment(tiny_config(art), cat, progress=False)
    yield cat, art, base
    cat.close()


def _same(a: dict, b: dict) -> None:
    for t in a:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=True, obj=t)


def test_run_writes_consistent_events(env):
    cat, _, rid = env
    ev = event_frames(cat, rid)
    req, exp, fb, asg = ev["requests"], ev["exposures"], ev["feedback"], ev["assignments"]
    assert len(req) == 300 and req.request_id.tolist() == list(range(300))
    status = cat.con.execute("SELECT status, n_requests FROM runs WHERE run_id = ?", [rid]).fetchall()[0]
    assert status == ("complete", 300)
    # every user in exactly one arm, and all their requests/exposures/feedback carry that arm
    assert asg.user_id.is_unique
    arm_of = dict(zip(asg.user_id, asg.arm, strict=True))
    for df in (req, exp, fb):
        assert (df.user_id.map(arm_of) == df.arm).all()
    assert set(req.user_id) == set(asg.user_id)
    # slates: K=5, no duplicate item in a slate, feedback points at shown items
    assert (exp.groupby("request_id").size() <= 5).all()
    assert not exp.duplicated(["request_id", "item_id"]).any()
    shown = exp.set_index(["request_id", "position"]).item_id
    assert (shown.loc[list(zip(fb.request_id, fb.position, strict=True))].to_numpy() == fb.item_id.to_numpy()).all()
    assert set(exp.channel) <= {"popularity", "sasrec"}
    assert (fb.ts >= req.set_index("request_id").ts.loc[fb.request_id].to_numpy()).all()
    assert len(fb) > 0


def test_same_seed_identical_tables_other_seed_differs(env):
    cat, art, base = env
    again = run_experiment(tiny_config(art), cat, progress=False)
    _same(event_frames(cat, base), event_frames(cat, again))
    other = run_experiment(tiny_config(art, seed=2), cat, progress=False)
    assert not event_frames(cat, other)["exposures"].equals(event_frames(cat, base)["exposures"])


def test_interrupt_then_resume_equals_uninterrupted(env):
    cat, art, base = env

    def stop(batch_no, runtime):
        if batch_no == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as ei:
        run_experiment(tiny_config(art), cat, progress=False, on_batch=stop)
    rid = ei.value.args[0]
    st, n = cat.con.execute("SELECT status, n_requests FROM runs WHERE run_id = ?", [rid]).fetchall()[0]
    assert st == "incomplete" and 0 < n < 300  # what was written is kept
    assert resume_experiment(rid, cat, progress=False).phases == ("simulate", "oracle")
    assert cat.con.execute("SELECT status FROM runs WHERE run_id = ?", [rid]).fetchall()[0][0] == "complete"
    _same(event_frames(cat, base), event_frames(cat, rid))


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.ray
def test_ray_runtime_identical_and_survives_actor_kill(env, ray_session):
    cat, art, base = env
    ray = ray_session
    killed = []

    def kill(batch_no, runtime):
        if batch_no in (2, 5):  # kill a pipeline actor mid-run; Ray restarts it and retries the batch
            actor = runtime.actors["treatment"][0]
            ray.kill(actor, no_restart=False)
            killed.append(batch_no)

    rid = run_experiment(tiny_config(art, runtime="ray", actors_per_arm=2), cat, progress=False, on_batch=kill)
    assert killed == [2, 5]
    _same(event_frames(cat, base), event_frames(cat, rid))
    n = cat.con.execute("SELECT count(*) FROM exposures WHERE run_id = ?", [rid]).fetchall()[0][0]
    n0 = cat.con.execute("SELECT count(*) FROM exposures WHERE run_id = ?", [base]).fetchall()[0][0]
    assert n == n0


def test_replay_run_hits_only_future_logs_of_that_user(env):
    cat, art, _ = env
    cfg = tiny_config(art, user_model="replay", replay_window=5, replay_start_quantile=0.7, n_requests=400)
    rid = run_experiment(cfg, cat, progress=False)
    ds = cat.load_dataset("synthetic-tiny")
    seqs = ds.sequences
    req = event_frames(cat, rid)["requests"].set_index("request_id")
    fb = event_frames(cat, rid)["feedback"]
    sim_start = cat.con.execute("SELECT sim_start FROM runs WHERE run_id = ?", [rid]).fetchall()[0][0]
    assert (req.ts > sim_start).all()  # requests replay the log after the simulation start
    clicks = fb[fb.event == "click"]
    assert len(clicks) > 0
    for r in clicks.itertuples():
        u, t = int(r.user_id), float(req.ts.loc[r.request_id])
        items, ts = seqs.seq(u), seqs.times(u)
        start = np.searchsorted(ts, t, side="right")
        assert r.item_id in items[start:start + 5], (u, t, r.item_id)  # that user's future, in the window


def _spy_scores(monkeypatch, cls) -> dict[tuple[int, int], set[float]]:
    """(user, item) -> every score ``cls.score_all`` returned for that pair during the test."""
    seen: dict[tuple[int, int], set[float]] = {}
    orig = cls.score_all

    def score_all(self, users):
        out = orig(self, users)
        for u, row in zip(users.user_ids, out, strict=True):
            for i, s in enumerate(row):
                seen.setdefault((int(u), i), set()).add(float(s))
        return out

    monkeypatch.setattr(cls, "score_all", score_all)
    return seen


def test_hllm_rank_as_fine_ranker_of_an_hllm_arm(tmp_path, monkeypatch):
    from _simdata import tiny_arm

    from hllm.rank_policy import HLLMRankPolicy

    ranked = _spy_scores(monkeypatch, HLLMRankPolicy)
    cat = tiny_catalog(str(tmp_path / "cat.duckdb"))
    arm = dict(tiny_arm("treatment", "hllm"), fine={"policy": "hllm_rank", "keep": 12})
    tiny = {"preset": "tiny", "stage1_epochs": 0}
    cfg = tiny_config(tmp_path / "art", n_requests=120, arms=[tiny_arm("control", "popularity", "control"), arm],
                      policies={"hllm": tiny, "hllm_rank": {"hllm": tiny, "ranker": {"hidden": 8, "epochs": 1}}})
    rid = run_experiment(cfg, cat, progress=False)
    ev = event_frames(cat, rid)
    treated = ev["exposures"][ev["exposures"].arm == "treatment"]
    assert len(treated) > 0 and set(treated.channel) <= {"hllm", "popularity"}
    # hllm_rank ranked: every shown score is one hllm_rank gave that user for that item (a click
    # probability), and each slate is in the order of those scores
    assert all(r.score in ranked.get((r.user_id, r.item_id), ()) for r in treated.itertuples())
    assert treated.score.between(0, 1, inclusive="neither").all()
    for _, slate in treated.groupby("request_id"):
        assert (np.diff(slate.sort_values("position").score.to_numpy()) <= 0).all()
    cat.close()


@pytest.mark.ray
def test_interleaving_on_ray_equals_in_process(env, ray_session):
    cat, art, _ = env
    arms = [{"name": "c", "role": "control", "channels": [{"policy": "popularity", "quota": 20}], "slate_size": 5},
            {"name": "t", "role": "treatment", "channels": [{"policy": "sasrec", "quota": 20}], "slate_size": 5}]
    local = run_experiment(tiny_config(art, design="interleave", arms=arms, oracle_reps=0), cat, progress=False)
    ray = run_experiment(tiny_config(art, design="interleave", arms=arms, oracle_reps=0, runtime="ray",
                                     actors_per_arm=2), cat, progress=False)
    _same(event_frames(cat, local), event_frames(cat, ray))
