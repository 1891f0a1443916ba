"""What a reader of a report must know before trusting it: is the run finished, and is the data
its report reads still the data the run used? One sentence per problem (`sim report` prints
them as warnings; the Markdown/HTML report shows them on top)."""

from __future__ import annotations

import json

from simulator.core.fingerprint import dataset_hash
from simulator.core.snapshot import run_dataset

from .views import run_config


def _status_warning(con, info: dict) -> str | None:
    rid, status = info["run_id"], info.get("status")
    asked = run_config(info).get("n_requests")
    stored = con.execute("SELECT count(*) FROM requests WHERE run_id = ?", [rid]).fetchall()[0][0]
    if status == "complete":
        if asked and stored < int(asked):
            return (f"run {rid} served only {stored:,} of the {int(asked):,} requests asked for (its replay log "
                    "or its duration ran out first): its power is that of the requests served")
        return None
    served = f"the {stored:,} requests stored" + (f" of {asked:,} asked for" if asked else "")
    if status == "running":
        return (f"run {rid} did not finish: it is marked 'running' but no process is writing it (it was killed); "
                f"the numbers cover only {served}; continue it with `sim run --resume {rid}`")
    if status in ("incomplete", "failed"):
        return (f"run {rid} is {status}: the numbers cover only {served}; "
                f"continue it with `sim run --resume {rid}`")
    return None


def _data_warning(con, info: dict) -> str | None:
    dataset = info.get("dataset")
    snap = run_dataset(con, info["run_id"])
    try:
        now = dataset_hash(con, dataset) if dataset else None
    except Exception:  # noqa: BLE001 - a dataset schema we cannot read counts as gone
        now = None
    if snap is None:
        return (f"run {info['run_id']} predates per-run dataset snapshots: novelty, diversity and the CUPED "
                f"covariate are computed from dataset {dataset!r} as it is now, which may differ from the data "
                "the run used")
    if now != snap.get("content_hash"):
        change = "is no longer in the catalog" if now is None else (
            f"has changed since the run (content hash {snap.get('content_hash')} -> {now})")
        return (f"dataset {dataset!r} {change}; this report uses the run's own snapshot of it, so its numbers "
                "are those of the data the run used")
    return None


def _scenario_warnings(info: dict) -> list[str]:
    """What the run's scenario said about its data when it started (pseudo-sequential order, a short
    replay log, the users a replay reaches), stored in ``runs.warnings_json``."""
    try:
        return [str(w) for w in json.loads(info.get("warnings_json") or "[]")]
    except (json.JSONDecodeError, TypeError):
        return []


def run_warnings(con, info: dict) -> list[str]:
    """Warnings about run ``info`` (a ``runs`` row as a dict): unfinished run, changed data, the
    scenario's warnings about the run's data."""
    return [w for w in (_status_warning(con, info), _data_warning(con, info)) if w] + _scenario_warnings(info)
