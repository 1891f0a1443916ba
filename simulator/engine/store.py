"""Every write of a run, in one object: :class:`RunStore`.

A run row is written only once the runtime has started (a run that cannot start leaves nothing
behind); it is ``running`` while a process serves it and always ends ``complete`` (every phase
it promises stored: :data:`PHASES`), ``incomplete`` (Ctrl-C / SIGTERM: resumable) or ``failed``
(an error: resumable once fixed). Only a process killed outright (``kill -9``) leaves
``running``; `sim report` says so, and ``--resume`` finishes it. ``runs.phase`` is the last
phase stored, so a resume does only what is missing.

The events go through :class:`EventSink` (``RunStore.events()``): batched Arrow appends, flushed
every ``flush_rows`` rows with ``INSERT OR REPLACE`` (each table has a primary key), so a retried
or resumed batch never duplicates events and memory stays flat however long the run. The tables
are declared once, in simulator/core/schema.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa

from simulator.core.errors import ConfigError, SimError
from simulator.core.runs import labels
from simulator.core.schema import COLUMNS
from simulator.core.snapshot import run_dataset, snapshot_dataset
from simulator.engine.config import ExperimentConfig, describe_pipeline

PHASES = ("simulate", "oracle", "report")  # a run's phases, in order (runs.phase: the last stored)
EVENT_TABLES = ("assignments", "requests", "exposures", "ope_slates", "feedback")  # EventSink's
# what deleting a run removes: every table keyed by run_id (dependents first)
RUN_TABLES = ("effects", "run_labels", "truth", "feedback", "ope_slates", "exposures", "requests",
              "assignments", "run_users", "run_items", "run_datasets", "arms", "runs")


@contextlib.contextmanager
def transaction(con) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def phase_index(phase: str | None) -> int:
    """Position of ``phase`` in :data:`PHASES` (-1: none stored yet)."""
    return -1 if phase is None else PHASES.index(phase)


class RunStore:
    """The writes of run ``run_id`` on a catalog connection (its rows, phases, events, truth,
    effects and labels)."""

    def __init__(self, con, run_id: str) -> None:
        self.con, self.run_id = con, run_id

    # ------------------------------------------------------------------ the run's life
    def start(self, cfg: ExperimentConfig, sim_start: float, git_rev: str, resumed: bool,
              warnings: list[str] | None = None) -> None:
        """Write the run's rows and dataset snapshot (new run) or re-open it (resume), atomically.
        ``warnings``: the scenario's sentences about the run's data (the report shows them)."""
        with transaction(self.con):
            if resumed:
                self._check_same_data(cfg.dataset)
                self.con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?",
                                 [self.run_id])
                return
            self.con.execute(
                "INSERT INTO runs (run_id, dataset, config_json, config_hash, seed, git_rev, "
                "started_at, finished_at, status, sim_start, sim_end, n_requests, warnings_json) "
                "VALUES (?, ?, ?, ?, ?, ?, current_timestamp, NULL, 'running', ?, NULL, 0, ?)",
                [self.run_id, cfg.dataset, cfg.resolved_json(), cfg.config_hash(), cfg.seed,
                 git_rev, sim_start, json.dumps(list(warnings or []))])
            for a in cfg.arms:
                self.con.execute(
                    "INSERT INTO arms (run_id, arm, role, weight, pipeline_json, pipeline_desc) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [self.run_id, a.name, a.role, a.weight, a.model_dump_json(),
                     json.dumps(describe_pipeline(a))])
            snapshot_dataset(self.con, self.run_id, cfg.dataset, sim_start)

    def _check_same_data(self, dataset: str) -> None:
        """A resumed run must see the data it started with (else it would mix two datasets)."""
        from simulator.core.fingerprint import dataset_hash

        snap = run_dataset(self.con, self.run_id)
        if snap is None or not snap.get("content_hash"):
            return
        now = dataset_hash(self.con, dataset)
        if now != snap["content_hash"]:
            was = snap["content_hash"]
            raise ConfigError(f"cannot resume run {self.run_id}: dataset {dataset!r} has changed "
                              f"since the run started (content hash {was} -> {now}); resuming "
                              "would mix two datasets: start a new run instead")

    def stored_phase(self) -> str | None:
        """The last phase the run has stored (None: its simulation has not ended)."""
        row = self.con.execute("SELECT phase FROM runs WHERE run_id = ?", [self.run_id]).fetchall()
        return row[0][0] if row else None

    def mark_phase(self, phase: str) -> None:
        """Record that ``phase`` has stored all its rows."""
        self.con.execute("UPDATE runs SET phase = ? WHERE run_id = ?", [phase, self.run_id])

    def finish(self, status: str) -> None:
        """Record the final status, the simulated end and the number of requests served."""
        end = self.con.execute("SELECT max(ts), count(*) FROM requests WHERE run_id = ?",
                               [self.run_id]).fetchall()[0]
        self.con.execute("UPDATE runs SET status = ?, finished_at = current_timestamp, "
                         "sim_end = ?, n_requests = ? WHERE run_id = ?",
                         [status, end[0], end[1], self.run_id])

    # ------------------------------------------------------------------ what the phases store
    def events(self, flush_rows: int = 200_000) -> EventSink:
        """The buffered writer of the run's event tables (the simulate phase)."""
        return EventSink(self.con, self.run_id, flush_rows)

    def store_truth(self, rows: list[tuple], window: tuple[float, float]) -> None:
        """The world oracle's passes: ``rows`` of (arm, metric, rep, value, se) over ``window``."""
        self.con.executemany("INSERT OR REPLACE INTO truth (run_id, arm, metric, rep, value, se, window_start, "
                             "window_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [(self.run_id, *r, window[0], window[1]) for r in rows])

    def replace_effects(self, rows: list[dict], report_schema: int) -> None:
        """Replace the run's rows of ``effects`` with ``rows`` (dicts keyed by its columns)."""
        cols = list(COLUMNS["effects"])
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        df = pd.DataFrame([{**{c: r.get(c) for c in cols}, "run_id": self.run_id,
                            "report_schema": report_schema, "written_at": now} for r in rows],
                          columns=cols)
        self.con.execute("DELETE FROM effects WHERE run_id = ?", [self.run_id])
        if len(df):
            self.con.register("_effects", df)
            names = ", ".join(cols)
            self.con.execute(f"INSERT INTO effects ({names}) SELECT {names} FROM _effects")
            self.con.unregister("_effects")

    # ------------------------------------------------------------------ managing a stored run
    def set_labels(self, name: str | None = None, add: tuple[str, ...] = (),
                   remove: tuple[str, ...] = ()) -> tuple[str | None, list[str]]:
        """Rename and/or tag the run (names are unique: a reference must find one run)."""
        old_name, tags = labels(self.con, self.run_id)
        if name is not None:
            if name == "latest" or not name.strip():
                raise ConfigError(f"a run cannot be named {name!r}")
            other = self.con.execute("SELECT run_id FROM run_labels WHERE name = ? AND run_id <> ?",
                                     [name, self.run_id]).fetchone()
            if other:
                raise ConfigError(f"run {other[0]} is already named {name!r}")
        tags = [t for t in dict.fromkeys([*tags, *add]) if t not in remove]
        self.con.execute("INSERT OR REPLACE INTO run_labels VALUES (?, ?, ?)",
                         [self.run_id, name if name is not None else old_name, tags])
        return labels(self.con, self.run_id)

    def delete(self, force: bool = False) -> dict[str, int]:
        """Delete the run with all its events; refuses a run marked 'running' unless ``force``."""
        status = self.con.execute("SELECT status FROM runs WHERE run_id = ?",
                                  [self.run_id]).fetchone()[0]
        if status == "running" and not force:
            raise SimError(f"run {self.run_id} is marked running; if no process is writing it "
                           "(it was killed), delete it with --force, or continue it with "
                           "`sim run --resume`")
        with transaction(self.con):
            return {t: self.con.execute(f"DELETE FROM {t} WHERE run_id = ?",
                                        [self.run_id]).fetchone()[0] for t in RUN_TABLES}

class EventSink:
    """Buffers a run's event rows per table as column chunks; ``flush`` writes them, keyed."""

    def __init__(self, con, run_id: str, flush_rows: int = 200_000) -> None:
        self.con, self.run_id, self.flush_rows = con, run_id, flush_rows
        self._buf: dict[str, list[dict]] = {t: [] for t in EVENT_TABLES}
        self._rows = 0

    def add(self, table: str, **cols) -> None:
        """Append a chunk of rows: each column an array (or a scalar broadcast to the chunk)."""
        n = max((len(v) for v in cols.values() if hasattr(v, "__len__") and not isinstance(v, str)),
                default=1)
        self._buf[table].append({**cols, "run_id": self.run_id, "_n": n})
        self._rows += n
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for table, chunks in self._buf.items():
            if chunks:
                self._write(table, chunks)
                self._buf[table] = []
        self._rows = 0

    def _write(self, table: str, chunks: list[dict]) -> None:
        cols = COLUMNS[table]
        arrays = {}
        for c in cols:
            parts = []
            for ch in chunks:
                v = ch[c]
                if not hasattr(v, "__len__") or isinstance(v, str):
                    v = [v] * ch["_n"]
                parts.append(v if isinstance(v, pa.Array) else pa.array(v))
            arrays[c] = pa.concat_arrays([p.cast(parts[0].type) for p in parts])
        self.con.register("_sink_chunk", pa.table(arrays))
        self.con.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                         f"SELECT {', '.join(cols)} FROM _sink_chunk")
        self.con.unregister("_sink_chunk")
