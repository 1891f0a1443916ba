"""`sim data load/synth/info/list` end to end (through the real CLI entry point)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, list(args))


def test_synth_info_list(tmp_path):
    cat = str(tmp_path / "c.duckdb")
    r = _run("data", "synth", "--name", "w", "--users", "100", "--items", "80", "--seed", "2", "--catalog", cat)
    assert r.exit_code == 0, r.output
    assert "synthesized w: 100 users, 80 items" in r.output
    r = _run("data", "info", "w", "--catalog", cat, "--json")
    st = json.loads(r.output)
    assert st["n_users"] == 100 and st["synthetic"] and 0 < st["sparsity"] < 1
    assert sum(st["seq_len_histogram"].values()) == 100
    assert _run("data", "info", "w", "--catalog", cat, "--format", "json").output == r.output
    r = _run("data", "info", "w", "--catalog", cat)
    assert "sequence length" in r.output and "#" in r.output
    assert f"time {st['time_min']} .. {st['time_max']} (UTC)" in r.output and st["time_min"].startswith(("19", "20"))
    r = _run("data", "list", "--catalog", cat)
    assert "w " in r.output and "synthetic" in r.output


def test_load_csv_with_skip(tmp_path):
    cat = str(tmp_path / "c.duckdb")
    p = tmp_path / "l.csv"
    p.write_text("u,i,t\na,x,1\nb,y\nc,x,2\n")
    r = _run("data", "load", "csv", str(p), "--name", "l", "--map", "user=u,item=i,ts=t", "--catalog", cat,
             "--skip-bad-lines")
    assert r.exit_code == 0, r.output
    assert "loaded l: 2 users, 1 items, 2 interactions" in r.output and "skipped 1 bad line(s)" in r.output


def test_errors_are_one_line(tmp_path):
    cat = str(tmp_path / "c.duckdb")
    p = tmp_path / "l.csv"
    p.write_text("u,i,t\na,x,1\nb,y\n")
    out = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "data", "load", "csv", str(p), "--name", "l",
                          "--map", "user=u,item=i,ts=t", "--catalog", cat], capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "l.csv:3" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "data", "info", "nope", "--catalog", cat],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "unknown dataset 'nope'" in out.stderr


@pytest.mark.parametrize("cmd,expected", [
    (["data", "--help"], ["load", "synth", "info", "list"]),
    (["data", "load", "--help"], ["--name", "--replace", "--skip-bad-lines", "--map", "--catalog"]),
    (["data", "synth", "--help"], ["--users", "--items", "--seed", "--scale", "--replace"]),
    (["data", "info", "--help"], ["--json", "--catalog"]),
    (["data", "list", "--help"], ["--catalog"]),
])
def test_help_lists_the_commands_options(cmd, expected):
    r = _run(*cmd)
    missing = [x for x in expected if x not in r.output]
    assert r.exit_code == 0 and "Usage:" in r.output
    assert not missing, f"{' '.join(cmd)}: help does not mention {missing}"


def test_order_stats_flag_pseudo_sequential_logs():
    import numpy as np

    from simulator.core.ordering import order_stats
    from simulator.core.sequences import Sequences

    bulk = Sequences(np.array([0, 3, 6]), np.arange(6), np.array([10.0, 10.2, 10.5, 50, 50, 90]))
    st = order_stats(bulk)
    assert st.same_second_share == 3 / 4 and st.pseudo_sequential  # pairs within users only
    spread = Sequences(np.array([0, 3]), np.arange(3), np.array([0.0, 86400.0, 2 * 86400.0]))
    assert not order_stats(spread).pseudo_sequential
