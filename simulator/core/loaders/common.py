"""Shared reading and validation for loaders: typed delimited files through DuckDB.

Everything is read as text first, then validated column by column, so a bad value is
reported with file, line and field instead of a silent NULL. ``skip_bad_lines`` drops bad
lines and reports how many were skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from simulator.core.errors import DataError


def check_column_names(names: list[str], *, file: str | None = None, line: int | None = 1) -> list[str]:
    """Column names are pasted into SQL as quoted identifiers: one holding a double quote (or a
    control character) is refused in one line rather than breaking, or changing, the SQL."""
    for n in names:
        if '"' in n or any(ord(ch) < 32 and ch != "\t" for ch in n):
            raise DataError(f"column name {n!r} contains a double quote or a control character; rename it",
                            file=file, line=line, field=n)
    return names


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", file=str(p))
    if p.is_file() and p.stat().st_size == 0:
        raise DataError("file is empty", file=str(p))
    return p


_counter = [0]


def _read_lines(con: duckdb.DuckDBPyConnection, p: Path, table: str, encoding: str = "utf-8") -> None:
    """Every line of a text file (optionally .gz) as (_line, _text): exact line numbers."""
    enc = {"latin1": "latin-1", "iso-8859-1": "latin-1", "utf8": "utf-8"}.get(encoding.lower(), encoding.lower())
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT row_number() OVER () AS _line, column0 AS _text
            FROM read_csv(?, columns={{'column0': 'VARCHAR'}}, delim=?, header=false, quote='', escape='',
                          auto_detect=false, strict_mode=false, null_padding=true, encoding=?,
                          max_line_size=100000000)""", [str(p), "\x01", enc])
    except duckdb.Error as e:
        msg = str(e)
        m = re.search(r"Line: (\d+)", msg)
        why = "not valid " + enc if "unicode" in msg.lower() or "utf" in msg.lower() else msg.splitlines()[0]
        raise DataError(f"cannot read: {why}", file=str(p), line=int(m.group(1)) if m else None) from None


def read_text_table(con: duckdb.DuckDBPyConnection, path: str | Path, *, sep: str, columns: list[str] | None,
                    header: bool, skip_bad_lines: bool = False,
                    encoding: str = "utf-8") -> tuple[str, list[str], int]:
    """Read a delimited file as all-VARCHAR into a temp table with a ``_line`` column.

    Returns (table name, column names, number of malformed lines skipped). Header problems
    (duplicate names) and malformed lines raise :class:`DataError` naming the line.
    """
    p = check_file(path)
    if header:
        with open(p, encoding=encoding, errors="replace") as f:
            first = f.readline().rstrip("\r\n")
        names = check_column_names(first.split(sep), file=str(p))
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise DataError(f"duplicate column {n!r} in header", file=str(p), line=1, field=n)
            seen.add(n)
        if not first.strip():
            raise DataError("empty header line", file=str(p), line=1)
        columns = names
    if columns is None:
        raise DataError("no column names: the file has no header line and the format gives none", file=str(p))
    _counter[0] += 1
    tname = f"_raw_{_counter[0]}"
    # read the whole file line by line (one VARCHAR column), then split: we keep line numbers
    # and can report malformed lines precisely.
    _read_lines(con, p, f"{tname}_lines", encoding)
    start = 2 if header else 1
    ncol = len(columns)
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
    return tname, columns, n_bad


def validate_numeric(con: duckdb.DuckDBPyConnection, table: str, column: str, *, path: str,
                     skip_bad_lines: bool, kind: str = "DOUBLE") -> int:
    """Check that ``column`` casts to ``kind``; raise naming the first bad line, or drop bad rows."""
    bad = con.execute(f"""SELECT min(_line), count(*) FROM {table}
        WHERE TRY_CAST(trim(CAST("{column}" AS VARCHAR)) AS {kind}) IS NULL""").fetchall()[0]
    n = int(bad[1])
    if n and not skip_bad_lines:
        val = con.execute(f'SELECT "{column}" FROM {table} WHERE _line = ?', [bad[0]]).fetchall()[0][0]
        raise DataError(f"non-numeric value {val!r} (use --skip-bad-lines to skip)", file=path,
                        line=int(bad[0]), field=column)
    if n:
        con.execute(f"""DELETE FROM {table} WHERE TRY_CAST(trim(CAST("{column}" AS VARCHAR)) AS {kind}) IS NULL""")
    return n + _validate_range(con, table, column, path=path, skip_bad_lines=skip_bad_lines)


def _validate_range(con: duckdb.DuckDBPyConnection, table: str, column: str, *, path: str,
                    skip_bad_lines: bool) -> int:
    """Timestamps and ratings must be finite and >= 0: NaN, +/-inf and negatives would reach the
    metrics as NaN; raise naming the first bad line, or drop those rows."""
    v = f'CAST(trim(CAST("{column}" AS VARCHAR)) AS DOUBLE)'
    cond = f"(NOT isfinite({v}) OR {v} < 0)"
    bad = con.execute(f"SELECT min(_line), count(*) FROM {table} WHERE {cond}").fetchall()[0]
    n = int(bad[1])
    if n and not skip_bad_lines:
        val = con.execute(f'SELECT trim(CAST("{column}" AS VARCHAR)), {v} FROM {table} WHERE _line = ?',
                          [bad[0]]).fetchall()[0]
        why = "is not a finite number" if val[1] != val[1] or abs(val[1]) == float("inf") else "is negative"
        raise DataError(f"value {val[0]!r} {why}: timestamps and ratings must be finite and >= 0 "
                        "(use --skip-bad-lines to skip)", file=path, line=int(bad[0]), field=column)
    if n:
        con.execute(f"DELETE FROM {table} WHERE {cond}")
    return n


def no_timestamp_note(path: str) -> str:
    """What a load without a timestamp column says (it is never silent)."""
    return (f"{path}: no timestamp column: using line order as time (line N = N seconds); "
            "replay runs and temporal splits then follow the file order")


_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def separator_hint(header: list[str], expected: str, fix: str | None) -> str:
    """' (... looks comma-separated ...)' when a one-column header holds another separator."""
    if len(header) != 1:
        return ""
    found = [(ch, name) for ch, name in _SEPARATORS.items() if ch != expected and ch in header[0]]
    if not found:
        return ""
    ch, name = found[0]
    return f" (the header is one column: the file looks {name}-separated; {fix or f'try --sep {ch!r}'})"


def require_columns(present: list[str], required: list[str], *, path: str, raw: list[str] | None = None,
                    sep: str = ",", fix: str | None = None) -> None:
    """Fail naming the missing columns; ``raw`` (the header as read) gives a separator hint."""
    missing = [c for c in required if c not in present]
    if missing:
        hint = separator_hint(raw if raw is not None else present, sep, fix)
        found = ", ".join(p.replace("\t", "\\t") for p in (raw if hint and raw else present))
        raise DataError(f"missing column(s) {', '.join(missing)}; found {found}{hint}", file=path,
                        field=missing[0])


def _read_header(p: Path, sep: str, encoding: str) -> list[str]:
    import csv

    with open(p, encoding=encoding, errors="replace", newline="") as f:
        first = f.readline()
    if not first.strip():
        raise DataError("empty header line", file=str(p), line=1)
    names = check_column_names([n.strip() for n in next(csv.reader([first.rstrip("\r\n")], delimiter=sep))],
                               file=str(p))
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DataError(f"duplicate column {n!r} in header", file=str(p), line=1, field=n)
        if not n:
            raise DataError("empty column name in header", file=str(p), line=1)
        seen.add(n)
    return names


def read_csv_table(con: duckdb.DuckDBPyConnection, path: str | Path, *, sep: str = ",",
                   skip_bad_lines: bool = False, encoding: str = "utf-8") -> tuple[str, list[str], int]:
    """Read a quoted CSV with a header (DuckDB's parser, all VARCHAR) into a temp table.

    Returns (table, column names, malformed lines skipped). ``_line`` is the file line of each
    row (exact unless quoted fields span lines).
    """
    p = check_file(path)
    names = _read_header(p, sep, encoding)
    _counter[0] += 1
    tname = f"_raw_{_counter[0]}"
    cols = "{" + ", ".join(f"'{n.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for n in names) + "}"
    opts = (f"header=true, columns={cols}, delim=?, quote='\"', escape='\"', auto_detect=false, strict_mode=true"
            + (f", store_rejects=true, rejects_table='{tname}_rej', rejects_scan='{tname}_scan'" if skip_bad_lines else ""))
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname} AS
            SELECT CAST(row_number() OVER () + 1 AS BIGINT) AS _line, * FROM read_csv(?, {opts})""", [str(p), sep])
    except duckdb.Error as e:
        msg = str(e)
        m = re.search(r"Line: (\d+)", msg)
        detail = next((ln.strip() for ln in msg.splitlines() if "Expected" in ln or "Value" in ln), msg.splitlines()[0])
        raise DataError(f"malformed line: {detail} (use --skip-bad-lines to skip)", file=str(p),
                        line=int(m.group(1)) if m else None) from None
    n_bad = 0
    if skip_bad_lines:
        n_bad = int(con.execute(f"SELECT count(DISTINCT line) FROM {tname}_rej").fetchall()[0][0])
        con.execute(f"DROP TABLE IF EXISTS {tname}_rej; DROP TABLE IF EXISTS {tname}_scan")
    return tname, names, n_bad


def read_jsonl_table(con: duckdb.DuckDBPyConnection, path: str | Path, *, fields: dict[str, str],
                     skip_bad_lines: bool = False) -> tuple[str, int]:
    """Read JSON Lines (optionally .gz) into a temp table with ``_line`` and VARCHAR columns.

    ``fields`` maps output column -> JSON path (e.g. ``{"user": "$.reviewerID"}``); list
    values come back as JSON text. Invalid JSON lines raise naming the line (or are skipped).
    """
    p = check_file(path)
    _counter[0] += 1
    tname = f"_raw_{_counter[0]}"
    _read_lines(con, p, f"{tname}_lines")
    con.execute(f"DELETE FROM {tname}_lines WHERE _text IS NULL OR trim(_text) = ''")
    bad = con.execute(f"""SELECT min(_line), count(*) FROM {tname}_lines
        WHERE NOT coalesce(json_valid(_text), false) OR json_type(_text) <> 'OBJECT'""").fetchall()[0]
    n_bad = int(bad[1])
    if n_bad and not skip_bad_lines:
        raise DataError("malformed line: not a JSON object (use --skip-bad-lines to skip)", file=str(p),
                        line=int(bad[0]))
    sel = ", ".join(f"json_extract_string(_text, '{jp}') AS \"{c}\"" for c, jp in fields.items())
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname} AS SELECT _line, {sel} FROM {tname}_lines
        WHERE coalesce(json_valid(_text), false) AND json_type(_text) = 'OBJECT' ORDER BY _line""")
    con.execute(f"DROP TABLE {tname}_lines")
    return tname, n_bad


def read_parquet_table(con: duckdb.DuckDBPyConnection, path: str | Path) -> tuple[str, list[str]]:
    """Read a Parquet file into a temp table; ``_line`` is the 1-based row number."""
    p = check_file(path)
    _counter[0] += 1
    tname = f"_raw_{_counter[0]}"
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {tname} AS
            SELECT CAST(row_number() OVER () AS BIGINT) AS _line, * FROM read_parquet(?)""", [str(p)])
    except duckdb.Error as e:
        raise DataError(f"cannot read Parquet: {str(e).splitlines()[0]}", file=str(p)) from None
    names = check_column_names([c for c in _cols(con, tname) if c != "_line"], file=str(p), line=None)
    return tname, names


def _cols(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]


def null_check(con: duckdb.DuckDBPyConnection, table: str, column: str, *, path: str,
               skip_bad_lines: bool) -> int:
    """Missing (NULL/empty) required values: raise naming the first line, or drop those rows."""
    cond = f'"{column}" IS NULL OR trim(CAST("{column}" AS VARCHAR)) = \'\''
    bad = con.execute(f"SELECT min(_line), count(*) FROM {table} WHERE {cond}").fetchall()[0]
    n = int(bad[1])
    if n and not skip_bad_lines:
        raise DataError("missing value (use --skip-bad-lines to skip)", file=path, line=int(bad[0]), field=column)
    if n:
        con.execute(f"DELETE FROM {table} WHERE {cond}")
    return n


def canon_interactions(con: duckdb.DuckDBPyConnection, table: str, *, path: str, user: str, item: str,
                       ts: str | None, value: str | None = None, event: str | None = None,
                       skip_bad_lines: bool = False, ts_divisor: float = 1.0) -> tuple[str, int]:
    """Validate the mapped columns of a raw table and write the canonical interactions table
    (user, item, ts, value, event, seq). Returns (table, rows dropped as bad)."""
    present = [c for c in _cols(con, table) if c != "_line"]
    require_columns(present, [c for c in (user, item, ts, value, event) if c], path=path)
    n = null_check(con, table, user, path=path, skip_bad_lines=skip_bad_lines)
    n += null_check(con, table, item, path=path, skip_bad_lines=skip_bad_lines)
    if ts:
        n += validate_numeric(con, table, ts, path=path, skip_bad_lines=skip_bad_lines)
    if value:
        n += validate_numeric(con, table, value, path=path, skip_bad_lines=skip_bad_lines)
    out = f"{table}_canon"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {out} AS SELECT
        trim(CAST("{user}" AS VARCHAR)) AS user, trim(CAST("{item}" AS VARCHAR)) AS item,
        {f'CAST(trim(CAST("{ts}" AS VARCHAR)) AS DOUBLE) / {ts_divisor}' if ts else 'CAST(_line AS DOUBLE)'} AS ts,
        {f'CAST(trim(CAST("{value}" AS VARCHAR)) AS DOUBLE)' if value else '1.0'} AS value,
        {f'CAST("{event}" AS VARCHAR)' if event else "'interact'"} AS event,
        CAST(_line AS BIGINT) AS seq FROM {table}""")
    return out, n


def parse_mapping(spec: str | dict | None, flag: str = "--map") -> dict[str, str]:
    """'user=uid,item=iid,ts=time' -> {'user': 'uid', ...} (canonical name -> file column); both
    sides become SQL identifiers, so both are checked."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    out = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise DataError(f"bad column mapping {part!r}: expected canonical=column, e.g. user=uid")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    check_column_names([*out, *out.values()], file=flag, line=None)
    return out
