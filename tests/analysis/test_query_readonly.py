"""`sim query` is read-only: every modifying or file-reading statement is refused in one line
(exit 2) and leaves the catalog and the file system as they were; metric SQL goes through the
same guard (analysis/sqlguard.py)."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from _fake_events import make_fake_run

from analysis.sqlguard import check_expression, check_query
from analysis.views import Metric
from simulator.core.errors import ConfigError, SimError

STATEMENT = r"^error: query refused: {verb} is not allowed; `sim query` is read-only: one SELECT per call; " \
            r"save results with --output$"
FILES = r"^error: query refused: file access is not allowed \({what}\); `sim query` is read-only: one SELECT " \
        r"per call; save results with --output$"

# (statement, expected one-line message as a regex); OUT is a path in the test's folder
REFUSED = [
    ("DROP TABLE exposures", STATEMENT.format(verb="DROP TABLE")),
    ("DELETE FROM feedback", STATEMENT.format(verb="DELETE")),
    ("UPDATE runs SET status = 'x'", STATEMENT.format(verb="UPDATE")),
    ("INSERT INTO arms VALUES ('r', 'a', 'control', 1, '{}')", STATEMENT.format(verb="INSERT")),
    ("CREATE TABLE t AS SELECT 1", STATEMENT.format(verb="CREATE TABLE")),
    ("CREATE TEMP TABLE t AS SELECT 1", STATEMENT.format(verb="CREATE TEMP")),
    ("CREATE VIEW v AS SELECT 1", STATEMENT.format(verb="CREATE VIEW")),
    ("CREATE MACRO m(x) AS x", STATEMENT.format(verb="CREATE MACRO")),
    ("ALTER TABLE runs ADD COLUMN x INT", STATEMENT.format(verb="ALTER TABLE")),
    ("COPY runs TO 'OUT'", STATEMENT.format(verb="COPY")),
    ("COPY runs FROM 'OUT'", STATEMENT.format(verb="COPY")),
    ("EXPORT DATABASE 'OUT'", STATEMENT.format(verb="EXPORT")),
    ("ATTACH 'OUT' AS other", STATEMENT.format(verb="ATTACH")),
    ("DETACH other", STATEMENT.format(verb="DETACH")),
    ("INSTALL httpfs", STATEMENT.format(verb="INSTALL")),
    ("LOAD httpfs", STATEMENT.format(verb="LOAD")),
    ("SET enable_external_access = true", STATEMENT.format(verb="SET")),
    ("PRAGMA enable_profiling", STATEMENT.format(verb="PRAGMA")),
    ("CALL duckdb_secrets()", STATEMENT.format(verb="CALL")),
    ("CHECKPOINT", STATEMENT.format(verb="CHECKPOINT")),
    ("VACUUM", STATEMENT.format(verb="VACUUM")),
    ("EXPLAIN ANALYZE DELETE FROM feedback", STATEMENT.format(verb="DELETE")),
    ("SELECT 1; DROP TABLE runs", r"^error: query refused: 2 statements given; `sim query` is read-only: one "
                                  r"SELECT per call; save results with --output$"),
    ("SELECT 1;; SELECT 2", r"^error: query refused: 2 statements given; .*$"),
    ("SELECT * FROM read_csv('/etc/passwd')", FILES.format(what="/etc/passwd")),
    ("SELECT * FROM read_csv_auto('/etc/hostname')", FILES.format(what="/etc/hostname")),
    ("SELECT * FROM read_text('/etc/passwd')", FILES.format(what="/etc/passwd")),
    ("SELECT * FROM read_blob('/etc/passwd')", FILES.format(what="/etc/passwd")),
    ("SELECT * FROM glob('/root/*')", FILES.format(what=r"/root/\*")),
    ("SELECT * FROM read_parquet('OUT')", FILES.format(what="OUT")),
    ("SELECT * FROM read_json('OUT')", FILES.format(what="OUT")),
    ("SELECT * FROM 'OUT.csv'", FILES.format(what="OUT.csv")),
    ("SELECT * FROM sniff_csv('/etc/passwd')", FILES.format(what="/etc/passwd")),
    ("SELECT * FROM parquet_metadata('OUT')", FILES.format(what="OUT")),
    ("", r"^error: query is empty: give one SELECT statement$"),
    ("SELEC 1", r'^error: query failed: Parser Error: syntax error at or near "SELEC"$'),
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "cat.duckdb"
    with duckdb.connect(str(path)) as con:
        make_fake_run(con, "lift", n_users=300, lifts={"control": 1.0, "treatment": 1.2}, seed=1)
    return path


def _fingerprint(path) -> tuple:
    """The catalog file's bytes (and whether a write-ahead log appeared): a read-only session
    changes neither."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), Path(str(path) + ".wal").exists()


@pytest.mark.parametrize("sql,pattern", REFUSED, ids=[s or "empty" for s, _ in REFUSED])
def test_every_modifying_or_file_statement_is_refused(catalog, sim, tmp_path, sql, pattern):
    import re

    out = tmp_path / "out.file"
    before = _fingerprint(catalog)
    r = sim("query", sql.replace("OUT", str(out)), "--catalog", str(catalog))
    assert r.code == 2, r.out + r.err
    assert r.out == "" and "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and re.match(pattern.replace("OUT", re.escape(str(out))), lines[0]), r.err
    assert _fingerprint(catalog) == before and not out.exists()


def test_reads_views_and_writes_only_through_output(catalog, sim, tmp_path):
    r = sim("query", "SELECT arm, users FROM v_arm_summary WHERE run_id = 'lift' ORDER BY arm", "--format", "json",
            "--catalog", str(catalog))
    assert r.code == 0 and [x["arm"] for x in json.loads(r.out)] == ["control", "treatment"]
    for sql in ("DESCRIBE runs", "SHOW TABLES", "SUMMARIZE runs", "EXPLAIN SELECT 1", "FROM runs",
                "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "SELECT 1; -- a comment"):
        r = sim("query", sql, "--catalog", str(catalog))
        assert r.code == 0, (sql, r.err)
    p = tmp_path / "u.parquet"
    r = sim("query", "SELECT * FROM v_user_metrics", "--format", "parquet", "--output", str(p), "--catalog",
            str(catalog))
    assert r.code == 0 and r.out.strip() == f"wrote {p} (300 rows)" and len(pd.read_parquet(p)) == 300
    with duckdb.connect(str(catalog), read_only=True) as con:  # the views were never written to the file
        assert not con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal AND NOT temporary "
                               "AND view_name LIKE 'v_%'").fetchall()[0][0]


def test_check_query_uses_duckdbs_parser():
    assert check_query("select 1 -- DROP TABLE runs") == "select 1 -- DROP TABLE runs"  # a comment is not a DROP
    assert check_query("SELECT 'DELETE FROM runs' AS s") == "SELECT 'DELETE FROM runs' AS s"
    with pytest.raises(SimError, match="DROP TABLE is not allowed"):
        check_query("/* SELECT */ DROP TABLE runs")


@pytest.mark.parametrize("expr,why", [
    ("(SELECT count(*) FROM read_csv('/etc/passwd'))", "subqueries are not allowed"),
    ("1 IN (SELECT 1)", "subqueries are not allowed"),
    ("EXISTS (SELECT * FROM runs)", "subqueries are not allowed"),
    ("clicks) FROM runs; DROP TABLE runs; SELECT (1", "it contains 3 statements"),
    ("1) FROM runs WHERE (1", "FROM, WHERE, GROUP BY and the like are not allowed"),
    ("x) UNION SELECT (1", "FROM, WHERE, GROUP BY and the like are not allowed"),
    ("clicks FROM runs", "Parser Error"),
])
def test_metric_sql_is_one_plain_expression(expr, why):
    with pytest.raises(ConfigError) as e:
        Metric(name="m", num=expr)
    msg = str(e.value)
    assert msg.startswith(f"metric 'm' num: {expr!r} is not one SQL expression over v_user_metrics columns (")
    assert why in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="metric 'm' den"):
        Metric(name="m", kind="ratio", num="clicks", den=expr)


def test_metric_sql_accepts_expressions_and_safe_names():
    for expr in ("clicks", "CASE WHEN requests >= 5 THEN 1 ELSE 0 END", "clicks / nullif(exposures, 0)",
                 "coalesce(consumption, 0) * 2 -- doubled"):
        assert check_expression(expr, "x") == expr
        Metric(name="ok_1", num=expr)
    with pytest.raises(ConfigError, match=r"^metric name 'a\"b': use letters, digits and '_'"):
        Metric(name='a"b', num="clicks")


def test_trailing_comment_in_a_metric_cannot_swallow_sql(catalog):
    from analysis.report import summarize

    with duckdb.connect(str(catalog), read_only=True) as con:
        df = summarize(con, "lift", {"metrics": [{"name": "c2", "num": "clicks * 2 -- x", "kind": "mean"}]})
    assert (df["metric"] == "c2").any() and df.loc[df["metric"] == "c2", "treatment"].notna().all()
