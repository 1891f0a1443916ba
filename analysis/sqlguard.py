"""The one guard for user SQL: `sim query` statements and metric expressions (``num``/``den``).

DuckDB enforces it, not a list of forbidden words:

* the catalog is opened read-only with :data:`READ_ONLY_CONFIG` (file access, extension loading
  and installation off); :func:`lock_down` then locks the configuration, so no statement can
  switch them back on. Reading files (``read_csv``, ``glob``, ``'x.parquet'``), ``COPY``,
  ``ATTACH``, ``INSTALL``/``LOAD`` and every write fail inside DuckDB.
* :func:`check_query` asks DuckDB's parser (``duckdb.extract_statements``) for the statements:
  exactly one, of type SELECT (``WITH``, ``FROM``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` are
  SELECTs) or ``EXPLAIN`` of one. Anything else is refused before it runs, in one line.
* :func:`check_expression` parses a metric expression as ``SELECT (<expr>)`` and reads DuckDB's
  own parse tree (``json_serialize_sql``): one plain expression, no FROM, no subquery.
"""

from __future__ import annotations

import json
import re

import duckdb

from simulator.core.errors import ConfigError, SimError

READ_ONLY_HINT = "`sim query` is read-only: one SELECT per call; save results with --output"
READ_ONLY_CONFIG = {"enable_external_access": False, "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False, "allow_community_extensions": False}


class QueryRefused(SimError):
    """A statement `sim query` does not run (writes, file access, several statements)."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def lock_down(con) -> None:
    """Switch file access off (if not already) and lock the configuration of ``con``."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _statements(sql: str) -> list:
    try:
        return [s for s in duckdb.extract_statements(sql) if s.query.strip(" \t\r\n;")]
    except duckdb.Error as e:
        raise SimError(f"query failed: {_first_line(e)}") from None


def _verb(query: str) -> str:
    """The statement's first words, for the message (the decision is DuckDB's statement type)."""
    q = query.strip()
    while q.startswith(("--", "/*")):  # leading comments
        end = q.find("\n") if q.startswith("--") else q.find("*/") + 1
        q = q[end + 1:].strip() if end > 0 else ""
    words = q.split(None, 2)
    if not words:
        return "this statement"
    if words[0].upper() in ("CREATE", "DROP", "ALTER") and len(words) > 1:
        return f"{words[0].upper()} {words[1].upper()}"
    return words[0].upper()


def check_query(sql: str) -> str:
    """The single read-only statement in ``sql``; :class:`QueryRefused` (one line) otherwise."""
    sts = _statements(sql)
    if not sts:
        raise QueryRefused("query is empty: give one SELECT statement")
    if len(sts) > 1:
        raise QueryRefused(f"query refused: {len(sts)} statements given; {READ_ONLY_HINT}")
    st = sts[0]
    if st.type == duckdb.StatementType.SELECT:
        return st.query
    if st.type == duckdb.StatementType.EXPLAIN:
        inner = st.query.strip().split(None, 1)[1] if len(st.query.split()) > 1 else ""
        if inner.upper().startswith("ANALYZE "):
            inner = inner[8:]
        inner_sts = _statements(inner) if inner else []
        if len(inner_sts) == 1 and inner_sts[0].type == duckdb.StatementType.SELECT:
            return st.query
        st = inner_sts[0] if inner_sts else st
    raise QueryRefused(f"query refused: {_verb(st.query)} is not allowed; {READ_ONLY_HINT}")


def explain_refusal(e: BaseException) -> str | None:
    """A one-line refusal for what DuckDB's guards stopped at run time (None: a plain error)."""
    msg = _first_line(e)
    if isinstance(e, duckdb.PermissionException) or "disabled by configuration" in msg:
        m = re.search(r'"([^"]*)"', msg)
        what = f" ({m.group(1)})" if m else ""
        return f"query refused: file access is not allowed{what}; {READ_ONLY_HINT}"
    if "read-only mode" in msg or "configuration has been locked" in msg:
        return f"query refused: {msg.split(': ', 1)[-1]}; {READ_ONLY_HINT}"
    return None


# ---------------------------------------------------------------- metric expressions

_PARSER: list = []


def _parser():
    if not _PARSER:
        _PARSER.append(duckdb.connect(":memory:"))
    return _PARSER[0]


def _has_subquery(node) -> bool:
    if isinstance(node, dict):
        if node.get("class") == "SUBQUERY" or node.get("type") == "SUBQUERY":
            return True
        return any(_has_subquery(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_subquery(v) for v in node)
    return False


def wrap_expression(expr: str) -> str:
    """How a checked expression is pasted into SQL (the newline ends a trailing ``--`` comment),
    the same text :func:`check_expression` parsed."""
    return f"({expr}\n)"


def check_expression(expr: str, where: str) -> str:
    """``expr`` if it is one plain SQL expression (columns, operators, functions, CASE);
    :class:`ConfigError` naming ``where`` otherwise (statements, FROM, subqueries)."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{where}: empty SQL expression")
    bad = f"{where}: {expr!r} is not one SQL expression over v_user_metrics columns"
    sql = f"SELECT {wrap_expression(expr)}"
    try:
        sts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise ConfigError(f"{bad} ({_first_line(e)})") from None
    if len(sts) != 1 or sts[0].type != duckdb.StatementType.SELECT:
        raise ConfigError(f"{bad} (it contains {len(sts)} statements)")
    tree = json.loads(_parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        raise ConfigError(f"{bad} ({tree.get('error_message', 'parse error')})")
    node = tree["statements"][0]["node"]
    plain = (node.get("type") == "SELECT_NODE" and len(node.get("select_list", [])) == 1
             and (node.get("from_table") or {}).get("type") == "EMPTY" and not node.get("where_clause")
             and not node.get("group_expressions") and not node.get("having") and not node.get("qualify")
             and not node.get("modifiers") and not (node.get("cte_map") or {}).get("map"))
    if not plain:
        raise ConfigError(f"{bad} (FROM, WHERE, GROUP BY and the like are not allowed)")
    if _has_subquery(node):
        raise ConfigError(f"{bad} (subqueries are not allowed)")
    return expr
