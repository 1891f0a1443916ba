"""What several commands share: the catalog path, read-only and writing connections, and storing
a report's effects in the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from simulator.core.errors import NotFoundError, SimError


def catalog_path(path: Optional[str]) -> str:
    from simulator.core.catalog import default_catalog_path

    return path or default_catalog_path()


def read_catalog(path: Optional[str]):
    """The catalog, read-only, with file access off (analysis never writes to it)."""
    from analysis.sqlguard import READ_ONLY_CONFIG
    from simulator.core.catalog import connect

    path = catalog_path(path)
    if not Path(path).exists():
        raise NotFoundError(f"catalog {path} does not exist")
    return connect(path, read_only=True, config=READ_ONLY_CONFIG)


def write_catalog(path: Optional[str]):
    from simulator.core.catalog import connect

    path = catalog_path(path)
    if not Path(path).exists():
        raise NotFoundError(f"catalog {path} does not exist")
    return connect(path)


def store_effects(catalog: str, run_id: str, report, con=None) -> None:
    """Write the report's effects into the catalog's ``effects`` table (a busy catalog: a warning)."""
    from analysis.report import SCHEMA_VERSION
    from simulator.engine.store import RunStore

    try:
        own = con is None
        con = con if con is not None else write_catalog(catalog)
        try:
            RunStore(con, run_id).replace_effects(report.effect_records(), SCHEMA_VERSION)
        finally:
            if own:
                con.close()
    except SimError as e:
        typer.secho(f"warning: effects not stored in the catalog ({e})", err=True, fg=typer.colors.YELLOW)
