"""The DuckDB catalog: datasets (items, users, interactions, id maps) and, later, run events.

Each dataset lives in its own schema (``dataset_schema(name)``) with tables
``items(item_id, raw_id, text, <attrs>)``, ``users(user_id, raw_id, <attrs>)`` and
``interactions(user_id, item_id, ts, event, value, seq)``; the main-schema table ``datasets``
lists them. Ids are contiguous 0-based ints; ``raw_id`` maps back to the log's ids.
Writes happen in one transaction: a failed load leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from simulator.core.errors import NotFoundError, SimError
from simulator.core.schema import TABLES, migrate, needs_migration
from simulator.core.sequences import Dataset, Sequences

DEFAULT_CATALOG = "sim.duckdb"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Column names of a table or view."""
    return [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]


def connect(path: str, read_only: bool = False, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Open a catalog file at :data:`~simulator.core.schema.SCHEMA_VERSION` (an older one is migrated
    once, here: a read-only open migrates through a short writable one first); one-line SimError
    when it cannot be opened (busy: names the holder) or its version cannot be migrated."""
    con = _open(path, read_only, config)
    try:
        if not read_only:
            migrate(con, path)
        elif needs_migration(con, path):
            con.close()
            writer = _open(path, False, None)
            try:
                migrate(writer, path)
            finally:
                writer.close()
            con = _open(path, True, config)
    except BaseException:
        con.close()
        raise
    return con


def _open(path: str, read_only: bool, config: dict | None) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only, config=config or {})
    except duckdb.Error as e:
        from simulator.core.busy import busy_message

        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SimError(busy_message(path, msg) or f"cannot open catalog {path}: {msg}") from None


def default_catalog_path() -> str:
    return os.environ.get("SIM_CATALOG", DEFAULT_CATALOG)


def dataset_schema(name: str) -> str:
    """DuckDB schema holding dataset ``name`` (``ml-100k`` -> ``ds_ml_100k``)."""
    check_name(name)
    return "ds_" + re.sub(r"[^A-Za-z0-9_]", "_", name).lower()


_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# the catalog's own tables ("splits": written by version-0 catalogs, still there in theirs)
RESERVED_TABLES = (*TABLES, "splits")


def check_table_name(name: str) -> str:
    """A user-chosen catalog table name: a plain identifier that is not one of the catalog's own."""
    if not _TABLE_RE.match(name or ""):
        raise SimError(f"invalid table name {name!r}: use letters, digits and '_' (not starting with a digit)")
    if name.lower() in RESERVED_TABLES or name.lower().startswith(("v_", "eval_")):
        raise SimError(f"table name {name!r} is taken by the catalog itself; choose another name")
    return name


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise SimError(f"invalid dataset name {name!r}: use letters, digits, '_', '-', '.'")
    return name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    schema_name: str
    source: str
    format: str
    n_users: int
    n_items: int
    n_interactions: int
    n_skipped: int
    created_at: Any
    meta: dict


class Catalog:
    """A DuckDB file holding datasets and run events. ``Catalog(":memory:")`` for tests."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        self.path = str(path if path is not None else default_catalog_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path, read_only=read_only)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    # ------------------------------------------------------------------ datasets
    def has_dataset(self, name: str) -> bool:
        return bool(self.con.execute("SELECT count(*) FROM datasets WHERE name = ?", [name]).fetchall()[0][0])

    def check_new_name(self, name: str, replace: bool = False) -> None:
        """Fail (one line) unless ``name`` can be written: new, or existing with ``replace``, and
        not stored under the same schema as another dataset (``ml_100k`` vs ``ml-100k``)."""
        check_name(name)
        if self.has_dataset(name):
            if not replace:
                raise SimError(f"dataset {name!r} already exists in catalog {self.path}; add --replace to "
                               "overwrite it")
            return
        schema = dataset_schema(name)
        clash = self.con.execute("SELECT name FROM datasets WHERE schema_name = ?", [schema]).fetchall()
        if clash:
            raise SimError(f"dataset name {name!r} clashes with existing dataset {clash[0][0]!r} (both are stored "
                           f"as {schema}); choose another name")

    def list_datasets(self) -> list[DatasetInfo]:
        rows = self.con.execute(
            "SELECT name, schema_name, source, format, n_users, n_items, n_interactions, n_skipped, "
            "created_at, meta_json FROM datasets ORDER BY name").fetchall()
        return [DatasetInfo(*r[:9], json.loads(r[9] or "{}")) for r in rows]

    def info(self, name: str) -> DatasetInfo:
        for d in self.list_datasets():
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.list_datasets()) or "none"
        raise NotFoundError(f"unknown dataset {name!r} in catalog {self.path} (known: {known})")

    def write_dataset(self, name: str, *, interactions: Any, items: Any, users: Any | None = None,
                      source: str = "", format: str = "", n_skipped: int = 0,
                      meta: dict | None = None, replace: bool = False,
                      keep_all_users: bool = False) -> DatasetInfo:
        """Write a canonical dataset from relations/DataFrames/Arrow tables with RAW ids.

        ``interactions``: columns user (raw id), item (raw id), ts, [event], [value], seq
        (original order, for a stable tie-break; stored renumbered 0..n-1 in that order). ``items``: column item (raw id), text, attrs.
        ``users``: column user (raw id), attrs. Ids are remapped to contiguous 0-based ints
        (users in order of raw id, items in order of raw id) inside one transaction.
        Users come from the interactions (plus every row of ``users`` when ``keep_all_users``).
        An existing ``name`` is replaced only with ``replace=True`` (runs keep their own snapshot).
        """
        self.check_new_name(name, replace)
        schema = dataset_schema(name)
        con = self.con
        con.register("_in_inter", interactions)
        con.register("_in_items", items)
        if users is not None:
            con.register("_in_users", users)
        try:
            with self.transaction():
                if self.has_dataset(name):
                    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    con.execute("DELETE FROM datasets WHERE name = ?", [name])
                con.execute(f"CREATE SCHEMA {schema}")
                _id_map(con, schema, "item", ["_in_inter", "_in_items"])  # items of the log or the item file
                _id_map(con, schema, "user", ["_in_inter"] + (["_in_users"] if keep_all_users and users is not None else []))
                _interactions_table(con, schema)
                _attribute_table(con, schema, "item", "_in_items", text=True)
                if users is not None:
                    _attribute_table(con, schema, "user", "_in_users")
                else:
                    con.execute(f"CREATE TABLE {schema}.users AS SELECT user_id, raw_id FROM {schema}.user_map ORDER BY user_id")
                nu, ni, nn = con.execute(f"""SELECT (SELECT count(*) FROM {schema}.user_map),
                    (SELECT count(*) FROM {schema}.item_map), (SELECT count(*) FROM {schema}.interactions)""").fetchall()[0]
                if nn == 0:
                    raise SimError(f"dataset {name!r}: no interactions to load")
                from simulator.core.fingerprint import content_hash

                con.execute("INSERT INTO datasets (name, schema_name, source, format, n_users, n_items, "
                            "n_interactions, n_skipped, created_at, meta_json, content_hash) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, current_timestamp, ?, ?)",
                            [name, schema, source, format, nu, ni, nn, n_skipped, json.dumps(meta or {}),
                             content_hash(con, schema)])
        finally:
            for t in ("_in_inter", "_in_items", "_in_users"):
                with contextlib.suppress(Exception):
                    con.unregister(t)
        return self.info(name)

    def load_dataset(self, name: str) -> Dataset:
        """Read dataset ``name`` into memory (sequences in CSR, item text and attributes)."""
        info = self.info(name)
        s = info.schema_name
        inter = self.con.execute(
            f"SELECT user_id, item_id, ts, value FROM {s}.interactions ORDER BY user_id, ts, seq").fetchnumpy()
        users = inter["user_id"].astype(np.int64)
        counts = np.bincount(users, minlength=info.n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        seqs = Sequences(indptr, inter["item_id"].astype(np.int64), inter["ts"].astype(np.float64))
        items = self.con.execute(f"SELECT * FROM {s}.items ORDER BY item_id").fetchnumpy()
        attrs = {k: np.asarray(v) for k, v in items.items() if k not in ("item_id", "raw_id", "text")}
        uraw = self.con.execute(f"SELECT raw_id FROM {s}.user_map ORDER BY user_id").fetchnumpy()["raw_id"]
        return Dataset(name=name, n_users=int(info.n_users), n_items=int(info.n_items), sequences=seqs,
                       item_text=[str(t) for t in items["text"]], item_attrs=attrs,
                       item_raw_ids=np.asarray(items["raw_id"]), user_raw_ids=np.asarray(uraw),
                       values=inter["value"].astype(np.float64))


# ---------------------------------------------------------------------- write_dataset's tables
def _id_map(con, schema: str, entity: str, sources: list[str]) -> None:
    """``<entity>_map(raw_id, <entity>_id)``: contiguous 0-based ids, numeric raw ids in numeric order."""
    union = " UNION ".join(f"SELECT DISTINCT CAST({entity} AS VARCHAR) AS {entity} FROM {t}" for t in sources)
    con.execute(f"""
        CREATE TABLE {schema}.{entity}_map AS
        SELECT CAST({entity} AS VARCHAR) AS raw_id,
               CAST(row_number() OVER (ORDER BY TRY_CAST({entity} AS BIGINT) NULLS LAST,
                                       CAST({entity} AS VARCHAR)) - 1 AS BIGINT) AS {entity}_id
        FROM ({union})""")


def _interactions_table(con, schema: str) -> None:
    """``interactions(user_id, item_id, ts, event, value, seq)`` in (user, time, original order)."""
    cols = {c.lower() for c in columns(con, "_in_inter")}
    con.execute(f"""
        CREATE TABLE {schema}.interactions AS
        SELECT um.user_id, im.item_id, CAST(i.ts AS DOUBLE) AS ts,
               {"CAST(i.event AS VARCHAR)" if "event" in cols else "'interact'"} AS event,
               {"CAST(i.value AS DOUBLE)" if "value" in cols else "1.0"} AS value,
               CAST(row_number() OVER (ORDER BY i.seq) - 1 AS BIGINT) AS seq
        FROM _in_inter i
        JOIN {schema}.user_map um ON um.raw_id = CAST(i.user AS VARCHAR)
        JOIN {schema}.item_map im ON im.raw_id = CAST(i.item AS VARCHAR)
        ORDER BY um.user_id, ts, seq""")


def _attribute_table(con, schema: str, entity: str, source: str, text: bool = False) -> None:
    """``items``/``users``: every mapped id with its raw id (and text) and the source's other columns."""
    cols = columns(con, source)
    other = [c for c in cols if c.lower() not in (entity, "text")]
    sel = "".join(f', s."{c}"' for c in other)
    text_sql = ""
    if text:
        text_sql = (", COALESCE(CAST(s.text AS VARCHAR), '') AS text" if "text" in {c.lower() for c in cols}
                    else ", '' AS text")
    con.execute(f"""
        CREATE TABLE {schema}.{entity}s AS
        SELECT m.{entity}_id, m.raw_id {text_sql} {sel}
        FROM {schema}.{entity}_map m
        LEFT JOIN (SELECT DISTINCT ON (CAST({entity} AS VARCHAR)) * FROM {source}) s
          ON CAST(s.{entity} AS VARCHAR) = m.raw_id
        ORDER BY m.{entity}_id""")
