"""Event sink: batched Arrow appends into DuckDB, idempotent by primary key.

Rows are buffered per table as numpy column chunks and flushed every ``flush_rows`` rows
with ``INSERT OR REPLACE`` (each table has a primary key), so a retried or resumed batch can
never duplicate events and memory stays flat however long the run.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs(run_id VARCHAR PRIMARY KEY, dataset VARCHAR, config_json VARCHAR,
  config_hash VARCHAR, seed BIGINT, git_rev VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
  status VARCHAR, sim_start DOUBLE, sim_end DOUBLE, n_requests BIGINT);
ALTER TABLE runs ADD COLUMN IF NOT EXISTS warnings_json VARCHAR;
CREATE TABLE IF NOT EXISTS arms(run_id VARCHAR, arm VARCHAR, role VARCHAR, weight DOUBLE,
  pipeline_json VARCHAR, PRIMARY KEY (run_id, arm));
ALTER TABLE arms ADD COLUMN IF NOT EXISTS pipeline_desc VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS phase VARCHAR;
CREATE TABLE IF NOT EXISTS assignments(run_id VARCHAR, user_id BIGINT, arm VARCHAR, first_ts DOUBLE,
  PRIMARY KEY (run_id, user_id));
CREATE TABLE IF NOT EXISTS requests(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  ts DOUBLE, session_id BIGINT, latency_ms DOUBLE, PRIMARY KEY (run_id, request_id));
ALTER TABLE requests ADD COLUMN IF NOT EXISTS batch_no BIGINT;
CREATE TABLE IF NOT EXISTS exposures(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  position INTEGER, item_id BIGINT, channel VARCHAR, score DOUBLE, latency_ms DOUBLE, ts DOUBLE,
  PRIMARY KEY (run_id, request_id, position));
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore DOUBLE;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore_cascade DOUBLE;
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS pscore_slate DOUBLE;
-- every retrieval channel that found the item ('hllm,popularity', in merge priority); `channel` is
-- the one the merge's de-dup credited (the first in priority)
ALTER TABLE exposures ADD COLUMN IF NOT EXISTS found_by VARCHAR;
CREATE TABLE IF NOT EXISTS ope_slates(run_id VARCHAR, request_id BIGINT, arm VARCHAR, position INTEGER,
  item_id BIGINT, PRIMARY KEY (run_id, request_id, arm, position));
CREATE TABLE IF NOT EXISTS feedback(run_id VARCHAR, request_id BIGINT, user_id BIGINT, arm VARCHAR,
  item_id BIGINT, position INTEGER, event VARCHAR, value DOUBLE, ts DOUBLE,
  PRIMARY KEY (run_id, request_id, item_id, event));
CREATE TABLE IF NOT EXISTS truth(run_id VARCHAR, arm VARCHAR, metric VARCHAR, rep INTEGER, value DOUBLE,
  window_start DOUBLE, window_end DOUBLE, PRIMARY KEY (run_id, arm, metric, rep));
-- written with each report (`sim run`, `sim report`): one row per treatment arm x metric, the
-- report's numbers (result: significant | ok | inconclusive | violated | ''); an interleaving run
-- has one row, metric 'preference' (control 0.5, treatment = the preference share)
CREATE TABLE IF NOT EXISTS effects(run_id VARCHAR, arm VARCHAR, metric VARCHAR, role VARCHAR,
  control_arm VARCHAR, method VARCHAR, control DOUBLE, treatment DOUBLE, abs_lift DOUBLE, rel_lift DOUBLE,
  rel_ci_low DOUBLE, rel_ci_high DOUBLE, p DOUBLE, p_adj DOUBLE, result VARCHAR, n_control BIGINT,
  n_treatment BIGINT, true_rel_lift DOUBLE, higher_is_better BOOLEAN, note VARCHAR, report_schema INTEGER,
  written_at TIMESTAMP,
  PRIMARY KEY (run_id, arm, metric));
-- a run's name and tags (`sim run --name/--tag`, `sim runs rename/tag`)
CREATE TABLE IF NOT EXISTS run_labels(run_id VARCHAR PRIMARY KEY, name VARCHAR, tags VARCHAR[]);
"""

TABLE_COLUMNS = {
    "assignments": ["run_id", "user_id", "arm", "first_ts"],
    "requests": ["run_id", "request_id", "user_id", "arm", "ts", "session_id", "latency_ms", "batch_no"],
    "exposures": ["run_id", "request_id", "user_id", "arm", "position", "item_id", "channel", "score",
                  "latency_ms", "ts", "pscore", "pscore_cascade", "pscore_slate", "found_by"],
    "ope_slates": ["run_id", "request_id", "arm", "position", "item_id"],
    "feedback": ["run_id", "request_id", "user_id", "arm", "item_id", "position", "event", "value", "ts"],
}


def ensure_schema(con) -> None:
    """Create the event tables and the per-run dataset snapshot tables (idempotent: catalogs made by
    older versions gain the tables they lack; existing tables are never changed)."""
    from simulator.core.snapshot import SNAPSHOT_SQL

    con.execute(SCHEMA_SQL)
    con.execute(SNAPSHOT_SQL)


class EventSink:
    def __init__(self, con, run_id: str, flush_rows: int = 200_000) -> None:
        self.con, self.run_id, self.flush_rows = con, run_id, flush_rows
        ensure_schema(con)
        self._buf: dict[str, list[dict]] = {t: [] for t in TABLE_COLUMNS}
        self._rows = 0

    def add(self, table: str, **cols) -> None:
        """Append a chunk of rows: each column an array (or a scalar broadcast to the chunk)."""
        n = max((len(v) for v in cols.values() if hasattr(v, "__len__") and not isinstance(v, str)), default=1)
        self._buf[table].append({**cols, "run_id": self.run_id, "_n": n})
        self._rows += n
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for table, chunks in self._buf.items():
            if not chunks:
                continue
            cols = TABLE_COLUMNS[table]
            arrays = {}
            for c in cols:
                parts = []
                for ch in chunks:
                    v = ch[c]
                    if not hasattr(v, "__len__") or isinstance(v, str):
                        v = [v] * ch["_n"]
                    parts.append(v if isinstance(v, pa.Array) else pa.array(v))
                arrays[c] = pa.concat_arrays([p.cast(parts[0].type) for p in parts]) if parts else pa.array([])
            tbl = pa.table(arrays)
            self.con.register("_sink_chunk", tbl)
            self.con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _sink_chunk")
            self.con.unregister("_sink_chunk")
            self._buf[table] = []
        self._rows = 0
