"""bench/latency_aa.py: bad options end in one line before any run; on ML-100K every seed is run once
per variant and the JSON pairs the runs of one seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import latency_aa  # noqa: E402


@pytest.mark.parametrize("args, message", [
    (["--variants", "product"], "--variants needs two or more"),
    (["--variants", "product,bogus"], "got 'product,bogus'"),
    (["--seeds", "2"], "--seeds needs >= 3 (got 2)"),
    (["--requests", "0"], "--requests >= 100 (got 0)"),
    (["--out", "/no/such/folder/x.json"], "no such folder"),
])
def test_bad_options_are_one_line_errors(monkeypatch, args, message):
    monkeypatch.setattr(sys, "argv", ["latency_aa.py", *args])
    with pytest.raises(SystemExit) as e:
        latency_aa.main()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_each_seed_runs_once_per_variant(monkeypatch, tmp_path, ml100k_dir, capsys):
    out = tmp_path / "aa.json"
    monkeypatch.setenv("HLLM_SIM_ML100K", str(ml100k_dir))
    monkeypatch.setattr(sys, "argv", ["latency_aa.py", "--seeds", "3", "--requests", "300",
                                      "--variants", "product,warm", "--out", str(out)])
    latency_aa.main()
    res = json.loads(out.read_text())
    for name in ("product", "warm"):
        assert [r["seed"] for r in res["per_run"][name]] == [2400, 2401, 2402]
        assert res["variants"][name]["runs"] == 3 and all(r["se"] > 0 for r in res["per_run"][name])
    assert -1 <= res["same_seed_correlation_of_difference"]["product~warm"] <= 1
    assert json.loads(capsys.readouterr().out)["command"].endswith(f"--out {out}")


def test_one_pipeline_serves_every_arm_with_the_first_arms_pipeline():
    from simulator.engine.config import parse_config
    from simulator.engine.runtime import LocalRuntime

    arms = parse_config({"arms": [{"name": n, "role": r, "channels": [{"policy": "popularity", "quota": 10}]}
                                  for n, r in (("a", "control"), ("b", "treatment"))]}, "test").arms
    pols = {"popularity": object()}
    with latency_aa.VARIANTS["one_pipeline"]():
        shared = LocalRuntime(list(arms), pols).pipes
    assert shared["a"] is shared["b"]
    own = LocalRuntime(list(arms), pols).pipes  # restored afterwards
    assert own["a"] is not own["b"]
