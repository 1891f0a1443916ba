"""The catalog's one schema: every main-schema table, its version, and the migrations to it.

:data:`DDL` creates every table the catalog owns; :data:`SCHEMA_VERSION` is stored in
``schema_meta``. :func:`migrate` runs once, when a catalog is opened (``catalog.connect``): a
catalog at an older version is brought to this one in one transaction, a catalog at a newer or
unknown version is refused in one line (:class:`SchemaVersionError`). Code that reads or writes
the catalog can then rely on every table and column below existing.

Tables (all in the main schema; a dataset's own tables live in its schema, see catalog.py):

- ``datasets``: one row per loaded dataset (sizes, source, ``content_hash``: fingerprint.py).
- a run: ``runs`` (config, status, ``phase``: the last phase stored), ``arms``, the events
  (``assignments``, ``requests``, ``exposures``, ``ope_slates``, ``feedback``), ``truth`` (the
  world oracle's passes), ``effects``
  (the report's numbers), ``run_labels`` (name, tags), and the run's dataset snapshot
  (``run_datasets``, ``run_items``, ``run_users``: snapshot.py); every write of a run goes
  through :class:`simulator.engine.store.RunStore`.
- ``eval_summary`` / ``eval_results``: offline evaluations (policies/results.py).

Versions: 0 = a catalog written before versions existed (hllm-sim 0.1.0 development builds);
1 = the 0.1.0 layout; 2 = ``requests.nearline_ms`` (each request's share of the arms' work
outside the request path, e.g. an HLLM user-embedding table's refresh; NULL in runs stored
before it was recorded); 3 = ``truth.se``; 4 = ``requests.history_len`` (the history items the
arms were given with the request: the latency test's load covariate; NULL before).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import duckdb

from simulator.core.errors import SimError

SCHEMA_VERSION = 4

DDL = """
CREATE TABLE IF NOT EXISTS schema_meta(key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS datasets(name VARCHAR PRIMARY KEY, schema_name VARCHAR, source VARCHAR,
  format VARCHAR, n_users BIGINT, n_items BIGINT, n_interactions BIGINT, n_skipped BIGINT,
  created_at TIMESTAMP DEFAULT current_timestamp, meta_json VARCHAR, content_hash VARCHAR);
CREATE TABLE IF NOT EXISTS runs(run_id VARCHAR PRIMARY KEY, dataset VARCHAR, config_json VARCHAR,
  config_hash VARCHAR, seed BIGINT, git_rev VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
  status VARCHAR, sim_start DOUBLE, sim_end DOUBLE, n_requests BIGINT, warnings_json VARCHAR,
  phase VARCHAR);
CREATE TABLE IF NOT EXISTS arms(run_id VARCHAR, arm VARCHAR, role VARCHAR, weight DOUBLE,
  pipeline_json VARCHAR, pipeline_desc VARCHAR, PRIMARY KEY (run_id, arm));
CREATE TABLE IF NOT EXISTS assignments(run_id VARCHAR, user_id BIGINT, arm VARCHAR, first_ts DOUBLE,
  PRIMARY KEY (run_id, user_id));
CREATE TABLE IF NOT EXISTS requests(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  ts DOUBLE, session_id BIGINT, latency_ms DOUBLE, batch_no BIGINT, nearline_ms DOUBLE,
  history_len BIGINT, PRIMARY KEY (run_id, request_id));
CREATE TABLE IF NOT EXISTS exposures(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  position INTEGER, item_id BIGINT, channel VARCHAR, score DOUBLE, latency_ms DOUBLE, ts DOUBLE,
  pscore DOUBLE, pscore_cascade DOUBLE, pscore_slate DOUBLE, found_by VARCHAR,
  PRIMARY KEY (run_id, request_id, position));
CREATE TABLE IF NOT EXISTS ope_slates(run_id VARCHAR, request_id BIGINT, arm VARCHAR,
  position INTEGER, item_id BIGINT, PRIMARY KEY (run_id, request_id, arm, position));
CREATE TABLE IF NOT EXISTS feedback(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  item_id BIGINT, position INTEGER, event VARCHAR, value DOUBLE, ts DOUBLE,
  PRIMARY KEY (run_id, request_id, item_id, event));
CREATE TABLE IF NOT EXISTS truth(run_id VARCHAR, arm VARCHAR, metric VARCHAR, rep INTEGER,
  value DOUBLE, window_start DOUBLE, window_end DOUBLE, se DOUBLE, PRIMARY KEY (run_id, arm, metric, rep));
-- written with each report (`sim run`, `sim report`): one row per treatment arm x metric, the
-- report's numbers (result: significant | ok | inconclusive | violated | ''); an interleaving run
-- has one row, metric 'preference' (control 0.5, treatment = the preference share)
CREATE TABLE IF NOT EXISTS effects(run_id VARCHAR, arm VARCHAR, metric VARCHAR, role VARCHAR,
  control_arm VARCHAR, method VARCHAR, control DOUBLE, treatment DOUBLE, abs_lift DOUBLE,
  rel_lift DOUBLE, rel_ci_low DOUBLE, rel_ci_high DOUBLE, p DOUBLE, p_adj DOUBLE, result VARCHAR,
  n_control BIGINT, n_treatment BIGINT, true_rel_lift DOUBLE, higher_is_better BOOLEAN,
  note VARCHAR, report_schema INTEGER, written_at TIMESTAMP, PRIMARY KEY (run_id, arm, metric));
-- a run's name and tags (`sim run --name/--tag`, `sim runs rename/tag`)
CREATE TABLE IF NOT EXISTS run_labels(run_id VARCHAR PRIMARY KEY, name VARCHAR, tags VARCHAR[]);
-- the run's copy of what its report needs from the dataset (snapshot.py)
CREATE TABLE IF NOT EXISTS run_datasets(run_id VARCHAR PRIMARY KEY, dataset VARCHAR,
  content_hash VARCHAR, n_items BIGINT, n_interactions BIGINT, diversity_attr VARCHAR,
  created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS run_items(run_id VARCHAR, item_id BIGINT, n_interactions BIGINT,
  attr VARCHAR, PRIMARY KEY (run_id, item_id));
CREATE TABLE IF NOT EXISTS run_users(run_id VARCHAR, user_id BIGINT, pre BIGINT, pre_items BIGINT,
  pre_days BIGINT, pre_pop DOUBLE, PRIMARY KEY (run_id, user_id));
-- offline evaluations (`sim train --eval`, policies/results.py)
CREATE TABLE IF NOT EXISTS eval_summary(eval_id VARCHAR, dataset VARCHAR, model VARCHAR,
  config_hash VARCHAR, split VARCHAR, exclude_history BOOLEAN, metric VARCHAR, value DOUBLE,
  n_users BIGINT, created_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (eval_id, metric));
CREATE TABLE IF NOT EXISTS eval_results(eval_id VARCHAR, dataset VARCHAR, model VARCHAR,
  config_hash VARCHAR, split VARCHAR, user_id BIGINT, metric VARCHAR, value DOUBLE,
  PRIMARY KEY (eval_id, user_id, metric));
"""



def _columns(ddl: str) -> dict[str, tuple[str, ...]]:
    """Each table's columns, in order, read from ``ddl`` (so a column is declared once)."""
    out = {}
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)\((.*?)\);", ddl, re.S):
        parts = re.split(r",(?![^(]*\))", body)  # commas outside PRIMARY KEY (...)
        out[table] = tuple(p.split()[0] for p in parts if not p.strip().startswith("PRIMARY KEY"))
    return out


COLUMNS = _columns(DDL)  # table -> its columns, in order
TABLES = tuple(COLUMNS)  # every table the catalog owns

# version 0 -> 1: the columns that tables gained during 0.1.0 development (a table a version-0
# catalog lacks is created whole by DDL, which runs first)
_V0_COLUMNS = """
ALTER TABLE datasets ADD COLUMN IF NOT EXISTS content_hash VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS warnings_json VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS phase VARCHAR;
ALTER TABLE arms ADD COLUMN IF NOT EXISTS pipeline_desc VARCHAR;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS batch_no BIGINT;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore DOUBLE;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore_cascade DOUBLE;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore_slate DOUBLE;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS found_by VARCHAR;
ALTER TABLE run_users ADD COLUMN IF NOT EXISTS pre_items BIGINT;
ALTER TABLE run_users ADD COLUMN IF NOT EXISTS pre_days BIGINT;
ALTER TABLE run_users ADD COLUMN IF NOT EXISTS pre_pop DOUBLE;
"""


def _from_v0(con: duckdb.DuckDBPyConnection) -> None:
    """0 -> 1: every table and column of version 1, and the content hash of each dataset loaded
    before hashes were stored."""
    from simulator.core.fingerprint import content_hash

    con.execute(DDL)
    con.execute(_V0_COLUMNS)
    for name, schema in con.execute("SELECT name, schema_name FROM datasets "
                                    "WHERE content_hash IS NULL").fetchall():
        con.execute("UPDATE datasets SET content_hash = ? WHERE name = ?",
                    [content_hash(con, schema), name])


def _from_v1(con: duckdb.DuckDBPyConnection) -> None:
    """1 -> 2: requests.nearline_ms (NULL for the requests of runs stored before: not recorded)."""
    con.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS nearline_ms DOUBLE")


def _from_v2(con: duckdb.DuckDBPyConnection) -> None:
    """2 -> 3: truth.se, a pass's Monte-Carlo SE over its users (NULL for the passes of runs stored
    before: their SE comes from the spread of several passes)."""
    con.execute(DDL)  # a catalog without a truth table gets it whole
    con.execute("ALTER TABLE truth ADD COLUMN IF NOT EXISTS se DOUBLE")


def _from_v3(con: duckdb.DuckDBPyConnection) -> None:
    """3 -> 4: requests.history_len (NULL for the requests of runs stored before: their latency
    test compares the arms at the same call size only)."""
    con.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS history_len BIGINT")


# MIGRATIONS[v] brings a catalog from version v to v + 1 (a new version adds one entry)
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {0: _from_v0, 1: _from_v1, 2: _from_v2,
                                                                      3: _from_v3}


class SchemaVersionError(SimError):
    """A catalog whose schema this version cannot read or migrate."""


def stored_version(con: duckdb.DuckDBPyConnection, where: str = "") -> int:
    """The catalog's schema version (0: written before versions were stored, or empty); a
    version no chain of MIGRATIONS brings to SCHEMA_VERSION is refused in one line."""
    try:
        rows = con.execute("SELECT value FROM schema_meta WHERE key = 'version'").fetchall()
    except duckdb.CatalogException:  # no schema_meta table
        rows = []
    raw = str(rows[0][0]) if rows else "0"
    if not raw.isdigit():
        raise SchemaVersionError(f"catalog {where} has an unreadable schema version {raw!r}: "
                                 "use a new catalog")
    version = int(raw)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"catalog {where} has schema version {version}, newer than this "
                                 f"hllm-sim's ({SCHEMA_VERSION}): upgrade hllm-sim to open it")
    if any(v not in MIGRATIONS for v in range(version, SCHEMA_VERSION)):
        raise SchemaVersionError(f"catalog {where} has schema version {version}, which this "
                                 f"hllm-sim cannot migrate to version {SCHEMA_VERSION}: use a new "
                                 "catalog")
    return version


def needs_migration(con: duckdb.DuckDBPyConnection, where: str) -> bool:
    """Whether the catalog is older than SCHEMA_VERSION (one that cannot be migrated raises)."""
    return stored_version(con, where) != SCHEMA_VERSION


def migrate(con: duckdb.DuckDBPyConnection, where: str = "") -> None:
    """Bring a writable catalog to SCHEMA_VERSION, in one transaction (nothing when it is there)."""
    version = stored_version(con, where)
    if version == SCHEMA_VERSION:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        for v in range(version, SCHEMA_VERSION):
            MIGRATIONS[v](con)
        con.execute("INSERT OR REPLACE INTO schema_meta VALUES ('version', ?)",
                    [str(SCHEMA_VERSION)])
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
