"""SQL over the lake with DuckDB (in-process): ``cdr-pipeline query``.

:func:`open_lake` returns an in-memory DuckDB connection holding four views of a
lake written by :class:`pipeline.lake.lake.Lake`:

==============================  ===============================================================
``rated_calls``                 the latest revision of each call_id over every billing cycle
``rated_calls_all_revisions``   every rated record as written (all revisions, all copies)
``dead_letters``                the ``dead_letters`` table
``invoice_lines``               the ``invoice_lines`` table
==============================  ===============================================================

Each view scans the live files of its Delta table at the version current when the
connection is opened (``pyarrow`` datasets registered with DuckDB, read lazily batch by
batch: projections and filters are pushed down, a filter on ``billing_cycle`` prunes
partitions, files a compaction replaced are never read, nothing is copied). Columns
and types are those of :mod:`pipeline.rating.columns` in schema order. A view over a
missing table is empty but has the same columns. Money stays ``DECIMAL(18,6)`` (calls)
and ``DECIMAL(18,2)`` (invoice amounts); the session time zone is UTC. DuckDB's memory
is capped (``CDR_QUERY_MEMORY_LIMIT``, :class:`AnalyticsSettings`).

"Latest revision" (:mod:`pipeline.analytics.latest`) mirrors
:func:`pipeline.rating.cycle.latest_revisions`, applied across all cycles: per call_id
the highest ``revision``; ties (the same revision written twice) go to the highest
``source_partition``, ``source_offset``, ``source_file``, ``source_index`` (nulls
last), then the highest ``billing_cycle``. Opening a connection reads the call ids once
to find the few calls with several rows.

**Analyst mode** (CPNI), rules in :mod:`pipeline.cpni`: ``calling_number``,
``called_number`` and ``original_calling_number`` are masked by :func:`mask_number`
(a well-formed number keeps its first digits, anything else becomes ``<malformed>``);
every other string column, lists of strings included (``ani_ii``, ``switch_id``,
``call_id``, ``trunk_id``, ``source_file``, dead letters' ``detail`` ...), has each
number-like run (7+ digits of any script, separators allowed) replaced by
``<number>``; dead letters' ``payload`` (raw bytes) is NULL. ``billing_cycle`` is
shown as it is when every partition is a well-formed cycle (``YYYY-MM`` has too few
digits to be masked), so a filter on it still prunes. The views mask over the scans
(no masked copy); the latest revision is chosen on the raw call ids. Nothing spills
(``temp_directory`` is empty, so no directory is ever allowed); extension
auto-loading and file access are switched off and the configuration locked:
``read_parquet('...')``, ``glob``, ``COPY ... TO``, ``ATTACH``, ``INSTALL`` or ``SET
enable_external_access = true`` fail. Analyst SQL is checked before it runs
(:mod:`pipeline.analytics.guard`): queries only, naming only the views. This guards the
command, not the files: a user who can read the lake's files with another tool sees
the raw numbers (restrict the files with filesystem permissions).

Modules: :mod:`~pipeline.analytics.views` (the connection and views),
:mod:`~pipeline.analytics.latest` (latest revisions out of core),
:mod:`~pipeline.analytics.guard` (analyst SQL check),
:mod:`~pipeline.analytics.output` (CSV, JSON, table writers),
:mod:`~pipeline.analytics.settings`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow as pa

from pipeline.analytics.guard import check_analyst_sql
from pipeline.analytics.output import (
    FORMATS,
    Format,
    QueryOutcome,
    QueryResult,
    write_csv,
    write_json,
    write_result,
    write_table,
)
from pipeline.analytics.settings import AnalyticsSettings, analyst_mode
from pipeline.analytics.views import NUMBER_COLUMNS, VIEWS, first_line, open_lake
from pipeline.cpni import mask_number as mask_number  # re-exported: the analyst-mode rule
from pipeline.cpni import mask_number_macro_sql
from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake

__all__ = [
    "FORMATS",
    "NUMBER_COLUMNS",
    "VIEWS",
    "AnalyticsSettings",
    "Format",
    "QueryOutcome",
    "QueryResult",
    "analyst_mode",
    "execute",
    "mask_macro_sql",
    "mask_number",
    "open_lake",
    "run_query",
    "write_csv",
    "write_json",
    "write_result",
    "write_table",
]

_BATCH_ROWS = 64 * 1024


def mask_macro_sql() -> str:
    """The SQL that defines the macro ``mask_number(n)``: :func:`mask_number` in DuckDB."""
    return mask_number_macro_sql()


def _query_error(exc: duckdb.Error, analyst: bool) -> ConfigError:
    if analyst and isinstance(exc, duckdb.PermissionException):
        return ConfigError(
            "analyst mode: file access is disabled; query the views "
            f"{', '.join(VIEWS)} ({first_line(exc)})"
        )
    if analyst and "configuration has been locked" in str(exc):
        return ConfigError(f"analyst mode: settings are locked ({first_line(exc)})")
    if isinstance(exc, duckdb.OutOfMemoryException):
        spill = "nothing spills in analyst mode; " if analyst else ""
        return ConfigError(
            f"query failed: out of memory ({spill}raise CDR_QUERY_MEMORY_LIMIT, or "
            f"aggregate or filter more): {first_line(exc)}"
        )
    return ConfigError(f"query failed: {str(exc).strip()}")


def _stream(reader: pa.RecordBatchReader, analyst: bool) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader
    except duckdb.Error as exc:
        raise _query_error(exc, analyst) from exc


def execute(con: duckdb.DuckDBPyConnection, sql: str, *, analyst: bool = False) -> QueryResult:
    """Run ``sql`` (DuckDB dialect; with several statements, the result of the last) on
    ``con``. A statement without a result gives an empty schema. In analyst mode the
    SQL is checked first (:func:`pipeline.analytics.guard.check_analyst_sql`). DuckDB
    errors, at bind time or later while the batches stream, raise :class:`ConfigError`."""
    try:
        if analyst:
            check_analyst_sql(con, sql, VIEWS)
        rel: duckdb.DuckDBPyRelation | None = con.sql(sql)
        if rel is None:  # duckdb < 2: a statement without a result
            return QueryResult(pa.schema([]), iter(()))
        to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
        reader: pa.RecordBatchReader = to_reader(_BATCH_ROWS)
    except duckdb.Error as exc:
        raise _query_error(exc, analyst) from exc
    return QueryResult(reader.schema, _stream(reader, analyst))


def run_query(
    lake: Lake | str | Path,
    sql: str,
    *,
    fmt: Format = "table",
    analyst: bool = False,
    out: TextIO | None = None,
    max_rows: int = 100,
) -> QueryOutcome:
    """``cdr-pipeline query``: open the lake (:func:`open_lake`), run ``sql`` and write the
    result to ``out`` (default stdout) in ``fmt``. Raises :class:`ConfigError` for a
    missing lake or a failing query (output already written stays written)."""
    if not sql.strip():
        raise ConfigError("empty SQL")
    if max_rows < 1:
        raise ConfigError("--max-rows must be at least 1")
    con = open_lake(lake if isinstance(lake, Lake) else Lake(lake), analyst=analyst)
    try:
        caption = " · analyst mode: numbers masked" if analyst else ""
        return write_result(
            execute(con, sql, analyst=analyst),
            fmt,
            out if out is not None else sys.stdout,
            max_rows=max_rows,
            caption=caption,
        )
    finally:
        con.close()
