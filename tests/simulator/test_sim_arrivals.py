"""Items released during the run: HLLM serves a new item from its text before any retrain, an ID
arm only after a scheduled retrain has seen it; nobody is shown an item before its release;
``retrain_every`` runs are deterministic and resumable."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from _simdata import event_frames, tiny_arm, tiny_config

from simulator.core import Catalog
from simulator.core.synthetic import WorldConfig, write_world
from simulator.engine.run import resume_experiment, run_experiment

WORLD = WorldConfig(n_users=120, n_items=80, n_topics=4, dim=8, days=20, sessions_per_user=3,
                    choices_per_session=4, seed=3, text_signal=0.8, arrivals=0.25, arrival_window_s=600.0)
EVERY = 900.0


@pytest.fixture(scope="module")
def arrivals_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("arrivals")
    cat = Catalog(str(d / "cat.duckdb"))
    write_world(cat, "synthetic-arrivals", WORLD)
    torch.set_num_threads(1)
    yield cat, d / "artifacts"
    cat.close()


def _config(art, **top):
    top = {"n_requests": 700, **top}
    return tiny_config(art, dataset="synthetic-arrivals", oracle_reps=0, retrain_every=EVERY,
                       arms=[tiny_arm("control", "sasrec", "control"), tiny_arm("treatment", "hllm")],
                       policies={"sasrec": {"max_len": 8, "hidden": 16, "n_layers": 1, "epochs": 1, "batch_size": 64},
                                 "hllm": {"preset": "tiny", "stage1_epochs": 0, "stage2_epochs": 1, "max_len": 12}},
                       **top)


def test_new_items_reach_hllm_from_text_and_id_arms_after_a_retrain(arrivals_world):
    cat, art = arrivals_world
    rid = run_experiment(_config(art), cat, progress=False)
    s = cat.info("synthetic-arrivals").schema_name
    items = cat.con.execute(f"SELECT item_id, release_ts FROM {s}.items").df()
    start = cat.con.execute("SELECT sim_start FROM runs WHERE run_id = ?", [rid]).fetchall()[0][0]
    exp = cat.con.execute("SELECT arm, item_id, ts FROM exposures WHERE run_id = ?", [rid]).df().merge(items)
    assert (exp.ts >= exp.release_ts).all()  # nothing is shown before its release
    new = exp[exp.release_ts > start]
    # the first refit runs at the first batch at or after start + EVERY; that batch serves the requests
    # of the batch window before it
    first_retrain = start + EVERY - _config(art).batch_window_s
    assert (new[new.arm == "treatment"].ts < first_retrain).any()  # HLLM: from the text, no retrain
    sasrec = new[new.arm == "control"]
    assert (sasrec.ts >= first_retrain).all() and len(sasrec) > 0  # the ID arm: only once refitted


def test_retrain_runs_are_deterministic_and_resumable(arrivals_world):
    cat, art = arrivals_world
    cfg = _config(art, n_requests=500)
    base = run_experiment(cfg, cat, progress=False)
    again = run_experiment(cfg, cat, progress=False)

    def stop(batch_no, runtime):
        if batch_no == 8:  # after the first refit (at batch 7)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as ei:
        run_experiment(cfg, cat, progress=False, on_batch=stop)
    resumed = resume_experiment(ei.value.args[0], cat, progress=False).run_id
    want = event_frames(cat, base)
    for rid in (again, resumed):
        got = event_frames(cat, rid)
        for t, df in want.items():
            pd.testing.assert_frame_equal(got[t], df, check_exact=True, obj=t)


def test_every_pass_starts_with_the_initial_policies(arrivals_world):
    """The oracle's passes share one runtime: a pass must not inherit the previous pass's refits."""
    from simulator.engine.retrain import Retrainer
    from simulator.engine.run import prepare

    cat, art = arrivals_world
    cfg = _config(art)
    setup = prepare(cfg, cat)

    class Runtime:
        def __init__(self):
            self.loaded = []

        def reload(self, policies, availability):
            self.loaded.append((policies, availability))

    initial, rt = {"sasrec": object(), "hllm": object()}, Runtime()
    r = Retrainer(cfg, setup, initial)
    r.start(rt)
    assert rt.loaded[-1][0] is initial and rt.loaded[-1][1] is not None  # new items: an availability
    assert not r.maybe_refit(setup.sim_start + EVERY - 1, setup.histories, setup.history_times, rt)
    r.start(rt)
    assert rt.loaded[-1][0] is initial and len(rt.loaded) == 2
