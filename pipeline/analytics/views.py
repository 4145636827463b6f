"""The DuckDB connection of ``cdr-pipeline query``: the views and analyst mode's lock-down.

Each table is registered as ``_scan_<table>``: a ``pyarrow`` dataset of the live files
of the Delta table at the version current when the connection is opened. DuckDB scans
it lazily, batch by batch, pushing projections and filters (partition pruning on
``billing_cycle``) into the scan; nothing is copied. The public :data:`VIEWS` are SQL
over those scans; ``rated_calls`` picks the latest revisions with
:mod:`pipeline.analytics.latest`.

Analyst mode builds the same views with each column masked
(:func:`_analyst_expr`), still over the scans, then switches off file access and locks
the configuration. The scans stay in the connection (the views need them), so analyst
SQL is checked before it runs (:mod:`pipeline.analytics.guard`): only queries, naming
only the public views.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import duckdb
import duckdb.func as duckdb_func
import pyarrow as pa
import pyarrow.dataset as pads

from pipeline.analytics.latest import candidate_hashes, latest_sql, register_candidates
from pipeline.analytics.settings import load_settings
from pipeline.cpni import mask_number_macro_sql, mask_text_array, mask_text_macro_sql
from pipeline.errors import ConfigError
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD, INVOICES, PARTITION, RATED
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, INVOICE_LINE_SCHEMA, RATED_SCHEMA

LOG = logging.getLogger(__name__)

#: The views every connection from :func:`open_lake` holds.
VIEWS = ("rated_calls", "rated_calls_all_revisions", "dead_letters", "invoice_lines")
#: Columns that hold phone numbers (masked by ``mask_number`` in analyst mode).
NUMBER_COLUMNS = ("calling_number", "called_number", "original_calling_number")
#: The relation of call id hashes with several rows (:mod:`pipeline.analytics.latest`).
CANDIDATES = "_latest_candidates"
#: Scan settings of the tables' datasets: the pyarrow defaults (16 batches of 128 Ki
#: rows read ahead in each of 4 files, per scan) hold hundreds of MB per scan.
SCAN_OPTIONS = {"batch_size": 64 * 1024, "batch_readahead": 2, "fragment_readahead": 1}
_MASK_TEXT_PYTHON = "_mask_text_python"  # the Python half of mask_text
#: A partition value that needs no mask (a well-formed cycle has 6 digits, fewer than
#: a number-like run).
_CYCLE = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])", re.ASCII)

#: View name, schema and table of each scanned table.
SOURCES = (
    ("rated_calls_all_revisions", RATED_SCHEMA, RATED),
    ("dead_letters", DEAD_LETTER_SCHEMA, DEAD),
    ("invoice_lines", INVOICE_LINE_SCHEMA, INVOICES),
)


def duck_type(dtype: pa.DataType) -> str:
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
        return f"{duck_type(dtype.value_type)}[]"
    raise TypeError(f"no DuckDB type for {dtype}")  # a new lake column type: add it here


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scan_name(table: str) -> str:
    """The registered scan of ``table``."""
    return f"_scan_{table}"


def typed_select(schema: pa.Schema, source: str) -> str:
    """``SELECT`` of ``schema``'s columns, in order and cast to the schema's types, from
    the registered relation ``source``."""
    cols = [f"CAST({ident(f.name)} AS {duck_type(f.type)}) AS {ident(f.name)}" for f in schema]
    return f"SELECT {', '.join(cols)} FROM {ident(source)}"  # noqa: S608


def _analyst_expr(field: pa.Field, plain: frozenset[str]) -> str:
    """The analyst-mode expression of a column: number columns by ``mask_number``, every
    other string (and list of strings) by ``mask_text``, bytes NULL, the rest (and the
    ``plain`` columns) as is."""
    col = ident(field.name)
    dtype = field.type
    if field.name in NUMBER_COLUMNS:
        return f"mask_number({col})"
    if field.name in plain:
        return col
    if pa.types.is_string(dtype):
        return f"mask_text({col})"
    if pa.types.is_list(dtype) and pa.types.is_string(dtype.value_type):
        return f"list_transform({col}, lambda v: mask_text(v))"
    if pa.types.is_binary(dtype):
        return "NULL"
    return col


def _analyst_select(schema: pa.Schema, raw: str, plain: frozenset[str]) -> str:
    """The masked ``SELECT`` over ``raw`` (a query with ``schema``'s columns)."""
    cols = [
        f"CAST({_analyst_expr(f, plain)} AS {duck_type(f.type)}) AS {ident(f.name)}" for f in schema
    ]
    return f"SELECT {', '.join(cols)} FROM ({raw}) AS raw"  # noqa: S608


def _plain_columns(data: pads.Dataset | None, schema: pa.Schema) -> frozenset[str]:
    """Columns analyst mode can show unmasked: ``billing_cycle`` when every file of the
    table lies in a partition named by a well-formed cycle (mask_text would leave each
    value as it is). Shown plain, a filter on it still prunes partitions."""
    if PARTITION not in schema.names or data is None:
        return frozenset()
    for fragment in data.get_fragments():
        value = pads.get_partition_keys(fragment.partition_expression).get(PARTITION)
        if not isinstance(value, str) or not _CYCLE.fullmatch(value):
            return frozenset()
    return frozenset({PARTITION})


def _check_lake(lake: Lake) -> None:
    path = lake.location.path
    if path is not None and not path.is_dir():
        raise ConfigError(f"{path}: no such lake directory")
    if all(lake.version(name) is None for name in (RATED, DEAD, INVOICES)):
        raise ConfigError(f"{lake.uri}: not a lake (no {RATED}, {DEAD} or {INVOICES} table)")


class LeanDataset(pads.FileSystemDataset):  # type: ignore[misc]
    """A table's dataset (the same files, partition expressions and statistics) whose
    scans read ahead only :data:`SCAN_OPTIONS` (DuckDB calls :meth:`scanner` with the
    projection and filters it pushes down)."""

    def scanner(self, *args: Any, **kwargs: Any) -> pads.Scanner:
        return super().scanner(*args, **scan_options(kwargs))


def scan_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a scan with :data:`SCAN_OPTIONS` where the caller set none."""
    return {**SCAN_OPTIONS, **kwargs}


def lean(data: pads.Dataset) -> pads.Dataset:
    """``data`` as a :class:`LeanDataset` (a file system dataset; others as they are)."""
    if not isinstance(data, pads.FileSystemDataset):
        return data
    return LeanDataset(
        list(data.get_fragments()),
        data.schema,
        data.format,
        data.filesystem,
        data.partition_expression,
    )


def register_scans(con: duckdb.DuckDBPyConnection, lake: Lake) -> dict[str, pads.Dataset | None]:
    """Register each table's scan (its live files) as :func:`scan_name` (an empty table
    for a missing table); returns each table's dataset (None: no such table)."""
    datasets: dict[str, pads.Dataset | None] = {}
    for _, schema, table in SOURCES:
        data = lake.dataset(table)
        data = lean(data) if data is not None else None
        con.register(scan_name(table), data if data is not None else schema.empty_table())
        datasets[table] = data
    return datasets


def register_latest(
    con: duckdb.DuckDBPyConnection, relation: str, data: pads.Dataset | None
) -> None:
    """Find the calls of ``relation`` (the scan of ``data``) with several rows and
    register them as :data:`CANDIDATES`."""
    started = time.perf_counter()
    rows = data.count_rows() if data is not None else 0  # from the files' footers
    candidates = candidate_hashes(con, relation, rows)
    register_candidates(con, CANDIDATES, candidates)
    LOG.debug(
        "latest revisions: %d candidate ids in %.2f s",
        len(candidates),
        time.perf_counter() - started,
    )


def _build_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    datasets = register_scans(con, lake)
    for name, schema, table in SOURCES:
        con.execute(f"CREATE VIEW {name} AS {typed_select(schema, scan_name(table))}")
    register_latest(con, scan_name(RATED), datasets[RATED])
    con.execute(f"CREATE VIEW rated_calls AS {latest_sql('rated_calls_all_revisions', CANDIDATES)}")


def _build_analyst_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Masked views over the scans, then no file access at all (module docstring)."""
    con.execute("SET temp_directory = ''")  # no spilling: no directory SQL could name
    con.create_function(
        _MASK_TEXT_PYTHON,
        mask_text_array,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type=duckdb_func.ARROW,
        null_handling=duckdb_func.SPECIAL,
        side_effects=False,
    )
    con.execute(mask_text_macro_sql(_MASK_TEXT_PYTHON))
    datasets = register_scans(con, lake)
    register_latest(con, scan_name(RATED), datasets[RATED])
    for name, schema, table in SOURCES:
        raw = typed_select(schema, scan_name(table))
        plain = _plain_columns(datasets[table], schema)
        con.execute(f"CREATE VIEW {name} AS {_analyst_select(schema, raw, plain)}")
        if table == RATED:
            # the latest revision is chosen on the raw call ids: masked ones may collide
            latest = latest_sql(f"({raw})", CANDIDATES)
            con.execute(f"CREATE VIEW rated_calls AS {_analyst_select(schema, latest, plain)}")
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


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def connect(memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection: session time zone UTC, Python-variable
    replacement scans off, memory capped at ``memory_limit`` (default: the
    ``CDR_QUERY_MEMORY_LIMIT`` setting) and the ``mask_number`` macro defined."""
    limit = memory_limit if memory_limit is not None else load_settings().query_memory_limit
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET python_enable_replacements = false")
        con.execute(f"SET memory_limit = {literal(limit)}")
        # the scans' sizes are unknown to DuckDB (one row, it guesses): keep join build
        # sides as planned (the small candidate relation, pipeline.analytics.latest)
        con.execute("SET disabled_optimizers = 'build_side_probe_side'")
        con.execute(mask_number_macro_sql())
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"CDR_QUERY_MEMORY_LIMIT {limit!r}: {first_line(exc)}") from exc
    return con


def open_lake(
    lake: Lake | str | Path, *, analyst: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection (:func:`connect`) with the :data:`VIEWS` of ``lake``.

    Each table is read at its version current now: commits made later are not seen by
    this connection. The views scan the tables; opening makes one pass over
    ``rated_calls``' ids (:mod:`pipeline.analytics.latest`). In analyst mode the views
    mask, nothing spills to disk, and file access is disabled and the configuration
    locked; run analyst SQL through :func:`pipeline.analytics.execute` (which checks it).

    Raises :class:`ConfigError` if ``lake`` is not a lake or cannot be read.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    _check_lake(lake)
    started = time.perf_counter()
    con = connect(memory_limit)
    try:
        if analyst:
            _build_analyst_views(con, lake)
        else:
            _build_views(con, lake)
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"{lake.uri}: cannot read the lake: {first_line(exc)}") from exc
    except ConfigError:
        con.close()
        raise
    LOG.debug(
        "lake=%s analyst=%s views ready in %.2f s", lake.uri, analyst, time.perf_counter() - started
    )
    return con
