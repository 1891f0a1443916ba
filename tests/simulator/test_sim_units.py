"""Fast unit tests: config validation, pipeline stages, replay user (no leakage)."""

import subprocess
import sys

import numpy as np
import pytest
from _simdata import tiny_arm, tiny_config

from policies.base import FullScorePolicy, UserBatch
from simulator.core import Catalog
from simulator.core.errors import ConfigError, NotFoundError
from simulator.core.sequences import Sequences
from simulator.engine.config import parse_config
from simulator.engine.pipeline import Pipeline, merge_channels
from simulator.engine.run import validate
from simulator.engine.users import ReplayUser


class FixedScores(FullScorePolicy):
    def __init__(self, scores):
        self.s = np.asarray(scores, np.float32)
        self.n_items = len(self.s)

    def score_all(self, users):
        return np.broadcast_to(self.s, (len(users), self.n_items)).copy()


def test_merge_dedups_and_keeps_channel_of_origin():
    from policies.base import Candidates

    a = Candidates(np.array([[1, 2, 3]]), np.array([[3, 2, 1]], np.float32))
    b = Candidates(np.array([[2, 4, -1]]), np.array([[9, 8, -np.inf]], np.float32))
    m = merge_channels([a, b], ("a", "b"))
    assert m.item_ids[0].tolist()[:4] == [1, 2, 3, 4] and m.item_ids[0, 4:].tolist() == [-1, -1]
    assert m.channel[0, :4].tolist() == [0, 0, 0, 1]


def test_pipeline_quotas_cuts_seen_filter():
    cfg = parse_config({"arms": [
        {"name": "x", "role": "control", "channels": [{"policy": "p", "quota": 4}, {"policy": "q", "quota": 4}],
         "coarse": {"policy": "q", "keep": 6}, "fine": {"policy": "p", "keep": 5}, "slate_size": 3},
        {"name": "y", "channels": [{"policy": "p", "quota": 3}], "slate_size": 3}]})
    p = FixedScores(np.arange(20, 0, -1))  # prefers low ids
    q = FixedScores(np.arange(20))  # prefers high ids
    pipe = Pipeline(cfg.arms[0], {"p": p, "q": q})
    users = UserBatch(np.array([0, 1]), [np.array([0], np.int64), np.array([], np.int64)])
    res = pipe.run(users)
    s = res.slate
    assert s.item_ids.shape == (2, 3)
    assert 0 not in s.item_ids[0]  # seen item filtered
    # merge [0,1,2,3 | 19,18,17,16] -> coarse q keeps the 6 highest ids -> fine p keeps the lowest
    assert s.item_ids[1].tolist() == [2, 3, 16]
    names = np.array(s.channel_names)[s.channel[1]]
    assert names.tolist() == ["p", "p", "q"]
    assert set(res.stage_ms) == {"retrieve", "coarse", "fine", "rerank"}


def test_bad_configs_fail_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="exceeds"):
        parse_config({"arms": [tiny_arm("a", "popularity"), {**tiny_arm("b", "sasrec"), "slate_size": 50}]})
    with pytest.raises(ConfigError, match="coarse.keep"):
        parse_config({"arms": [tiny_arm("a", "popularity"),
                               {**tiny_arm("b", "sasrec"), "coarse": {"policy": "sasrec", "keep": 500}}]})
    with pytest.raises(ConfigError, match="nosuch"):
        parse_config({"arms": [tiny_arm("a", "popularity")], "nosuch": 1})
    cat = Catalog(str(tmp_path / "c.duckdb"))
    with pytest.raises(ConfigError, match="unknown policy 'nosuch'"):
        validate(tiny_config(tmp_path, arms=[tiny_arm("a", "popularity", "control"), tiny_arm("b", "nosuch")]),
                 cat)
    with pytest.raises(NotFoundError, match="unknown dataset"):
        validate(tiny_config(tmp_path, dataset="nope"), cat)
    big = tiny_arm("b", "sasrec")
    big["channels"] = [{"policy": "sasrec", "quota": 5000}]
    big["coarse"]["keep"] = 100
    with pytest.raises(ConfigError, match="quota 5000 exceeds"):
        validate(tiny_config(tmp_path, dataset="synthetic", arms=[tiny_arm("a", "popularity", "control"), big]), cat)
    assert not cat.has_dataset("synthetic")  # failed before any work
    cat.close()


def test_cli_bad_policy_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cli", "run", "--arms", "popularity,nosuch", "--catalog",
                        str(tmp_path / "c.duckdb"), "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and "unknown policy 'nosuch'" in lines[0]


def test_replay_user_uses_only_that_users_future_logs():
    # user 0: items 1,2,3,4 at t=10,20,30,40; user 1: items 5,6 at t=15,25
    log = Sequences.from_lists([[1, 2, 3, 4], [5, 6]], [[10, 20, 30, 40], [15, 25]])
    ru = ReplayUser(log, window=2)
    assert ru.future_items(0, 20.0).tolist() == [3, 4]  # strictly after the request, within the window
    assert ru.future_items(0, 5.0).tolist() == [1, 2]
    slate = np.array([[1, 2, 5, 6, 4], [1, 2, 3, 4, -1]])
    pos = ru.respond(np.array([0, 1]), slate, np.array([25.0, 0.0]), np.random.default_rng(0)).position
    # user 0 at t=25: past items 1,2 and user 1's items 5,6 never count; 3 is not shown; 4 is
    assert pos.tolist() == [4, -1]
    pos = ru.respond(np.array([0]), np.array([[3, 4]]), np.array([40.0]), np.random.default_rng(0)).position
    assert pos.tolist() == [-1]  # nothing after the last log


def test_replay_user_window_limits_lookahead():
    log = Sequences.from_lists([[1, 2, 3, 4]], [[10, 20, 30, 40]])
    ru = ReplayUser(log, window=1)
    pos = ru.respond(np.array([0]), np.array([[4, 3, 2]]), np.array([15.0]), np.random.default_rng(0)).position
    assert pos.tolist() == [2]  # only the next logged item (2) is within the window


def test_channel_weight_sets_merge_priority():
    arm = {"name": "x", "channels": [{"policy": "p", "quota": 3}, {"policy": "r", "quota": 3, "weight": 2.0}],
           "slate_size": 3}
    cfg = parse_config({"arms": [{**arm, "role": "control"}, {**arm, "name": "y"}]})
    same = FixedScores(np.arange(10, 0, -1))
    s = Pipeline(cfg.arms[0], {"p": same, "r": same}).run(
        UserBatch(np.array([0]), [np.array([], np.int64)])).slate
    assert s.item_ids[0].tolist() == [0, 1, 2]
    assert np.array(s.channel_names)[s.channel[0]].tolist() == ["r", "r", "r"]  # de-dup keeps the heavier channel


def test_config_files_toml_yaml_and_hash(tmp_path):
    from pathlib import Path

    import yaml

    from simulator.engine.config import load_config

    example = Path(__file__).resolve().parents[2] / "simulator" / "examples" / "ab_hllm_vs_sasrec.toml"
    cfg = load_config(example)
    assert [a.name for a in cfg.arms] == ["control", "treatment"]
    assert cfg.arms[1].fine.policy == "hllm"
    y = tmp_path / "exp.yaml"
    y.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cfg2 = load_config(y)
    assert cfg2 == cfg and cfg2.config_hash() == cfg.config_hash()
    assert parse_config({**cfg.model_dump(mode="json"), "seed": 9}).config_hash() != cfg.config_hash()
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nn_requests = "many"\n[[arms]]\nname = "a"\nchannels = []\n')
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "\n" not in str(e.value) and "bad.toml" in str(e.value)


def test_replay_user_reports_logged_value_of_consumed_item():
    log = Sequences.from_lists([[1, 2, 3]], [[10, 20, 30]])
    ru = ReplayUser(log, window=2, values=np.array([5.0, 4.0, 2.0]))
    pos = ru.respond(np.array([0]), np.array([[9, 3, 2]]), np.array([15.0]), np.random.default_rng(0))
    assert pos.position.tolist() == [1] and pos.value.tolist() == [2.0]  # item 3 at t=30, rating 2


def test_found_by_keeps_every_channel_that_retrieved_a_shown_item():
    """Two channels that both retrieve items 2 and 3: the merge credits them to p (the first in
    priority), found_by names both."""
    from simulator.engine.design import channel_lists, place

    cfg = parse_config({"arms": [
        {"name": "x", "role": "control", "channels": [{"policy": "p", "quota": 4}, {"policy": "q", "quota": 4}],
         "fine": {"policy": "p", "keep": 6}, "rerank": {"filter_seen": False}, "slate_size": 6},
        {"name": "y", "channels": [{"policy": "p", "quota": 3}], "slate_size": 3}]})
    p = FixedScores(np.arange(20, 0, -1))  # retrieves 0, 1, 2, 3
    q = FixedScores(-np.abs(np.arange(20) - 3.5))  # retrieves 3, 4, 2, 5
    s = Pipeline(cfg.arms[0], {"p": p, "q": q}).run(UserBatch(np.array([0]), [np.array([], np.int64)])).slate
    assert s.item_ids[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert np.array(s.channel_names)[s.channel[0]].tolist() == ["p", "p", "p", "p", "q", "q"]  # the merge's credit
    assert s.found_by[0].tolist() == [1, 1, 3, 3, 2, 2]  # bit 0 = p, bit 1 = q
    assert channel_lists(s.found_by, s.channel_names)[0].tolist() == ["p", "p", "p,q", "p,q", "q", "q"]
    shown = place(1, {0: (np.array([0]), s, np.zeros(1))})
    assert shown.found_by[0].tolist() == ["p", "p", "p,q", "p,q", "q", "q"]


def test_found_by_is_vectorised_over_rows_and_ignores_padding():
    from policies.base import Candidates
    from simulator.engine.pipeline import found_by

    a = Candidates(np.array([[5, 1, -1], [0, 2, 7]]), np.zeros((2, 3), np.float32))
    b = Candidates(np.array([[7, -1, -1], [5, 0, -1]]), np.zeros((2, 3), np.float32))
    ids = np.array([[5, 7, 0, -1], [0, 7, 5, 1]])
    assert found_by([a, b], ids).tolist() == [[1, 2, 0, 0], [3, 1, 2, 0]]
