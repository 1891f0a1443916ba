"""One name per concept across commands, choices and defaults in --help, cheap commands stay cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest
from _fake_events import make_fake_run
from typer.testing import CliRunner

from cli import app

PROBE = """import sys
sys.argv = ["sim", *{args!r}]
import cli
try:
    cli.main()
except SystemExit as e:
    assert not e.code, e.code
HEAVY = ("torch", "matplotlib", "transformers", "scipy.stats", "statsmodels")
print("LOADED", json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


def _modules_after(args: list[str], tmp_path) -> tuple[list[str], str]:
    r = subprocess.run([sys.executable, "-c", "import json\n" + PROBE.format(args=args)], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out, _, loaded = r.stdout.rpartition("LOADED ")
    return json.loads(loaded), out


def test_hllm_presets_does_not_import_torch(tmp_path):
    loaded, out = _modules_after(["hllm", "presets"], tmp_path)
    assert loaded == [] and out.startswith("fast: ")


def test_report_format_json_draws_nothing_and_writes_nothing(tmp_path):
    cat = tmp_path / "c.duckdb"
    con = duckdb.connect(str(cat))
    make_fake_run(con, "r1", n_users=300, write_dataset=False)
    con.close()
    loaded, out = _modules_after(["report", "r1", "--format", "json", "--catalog", str(cat),
                                  "--out", str(tmp_path / "rep")], tmp_path)
    assert json.loads(out)["run"]["run_id"] == "r1"
    assert loaded == []  # no plots, no model, none of the ~1 s imports (scipy.stats, statsmodels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.duckdb"]  # nothing written, not even --out


@pytest.mark.parametrize("cmd,want", [
    (["run", "--help"], ["--out", "--name", "--tag"]),
    (["report", "--help"], ["--out", "table|json", "--format"]),
    (["power", "--help"], ["--format", "proportion|mean", "per user"]),
    (["runs", "list", "--help"], ["--dataset", "--design", "ab|interleave", "--tag", "--status"]),
    (["data", "info", "--help"], ["--format", "--json"]),
])
def test_help_names_the_shared_options_and_choices(cmd, want):
    r = CliRunner().invoke(app, cmd, env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for w in want:
        assert w in r.output, (cmd, w)


def test_power_says_what_it_plans_for():
    r = CliRunner().invoke(app, ["power", "--baseline", "0.04", "--n", "450"])
    assert r.exit_code == 0 and r.output.startswith("per-user proportion") and "n = users per arm" in r.output
