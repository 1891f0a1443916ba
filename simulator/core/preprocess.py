"""Preprocessing in DuckDB: implicit-feedback threshold, dedupe, k-core, max sequence length,
and the item text template. Produces the canonical relations that the catalog writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from simulator.core.catalog import columns
from simulator.core.errors import SimError

# text fields in the order they appear in item text, with their labels
TEXT_FIELDS = (("title", "Title"), ("genres", "Genres"), ("year", "Year"), ("tag", "Tags"),
               ("categories", "Categories"), ("brand", "Brand"), ("description", "Description"))


class Preprocess(BaseModel):
    """How raw interactions become training sequences (all steps optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_value: float | None = Field(None, description="keep interactions with value >= this (implicit threshold)")
    dedupe: bool = Field(True, description="drop repeated (user, item, ts) rows")
    k_core: int = Field(0, ge=0, description="iteratively keep users and items with >= k interactions")
    max_seq_len: int | None = Field(None, ge=1, description="keep each user's most recent N interactions")


@dataclass
class Canonical:
    """Names of DuckDB temp tables in canonical form (raw ids) produced by a loader."""

    interactions: str  # user, item, ts, value, event, seq
    items: str | None
    users: str | None
    n_skipped: int = 0
    source: str = ""
    format: str = ""
    text_template: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def text_template_for(con, items_table: str | None) -> list[str]:
    if items_table is None:
        return []
    cols = {c.lower() for c in columns(con, items_table)}
    return [f for f, _ in TEXT_FIELDS if f in cols]


def item_text_sql(fields: list[str]) -> str:
    """SQL expression building 'Title: ... Genres: ... Year: ...' from the present fields."""
    if not fields:
        return "''"
    labels = dict(TEXT_FIELDS)
    parts = [f"""CASE WHEN "{f}" IS NULL OR trim(CAST("{f}" AS VARCHAR)) IN ('', 'nan', 'NaN')
                 THEN NULL ELSE '{labels.get(f, f.title())}: ' || trim(CAST("{f}" AS VARCHAR)) END""" for f in fields]
    return f"concat_ws('. ', {', '.join(parts)})"


def apply(con, canon: Canonical, pre: Preprocess) -> tuple[str, str | None, dict]:
    """Run the preprocessing steps; returns (interactions table, items table, stats)."""
    t = canon.interactions
    stats: dict = {"raw_interactions": con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]}
    if stats["raw_interactions"] == 0:
        raise SimError(f"{canon.source}: no interactions found")
    cur = f"{t}_pp"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {cur} AS SELECT * FROM {t}")

    def count() -> int:
        return int(con.execute(f"SELECT count(*) FROM {cur}").fetchall()[0][0])

    n = stats["raw_interactions"]
    if pre.min_value is not None:
        con.execute(f"DELETE FROM {cur} WHERE value < ?", [pre.min_value])
        stats["dropped_min_value"], n = n - count(), count()
    if pre.dedupe:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {cur} AS
            SELECT * FROM {cur} QUALIFY row_number() OVER (PARTITION BY user, item, ts ORDER BY seq) = 1""")
        stats["dropped_duplicates"], n = n - count(), count()
    if pre.k_core > 0:
        for _ in range(100):
            r = con.execute(f"""DELETE FROM {cur} WHERE user IN (SELECT user FROM {cur} GROUP BY user HAVING count(*) < {pre.k_core})
                                OR item IN (SELECT item FROM {cur} GROUP BY item HAVING count(*) < {pre.k_core})""").fetchall()[0]
            if not r or r[0] == 0:
                break
        stats["dropped_k_core"], n = n - count(), count()
    if pre.max_seq_len is not None:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {cur} AS SELECT * FROM {cur}
            QUALIFY row_number() OVER (PARTITION BY user ORDER BY ts DESC, seq DESC) <= {pre.max_seq_len}""")
        stats["dropped_max_seq_len"], n = n - count(), count()
    stats["interactions"] = con.execute(f"SELECT count(*) FROM {cur}").fetchall()[0][0]
    if stats["interactions"] == 0:
        raise SimError(f"{canon.source}: preprocessing removed every interaction ({pre.model_dump(exclude_defaults=True)})")
    items_out = None
    if canon.items is not None:
        items_out = f"{canon.items}_txt"
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {items_out} AS
            SELECT *, {item_text_sql(canon.text_template)} AS text FROM {canon.items}""")
    else:
        items_out = f"{cur}_items"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {items_out} AS SELECT DISTINCT item, 'Item ' || item AS text FROM {cur}")
    if pre.k_core > 0 or pre.min_value is not None:  # filtered-out items leave the catalog too
        con.execute(f"DELETE FROM {items_out} WHERE CAST(item AS VARCHAR) NOT IN (SELECT CAST(item AS VARCHAR) FROM {cur})")
    return cur, items_out, stats
