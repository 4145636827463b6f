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
connection is opened (``pyarrow`` datasets registered with DuckDB: projections and
filters are pushed down; files a compaction replaced are never read). Columns and
types are those of :mod:`pipeline.rating.columns` in schema order. A view over a
missing table is empty but has the same columns. Money stays ``DECIMAL(18,6)`` (calls) and
``DECIMAL(18,2)`` (invoice amounts); the session time zone is UTC.

"Latest revision" mirrors :func:`pipeline.rating.cycle.latest_revisions`, applied
across all cycles: per call_id the highest ``revision``; ties (the same revision
written twice) go to the highest ``source_partition``, ``source_offset``,
``source_file``, ``source_index`` (nulls last), then the highest ``billing_cycle``.

**Analyst mode** (CPNI), rules in :mod:`pipeline.cpni`: ``calling_number``,
``called_number`` and ``original_calling_number`` are masked by :func:`mask_number`
(a well-formed number keeps its first digits, anything else becomes ``<malformed>``);
every other string column, lists of strings included (``ani_ii``, ``switch_id``,
``call_id``, ``trunk_id``, ``source_file``, dead letters' ``detail`` ...), has each
number-like run (7+ digits of any script, separators allowed) replaced by
``<number>``; dead letters' ``payload`` (raw bytes) is NULL. The latest revision is
chosen on the raw call ids, then the masked rows are copied into DuckDB's memory
(no spilling: ``temp_directory`` is empty, so no directory is ever allowed), then
extension auto-loading and file access are switched off and the configuration
locked: ``read_parquet('...')``, ``glob``, ``COPY ... TO``, ``ATTACH``, ``INSTALL``
or ``SET enable_external_access = true`` fail. This guards the command, not the
files: a user who can read the lake's files with another tool sees the raw numbers
(restrict the files with filesystem permissions).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TextIO

import duckdb
import duckdb.func as duckdb_func
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.cpni import mask_number as mask_number  # re-exported: the analyst-mode rule
from pipeline.cpni import mask_number_macro_sql, mask_text_array, mask_text_macro_sql
from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD, INVOICES, RATED
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, INVOICE_LINE_SCHEMA, RATED_SCHEMA

LOG = logging.getLogger(__name__)

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")

#: The views every connection from :func:`open_lake` holds.
VIEWS = ("rated_calls", "rated_calls_all_revisions", "dead_letters", "invoice_lines")
#: Columns that hold phone numbers (masked by :func:`mask_number` in analyst mode).
NUMBER_COLUMNS = ("calling_number", "called_number", "original_calling_number")
#: Analyst-mode views are built from internal tables; rated calls carry a flag for
#: the latest revision, computed on the raw call ids before masking.
_ANALYST_RATED = "_analyst_rated_calls"
_LATEST_FLAG = "_is_latest_revision"
_MASK_TEXT_PYTHON = "_mask_text_python"  # the build-time Python half of mask_text
_BATCH_ROWS = 64 * 1024

#: Latest-revision order (see the module docstring).
_LATEST_ORDER = (
    "revision DESC, source_partition DESC NULLS LAST, source_offset DESC NULLS LAST, "
    "source_file DESC NULLS LAST, source_index DESC NULLS LAST, billing_cycle DESC"
)


class AnalyticsSettings(BaseSettings):
    """Settings of ``cdr-pipeline query``; ``CDR_ANALYST_MODE=true`` turns analyst mode
    on by default (the ``--analyst`` / ``--no-analyst`` flag wins)."""

    model_config = SettingsConfigDict(env_prefix="CDR_", extra="ignore", frozen=True)

    analyst_mode: bool = False


def analyst_mode(flag: bool | None) -> bool:
    """The effective analyst mode: ``flag`` when given, else :class:`AnalyticsSettings`.

    Raises :class:`ConfigError` if ``CDR_ANALYST_MODE`` is not a boolean.
    """
    if flag is not None:
        return flag
    try:
        return AnalyticsSettings().analyst_mode
    except ValidationError as exc:
        raise ConfigError("CDR_ANALYST_MODE must be true or false") from exc


def mask_macro_sql() -> str:
    """The SQL that defines the macro ``mask_number(n)``: :func:`mask_number` in DuckDB."""
    return mask_number_macro_sql()


# ------------------------------------------------------------------ building the views
def _duck_type(dtype: pa.DataType) -> str:
    """The DuckDB type of a lake column (only the types the lake schemas use)."""
    if pa.types.is_string(dtype):
        return "VARCHAR"
    if pa.types.is_int32(dtype):
        return "INTEGER"
    if pa.types.is_int64(dtype):
        return "BIGINT"
    if pa.types.is_binary(dtype):
        return "BLOB"
    if pa.types.is_decimal(dtype):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    if pa.types.is_timestamp(dtype) and dtype.tz is not None:
        return "TIMESTAMPTZ"
    if pa.types.is_list(dtype):
        return f"{_duck_type(dtype.value_type)}[]"
    raise TypeError(f"no DuckDB type for {dtype}")  # a new lake column type: add it here


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _select(schema: pa.Schema, source: str) -> str:
    """``SELECT`` of ``schema``'s columns, in order and cast to the schema's types, from
    the registered relation ``source``."""
    cols = [f"CAST({_ident(f.name)} AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in schema]
    return f"SELECT {', '.join(cols)} FROM {_ident(source)}"  # noqa: S608


def _analyst_expr(field: pa.Field) -> str:
    """The analyst-mode expression of a column: number columns by ``mask_number``, every
    other string (and list of strings) by ``mask_text``, bytes NULL, the rest as is."""
    col = _ident(field.name)
    dtype = field.type
    if field.name in NUMBER_COLUMNS:
        return f"mask_number({col})"
    if pa.types.is_string(dtype):
        return f"mask_text({col})"
    if pa.types.is_list(dtype) and pa.types.is_string(dtype.value_type):
        return f"list_transform({col}, lambda v: mask_text(v))"
    if pa.types.is_binary(dtype):
        return "NULL"
    return col


def _analyst_select(schema: pa.Schema, raw: str, extra: tuple[str, ...] = ()) -> str:
    """The masked ``SELECT`` over ``raw`` (a query with ``schema``'s columns); ``extra``
    columns of ``raw`` are passed through."""
    cols = [f"CAST({_analyst_expr(f)} AS {_duck_type(f.type)}) AS {_ident(f.name)}" for f in schema]
    cols.extend(_ident(c) for c in extra)
    return f"SELECT {', '.join(cols)} FROM ({raw}) AS raw"  # noqa: S608


def _mask_text_udf(values: pa.Array) -> pa.Array:
    return mask_text_array(values)


def _check_lake(lake: Lake) -> None:
    path = lake.location.path
    if path is not None and not path.is_dir():
        raise ConfigError(f"{path}: no such lake directory")
    if all(lake.version(name) is None for name in (RATED, DEAD, INVOICES)):
        raise ConfigError(f"{lake.uri}: not a lake (no {RATED}, {DEAD} or {INVOICES} table)")


#: View name, schema and table of each scanned table.
_SOURCES = (
    ("rated_calls_all_revisions", RATED_SCHEMA, RATED),
    ("dead_letters", DEAD_LETTER_SCHEMA, DEAD),
    ("invoice_lines", INVOICE_LINE_SCHEMA, INVOICES),
)


def _raw(name: str) -> str:
    return f"_scan_{name}"


def _register(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Register each table's scan (its live files) as ``_scan_<table>``."""
    for _, schema, table in _SOURCES:
        data = lake.dataset(table)
        con.register(_raw(table), data if data is not None else schema.empty_table())


def _build_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    _register(con, lake)
    for name, schema, table in _SOURCES:
        con.execute(f"CREATE VIEW {name} AS {_select(schema, _raw(table))}")
    con.execute(
        "CREATE VIEW rated_calls AS SELECT * FROM rated_calls_all_revisions "  # noqa: S608
        f"QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY {_LATEST_ORDER}) = 1"
    )


def _build_analyst_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Masked copies in memory, then no file access at all (see the module docstring)."""
    con.execute("SET temp_directory = ''")  # no spilling: no directory SQL could name
    con.create_function(
        _MASK_TEXT_PYTHON,
        _mask_text_udf,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type=duckdb_func.ARROW,
        null_handling=duckdb_func.SPECIAL,
        side_effects=False,
    )
    con.execute(mask_text_macro_sql(_MASK_TEXT_PYTHON))
    _register(con, lake)
    for name, schema, table in _SOURCES:
        raw = _select(schema, _raw(table))
        if name != "rated_calls_all_revisions":
            con.execute(f"CREATE TABLE {name} AS {_analyst_select(schema, raw)}")
            continue
        # the latest revision is chosen on the raw call ids: masked ones may collide
        flagged = (
            f"SELECT *, row_number() OVER (PARTITION BY call_id ORDER BY {_LATEST_ORDER}) = 1 "  # noqa: S608
            f"AS {_LATEST_FLAG} FROM ({raw}) AS unmasked"
        )
        masked = _analyst_select(schema, flagged, (_LATEST_FLAG,))
        con.execute(f"CREATE TABLE {_ANALYST_RATED} AS {masked}")
        con.execute(
            f"CREATE VIEW {name} AS SELECT * EXCLUDE ({_LATEST_FLAG}) FROM {_ANALYST_RATED}"  # noqa: S608
        )
        con.execute(
            f"CREATE VIEW rated_calls AS SELECT * EXCLUDE ({_LATEST_FLAG}) "  # noqa: S608
            f"FROM {_ANALYST_RATED} WHERE {_LATEST_FLAG}"
        )
    con.execute("DROP MACRO mask_text")
    con.remove_function(_MASK_TEXT_PYTHON)
    for _, _, table in _SOURCES:  # the masked copies are all that remains
        con.unregister(_raw(table))
    for setting in (
        "autoinstall_known_extensions = false",
        "autoload_known_extensions = false",
        "allow_community_extensions = false",
        "enable_external_access = false",
        "lock_configuration = true",
    ):
        con.execute(f"SET {setting}")
    allowed = con.execute("SELECT current_setting('allowed_directories')").fetchall()
    if allowed != [([],)]:  # DuckDB adds its temp directory when there is one
        raise ConfigError(f"analyst mode: DuckDB still allows file access to {allowed}")


def open_lake(lake: Lake | str | Path, *, analyst: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the :data:`VIEWS` of ``lake``.

    Each table is read at its version current now: commits made later are not seen by
    this connection.
    Session time zone UTC; Python-variable replacement scans off. In analyst mode the
    masked data are copied into memory (one pass over the lake, no spilling to disk),
    then file access is disabled and the configuration locked (see the module
    docstring).

    Raises :class:`ConfigError` if ``lake`` is not a lake or cannot be read.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    _check_lake(lake)
    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET python_enable_replacements = false")
        con.execute(mask_number_macro_sql())
        if analyst:
            _build_analyst_views(con, lake)
        else:
            _build_views(con, lake)
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"{lake.uri}: cannot read the lake: {_first_line(exc)}") from exc
    except ConfigError:
        con.close()
        raise
    LOG.debug(
        "lake=%s analyst=%s views ready in %.2f s", lake.uri, analyst, time.perf_counter() - started
    )
    return con


# ------------------------------------------------------------------ running a query
def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _query_error(exc: duckdb.Error, analyst: bool) -> ConfigError:
    if analyst and isinstance(exc, duckdb.PermissionException):
        return ConfigError(
            "analyst mode: file access is disabled; query the views "
            f"{', '.join(VIEWS)} ({_first_line(exc)})"
        )
    if analyst and "configuration has been locked" in str(exc):
        return ConfigError(f"analyst mode: settings are locked ({_first_line(exc)})")
    return ConfigError(f"query failed: {str(exc).strip()}")


@dataclass(frozen=True)
class QueryResult:
    """A query's result: its ``schema`` and its record ``batches`` (read once; a DuckDB
    error while they stream raises :class:`ConfigError`)."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


def _stream(reader: pa.RecordBatchReader, analyst: bool) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader
    except duckdb.Error as exc:
        raise _query_error(exc, analyst) from exc


def execute(con: duckdb.DuckDBPyConnection, sql: str, *, analyst: bool = False) -> QueryResult:
    """Run ``sql`` (DuckDB dialect; with several statements, the result of the last) on
    ``con``. A statement without a result gives an empty schema. DuckDB errors, at bind
    time or later while the batches stream, raise :class:`ConfigError`."""
    try:
        rel: duckdb.DuckDBPyRelation | None = con.sql(sql)
        if rel is None:  # duckdb < 2: a statement without a result
            return QueryResult(pa.schema([]), iter(()))
        to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
        reader: pa.RecordBatchReader = to_reader(_BATCH_ROWS)
    except duckdb.Error as exc:
        raise _query_error(exc, analyst) from exc
    return QueryResult(reader.schema, _stream(reader, analyst))


# ------------------------------------------------------------------ output
#: Timestamps: ISO-8601 with the type's fraction digits; aware ones in UTC with ``Z``.
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S"
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"


def _plain(value: Any) -> Any:
    """A JSON-compatible Python value (the slow path, for nested and rare types):
    Decimal as an exact string, times ISO-8601 (aware ones in UTC with ``Z``), bytes
    base64, non-finite floats as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.strftime(_ISO_NAIVE + ".%f")
        return value.astimezone(UTC).strftime(_ISO_NAIVE + ".%fZ")
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _vector_text(col: pa.Array) -> pa.Array | None:
    """Text of a scalar column computed by Arrow (None: the type needs the slow path).
    Decimal keeps its scale (``0.000000``), timestamps as :data:`_ISO_UTC`."""
    dtype = col.type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return col
    if pa.types.is_timestamp(dtype):
        if dtype.tz is None:
            return pc.strftime(col, format=_ISO_NAIVE)
        return pc.strftime(col.cast(pa.timestamp(dtype.unit, tz="UTC")), format=_ISO_UTC)
    if (
        pa.types.is_boolean(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_date(dtype)
    ):
        return pc.cast(col, pa.string())
    return None


def _text_column(col: pa.Array) -> list[str | None]:
    """A column as text for CSV and table output (NULL stays None; nested values as
    compact JSON; bytes base64)."""
    text = _vector_text(col)
    if text is not None:
        values: list[str | None] = text.to_pylist()
        return values
    out: list[str | None] = []
    for value in col.to_pylist():
        plain = _plain(value)
        if plain is None or isinstance(plain, str):
            out.append(plain)
        else:
            out.append(json.dumps(plain, separators=(",", ":"), ensure_ascii=False))
    return out


def _json_column(col: pa.Array) -> list[Any]:
    """A column as JSON-ready Python values (see :func:`write_json`)."""
    dtype = col.type
    if pa.types.is_decimal(dtype) or pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        text = _vector_text(col)
        assert text is not None
        return list(text.to_pylist())
    values = list(col.to_pylist())
    if (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_integer(dtype)
    ):
        return values
    return [_plain(v) for v in values]


@dataclass(frozen=True)
class QueryOutcome:
    """What a writer wrote: ``rows`` (data rows) and ``truncated`` (the table format
    stopped at ``max_rows`` and more rows exist)."""

    rows: int
    truncated: bool = False


def _csv_native(dtype: pa.DataType) -> bool:
    """Types Arrow's CSV writer prints as wanted (Decimal keeps its scale)."""
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_date(dtype)
    )


def _json_list_of_strings(col: pa.Array) -> pa.Array | None:
    """``["A","B"]`` per row of a list<string> column, vectorized; None when an element
    is null or needs JSON escaping (then the slow path runs)."""
    if not (pa.types.is_list(col.type) and pa.types.is_string(col.type.value_type)):
        return None
    flat = pc.list_flatten(col)
    if flat.null_count:
        return None
    if len(flat) and pc.any(pc.match_substring_regex(flat, r'["\\\x00-\x1f]')).as_py():
        return None
    joined = pc.binary_join_element_wise('["', pc.binary_join(col, '","'), '"]', "")
    empty = pc.equal(pc.list_value_length(col), 0)
    return pc.if_else(empty, pa.scalar("[]"), joined)


def _csv_column(col: pa.Array) -> pa.Array:
    """``col`` ready for Arrow's CSV writer: native types as they are, timestamps ISO-8601
    text, list<string> JSON text, anything else text from the slow path."""
    if _csv_native(col.type):
        return col
    if pa.types.is_timestamp(col.type):
        text = _vector_text(col)
        assert text is not None
        return text
    listed = _json_list_of_strings(col)
    if listed is not None:
        return listed
    return pa.array(_text_column(col), pa.string())


def write_csv(result: QueryResult, out: TextIO) -> QueryOutcome:
    """RFC 4180 CSV with a header row and ``\\n`` line ends, written by Arrow: text is
    always quoted, so NULL (an empty field) differs from an empty string (``""``);
    Decimal exact with its scale (``0.495000``); timestamps ISO-8601 UTC
    (``2026-11-03T12:00:00.000000Z``); lists as JSON; bytes base64. A statement without
    a result writes nothing."""
    if not result.schema.names:
        return QueryOutcome(0)
    schema = pa.schema(
        [pa.field(f.name, f.type if _csv_native(f.type) else pa.string()) for f in result.schema]
    )
    sink = io.BytesIO()
    writer = pacsv.CSVWriter(sink, schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
    rows = 0
    for batch in result.batches:
        columns = [_csv_column(c) for c in batch.columns]
        writer.write_batch(pa.record_batch(columns, schema=schema))
        out.write(sink.getvalue().decode("utf-8"))
        sink.seek(0)
        sink.truncate()
        rows += batch.num_rows
    writer.close()
    out.write(sink.getvalue().decode("utf-8"))  # the header of an empty result
    return QueryOutcome(rows)


def write_json(result: QueryResult, out: TextIO) -> QueryOutcome:
    """JSON Lines: one object per row, keys in column order; NULL is ``null``, Decimal an
    exact string (``"0.495000"``), timestamps ISO-8601 UTC strings, bytes base64,
    non-finite floats strings (``"inf"``)."""
    names = result.schema.names
    rows = 0
    for batch in result.batches:
        columns = [_json_column(c) for c in batch.columns]
        for row in zip(*columns, strict=True):
            out.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False))
            out.write("\n")
        rows += batch.num_rows
    return QueryOutcome(rows)


def write_table(
    result: QueryResult, out: TextIO, *, max_rows: int, caption: str = ""
) -> QueryOutcome:
    """A rich table of the first ``max_rows`` rows (NULL shown as ``NULL``, bytes as their
    length), then a line with the row count. On a terminal it fits the width; elsewhere it
    is as wide as its content. A statement without a result writes nothing."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    names, types = result.schema.names, result.schema.types
    if not names:
        return QueryOutcome(0)
    cells: list[list[str]] = []
    truncated = False
    for batch in result.batches:
        room = max_rows - len(cells)
        if batch.num_rows > room:
            truncated = True
            batch = batch.slice(0, room)
        columns = [
            [f"<{len(v)} bytes>" if v is not None else None for v in c.to_pylist()]
            if pa.types.is_binary(c.type) or pa.types.is_large_binary(c.type)
            else _text_column(c)
            for c in batch.columns
        ]
        cells.extend(
            [["NULL" if v is None else v for v in row] for row in zip(*columns, strict=True)]
        )
        if truncated:
            break
    shown = f"{len(cells):,} row{'' if len(cells) == 1 else 's'}"
    count = f"first {shown} shown, more not shown" if truncated else shown
    table = Table()
    for name, dtype in zip(names, types, strict=True):
        numeric = pa.types.is_integer(dtype) or pa.types.is_decimal(dtype)
        numeric = numeric or pa.types.is_floating(dtype)
        table.add_column(Text(name), justify="right" if numeric else "left", overflow="fold")
    for row_cells in cells:
        table.add_row(*(Text(c, style="dim" if c == "NULL" else "") for c in row_cells))
    width = None
    if not out.isatty():
        widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
        width = max(80, sum(widths) + 3 * len(names) + 1, len(count + caption))
    console = Console(file=out, width=width, highlight=False)
    console.print(table)
    console.print(Text(count + caption))
    return QueryOutcome(len(cells), truncated)


def write_result(
    result: QueryResult, fmt: Format, out: TextIO, *, max_rows: int = 100, caption: str = ""
) -> QueryOutcome:
    """Write ``result`` in ``fmt`` (see :func:`write_table`, :func:`write_csv`,
    :func:`write_json`)."""
    if fmt == "csv":
        return write_csv(result, out)
    if fmt == "json":
        return write_json(result, out)
    if fmt == "table":
        return write_table(result, out, max_rows=max_rows, caption=caption)
    raise ConfigError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


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
    con = open_lake(lake, analyst=analyst)
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
