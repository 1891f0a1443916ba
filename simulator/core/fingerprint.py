"""Content hash of a catalog dataset: what a run records so a later report can tell whether the
data under a dataset name is still the data the run used.

The hash covers the interactions (user, item, time, event, value, in stored order), the item table
(every column) and the user id map. It is computed in DuckDB (md5 of per-block md5s: flat memory),
stored in ``datasets.content_hash`` when the dataset is written (a dataset loaded before hashes
were stored gets its hash when its catalog is migrated: schema.py).
"""

from __future__ import annotations

import duckdb


def content_hash(con: duckdb.DuckDBPyConnection, schema: str) -> str:
    """md5 hex digest of dataset schema ``schema`` (~0.05 s per 100k interactions)."""
    inter = con.execute(f"""
        WITH parts AS (
            SELECT user_id // 256 AS g,
                   md5(string_agg(concat_ws(',', user_id, item_id, ts, event, value), ';' ORDER BY user_id, ts, seq)) AS h
            FROM {schema}.interactions GROUP BY g)
        SELECT coalesce(md5(string_agg(h, '' ORDER BY g)), '') FROM parts""").fetchall()[0][0]
    items = con.execute(f"""SELECT coalesce(md5(string_agg(CAST(it AS VARCHAR), ';' ORDER BY item_id)), '')
        FROM {schema}.items AS it""").fetchall()[0][0]
    users = con.execute(f"""SELECT coalesce(md5(string_agg(raw_id, ';' ORDER BY user_id)), '')
        FROM {schema}.user_map""").fetchall()[0][0]
    return con.execute("SELECT md5(? || ? || ?)", [inter, items, users]).fetchall()[0][0][:16]


def dataset_hash(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """The stored content hash of dataset ``name``; None when the catalog has no such dataset."""
    row = con.execute("SELECT content_hash FROM datasets WHERE name = ?", [name]).fetchall()
    return row[0][0] if row else None
