"""The catalog's one schema: a new catalog is stamped with SCHEMA_VERSION and has every declared
table and column; migrating twice changes nothing; a version-0 catalog gains what it lacks."""

from __future__ import annotations

import duckdb

from simulator.core.catalog import Catalog, columns
from simulator.core.schema import COLUMNS, SCHEMA_VERSION, TABLES, migrate, stored_version


def test_a_new_catalog_has_every_declared_table_at_the_current_version(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as c:
        assert stored_version(c.con) == SCHEMA_VERSION
        for table in TABLES:
            assert tuple(columns(c.con, table)) == COLUMNS[table], table
        migrate(c.con)  # already there: nothing to do
        assert stored_version(c.con) == SCHEMA_VERSION


def test_a_version0_catalog_gains_the_tables_and_columns_it_lacks(tmp_path):
    path = str(tmp_path / "old.duckdb")
    with duckdb.connect(path) as con:  # a 0.1.0 development catalog: older runs/requests tables
        con.execute("CREATE TABLE runs(run_id VARCHAR PRIMARY KEY, dataset VARCHAR, config_json VARCHAR, "
                    "config_hash VARCHAR, seed BIGINT, git_rev VARCHAR, started_at TIMESTAMP, "
                    "finished_at TIMESTAMP, status VARCHAR, sim_start DOUBLE, sim_end DOUBLE, "
                    "n_requests BIGINT)")
        con.execute("INSERT INTO runs (run_id, status) VALUES ('old', 'complete')")
    with Catalog(path) as c:
        assert stored_version(c.con) == SCHEMA_VERSION
        assert tuple(columns(c.con, "runs")) == COLUMNS["runs"]
        assert c.con.execute("SELECT run_id, status, phase FROM runs").fetchall() == [("old", "complete", None)]
        assert set(TABLES) <= {r[0] for r in c.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_the_default_metrics_and_the_oracle_read_one_definition():
    from analysis.views import DEFAULT_METRICS
    from simulator.core.metrics import METRICS, TRUTH_METRICS

    assert [(m.name, m.kind, m.num, m.den) for m in DEFAULT_METRICS] == [(m.name, m.kind, m.num, m.den)
                                                                         for m in METRICS]
    assert set(TRUTH_METRICS) < {m.name for m in METRICS}


def test_a_version1_catalog_gains_nearline_ms_and_history_len_as_not_recorded(tmp_path):
    path = str(tmp_path / "v1.duckdb")
    with duckdb.connect(path) as con:  # the 0.1.0 requests table, stamped version 1
        con.execute("CREATE TABLE schema_meta(key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO schema_meta VALUES ('version', '1')")
        con.execute("CREATE TABLE requests(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR, "
                    "ts DOUBLE, session_id BIGINT, latency_ms DOUBLE, batch_no BIGINT, "
                    "PRIMARY KEY (run_id, request_id))")
        con.execute("INSERT INTO requests VALUES ('old', 0, 1, 'a', 0.0, 0, 2.5, 0)")
    with Catalog(path) as c:
        assert stored_version(c.con) == SCHEMA_VERSION == 4
        assert tuple(columns(c.con, "requests")) == COLUMNS["requests"]
        assert c.con.execute("SELECT latency_ms, nearline_ms, history_len FROM requests").fetchall() == [
            (2.5, None, None)]


def test_a_version2_catalog_gains_truth_se_and_its_old_passes_say_not_recorded(tmp_path):
    path = str(tmp_path / "v2.duckdb")
    with duckdb.connect(path) as con:  # the version-2 truth table (passes without their own SE)
        con.execute("CREATE TABLE schema_meta(key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO schema_meta VALUES ('version', '2')")
        con.execute("CREATE TABLE truth(run_id VARCHAR, arm VARCHAR, metric VARCHAR, rep INTEGER, value DOUBLE, "
                    "window_start DOUBLE, window_end DOUBLE, PRIMARY KEY (run_id, arm, metric, rep))")
        con.execute("INSERT INTO truth VALUES ('old', 'a', 'ctr', 0, 0.1, 0.0, 1.0)")
    with Catalog(path) as c:
        assert stored_version(c.con) == SCHEMA_VERSION
        assert tuple(columns(c.con, "truth")) == COLUMNS["truth"]
        assert c.con.execute("SELECT value, se FROM truth").fetchall() == [(0.1, None)]
