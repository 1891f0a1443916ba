"""Runs on the catalog, read: find a run by a short reference, list and filter runs, a run's
labels. ``sim runs`` (simulator/commands/runs.py) is the front; every function takes a DuckDB
connection and only reads (a run's writes, labels and deletion included: simulator/engine/store.py).

A run is referred to by its full id, a unique prefix of it, its short id (the id's last dash-
separated part, e.g. ``d0e06a``, or a unique prefix of that), its name, or ``latest``.
"""

from __future__ import annotations

import pandas as pd

from simulator.core.errors import ConfigError, NotFoundError


def short_id(run_id: str) -> str:
    return run_id.rsplit("-", 1)[-1]


def resolve_run(con, ref: str) -> str:
    """The run id ``ref`` refers to; a one-line NotFoundError / ambiguity error otherwise."""
    ids = [r[0] for r in con.execute("SELECT run_id FROM runs "
                                     "ORDER BY started_at DESC NULLS LAST, run_id").fetchall()]
    if ref == "latest":
        if not ids:
            raise NotFoundError("the catalog has no runs yet (start one with `sim run`)")
        return ids[0]
    if ref in ids:
        return ref
    named = [r[0] for r in con.execute("SELECT run_id FROM run_labels WHERE name = ?",
                                       [ref]).fetchall()]
    hits = named or [i for i in ids if i.startswith(ref) or short_id(i).startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        recent = ", ".join(short_id(i) for i in ids[:5]) or "none"
        raise NotFoundError(f"unknown run id {ref!r} (recent runs: {recent}; see `sim runs list`)")
    shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
    raise ConfigError(f"run id {ref!r} is ambiguous: it matches {len(hits)} runs ({shown}); "
                      "give more of it")


def list_runs(con) -> pd.DataFrame:
    """One row per run, newest first: ids, name, tags, dataset, design, arms, status, size,
    primary result."""
    df = con.execute("""
        SELECT r.run_id, l.name, coalesce(l.tags, []::VARCHAR[]) AS tags, r.dataset,
               coalesce(json_extract_string(r.config_json, '$.design'), 'ab') AS design,
               (SELECT string_agg(a.arm, ',' ORDER BY a.role, a.arm) FROM arms a
                WHERE a.run_id = r.run_id) AS arms,
               r.status, r.started_at, r.n_requests,
               e.metric AS primary, e.result, e.rel_lift, e.p, e.higher_is_better, e.abs_lift
        FROM runs r LEFT JOIN run_labels l USING (run_id)
        LEFT JOIN (SELECT * FROM effects WHERE role = 'primary'
                   QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY arm) = 1) e
          USING (run_id)
        ORDER BY r.started_at DESC NULLS LAST, r.run_id""").df()
    df.insert(1, "short_id", [short_id(i) for i in df["run_id"]])
    return df


def filter_runs(df: pd.DataFrame, *, dataset: str | None = None, design: str | None = None,
                arm: str | None = None, tag: str | None = None,
                status: str | None = None) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    if dataset:
        keep &= df["dataset"] == dataset
    if design:
        keep &= df["design"] == design
    if status:
        keep &= df["status"] == status
    if arm:
        keep &= df["arms"].fillna("").map(lambda s: arm in s.split(","))
    if tag:
        keep &= df["tags"].map(lambda t: tag in list(t))
    return df[keep]


def labels(con, run_id: str) -> tuple[str | None, list[str]]:
    row = con.execute("SELECT name, tags FROM run_labels WHERE run_id = ?", [run_id]).fetchone()
    return (row[0], list(row[1] or [])) if row else (None, [])
