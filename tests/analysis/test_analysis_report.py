"""Views on hand-made events (exact values), effect table, report HTML, CLI commands."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import duckdb
import pandas as pd
import pytest
from _fake_events import ensure_event_schema, make_fake_run
from typer.testing import CliRunner

from analysis.report import summarize, write_report
from analysis.srm import srm_for_run
from analysis.views import install_views, user_table
from simulator.core.errors import ConfigError, NotFoundError


def _insert(con, table, rows):
    df = pd.DataFrame(rows)
    con.register("_t", df)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _t")
    con.unregister("_t")


@pytest.fixture
def tiny_con():
    """Two users, one arm each; user 0: 2 requests (clicks at pos 0 and 2 in request 0), user 1: 1 request."""
    con = duckdb.connect()
    ensure_event_schema(con)
    _insert(con, "runs", [dict(run_id="r", dataset="nodata", config_json="{}", config_hash="h", seed=0, git_rev="g",
                               started_at=pd.Timestamp("2026-01-01"), finished_at=pd.Timestamp("2026-01-01"),
                               status="complete", sim_start=0.0, sim_end=100.0, n_requests=3)])
    _insert(con, "arms", [dict(run_id="r", arm="A", role="control", weight=0.5, pipeline_json="{}"),
                          dict(run_id="r", arm="B", role="treatment", weight=0.5, pipeline_json="{}")])
    _insert(con, "assignments", [dict(run_id="r", user_id=0, arm="A", first_ts=1.0),
                                 dict(run_id="r", user_id=1, arm="B", first_ts=2.0)])
    _insert(con, "requests", [dict(run_id="r", request_id=0, user_id=0, arm="A", ts=1.0, session_id=10, latency_ms=4.0),
                              dict(run_id="r", request_id=1, user_id=0, arm="A", ts=50.0, session_id=11, latency_ms=6.0),
                              dict(run_id="r", request_id=2, user_id=1, arm="B", ts=2.0, session_id=20, latency_ms=8.0)])
    ex = [dict(run_id="r", request_id=q, user_id=u, arm=a, position=p, item_id=10 * q + p, channel=["ann", "pop"][p % 2],
               score=0.0, latency_ms=1.0, ts=1.0) for q, u, a in [(0, 0, "A"), (1, 0, "A"), (2, 1, "B")] for p in range(3)]
    _insert(con, "exposures", ex)
    _insert(con, "feedback", [
        dict(run_id="r", request_id=0, user_id=0, arm="A", item_id=0, position=0, event="click", value=1.0, ts=2.0),
        dict(run_id="r", request_id=0, user_id=0, arm="A", item_id=2, position=2, event="click", value=1.0, ts=2.0),
        dict(run_id="r", request_id=0, user_id=0, arm="A", item_id=2, position=2, event="consume", value=0.5, ts=3.0),
        dict(run_id="r", request_id=2, user_id=1, arm="B", item_id=21, position=1, event="click", value=1.0, ts=3.0)])
    return con


def test_user_metrics_exact(tiny_con):
    install_views(tiny_con)
    u = tiny_con.execute("SELECT * FROM v_user_metrics ORDER BY user_id").df()
    assert u.requests.tolist() == [2, 1] and u.sessions.tolist() == [2, 1]
    assert u.exposures.tolist() == [6, 3] and u.clicks.tolist() == [2, 1] and u.hits.tolist() == [1, 1]
    assert u.consumption.tolist() == [0.5, 0.0] and u.latency_sum.tolist() == [10.0, 8.0]
    # request 0: clicks at pos 0 and 2 -> DCG 1 + 1/log2(4) = 1.5; ideal for 2 clicks 1 + 1/log2(3)
    assert u.ndcg_sum[0] == pytest.approx(1.5 / (1 + 1 / math.log2(3)), abs=1e-12)
    assert u.ndcg_sum[1] == pytest.approx(1 / math.log2(3), abs=1e-12)  # one click at pos 1: DCG/IDCG = 0.63/1
    s = tiny_con.execute("SELECT * FROM v_arm_summary ORDER BY arm").df()
    assert s.ctr.tolist() == pytest.approx([2 / 6, 1 / 3]) and s.latency_p50_ms.tolist() == [5.0, 8.0]
    ch = tiny_con.execute("SELECT channel, sum(clicks) c, sum(consumes) k FROM v_channel_contribution "
                          "GROUP BY ALL ORDER BY channel").fetchall()
    assert ch == [("ann", 2, 1), ("pop", 1, 0)]


def test_missing_dataset_degrades_with_notes(tiny_con):
    df, notes = user_table(tiny_con, "r")
    assert df.pre.isna().all() and "pre" in notes and "diversity" in notes and "novelty" in notes


def test_unknown_run_and_missing_tables(tiny_con):
    with pytest.raises(NotFoundError, match="unknown run id 'nope'"):
        summarize(tiny_con, "nope")
    with pytest.raises(NotFoundError, match="catalog has no event tables"):
        install_views(duckdb.connect())


@pytest.fixture(scope="module")
def fake_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("an") / "cat.duckdb"
    con = duckdb.connect(str(path))
    make_fake_run(con, "lift", n_users=3000, lifts={"control": 1.0, "treatment": 1.3}, seed=1)
    make_fake_run(con, "srm", n_users=1000, lifts={"control": 1.0, "treatment": 1.0},
                  weights={"control": 0.8, "treatment": 0.2}, seed=2, write_dataset=False)
    con.execute("UPDATE arms SET weight = 0.5 WHERE run_id = 'srm'")  # configured 50/50, observed 80/20
    con.close()
    return path


def test_summary_recovers_injected_lift(fake_db):
    con = duckdb.connect(str(fake_db))
    s = summarize(con, "lift")
    ctr = s[s.metric == "ctr"].iloc[0]
    assert ctr.role == "primary" and ctr.method == "cuped" and ctr.significant
    assert ctr.rel_ci_low < 0.3 < ctr.rel_ci_high
    lat = s[s.metric == "latency_ms"].iloc[0]
    assert lat.role == "guardrail" and bool(lat.guardrail_violated)  # treatment is slower by construction
    assert lat.guardrail_status == "violated" and lat.method == "batch" and "serving batches" in lat.note
    assert set(s.metric) == {"ctr", "ndcg", "consumption", "click_any", "session_length", "return_rate",
                             "active_days", "novelty", "diversity", "latency_ms"}
    sec = s[s.role == "secondary"]
    assert (sec.p_adj >= sec.p - 1e-15).all() and sec.p_adj.notna().all()
    assert ctr.p_adj == ctr.p  # the primary is tested at alpha, unadjusted (one treatment arm)
    from analysis.report import build_report, render_console

    for width in (80, 120):
        lines = render_console(*build_report(con, "lift"), width=width).splitlines()
        assert lines[0].startswith("treatment beats control on ctr: +")  # the answer comes first
        table = lines[lines.index("") + 1:]
        assert table[1].split()[:2] == ["ctr", "*"] and any(x.strip().startswith("latency_ms (g)") for x in table)
        assert max(map(len, lines)) <= width  # fits the terminal: rich folds, never wraps
    con.close()


def test_user_defined_metric_and_bad_config(fake_db):
    con = duckdb.connect(str(fake_db))
    cfg = {"primary": "clicks_per_request",
           "metrics": [{"name": "clicks_per_request", "kind": "ratio", "num": "clicks", "den": "requests"}]}
    s = summarize(con, "lift", cfg)
    assert s.iloc[0].metric == "clicks_per_request" and s.iloc[0].role == "primary"
    with pytest.raises(ConfigError, match="unknown metric 'nope'"):
        summarize(con, "lift", {"primary": "nope"})
    with pytest.raises(ConfigError, match="user-defined metric SQL failed"):
        summarize(con, "lift", {"metrics": [{"name": "x", "num": "no_such_column"}]})
    con.close()


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.classes, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if "class" in a:
            self.classes.append(a["class"])

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_parses_and_embeds_plots(fake_db, tmp_path):
    paths = write_report(str(fake_db), "lift", tmp_path)
    p = _Imgs()
    p.feed(open(paths["html"]).read())
    assert len(p.imgs) == 5 and all(i["src"].startswith("data:image/png;base64,") for i in p.imgs)
    assert all(len(i["src"]) > 5000 for i in p.imgs)
    assert [i["alt"] for i in p.imgs][:2] == ["forest plot of relative lifts", "sequential monitor"]
    text = "".join(p.text)
    assert "Experiment report: lift" in text and "no sample ratio mismatch" in text and "banner bad" not in p.classes
    assert text.index("treatment beats control on ctr") < text.index("Effects (treatment vs control)")
    js = json.loads(open(paths["json"]).read())
    assert js["headline"][0].startswith("treatment beats control on ctr")
    ctr = next(e for e in js["effects"] if e["metric"] == "ctr")
    assert ctr["significant"] is True and ctr["p"] < 1e-6 and js["run"]["run_id"] == "lift"
    seq = js["sequential"]["arms"]["treatment"]
    p_av = [look["p_always_valid"] for look in seq["path"]]
    assert len(p_av) >= 15 and all(b <= a for a, b in zip(p_av, p_av[1:], strict=False)) and seq["stop"]["stopped"]
    md = open(paths["md"]).read()
    assert "| ctr | primary |" in md and "![relative lifts](forest.png)" in md
    assert "| nearline ms |" not in md  # no arm did work outside the request path: no column
    assert (tmp_path / "lift" / "forest.png").exists()


def test_report_json_validates_against_the_models_schema(fake_db, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from analysis.report import SCHEMA_VERSION, Report, report_schema

    paths = write_report(str(fake_db), "lift", tmp_path)
    js = json.loads(open(paths["json"]).read())
    jsonschema.validate(js, report_schema())
    assert js["schema_version"] == SCHEMA_VERSION and js["package_version"] and "dataset_hash" in js
    assert Report.model_validate(js) == paths["report"]  # the file round-trips to the model
    js["effects"][0]["p"] = "small"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(js, report_schema())


def test_every_warning_reaches_report_json_and_the_html(tmp_path):
    """A complete run that served fewer requests than asked for (a replay log that ran out) says so
    in report.json and on the page, not only on the console; the answer still comes first."""
    con = duckdb.connect()
    make_fake_run(con, "short", n_users=300, write_dataset=False, config={"n_requests": 99999})
    paths = write_report(con, "short", tmp_path)
    js = json.loads(open(paths["json"]).read())
    short = [w for w in js["warnings"] if "served only" in w]
    assert len(short) == 1 and "of the 99,999 requests asked for" in short[0]
    html = open(paths["html"]).read()
    assert html.index('id="answer"') < html.index("served only") < html.index("Effects (treatment vs control)")
    assert "served only" in open(paths["md"]).read()


def test_srm_warning_on_top(fake_db, tmp_path):
    con = duckdb.connect(str(fake_db))
    assert srm_for_run(con, "srm").failed
    paths = write_report(con, "srm", tmp_path)
    html = open(paths["html"]).read()
    assert html.index("SAMPLE RATIO MISMATCH") < html.index("Effects (treatment vs control)")
    assert "WARNING" in open(paths["md"]).read().split("## Effects")[0]
    con.close()


def test_cli_query_report_power(fake_db, tmp_path):
    import typer

    from simulator.commands.analysis import power, query, report

    app = typer.Typer()
    app.command("query")(query)
    app.command("report")(report)
    app.command("power")(power)
    r = CliRunner()
    cat = ["--catalog", str(fake_db)]
    res = r.invoke(app, ["query", "SELECT arm, users FROM v_arm_summary WHERE run_id='lift' ORDER BY arm",
                         "--format", "json", *cat])
    assert res.exit_code == 0, res.output
    assert [row["arm"] for row in json.loads(res.output)] == ["control", "treatment"]
    out = tmp_path / "x.parquet"
    res = r.invoke(app, ["query", "SELECT * FROM v_user_metrics", "--format", "parquet", "--output", str(out), *cat])
    assert res.exit_code == 0 and len(pd.read_parquet(out)) == 4000
    res = r.invoke(app, ["query", "SELECT 1 AS a", "--format", "csv", *cat])
    assert res.output.strip() == "a\n1"
    res = r.invoke(app, ["report", "lift", "--out", str(tmp_path), *cat])
    assert res.exit_code == 0 and "report:" in res.output and "ctr" in res.output
    res = r.invoke(app, ["power", "--baseline", "0.05", "--mde", "0.1", "--json"])
    assert json.loads(res.output)["n_per_arm"] > 1000
    # invalid inputs -> SimError subclasses (printed as one line by the sim entry point)
    bad = [(["report", "nope", *cat], NotFoundError, "unknown run id 'nope'"),
           (["query", "SELEC 1", *cat], Exception, "query failed: Parser Error"),
           (["query", "SELECT 1", "--format", "xml", *cat], ConfigError, "--format must be one of"),
           (["query", "SELECT 1", "--catalog", str(tmp_path / "none.duckdb")], NotFoundError, "does not exist"),
           (["power", "--baseline", "0.05"], ConfigError, "exactly one of --mde")]
    for args, exc, msg in bad:
        res = r.invoke(app, args)
        assert isinstance(res.exception, exc) and msg in str(res.exception), (args, res.exception)


def test_three_arms_one_without_users():
    con = duckdb.connect()
    make_fake_run(con, "m3", n_users=600, lifts={"control": 1, "b": 1.1, "c": 1.2},
                  weights={"control": 0.5, "b": 0.5, "c": 0.0})
    s = summarize(con, "m3")
    c = s[s.arm == "c"]
    assert len(c) == 10 and c.p.isna().all() and (c.n_treatment == 0).all()  # one row per default metric
    assert (c.note == [f"metric '{m}': arm 'c' has " + ("no measured batches" if m == "latency_ms" else "zero users")
                       for m in c.metric]).all()
    b = s[s.arm == "b"]
    assert b[b.role != "guardrail"].p_adj.notna().all() and (b[b.role == "guardrail"].guardrail_status != "").all()
    assert not srm_for_run(con, "m3").failed


def test_only_significant_effects_are_coloured_by_the_absolute_lift():
    """A row is coloured only when its result is significant (or a guardrail's verdict), good or bad
    by treatment - control (the relative lift is undefined over a non-positive control)."""
    from analysis.report import EffectRow

    rows = [EffectRow(metric="m", arm="t", role="secondary", abs_lift=0.3, rel_lift=float("nan"), result="significant"),
            EffectRow(metric="m2", arm="t", role="secondary", abs_lift=-0.3, result="significant"),
            EffectRow(metric="m3", arm="t", role="secondary", abs_lift=0.3, result=""),
            EffectRow(metric="lat", arm="t", role="guardrail", abs_lift=0.3, rel_lift=0.1, higher_is_better=False,
                      result="violated")]
    assert [r.good for r in rows] == [True, False, None, False] and rows[0].rel_lift is None


def test_sequential_plot_scales_to_the_late_looks_not_the_first_ones():
    """Early looks' confidence sequences are huge (the ±1000% axis of ML-100K); the panel is scaled
    to the last look's sequence and the late estimates, so the end of the run is readable."""
    from analysis.plots import _sequential_ylim

    looks = 10
    path = pd.DataFrame({"control": [0.05] * looks, "rel_lift": [0.5, 0.3] + [0.1] * (looks - 2),
                         "cs_low": [-0.5] + [-0.02] * (looks - 2) + [0.001],
                         "cs_high": [0.5] + [0.03] * (looks - 2) + [0.01]})
    lo, hi = _sequential_ylim(path)
    assert -10 < lo <= 0 and 20 <= hi < 30  # last look: [+2%, +20%]; estimates +10%; not the first look's ±1000%


def test_forest_scale_is_shared_but_a_far_wider_ci_runs_off_it_labelled():
    """The world run whose return_rate CI (+-200%) squashed every other metric into a few pixels:
    the scale now follows the typical row, the wide row ends in an arrow, the primary always fits."""
    from analysis import plots
    from analysis.report import EffectRow

    def row(m, lo, hi, role="secondary", **kw):
        return EffectRow(metric=m, arm="t", role=role, abs_lift=0.1, rel_lift=(lo + hi) / 2, rel_ci_low=lo,
                         rel_ci_high=hi, **kw)

    rows = [row("ctr", 0.02, 0.18, "primary"), row("ndcg", -0.03, 0.18), row("consumption", 0.0, 0.4),
            row("click_any", -0.04, 0.17), row("return_rate", -1.85, 2.0), row("novelty", 0.002, 0.014)]
    lim = plots.forest_limit(rows)
    assert 40 < lim < 100  # 3x the median row's extent (~18%), far below return_rate's 200%
    assert plots.forest_limit(rows[:4]) == pytest.approx(40 * 1.08)  # no outlier: every CI fits
    guard = [row("session_length", -0.026, 0.2, "guardrail", margin=0.05),
             row("latency_ms", 3.43, 6.14, "guardrail", margin=0.1)]
    assert 20 < plots.forest_limit(guard) < 100  # two guardrails: 3x the narrower one
    assert plots.forest_limit([row("ctr", -2.0, 3.0, "primary"), *rows[1:3]]) >= 300  # the primary fits
    assert plots.forest(rows + guard)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_blank_relative_ci_says_why_and_gives_the_absolute_one():
    """Fieller's set is unbounded when the control level is within noise of 0 (a rare outcome):
    the row then says so and prints the absolute CI, keeping any note it had."""
    from analysis.report.compute import _unbounded_note

    nan = float("nan")
    row = dict(note="", rel_ci_low=nan, rel_ci_high=nan, ci_low=-0.018, ci_high=0.009, rel_lift=-0.51)
    assert _unbounded_note(row) == ("relative CI unbounded (the control level is within noise of 0); "
                                    "absolute difference [-0.018, 0.009]")
    assert _unbounded_note({**row, "note": "n = serving batches"}).startswith("n = serving batches; relative CI")
    assert _unbounded_note({**row, "rel_ci_low": -0.9, "rel_ci_high": 0.4}) == ""  # bounded: nothing to say
    assert _unbounded_note({**row, "ci_low": nan, "ci_high": nan, "note": "zero variance"}) == "zero variance"
