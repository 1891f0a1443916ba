"""The ``runs``/``arms`` rows of a run and its status over its life.

A run row is written only once the runtime has started (a run that cannot start leaves nothing
behind); it is ``running`` while a process serves it and always ends ``complete`` (every phase
it promises stored: :data:`PHASES`), ``incomplete`` (Ctrl-C / SIGTERM: resumable) or ``failed``
(an error: resumable once fixed). Only a process killed outright (``kill -9``) leaves
``running``; `sim report` says so, and ``--resume`` finishes it. ``runs.phase`` is the last
phase stored, so a resume does only what is missing.
"""

from __future__ import annotations

import json

from simulator.core.errors import ConfigError
from simulator.core.snapshot import run_dataset, snapshot_dataset
from simulator.engine.config import ExperimentConfig, describe_pipeline


def start_run(con, run_id: str, cfg: ExperimentConfig, sim_start: float, git_rev: str, resumed: bool,
              warnings: list[str] | None = None) -> None:
    """Write the run's rows and dataset snapshot (new run) or re-open it (resume), atomically.
    ``warnings``: the scenario's sentences about the run's data (the report shows them)."""
    con.execute("BEGIN TRANSACTION")
    try:
        if resumed:
            _check_same_data(con, run_id, cfg.dataset)
            if run_dataset(con, run_id) is None:  # a run made before snapshots existed
                snapshot_dataset(con, run_id, cfg.dataset, sim_start)
            con.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", [run_id])
        else:
            con.execute("INSERT INTO runs (run_id, dataset, config_json, config_hash, seed, git_rev, started_at, "
                        "finished_at, status, sim_start, sim_end, n_requests, warnings_json) "
                        "VALUES (?, ?, ?, ?, ?, ?, current_timestamp, NULL, 'running', ?, NULL, 0, ?)",
                        [run_id, cfg.dataset, cfg.resolved_json(), cfg.config_hash(), cfg.seed, git_rev, sim_start,
                         json.dumps(list(warnings or []))])
            for a in cfg.arms:
                con.execute("INSERT INTO arms (run_id, arm, role, weight, pipeline_json, pipeline_desc) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [run_id, a.name, a.role, a.weight,
                                                          a.model_dump_json(), json.dumps(describe_pipeline(a))])
            snapshot_dataset(con, run_id, cfg.dataset, sim_start)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _check_same_data(con, run_id: str, dataset: str) -> None:
    """A resumed run must see the data it started with (else it would mix two datasets)."""
    from simulator.core.fingerprint import dataset_hash

    snap = run_dataset(con, run_id)
    if snap is None or not snap.get("content_hash"):
        return
    now = dataset_hash(con, dataset)
    if now != snap["content_hash"]:
        raise ConfigError(f"cannot resume run {run_id}: dataset {dataset!r} has changed since the run started "
                          f"(content hash {snap['content_hash']} -> {now}); resuming would mix two datasets: "
                          "start a new run instead")


PHASES = ("simulate", "oracle", "report")  # the phases of a run, in order (runs.phase: the last one stored)


def phase_index(phase: str | None) -> int:
    """Position of ``phase`` in :data:`PHASES` (-1: none stored yet)."""
    return -1 if phase is None else PHASES.index(phase)


def stored_phase(con, run_id: str) -> str | None:
    """The last phase run ``run_id`` has stored (None: its simulation has not ended)."""
    row = con.execute("SELECT phase FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return row[0][0] if row else None


def mark_phase(con, run_id: str, phase: str) -> None:
    """Record that ``phase`` has stored all its rows."""
    con.execute("UPDATE runs SET phase = ? WHERE run_id = ?", [phase, run_id])


def finish_run(con, run_id: str, status: str) -> None:
    """Record the final status, the simulated end and the number of requests served."""
    end = con.execute("SELECT max(ts), count(*) FROM requests WHERE run_id = ?", [run_id]).fetchall()[0]
    con.execute("UPDATE runs SET status = ?, finished_at = current_timestamp, sim_end = ?, n_requests = ? "
                "WHERE run_id = ?", [status, end[0], end[1], run_id])
