"""HLLM / PixelRec CSV: interactions ``user_id,item_id,timestamp`` (any column order) and an
item information CSV (``item_id,title,tag,description``; extra columns become attributes).

``path`` is the interactions CSV, or a folder in the HLLM layout (``dataset/<name>.csv`` and
``information/<name>.csv``, or both CSVs side by side); ``items=`` names the item CSV.
"""

from __future__ import annotations

from pathlib import Path

from simulator.core.errors import DataError
from simulator.core.loaders.common import (
    canon_interactions,
    check_file,
    no_timestamp_note,
    read_csv_table,
    require_columns,
)
from simulator.core.preprocess import Canonical, text_template_for


def _header(p: Path) -> str:
    with open(p, errors="replace") as f:
        return f.readline()


def _locate(p: Path) -> tuple[Path, Path | None]:
    if p.is_file():
        return p, None
    if (p / "dataset").is_dir():
        inter = sorted((p / "dataset").glob("*.csv"))
        info = sorted((p / "information").glob("*.csv")) if (p / "information").is_dir() else []
        if not inter:
            raise DataError("no interactions CSV under dataset/", file=str(p))
        match = [f for f in info if f.name == inter[0].name]
        return inter[0], (match or info or [None])[0]
    csvs = sorted(p.glob("*.csv"))
    inter = [f for f in csvs if "user_id" in _header(f)]
    if not inter:
        raise DataError("no interactions CSV (with a user_id column) found", file=str(p))
    info = [f for f in csvs if f not in inter and "item_id" in _header(f)]
    return inter[0], (info[0] if info else None)


def load_pixelrec(con, path: str | Path, *, skip_bad_lines: bool = False, items: str | Path | None = None) -> Canonical:
    p = Path(path)
    check_file(p)
    ipath, info = _locate(p)
    info = Path(items) if items is not None else info
    t, cols, skipped = read_csv_table(con, ipath, skip_bad_lines=skip_bad_lines)
    require_columns(cols, ["user_id", "item_id"], path=str(ipath))
    ts = "timestamp" if "timestamp" in cols else None
    inter, bad = canon_interactions(con, t, path=str(ipath), user="user_id", item="item_id", ts=ts,
                                    skip_bad_lines=skip_bad_lines)
    skipped += bad
    items_t = None
    if info is not None:
        it, icols, ib = read_csv_table(con, info, skip_bad_lines=skip_bad_lines)
        skipped += ib
        require_columns(icols, ["item_id"], path=str(info))
        rename = {"tags": "tag"}
        sel = ", ".join(f'nullif(trim("{c}"), \'\') AS "{rename.get(c, c)}"' for c in icols if c != "item_id")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {it}_canon AS SELECT trim(item_id) AS item
            {(", " + sel) if sel else ""} FROM {it} WHERE item_id IS NOT NULL""")
        items_t = f"{it}_canon"
    return Canonical(interactions=inter, items=items_t, users=None, n_skipped=skipped, source=str(p),
                     format="pixelrec", text_template=text_template_for(con, items_t),
                     notes=[] if ts else [no_timestamp_note(str(ipath))])
