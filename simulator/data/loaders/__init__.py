"""Dataset loaders, one module per format, in an explicit registry.

Each loader reads files into canonical DuckDB temp tables (raw ids); :func:`load_into_catalog`
preprocesses them and writes the dataset in one transaction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from simulator.data.catalog import Catalog, DatasetInfo
from simulator.data.loaders.movielens import load_movielens
from simulator.data.loaders.recbole import load_recbole
from simulator.data.preprocess import Canonical, Preprocess, apply
from simulator.errors import SimError

LOADERS: dict[str, Callable[..., Canonical]] = {
    "recbole": load_recbole,
    "movielens": load_movielens,
}


def register_loader(fmt: str, fn: Callable[..., Canonical]) -> None:
    LOADERS[fmt] = fn


def load_into_catalog(catalog: Catalog, fmt: str, path: str | Path, name: str, *,
                      preprocess: Preprocess | None = None, skip_bad_lines: bool = False,
                      **loader_opts) -> DatasetInfo:
    """Read ``path`` with loader ``fmt``, preprocess, and write dataset ``name``."""
    if fmt not in LOADERS:
        raise SimError(f"unknown format {fmt!r}; known: {', '.join(sorted(LOADERS))}")
    t0 = time.perf_counter()
    con = catalog.con
    canon = LOADERS[fmt](con, path, skip_bad_lines=skip_bad_lines, **loader_opts)
    inter, items, stats = apply(con, canon, preprocess or Preprocess())
    meta = {"preprocess": (preprocess or Preprocess()).model_dump(), "text_template": canon.text_template,
            "stats": stats, "load_seconds": None}
    info = catalog.write_dataset(name, interactions=con.table(inter), items=con.table(items),
                                 users=con.table(canon.users) if canon.users else None,
                                 source=canon.source, format=canon.format, n_skipped=canon.n_skipped, meta=meta)
    meta["load_seconds"] = round(time.perf_counter() - t0, 3)
    con.execute("UPDATE datasets SET meta_json = ? WHERE name = ?", [__import__("json").dumps(meta), name])
    return catalog.info(name)
