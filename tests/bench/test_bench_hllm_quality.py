"""bench/hllm_quality.py: runs on any catalog dataset (--data), fails in one line on bad names, and
merges seeds (cold-start recalls pooled with Wilson intervals)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import hllm_quality  # noqa: E402


def _bench(monkeypatch, *args: str) -> None:
    """Run the bench's main in-process (one torch thread, restored after)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", ["hllm_quality.py", "--threads", "1", *args])
    try:
        hllm_quality.main()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    from simulator.core import Catalog
    from simulator.core.synthetic import WorldConfig, write_world

    path = tmp_path_factory.mktemp("bench") / "c.duckdb"
    cat = Catalog(path)
    write_world(cat, "my-logs", WorldConfig(n_users=80, n_items=60, n_topics=4, dim=8, days=10, sessions_per_user=3,
                                            choices_per_session=4, seed=1))
    cat.close()
    return path


def test_runs_on_any_loaded_dataset_and_merges_seeds(catalog, tmp_path, monkeypatch, capsys):
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}.json"
        _bench(monkeypatch, "--catalog", str(catalog), "--data", "my-logs", "--variants", "random,popularity",
               "--cold", "random,popularity", "--seed", str(seed), "--out", str(out))
        d = json.loads(out.read_text())
        assert d["dataset"] == "my-logs" and d["n_items"] == 60 and set(d["models"]) == {"random", "popularity"}
        assert d["cold_start"]["n_cold_items"] == 6 and "popularity" in d["cold_start"]
        outs.append(str(out))
    merged = tmp_path / "m.json"
    _bench(monkeypatch, "--merge", *outs, "--out", str(merged), "--vs", "popularity")
    m = json.loads(merged.read_text())
    assert set(m["vs_popularity"]) == set()  # random is never compared
    assert m["models"]["popularity"]["steps"] == 0 and m["models"]["popularity"]["capped"] == 0
    with pytest.raises(SystemExit, match="--vs hllm_fast: not in this table"):
        _bench(monkeypatch, "--merge", *outs, "--vs", "hllm_fast")
    assert m["seeds"] == [0, 1] and m["models"]["random"]["per_seed_ndcg@10"]
    cold = m["cold_start"]
    n = sum(json.loads(Path(f).read_text())["cold_start"]["n_test_users"] for f in outs)
    assert cold["n_test_users"] == n and cold["held_out_seeds"] == [0, 1]
    lo, hi = cold["random"]["recall@50_ci95"]
    assert 0 <= lo <= cold["random"]["recall@50"] <= hi <= 1


@pytest.mark.parametrize("args,message", [
    (("--data", "no-such-data"), "no-such-data"),
    (("--data", "my-logs", "--variants", "sasrek"), "unknown variant 'sasrek'"),
    (("--data", "my-logs", "--train-users", "1.5"), "--train-users 1.5"),
    (("--data", "my-logs", "--variants", "popularity", "--no-cold", "--tuned", "/nonexistent.json"),
     "--tuned /nonexistent.json"),
])
def test_bad_input_is_one_line(catalog, args, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        _bench(monkeypatch, "--catalog", str(catalog), *args)
    text = str(e.value.code) + capsys.readouterr().err
    assert e.value.code not in (0, None) and message in text and "Traceback" not in text, text


def test_wilson_interval():
    wilson = hllm_quality.wilson
    assert wilson(0.0, 95)[0] == 0 and 0.03 < wilson(0.0, 95)[1] < 0.05  # zero hits still has an upper bound
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)


def test_headline_is_over_the_best_non_hllm_model_and_on_the_tail_users():
    pu = "per_user_ndcg@10"
    res = {"tail": {"users": [1, 3]}, "models": {
        "random": {"ndcg@10": 0.9, "tail_ndcg@10": 0.9, pu: [0.9] * 4},  # never the bar
        "sasrec": {"ndcg@10": 0.4, "tail_ndcg@10": 0.1, pu: [0.6, 0.0, 0.6, 0.2]},
        "popularity": {"ndcg@10": 0.5, "tail_ndcg@10": 0.2, pu: [0.6, 0.2, 0.6, 0.2]},  # best overall
        "hllm_fast": {"ndcg@10": 0.4, "tail_ndcg@10": 0.3, pu: [0.5, 0.3, 0.5, 0.3]}}}
    hllm_quality.MIN_HITS, old = 2, hllm_quality.MIN_HITS
    try:
        hllm_quality.add_ratios(res)
    finally:
        hllm_quality.MIN_HITS = old
    assert res["best_non_hllm_model"] == "popularity" and res["tail"]["best_non_hllm_model"] == "popularity"
    tail = res["tail"]["headline"]["hllm_fast"]
    assert tail["ratio"] == 1.5 and tail["diff"] == pytest.approx(0.1)  # 0.3 / 0.2 on users 1 and 3 only
    assert tail["ratio_ci95"] == [1.5, 1.5]  # both tail users have the same ratio: nothing to resample


def test_ratio_ci_is_undefined_when_the_denominator_hits_too_few_users():
    pu = "per_user_ndcg@10"
    few = {"ndcg@10": 0.01, pu: [0.0] * 98 + [0.5, 0.5]}  # 2 hits
    out = hllm_quality.paired_compare({"ndcg@10": 0.3, pu: [0.3] * 100}, few)
    assert out["ratio_ci95"] is None and "hits 2 test users" in out["ratio_ci_note"]
    lo, hi = out["diff_ci95"]
    assert lo < out["diff"] < hi  # the difference keeps its interval


def test_bootstrap_resamples_seeds_as_well_as_users():
    ps = "per_seed_per_user_ndcg@10"
    users = [0.5] * 50
    a = {"seeds": [0, 1, 2], ps: [users, [0.1] * 50, [0.9] * 50]}  # seeds disagree; users agree
    b = {"seeds": [0, 1, 2], ps: [users, users, users]}
    out = hllm_quality.paired_compare(a, b)
    lo, hi = out["ratio_ci95"]
    assert out["seeds_resampled"] == 3 and lo < 0.8 and hi > 1.2  # the seed spread shows in the interval
    one = hllm_quality.paired_compare({"seeds": [0], ps: [users]}, {"seeds": [0], ps: [users]})
    assert one["ratio_ci95"] == [1.0, 1.0]


def test_merge_recomputes_tail_users_of_older_files(catalog, tmp_path, monkeypatch):
    out = tmp_path / "s0.json"
    _bench(monkeypatch, "--catalog", str(catalog), "--data", "my-logs", "--variants", "random", "--no-cold",
           "--out", str(out))
    d = json.loads(out.read_text())
    users = d["tail"].pop("users")
    assert users and len(users) == d["tail"]["n_test_users"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))  # as written before tail users were stored
    merged = tmp_path / "m.json"
    _bench(monkeypatch, "--catalog", str(catalog), "--merge", str(old), "--out", str(merged))
    assert json.loads(merged.read_text())["tail"]["users"] == users


def test_tune_tries_the_same_trials_for_every_family_and_keeps_the_best_on_validation(catalog, tmp_path,
                                                                                      monkeypatch):
    tiny = {"epochs": 2, "eval_every": 1, "max_len": 8, "hidden": 16}
    monkeypatch.setitem(hllm_quality.ID_VARIANTS, "sasrec", ("sasrec", tiny))
    out = tmp_path / "t.json"
    _bench(monkeypatch, "--catalog", str(catalog), "--data", "my-logs", "--variants", "popularity,sasrec",
           "--no-cold", "--tune", "--out", str(out))
    row = json.loads(out.read_text())["models"]["sasrec"]
    trials = row["tuning"]
    assert [t["trial"] for t in trials] == [name for name, _ in hllm_quality.TUNING]
    assert {"hidden": 32} in [t["settings"] for t in trials] and {"lr": 0.0003} in [t["settings"] for t in trials]
    best = max(trials, key=lambda t: t["best_valid_ndcg@10"])
    assert row["tuned_settings"] == best["settings"]
    assert "tuning" not in json.loads(out.read_text())["models"]["popularity"]
    again = tmp_path / "again.json"  # another seed with the chosen settings
    _bench(monkeypatch, "--catalog", str(catalog), "--data", "my-logs", "--variants", "sasrec", "--no-cold",
           "--tuned", str(out), "--seed", "1", "--out", str(again))
    assert json.loads(again.read_text())["models"]["sasrec"]["tuned_settings"] == best["settings"]


def test_a_grid_split_over_processes_resumes_without_rerunning_trials(catalog, tmp_path, monkeypatch):
    tiny = {"epochs": 2, "eval_every": 1, "max_len": 8, "hidden": 16}
    monkeypatch.setitem(hllm_quality.ID_VARIANTS, "sasrec", ("sasrec", tiny))
    fits = []
    real_fit = hllm_quality.fit
    monkeypatch.setattr(hllm_quality, "fit", lambda *a, **k: fits.append(a[4] if len(a) > 4 else None)
                        or real_fit(*a, **k))
    base = ("--catalog", str(catalog), "--data", "my-logs", "--variants", "sasrec", "--no-cold", "--tune")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _bench(monkeypatch, *base, "--trials", "width x2", "--out", str(a))
    _bench(monkeypatch, *base, "--trials", "default,lr x0.3", "--out", str(b))
    log = json.loads(Path(str(a) + ".trials.json").read_text())
    assert [t["trial"] for t in log["trials"]["sasrec"]] == ["width x2"]  # saved when the trial ended
    fits.clear()
    full = tmp_path / "full.json"
    _bench(monkeypatch, *base, "--resume", str(a) + ".trials.json", str(b) + ".trials.json", "--out", str(full))
    row = json.loads(full.read_text())["models"]["sasrec"]
    assert [t["trial"] for t in row["tuning"]] == [name for name, _ in hllm_quality.TUNING]
    best = max(row["tuning"], key=lambda t: t["best_valid_ndcg@10"])
    rerun = [hllm_quality.trial_overrides("sasrec", k) for n, k in hllm_quality.TUNING
             if n not in ("width x2", "default", "lr x0.3")]
    refit = [best["settings"]] if best["trial"] in ("width x2", "default", "lr x0.3") else []
    assert fits == rerun + refit and row["tuned_settings"] == best["settings"]
    with pytest.raises(SystemExit, match="measured on"):  # another seed's log is not reused
        _bench(monkeypatch, *base, "--seed", "1", "--resume", str(a) + ".trials.json")
    with pytest.raises(SystemExit, match="--trials: unknown"):
        _bench(monkeypatch, *base, "--trials", "width x3")
    with pytest.raises(SystemExit, match="need --tune"):  # without --tune they would be ignored
        _bench(monkeypatch, *base[:-1], "--resume", str(a) + ".trials.json")
