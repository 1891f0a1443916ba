"""`sim runs`: list / show / compare / tag / rename / rm, the effects table, bad and ambiguous ids."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pandas as pd
import pytest
from _fake_events import make_fake_run
from typer.testing import CliRunner

from analysis.views import DEFAULT_METRICS
from cli import app
from simulator.core.errors import ConfigError, NotFoundError, SimError
from simulator.core.runs import resolve_run, short_id

IDS = ["exp-20260101-000000-abc123", "exp-20260102-000000-abd999", "exp-20260103-000000-f00d00"]


@pytest.fixture()
def cat(tmp_path):
    path = tmp_path / "cat.duckdb"
    con = duckdb.connect(str(path))
    for i, rid in enumerate(IDS):
        make_fake_run(con, rid, n_users=400, lifts={"control": 1.0, "treatment": 1.0 + 0.4 * i}, seed=i,
                      write_dataset=i == 0, config={"design": "ab", "seed": i, "n_requests": 2000})
        con.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", [pd.Timestamp(f"2026-01-0{i + 1}"), rid])
    con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [IDS[1]])
    con.close()
    return str(path)


def sim(*args):
    r = CliRunner().invoke(app, [*args], catch_exceptions=True)
    return r


def test_resolve_run_by_id_prefix_short_id_name_and_latest(cat):
    con = duckdb.connect(cat)
    assert resolve_run(con, IDS[0]) == IDS[0] and resolve_run(con, "latest") == IDS[2]
    assert resolve_run(con, "exp-20260102") == IDS[1] and resolve_run(con, "f00d") == IDS[2]
    assert short_id(IDS[0]) == "abc123"
    with pytest.raises(ConfigError, match="'ab' is ambiguous: it matches 2 runs"):
        resolve_run(con, "ab")
    with pytest.raises(NotFoundError, match=r"unknown run id 'zzz' \(recent runs: f00d00, abd999, abc123"):
        resolve_run(con, "zzz")
    con.close()


def test_report_writes_effects_then_list_show_compare(cat, tmp_path):
    for rid in (IDS[0], IDS[2]):
        r = sim("report", short_id(rid), "--out", str(tmp_path / "rep"), "--catalog", cat)
        assert r.exit_code == 0, r.output
    con = duckdb.connect(cat, read_only=True)
    eff = con.execute("SELECT run_id, metric, role, result, rel_lift FROM effects ORDER BY run_id, metric").df()
    con.close()
    n_metrics = len(DEFAULT_METRICS)
    assert set(eff.run_id) == {IDS[0], IDS[2]} and len(eff) == 2 * n_metrics
    top = eff[(eff.run_id == IDS[2]) & (eff.metric == "ctr")].iloc[0]
    assert top.role == "primary" and top.result == "significant" and top.rel_lift > 0.2
    r = sim("query", "SELECT count(*) AS n FROM effects WHERE result = 'significant'", "--format", "json",
            "--catalog", cat)
    assert r.exit_code == 0 and json.loads(r.output)[0]["n"] >= 1  # queryable like any table
    r = sim("runs", "list", "--format", "json", "--catalog", cat)
    rows = json.loads(r.output)
    assert [x["run_id"] for x in rows] == IDS[::-1]  # newest first
    assert rows[0]["primary"] == "ctr" and rows[0]["result"] == "significant" and rows[1]["result"] is None
    r = sim("runs", "list", "--status", "running", "--format", "json", "--catalog", cat)
    assert [x["run_id"] for x in json.loads(r.output)] == [IDS[1]]
    r = sim("runs", "list", "--catalog", cat)
    assert r.exit_code == 0 and "f00d00" in r.output and "significant" in r.output
    r = sim("runs", "show", "latest", "--catalog", cat)
    assert r.exit_code == 0 and IDS[2] in r.output and "ctr" in r.output and "significant" in r.output
    r = sim("runs", "compare", "abc", "f00d", "--catalog", cat)
    assert r.exit_code == 0, r.output
    assert "abc123" in r.output and "f00d00" in r.output and "config differences" in r.output
    assert "seed" in r.output  # the configs differ in their seed
    r = sim("runs", "page", "--out", str(tmp_path / "rep"), "--catalog", cat)
    page = (tmp_path / "rep" / "index.html").read_text()
    assert r.exit_code == 0 and "3 runs, 1 with a significant primary result; newest: f00d00" in page
    data = page.split('id="data">')[1].split("</script>")[0]
    assert f'"report": "{IDS[0]}/report.html"' in data and "<" not in data  # embedded JSON cannot close its tag


def test_tag_rename_filter_and_rm(cat):
    assert sim("runs", "tag", "abc", "baseline", "v1", "--catalog", cat).exit_code == 0
    assert sim("runs", "rename", "f00d", "big-lift", "--catalog", cat).exit_code == 0
    r = sim("runs", "list", "--tag", "baseline", "--format", "json", "--catalog", cat)
    assert [(x["run_id"], list(x["tags"])) for x in json.loads(r.output)] == [(IDS[0], ["baseline", "v1"])]
    assert sim("runs", "tag", "abc", "v1", "--remove", "--catalog", cat).exit_code == 0
    con = duckdb.connect(cat, read_only=True)
    assert resolve_run(con, "big-lift") == IDS[2]  # a name works wherever an id does
    assert con.execute("SELECT tags FROM run_labels WHERE run_id = ?", [IDS[0]]).fetchone()[0] == ["baseline"]
    con.close()
    r = sim("runs", "rename", "abc", "big-lift", "--catalog", cat)
    assert isinstance(r.exception, ConfigError) and "already named 'big-lift'" in str(r.exception)
    r = sim("runs", "rm", "abd", "--catalog", cat)  # marked running: refused
    assert isinstance(r.exception, SimError) and "marked running" in str(r.exception)
    r = sim("runs", "rm", "big-lift", "--catalog", cat)
    assert r.exit_code == 0 and "deleted run" in r.output
    con = duckdb.connect(cat, read_only=True)
    for t in ("runs", "arms", "assignments", "requests", "exposures", "feedback", "run_labels"):
        assert con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?", [IDS[2]]).fetchone()[0] == 0, t
    assert con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [IDS[0]]).fetchone()[0] > 0
    con.close()


@pytest.mark.parametrize("args,msg", [
    (["runs", "show", "zzz"], "error: unknown run id 'zzz' (recent runs:"),
    (["runs", "show", "ab"], "error: run id 'ab' is ambiguous: it matches 2 runs"),
    (["runs", "compare", "abc"], "error: compare needs at least two runs"),
    (["report", "nope"], "error: unknown run id 'nope'"),
])
def test_bad_ids_are_one_line_errors_with_exit_2(cat, args, msg):
    r = subprocess.run([sys.executable, "-m", "cli", *args, "--catalog", cat], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(msg) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_sim_run_name_and_tag_then_refuses_a_taken_name(tmp_path):
    from _simdata import tiny_catalog

    cat = tiny_catalog(str(tmp_path / "c.duckdb"))
    cat.close()
    args = ["run", "--arms", "random,popularity", "--data", "synthetic-tiny", "--requests", "200", "-q",
            "--catalog", cat.path, "--artifacts", str(tmp_path / "art"), "--out", str(tmp_path / "rep")]
    r = sim(*args, "--name", "first", "--tag", "smoke", "--tag", "a1")
    assert r.exit_code == 0, r.output
    con = duckdb.connect(cat.path, read_only=True)
    rid = resolve_run(con, "first")
    assert con.execute("SELECT tags FROM run_labels WHERE run_id = ?", [rid]).fetchone()[0] == ["smoke", "a1"]
    n_effects = con.execute("SELECT count(*) FROM effects WHERE run_id = ?", [rid]).fetchone()[0]
    assert n_effects == len(DEFAULT_METRICS)  # written with the report
    con.close()
    r = sim(*args, "--name", "first")
    assert isinstance(r.exception, ConfigError) and "--name 'first' is taken by run" in str(r.exception)


def test_an_interleaving_run_lists_its_preference_share_not_a_dash():
    from collections import namedtuple

    from simulator.commands.runs import _lift

    Run = namedtuple("Run", "primary rel_lift abs_lift")
    assert _lift(Run("preference", float("nan"), 0.0456)) == "54.6% pref"
    assert _lift(Run("ctr", 0.1011, 0.004)) == "+10.11%" and _lift(Run("ctr", float("nan"), float("nan"))) == "-"
