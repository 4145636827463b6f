"""Writers of ``cdr-pipeline query`` results: CSV, JSON Lines and a table.

Money stays exact (Decimal as text with its scale), timestamps ISO-8601 UTC, bytes
base64; each writer streams the result's record batches.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Literal, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import ConfigError

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")


@dataclass(frozen=True)
class QueryResult:
    """A query's result: its ``schema`` and its record ``batches`` (read once; a DuckDB
    error while they stream raises :class:`ConfigError`)."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


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
