"""bench/sim_to_real.py end to end on a tiny world log: the five arms trained once, judged offline
and by an A/B/n in the learned world, and the rank agreement with bootstrap CIs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import sim_to_real  # noqa: E402

ARMS = ["popularity", "itemknn", "sasrec", "hstu", "hllm"]
TINY = {"sasrec": {"max_len": 8, "hidden": 16, "n_layers": 1, "epochs": 2, "batch_size": 64},
        "hstu": {"max_len": 8, "hidden": 16, "n_layers": 1, "epochs": 2, "batch_size": 64},
        "hllm": {"preset": "tiny", "stage1_epochs": 0}}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    from simulator.core import Catalog
    from simulator.core.synthetic import WorldConfig, write_world

    path = tmp_path_factory.mktemp("s2r") / "c.duckdb"
    cat = Catalog(path)
    world = WorldConfig(n_users=80, n_items=60, n_topics=4, dim=8, days=10, sessions_per_user=3,
                        choices_per_session=4, seed=1)
    write_world(cat, "my-logs", world)
    cat.close()
    return path


def _bench(*args: str) -> dict:
    threads = torch.get_num_threads()
    try:
        return sim_to_real.main(["--threads", "1", "-q", *args])
    finally:
        torch.set_num_threads(threads)


def _in(v, lo: float, hi: float) -> bool:
    return v is not None and lo <= v <= hi


def test_agreement_of_the_learned_world_with_offline_metrics(catalog, tmp_path, capsys):
    out = tmp_path / "s2r.json"
    _bench("--catalog", str(catalog), "--data", "my-logs", "--arms", ",".join(ARMS), "--requests", "600",
           "--oracle-reps", "1", "--boot", "200", "--settings", json.dumps(TINY),
           "--artifacts", str(tmp_path / "art"), "--out", str(out))
    d = json.loads(out.read_text())
    printed = json.loads(capsys.readouterr().out)
    assert sim_to_real.PER_USER not in printed["offline"]["hllm"]  # per-user values only in --out
    assert d["arms"] == ARMS and d["control"] == "popularity" and d["dataset"] == "my-logs"
    assert d["training"]["hllm"]["preset"] == "tiny"
    assert d["training"]["sasrec"]["patience"] == 2  # the quick budget, the test's settings over it
    n_test = d["offline"]["popularity"]["test_users"]
    for a in ARMS:
        off, on = d["offline"][a], d["online"]["arms"][a]
        assert _in(off["ndcg@10"], 0, 1) and _in(off["hr@10"], off["ndcg@10"], 1)
        assert len(off[sim_to_real.PER_USER]) == n_test == off["test_users"] > 0
        assert np.mean(off[sim_to_real.PER_USER]) == pytest.approx(off["ndcg@10"], abs=1e-4)
        assert on["users"] > 0 and _in(on["ctr"], 0, 1) and _in(on["true_ctr"], 0, 1)
        assert on["oracle_passes"] == 1
        if a != "popularity":  # every treatment's ctr lift vs the control, with its CI and the truth
            vs = on["vs_control"]
            assert vs["rel_ci_low"] <= vs["rel_lift"] <= vs["rel_ci_high"] and vs["true_rel_lift"] is not None
    assert d["online"]["requests"] == 600 and d["online"]["users_served"] == sum(
        d["online"]["arms"][a]["users"] for a in ARMS)
    ag = d["agreement"]
    assert sorted(ag["offline_order"]) == sorted(ARMS)
    for key in ("ab_ctr", "oracle_ctr"):
        s = ag[key]
        assert sorted(s["world_order"]) == sorted(ARMS) and s["draws"] == 200
        for stat in ("spearman", "kendall_tau"):
            lo, hi = s[f"{stat}_ci95"]
            assert -1 <= lo <= hi <= 1 and _in(s[stat], -1, 1)
        assert _in(s["share_of_draws_spearman_positive"], 0, 1)
        n_disc = len(s["discordant_pairs"])
        assert s["kendall_tau"] == pytest.approx(1 - 4 * n_disc / 20, abs=0.21)  # 10 pairs; tau-b, ties aside
        for p in s["discordant_pairs"]:
            assert p["offline_prefers"] != p["world_prefers"] and _in(p["discordant_share_of_draws"], 0, 1)


def test_agreement_statistics_on_known_orderings():
    names = ["a", "b", "c", "d"]
    per_user = np.array([[0.1] * 50, [0.2] * 50, [0.3] * 50, [0.4] * 50])  # offline a < b < c < d, no spread
    xd = sim_to_real.boot_means(per_user, 30, np.random.default_rng(0))
    assert xd.shape == (30, 4) and np.allclose(xd, per_user.mean(1))
    y = np.array([0.01, 0.02, 0.04, 0.03])  # the world swaps c and d
    s = sim_to_real.agreement(names, per_user.mean(1), y, xd, np.broadcast_to(y, xd.shape), "world")
    assert s["spearman"] == pytest.approx(0.8) and s["kendall_tau"] == pytest.approx(4 / 6)
    assert s["spearman_ci95"] == pytest.approx([0.8, 0.8]) and s["share_of_draws_spearman_positive"] == 1
    (pair,) = s["discordant_pairs"]
    assert pair["pair"] == ["c", "d"] and pair["offline_prefers"] == "d" and pair["world_prefers"] == "c"
    assert pair["discordant_share_of_draws"] == 1 and s["world_order"] == ["c", "d", "b", "a"]
    clicks = [np.array([1.0, 0.0]), np.array([2.0, 2.0])]
    exposures = [np.array([10.0, 10.0]), np.array([10.0, 10.0])]
    ctr = sim_to_real.boot_ctr(clicks, exposures, 50, np.random.default_rng(1))
    assert ctr.shape == (50, 2) and ((ctr[:, 0] >= 0) & (ctr[:, 0] <= 0.1)).all()
    assert ctr[:, 0].std() > 0 and np.allclose(ctr[:, 1], 0.2)  # users resampled within each arm


@pytest.mark.parametrize("args,message", [
    (("--arms", "popularity,sasrek,hstu"), "sasrek"),
    (("--arms", "popularity,sasrec"), "at least three different policies"),
    (("--settings", "[1]"), "--settings"),
    (("--data", "no-such-data"), "no-such-data"),
])
def test_bad_input_is_one_line(catalog, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench("--catalog", str(catalog), "--data", "my-logs", "--artifacts", str(tmp_path), *args)
    text = str(e.value.code) + capsys.readouterr().err
    assert e.value.code not in (0, None) and message in text and "Traceback" not in text, text
