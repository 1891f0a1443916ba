"""Run management on the catalog: find a run by a short reference, list, label, delete, and the
``effects`` table a report writes (DDL in sink.py). ``sim runs`` (simulator/commands/runs.py) is
the front; every function takes a DuckDB connection.

A run is referred to by its full id, a unique prefix of it, its short id (the id's last dash-
separated part, e.g. ``d0e06a``, or a unique prefix of that), its name, or ``latest``.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from simulator.core.errors import ConfigError, NotFoundError, SimError

EFFECT_COLUMNS = ["run_id", "arm", "metric", "role", "control_arm", "method", "control", "treatment", "abs_lift",
                  "rel_lift", "rel_ci_low", "rel_ci_high", "p", "p_adj", "result", "n_control", "n_treatment",
                  "true_rel_lift", "higher_is_better", "note", "report_schema", "written_at"]
# what deleting a run removes: every table keyed by run_id
RUN_TABLES = ("effects", "run_labels", "truth", "feedback", "ope_slates", "exposures", "requests", "assignments", "run_users",
              "run_items", "run_datasets", "arms", "runs")


def short_id(run_id: str) -> str:
    return run_id.rsplit("-", 1)[-1]


def _has(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                            "AND table_name = ?", [table]).fetchone()[0])


def resolve_run(con, ref: str) -> str:
    """The run id ``ref`` refers to; a one-line NotFoundError / ambiguity error otherwise."""
    if not _has(con, "runs"):
        raise NotFoundError("the catalog has no runs yet (start one with `sim run`)")
    ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST, run_id").fetchall()]
    if ref == "latest":
        if not ids:
            raise NotFoundError("the catalog has no runs yet (start one with `sim run`)")
        return ids[0]
    if ref in ids:
        return ref
    named = []
    if _has(con, "run_labels"):
        named = [r[0] for r in con.execute("SELECT run_id FROM run_labels WHERE name = ?", [ref]).fetchall()]
    hits = named or [i for i in ids if i.startswith(ref) or short_id(i).startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        recent = ", ".join(short_id(i) for i in ids[:5]) or "none"
        raise NotFoundError(f"unknown run id {ref!r} (recent runs: {recent}; see `sim runs list`)")
    shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
    raise ConfigError(f"run id {ref!r} is ambiguous: it matches {len(hits)} runs ({shown}); give more of it")


def list_runs(con) -> pd.DataFrame:
    """One row per run, newest first: ids, name, tags, dataset, design, arms, status, size, primary result."""
    if not _has(con, "runs"):
        return pd.DataFrame(columns=["run_id", "short_id", "name", "tags", "dataset", "design", "arms", "status",
                                     "started_at", "n_requests", "primary", "result", "rel_lift", "p"])
    labels = "LEFT JOIN run_labels l USING (run_id)" if _has(con, "run_labels") else ""
    effects = ("LEFT JOIN (SELECT * FROM effects WHERE role = 'primary' QUALIFY row_number() OVER "
               "(PARTITION BY run_id ORDER BY arm) = 1) e USING (run_id)") if _has(con, "effects") else ""
    cols = ("l.name, coalesce(l.tags, []::VARCHAR[]) AS tags" if labels else
            "NULL::VARCHAR AS name, []::VARCHAR[] AS tags")
    ecols = ("e.metric AS primary, e.result, e.rel_lift, e.p, e.higher_is_better, e.abs_lift" if effects else
             "NULL::VARCHAR AS primary, NULL::VARCHAR AS result, NULL::DOUBLE AS rel_lift, NULL::DOUBLE AS p, "
             "NULL::BOOLEAN AS higher_is_better, NULL::DOUBLE AS abs_lift")
    df = con.execute(f"""
        SELECT r.run_id, {cols}, r.dataset,
               coalesce(json_extract_string(r.config_json, '$.design'), 'ab') AS design,
               (SELECT string_agg(a.arm, ',' ORDER BY a.role, a.arm) FROM arms a WHERE a.run_id = r.run_id) AS arms,
               r.status, r.started_at, r.n_requests, {ecols}
        FROM runs r {labels} {effects}
        ORDER BY r.started_at DESC NULLS LAST, r.run_id""").df()
    df.insert(1, "short_id", [short_id(i) for i in df["run_id"]])
    return df


def filter_runs(df: pd.DataFrame, *, dataset: str | None = None, design: str | None = None,
                arm: str | None = None, tag: str | None = None, status: str | None = None) -> pd.DataFrame:
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
    row = con.execute("SELECT name, tags FROM run_labels WHERE run_id = ?", [run_id]).fetchone() \
        if _has(con, "run_labels") else None
    return (row[0], list(row[1] or [])) if row else (None, [])


def set_labels(con, run_id: str, name: str | None = None, add: tuple[str, ...] = (),
               remove: tuple[str, ...] = ()) -> tuple[str | None, list[str]]:
    """Rename and/or tag a run (names are unique: a reference must find one run)."""
    from simulator.core.sink import ensure_schema

    ensure_schema(con)
    old_name, tags = labels(con, run_id)
    if name is not None:
        if name == "latest" or not name.strip():
            raise ConfigError(f"a run cannot be named {name!r}")
        other = con.execute("SELECT run_id FROM run_labels WHERE name = ? AND run_id <> ?", [name, run_id]).fetchone()
        if other:
            raise ConfigError(f"run {other[0]} is already named {name!r}")
    tags = [t for t in dict.fromkeys([*tags, *add]) if t not in remove]
    con.execute("INSERT OR REPLACE INTO run_labels VALUES (?, ?, ?)", [run_id, name if name is not None else old_name,
                                                                       tags])
    return labels(con, run_id)


def delete_run(con, run_id: str, force: bool = False) -> dict[str, int]:
    """Delete a run with all its events; refuses a run marked 'running' unless ``force``."""
    status = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    if status == "running" and not force:
        raise SimError(f"run {run_id} is marked running; if no process is writing it (it was killed), "
                       "delete it with --force, or continue it with `sim run --resume`")
    counts = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for t in RUN_TABLES:
            if _has(con, t):
                counts[t] = con.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id]).fetchone()[0]
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return counts


def replace_effects(con, run_id: str, rows: list[dict], report_schema: int) -> None:
    """Replace a run's rows of the ``effects`` table with ``rows`` (dicts with EFFECT_COLUMNS keys)."""
    from simulator.core.sink import ensure_schema

    ensure_schema(con)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    df = pd.DataFrame([{**{c: r.get(c) for c in EFFECT_COLUMNS}, "run_id": run_id, "report_schema": report_schema,
                        "written_at": now} for r in rows], columns=EFFECT_COLUMNS)
    con.execute("DELETE FROM effects WHERE run_id = ?", [run_id])
    if len(df):
        con.register("_effects", df)
        con.execute(f"INSERT INTO effects ({', '.join(EFFECT_COLUMNS)}) SELECT {', '.join(EFFECT_COLUMNS)} "
                    "FROM _effects")
        con.unregister("_effects")
