"""Analyst SQL is checked before it runs: queries only, over the public views only.

Analyst mode masks through views over the tables' scans, so the unmasked scans
(``_scan_<table>``) are in the same DuckDB connection. DuckDB has no grants, so the
SQL itself is checked (DuckDB's own parser: ``extract_statements`` and
``json_serialize_sql``):

* every statement is a query (``SELECT``, ``WITH``, ``FROM ...``, ``VALUES``,
  ``DESCRIBE``, ``SUMMARIZE``): no ``CREATE`` (a macro that replaces a mask), ``SET``,
  ``COPY``, ``ATTACH``, ``INSTALL``, ``PRAGMA``, ``EXPORT`` ...;
* no table reference names an object other than the public views (the scans, and
  anything registered later, are refused whatever the case, schema or CTE around it);
* table functions only from :data:`TABLE_FUNCTIONS` (series and catalog listings):
  ``query()`` and ``query_table()`` would name a scan in a string, and the file
  readers are disabled anyway.

DuckDB's lock-down (no file access, locked configuration) stays underneath: the check
narrows what reaches it, it does not replace it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb

from pipeline.errors import ConfigError

#: Table functions analysts may call: they read no table and no file.
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "duckdb_columns",
        "duckdb_functions",
        "duckdb_keywords",
        "duckdb_settings",
        "duckdb_types",
        "duckdb_views",
    }
)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT lower(view_name) FROM duckdb_views() WHERE NOT internal "
        "UNION SELECT lower(table_name) FROM duckdb_tables()"
    ).fetchall()
    return {str(r[0]) for r in rows}


def check_analyst_sql(con: duckdb.DuckDBPyConnection, sql: str, views: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` (``analyst mode: ...``) unless every statement of
    ``sql`` is a query over ``views`` only (see the module docstring). A statement
    DuckDB cannot parse passes through: running it reports the syntax error."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        return
    hidden = _relations(con) - {v.lower() for v in views}
    listed = ", ".join(views)
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            kind = statement.type.name
            raise ConfigError(
                f"analyst mode: only queries run, not {kind} statements; query the views {listed}"
            )
        [(serialized,)] = con.execute("SELECT json_serialize_sql(?)", [statement.query]).fetchall()
        tree = json.loads(serialized)
        if tree.get("error"):
            raise ConfigError(
                f"analyst mode: this query cannot be checked ({tree.get('error_message')}); "
                f"query the views {listed}"
            )
        for node in _nodes(tree):
            ref = node.get("type")
            if ref == "BASE_TABLE" and str(node.get("table_name", "")).lower() in hidden:
                raise ConfigError(
                    f"analyst mode: {node['table_name']} is not a view; query the views {listed}"
                )
            if ref == "TABLE_FUNCTION":
                name = str((node.get("function") or {}).get("function_name", "")).lower()
                if name not in TABLE_FUNCTIONS:
                    raise ConfigError(
                        f"analyst mode: file access is disabled and {name}() is not "
                        f"available; query the views {listed}"
                    )
