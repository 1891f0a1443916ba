"""Fault injection: SIGINT, SIGTERM and SIGKILL in every phase of a run (training, simulate, flush,
oracle, report), then ``sim run --resume``: the event tables, the truth and report.json equal an
uninterrupted run's (wall-clock latency aside). Nothing is lost in any phase.

SIGINT / SIGTERM are delivered in this process (``SIM_FAULT_INJECT``: the process signals itself
when it reaches the phase); SIGKILL needs a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("training", "simulate@2", "flush", "oracle", "report")
CONFIG = """name = "fm"
dataset = "synthetic-tiny"
n_requests = 160
oracle_reps = 1
seed = 3
max_batch = 16
[[arms]]
name = "c"
role = "control"
channels = [{policy = "popularity", quota = 20}]
slate_size = 5
[[arms]]
name = "t"
role = "treatment"
channels = [{policy = "random", quota = 20}, {policy = "popularity", quota = 10}]
slate_size = 5
"""
TABLES = {"assignments": "user_id", "requests": "request_id", "exposures": "request_id, position",
          "feedback": "request_id, item_id, event", "truth": "arm, metric, rep"}
VOLATILE = ("latency", "run_id", "started_at", "finished_at", "git_rev", "path")


@pytest.fixture(scope="module")
def world(tiny_world):
    cat, d = tiny_world
    cat.close()  # the commands open it themselves
    (d / "fm.toml").write_text(CONFIG)
    return d


def _args(d: Path, reports: str) -> list[str]:
    return ["run", "--config", str(d / "fm.toml"), "--catalog", str(d / "cat.duckdb"), "--artifacts",
            str(d / "art"), "--report-dir", str(d / reports), "-q"]


def _run_ids(d: Path) -> list[str]:
    with duckdb.connect(str(d / "cat.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at").fetchall()]


def _tables(d: Path, run_id: str) -> dict:
    out = {}
    with duckdb.connect(str(d / "cat.duckdb"), read_only=True) as con:
        for t, key in TABLES.items():
            df = con.execute(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY {key}", [run_id]).df()
            df = df.drop(columns=[c for c in df.columns if c.startswith(VOLATILE)])
            out[t] = df.astype(object).where(df.notna(), None).to_dict("list")  # NULL == NULL
        out["runs"] = con.execute("SELECT status, phase, n_requests FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return out


def _stable(v):
    """report.json without what differs between two identical runs (ids, times, latency)."""
    if isinstance(v, dict):
        return {k: _stable(x) for k, x in v.items() if not any(s in k for s in VOLATILE)}
    if isinstance(v, list):
        return [_stable(x) for x in v if not (isinstance(x, dict) and "latency" in str(x.get("metric", "")))]
    if isinstance(v, float):  # DuckDB's parallel sums may differ in the last bits
        return float(f"{v:.9g}")
    return v


def _report(d: Path, reports: str, run_id: str) -> dict:
    js = json.loads((d / reports / run_id / "report.json").read_text())
    js.pop("headline")  # its latency guardrail line carries wall-clock numbers
    return _stable(js)


@pytest.fixture(scope="module")
def reference(world, sim_module):
    res = sim_module(*_args(world, "ref"))
    assert res.code == 0, res.err
    run_id = _run_ids(world)[-1]
    return run_id, _tables(world, run_id), _report(world, "ref", run_id)


@pytest.fixture(scope="module")
def sim_module():
    """The `sim` command in this process (module scope, so no capsys), with its exit code."""
    from conftest import sim_exit_code

    return lambda *args: type("Res", (), {"code": sim_exit_code(*args), "err": ""})()


def _interrupt(world: Path, phase: str, sig: str, reports: str, sim_module) -> int:
    env = {"SIM_FAULT_INJECT": f"{phase}:{sig}"}
    if sig == "SIGKILL":
        proc = subprocess.run([sys.executable, "-m", "cli", *_args(world, reports)], cwd=ROOT,
                              env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=300)
        return proc.returncode
    os.environ.update(env)
    try:
        return sim_module(*_args(world, reports)).code
    finally:
        os.environ.pop("SIM_FAULT_INJECT", None)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_run_interrupted_in_any_phase_resumes_to_the_same_tables_and_report(world, reference, sim_module,
                                                                             phase, sig):
    ref_id, ref_tables, ref_report = reference
    before = set(_run_ids(world))
    reports = f"r-{phase.split('@')[0]}-{sig}"
    code = _interrupt(world, phase, sig, reports, sim_module)
    expected = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}[sig]
    new = [r for r in _run_ids(world) if r not in before]
    if phase == "training":  # before the run exists: nothing is written; the same command starts it again
        assert code == expected and new == []
        assert sim_module(*_args(world, reports)).code == 0
        (run_id,) = [r for r in _run_ids(world) if r not in before]
    else:
        (run_id,) = new
        if phase == "report" and sig != "SIGKILL":
            assert code == expected  # the report was finished first; the command then stops
        else:
            assert code == expected
        assert sim_module("run", "--resume", run_id, "--catalog", str(world / "cat.duckdb"),
                          "--report-dir", str(world / reports), "-q").code == 0
    got = _tables(world, run_id)
    assert got == ref_tables
    assert got["runs"] == [("complete", "report", 160)]
    assert _report(world, reports, run_id) == ref_report
