"""Dataset loaders, one module per format, in an explicit registry.

Each loader reads files into canonical DuckDB temp tables (raw ids); :func:`load_into_catalog`
preprocesses them and writes the dataset in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from simulator.core.catalog import Catalog, DatasetInfo
from simulator.core.errors import SimError
from simulator.core.loaders.amazon import load_amazon
from simulator.core.loaders.amazon_json import load_amazon_json
from simulator.core.loaders.movielens import load_movielens
from simulator.core.loaders.pixelrec import load_pixelrec
from simulator.core.loaders.recbole import load_recbole
from simulator.core.loaders.tabular import load_table
from simulator.core.preprocess import Canonical, Preprocess, apply

# Bump whenever a loader's canonical output changes (ids, text, timestamps): datasets record the
# version they were loaded with, built-ins are rebuilt when it differs (``ensure_dataset``), and
# other datasets warn, so an old catalog never silently feeds stale data into a new run.
LOADER_VERSION = 2

LOADERS: dict[str, Callable[..., Canonical]] = {
    "recbole": load_recbole,
    "movielens": load_movielens,
    "amazon": load_amazon,
    "amazon-json": load_amazon_json,
    "pixelrec": load_pixelrec,
    "hllm": load_pixelrec,
    "csv": load_table,
    "parquet": load_table,
}


def _drop_temp_tables(con) -> None:
    """Drop the loaders' scratch tables (temp tables named ``_raw_*``/``_ml_*``)."""
    names = con.execute("""SELECT table_name FROM duckdb_tables()
        WHERE temporary AND (starts_with(table_name, '_raw_') OR starts_with(table_name, '_ml_'))""").fetchall()
    for (n,) in names:
        con.execute(f'DROP TABLE IF EXISTS temp."{n}"')


def load_into_catalog(catalog: Catalog, fmt: str, path: str | Path, name: str, *,
                      preprocess: Preprocess | None = None, skip_bad_lines: bool = False,
                      replace: bool = False, **loader_opts) -> DatasetInfo:
    """Read ``path`` with loader ``fmt``, preprocess, and write dataset ``name`` (an existing
    ``name`` only with ``replace``: checked first, before reading anything)."""
    catalog.check_new_name(name, replace)
    if fmt not in LOADERS:
        raise SimError(f"unknown format {fmt!r}; known: {', '.join(sorted(LOADERS))}")
    t0 = time.perf_counter()
    con = catalog.con
    try:
        canon = LOADERS[fmt](con, path, skip_bad_lines=skip_bad_lines, **loader_opts)
        inter, items, stats = apply(con, canon, preprocess or Preprocess())
        meta = {"loader_version": LOADER_VERSION,
                "preprocess": (preprocess or Preprocess()).model_dump(), "text_template": canon.text_template,
                "stats": stats, "load_seconds": None, "notes": list(canon.notes)}
        catalog.write_dataset(name, interactions=con.table(inter), items=con.table(items),
                                     users=con.table(canon.users) if canon.users else None,
                                     source=canon.source, format=canon.format, n_skipped=canon.n_skipped, meta=meta,
                                     replace=replace)
    finally:
        _drop_temp_tables(con)
    meta["load_seconds"] = round(time.perf_counter() - t0, 3)
    con.execute("UPDATE datasets SET meta_json = ? WHERE name = ?", [__import__("json").dumps(meta), name])
    return catalog.info(name)
