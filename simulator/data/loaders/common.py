"""Shared reading and validation for loaders: typed delimited files through DuckDB.

Everything is read as text first, then validated column by column, so a bad value is
reported with file, line and field instead of a silent NULL. ``skip_bad_lines`` drops bad
lines and reports how many were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from simulator.errors import DataError


@dataclass
class ReadResult:
    rel_name: str  # name of a DuckDB temp table holding the validated rows
    n_rows: int
    n_skipped: int = 0
    notes: list[str] = field(default_factory=list)


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.is_file() and p.stat().st_size == 0:
        raise DataError("file is empty", file=str(p))
    return p


_counter = [0]


def read_text_table(con: duckdb.DuckDBPyConnection, path: str | Path, *, sep: str, columns: list[str] | None,
                    header: bool, skip_bad_lines: bool = False, quote: str | None = None,
                    encoding: str = "utf-8") -> tuple[str, list[str], int]:
    """Read a delimited file as all-VARCHAR into a temp table with a ``_line`` column.

    Returns (table name, column names, number of malformed lines skipped). Header problems
    (duplicate names) and malformed lines raise :class:`DataError` naming the line.
    """
    p = check_file(path)
    if header:
        with open(p, encoding=encoding, errors="replace") as f:
            first = f.readline().rstrip("\r\n")
        names = first.split(sep)
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise DataError(f"duplicate column {n!r} in header", file=str(p), line=1, field=n)
            seen.add(n)
        if not first.strip():
            raise DataError("empty header line", file=str(p), line=1)
        columns = names
    assert columns is not None
    _counter[0] += 1
    tname = f"_raw_{_counter[0]}"
    # read the whole file line by line (one VARCHAR column), then split: we keep line numbers
    # and can report malformed lines precisely.
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname}_lines AS
        SELECT row_number() OVER () AS _line, column0 AS _text
        FROM read_csv(?, columns={{'column0': 'VARCHAR'}}, delim=?, header=false, quote='', escape='',
                      auto_detect=false, strict_mode=false, null_padding=true)""",
                [str(p), "\x01"])
    start = 2 if header else 1
    ncol = len(columns)
    quote_sql = ""
    parts = f"string_split(_text, '{sep}')" if sep != "'" else "string_split(_text, '''')"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname}_split AS
        SELECT _line, {parts} AS _f FROM {tname}_lines
        WHERE _line >= {start} AND trim(_text) <> ''""")
    bad = con.execute(f"SELECT min(_line), count(*) FROM {tname}_split WHERE len(_f) <> {ncol}").fetchall()[0]
    n_bad = int(bad[1])
    if n_bad and not skip_bad_lines:
        got = con.execute(f"SELECT len(_f) FROM {tname}_split WHERE _line = ?", [bad[0]]).fetchall()[0][0]
        raise DataError(f"malformed line: expected {ncol} fields, found {got} (use --skip-bad-lines to skip)",
                        file=str(p), line=int(bad[0]))
    sel = ", ".join(f'_f[{i + 1}] AS "{c}"' for i, c in enumerate(columns))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname} AS
        SELECT _line, {sel} FROM {tname}_split WHERE len(_f) = {ncol} ORDER BY _line""")
    con.execute(f"DROP TABLE {tname}_lines; DROP TABLE {tname}_split")
    del quote_sql
    return tname, columns, n_bad


def validate_numeric(con: duckdb.DuckDBPyConnection, table: str, column: str, *, path: str,
                     skip_bad_lines: bool, kind: str = "DOUBLE") -> int:
    """Check that ``column`` casts to ``kind``; raise naming the first bad line, or drop bad rows."""
    bad = con.execute(f"""SELECT min(_line), count(*) FROM {table}
        WHERE TRY_CAST(trim("{column}") AS {kind}) IS NULL""").fetchall()[0]
    n = int(bad[1])
    if n and not skip_bad_lines:
        val = con.execute(f'SELECT "{column}" FROM {table} WHERE _line = ?', [bad[0]]).fetchall()[0][0]
        raise DataError(f"non-numeric value {val!r} (use --skip-bad-lines to skip)", file=path,
                        line=int(bad[0]), field=column)
    if n:
        con.execute(f"""DELETE FROM {table} WHERE TRY_CAST(trim("{column}") AS {kind}) IS NULL""")
    return n


def require_columns(present: list[str], required: list[str], *, path: str) -> None:
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; found {', '.join(present)}", file=path,
                        field=missing[0])
