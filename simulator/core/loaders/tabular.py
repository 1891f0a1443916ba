"""Generic CSV / Parquet with a column mapping.

``mapping`` (``"user=uid,item=iid,ts=time,value=rating,event=kind"``) names the file columns
for the canonical fields; unmapped canonical names default to themselves (``user``, ``item``,
``ts``; ``value``/``event`` are optional). ``items=`` is an optional item file (same format)
with ``item_mapping`` (``"item=iid,title=name"``): its other columns become attributes, and
the fields of the text template (title, genres, year, description, ...) build the item text.
"""

from __future__ import annotations

from pathlib import Path

from simulator.core.errors import DataError
from simulator.core.loaders.common import (
    canon_interactions,
    check_file,
    no_timestamp_note,
    parse_mapping,
    read_csv_table,
    read_parquet_table,
    require_columns,
)
from simulator.core.preprocess import Canonical, text_template_for


def _read(con, p: Path, sep: str, skip: bool) -> tuple[str, list[str], int]:
    if p.suffix.lower() in (".parquet", ".pq"):
        t, cols = read_parquet_table(con, p)
        return t, cols, 0
    return read_csv_table(con, p, sep=sep, skip_bad_lines=skip)


def load_table(con, path: str | Path, *, skip_bad_lines: bool = False, mapping: str | dict | None = None,
               items: str | Path | None = None, item_mapping: str | dict | None = None, sep: str = ",",
               ts_divisor: float = 1.0) -> Canonical:
    p = check_file(path)
    if p.is_dir():
        raise DataError("expected a CSV or Parquet file, got a folder", file=str(p))
    m = parse_mapping(mapping)
    unknown = set(m) - {"user", "item", "ts", "value", "event"}
    if unknown:
        raise DataError(f"unknown canonical field(s) in mapping: {', '.join(sorted(unknown))} "
                        "(use user, item, ts, value, event)")
    t, cols, skipped = _read(con, p, sep, skip_bad_lines)
    user, item = m.get("user", "user"), m.get("item", "item")
    ts = m.get("ts", "ts" if "ts" in cols else None)
    value = m.get("value", "value" if "value" in cols else None)
    event = m.get("event", "event" if "event" in cols else None)
    inter, bad = canon_interactions(con, t, path=str(p), user=user, item=item, ts=ts, value=value, event=event,
                                    skip_bad_lines=skip_bad_lines, ts_divisor=ts_divisor)
    skipped += bad
    items_t = None
    if items is not None:
        ip = check_file(items)
        im = parse_mapping(item_mapping, "--item-map")
        it, icols, ib = _read(con, ip, sep, skip_bad_lines)
        skipped += ib
        rev = {v: k for k, v in im.items()}
        idc = im.get("item", "item")
        require_columns(icols, [idc], path=str(ip))
        sel = ", ".join(f'"{c}" AS "{rev.get(c, c)}"' for c in icols if c != idc)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {it}_canon AS SELECT trim(CAST("{idc}" AS VARCHAR)) AS item
            {(", " + sel) if sel else ""} FROM {it} WHERE "{idc}" IS NOT NULL""")
        items_t = f"{it}_canon"
    fmt = "parquet" if p.suffix.lower() in (".parquet", ".pq") else "csv"
    return Canonical(interactions=inter, items=items_t, users=None, n_skipped=skipped, source=str(p),
                     format=fmt, text_template=text_template_for(con, items_t),
                     notes=[] if ts else [no_timestamp_note(str(p))])
