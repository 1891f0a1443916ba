"""RecBole atomic files: ``<name>.inter``, ``<name>.item``, ``<name>.user`` (tab-separated,
typed headers such as ``item_id:token``, ``timestamp:float``)."""

from __future__ import annotations

from pathlib import Path

from simulator.core.errors import DataError
from simulator.core.loaders.common import (
    check_file,
    no_timestamp_note,
    read_text_table,
    require_columns,
    validate_numeric,
)
from simulator.core.preprocess import Canonical, text_template_for


def _strip_types(cols: list[str]) -> dict[str, str]:
    return {c: c.split(":")[0] for c in cols}


def _find(path: Path, ext: str) -> Path | None:
    if path.is_file():
        cand = path.with_suffix(ext)
    else:
        files = sorted(path.glob(f"*{ext}"))
        cand = files[0] if files else path / f"{path.name}{ext}"
    return cand if cand.exists() else None


def load_recbole(con, path: str | Path, *, skip_bad_lines: bool = False) -> Canonical:
    """Read RecBole atomic files from a folder (or the ``.inter`` file's path)."""
    p = check_file(path)
    inter = _find(p, ".inter")
    if inter is None:
        raise DataError("no .inter file found", file=str(p))
    t, cols, n_bad = read_text_table(con, inter, sep="\t", columns=None, header=True, skip_bad_lines=skip_bad_lines)
    names = _strip_types(cols)
    present = list(names.values())
    require_columns(present, ["user_id", "item_id"], path=str(inter), raw=cols, sep="\t",
                    fix="RecBole atomic files are tab-separated")
    ts_col = next((c for c in cols if names[c] == "timestamp"), None)
    val_col = next((c for c in cols if names[c] in ("rating", "value", "label")), None)
    skipped = n_bad
    if ts_col:
        skipped += validate_numeric(con, t, ts_col, path=str(inter), skip_bad_lines=skip_bad_lines)
    if val_col:
        skipped += validate_numeric(con, t, val_col, path=str(inter), skip_bad_lines=skip_bad_lines)
    uc = next(c for c in cols if names[c] == "user_id")
    ic = next(c for c in cols if names[c] == "item_id")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {t}_canon AS SELECT trim("{uc}") AS user, trim("{ic}") AS item,
        {f'CAST(trim("{ts_col}") AS DOUBLE)' if ts_col else '_line'} AS ts,
        {f'CAST(trim("{val_col}") AS DOUBLE)' if val_col else '1.0'} AS value,
        'interact' AS event, _line AS seq FROM {t}""")
    items_t, ib = _items(con, _find(p, ".item"), skip_bad_lines)
    users_t, ub = _users(con, _find(p, ".user"), skip_bad_lines)
    skipped += ib + ub
    return Canonical(interactions=f"{t}_canon", items=items_t, users=users_t, n_skipped=skipped,
                     source=str(p), format="recbole", text_template=text_template_for(con, items_t),
                     notes=[] if ts_col else [no_timestamp_note(str(inter))])


_RENAME = {"movie_title": "title", "class": "genres", "release_year": "year", "categories": "genres"}


def _side_table(con, path: Path, key: str, skip_bad_lines: bool) -> tuple[str, list[str], dict, int]:
    """Read a ``.item``/``.user`` file: (table, raw columns, column -> name without type, skipped lines)."""
    t, cols, n_bad = read_text_table(con, path, sep="\t", columns=None, header=True, skip_bad_lines=skip_bad_lines)
    names = _strip_types(cols)
    require_columns(list(names.values()), [key], path=str(path), raw=cols, sep="\t",
                    fix="RecBole atomic files are tab-separated")
    return t, cols, names, n_bad


def _items(con, item_file: Path | None, skip_bad_lines: bool) -> tuple[str | None, int]:
    """The item table (title, genres, year, ...) of a ``.item`` file, or (None, 0) without one."""
    if item_file is None:
        return None, 0
    it, icols, inames, n_bad = _side_table(con, item_file, "item_id", skip_bad_lines)

    def expr(c: str) -> str:
        out = _RENAME.get(inames[c], inames[c])
        if out == "year":  # RecBole writes e.g. 'unkonwn' for a missing year
            return f"""CASE WHEN regexp_matches(trim("{c}"), '^[0-9]{{4}}$') THEN trim("{c}") END AS year"""
        return f'trim("{c}") AS "{out}"'

    sel = ", ".join(expr(c) for c in icols if inames[c] != "item_id")
    idc = next(c for c in icols if inames[c] == "item_id")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {it}_canon AS
        SELECT trim("{idc}") AS item{", " + sel if sel else ""} FROM {it}""")
    if {"title", "year"} <= {_RENAME.get(v, v) for v in inames.values()}:
        # RecBole's converter took the last '(...)' as the year ('... (1995) (V)' -> year 'V'):
        # recover the year from the title, as the MovieLens loader does
        con.execute(f"""UPDATE {it}_canon SET year = regexp_extract(title, '\\(([0-9]{{4}})\\)\\s*$', 1),
            title = trim(regexp_replace(title, '\\s*\\(([0-9]{{4}})\\)\\s*$', ''))
            WHERE year IS NULL AND regexp_matches(title, '\\(([0-9]{{4}})\\)\\s*$')""")
    return f"{it}_canon", n_bad


def _users(con, user_file: Path | None, skip_bad_lines: bool) -> tuple[str | None, int]:
    """The user table (attributes) of a ``.user`` file, or (None, 0) without one."""
    if user_file is None:
        return None, 0
    ut, ucols, unames, n_bad = _side_table(con, user_file, "user_id", skip_bad_lines)
    uid = next(c for c in ucols if unames[c] == "user_id")
    sel = ", ".join(f'trim("{c}") AS "{unames[c]}"' for c in ucols if unames[c] != "user_id")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {ut}_canon AS
        SELECT trim("{uid}") AS user{", " + sel if sel else ""} FROM {ut}""")
    return f"{ut}_canon", n_bad
