"""Schema resolution, writer -> reader ``CallEvent``, on Arrow columns (both paths).

Fields are matched by name (or reader alias); a field missing from the writer takes
the reader default (null if the reader has no default, which the core reports as
MISSING_FIELD); writer fields the reader does not know are dropped; ``int``
promotes to ``long``; a writer ``timestamp-millis`` or ``-nanos`` is converted to
microseconds (a plain ``long`` is taken as micros); a null in a writer union for a
reader field that is not nullable passes through as null (MISSING_FIELD in the
core); an enum symbol the reader does not know passes through as a string
(INVALID_VALUE in the core, R1). A field whose writer type cannot be resolved to
the reader type (:func:`resolve` raises ValueError) makes every datum of that writer
schema a ``DECODE_ERROR`` dead letter.

The decoders produce *writer-shaped* tables: one column per writer field the reader
uses (:attr:`Resolution.needed`), typed by :data:`WRITER_ARROW`, enums as their
symbol strings; :func:`project` turns them into the call-event columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.avro.types import AvroField, AvroType, Schema, compile_schema
from pipeline.avro.varint import BOOL
from pipeline.errors import ConfigError
from pipeline.rating.columns import CALL_EVENT_FIELDS

_READER_KINDS = {"string", "int", "long", "enum"}
#: Writer-shaped Arrow type of each writer kind (enums as their symbol strings).
WRITER_ARROW = {
    "string": pa.large_string(),
    "enum": pa.large_string(),
    "int": pa.int32(),
    "long": pa.int64(),
}
_TS_TO_MICROS = {None: 1, "timestamp-micros": 1, "timestamp-millis": 1000, "timestamp-nanos": -1000}
_PROMOTABLE = {"string": {"string"}, "int": {"int"}, "long": {"int", "long"}, "enum": {"enum"}}


@dataclass(frozen=True)
class Column:
    """How one call-event column is filled from a writer record."""

    name: str
    arrow_type: pa.DataType
    source: str | None = None  # writer field; None -> ``default``
    default: Any = None
    scale: int = 1  # timestamps: > 0 multiply, < 0 divide (floor) to get micros


@dataclass
class Resolution:
    """How the records of one writer schema become call-event columns."""

    columns: tuple[Column, ...] = ()
    needed: dict[str, AvroType] = field(default_factory=dict)  # writer field -> base type
    symbols: dict[str, pa.Array] = field(default_factory=dict)  # enum field -> its symbols
    reader_symbols: dict[str, pa.Array] = field(default_factory=dict)  # reader enum columns


def _reader_columns(reader: Schema) -> list[tuple[pa.Field, AvroField | None, AvroType | None]]:
    t = compile_schema(reader)
    if t.kind != "record":
        raise ConfigError("the reader schema must be a record")
    by_name = {f.name: f for f in t.fields}
    out: list[tuple[pa.Field, AvroField | None, AvroType | None]] = []
    for col in CALL_EVENT_FIELDS:
        rf = by_name.get(col.name)
        if rf is None:
            out.append((col, None, None))
            continue
        _, bases = rf.type.non_null()
        if len(bases) != 1 or bases[0].kind not in _READER_KINDS:
            raise ConfigError(f"reader field {col.name!r}: unsupported type for {col.type}")
        out.append((col, rf, bases[0]))
    return out


def unknown_symbols(res: Resolution, events: pa.Table) -> BOOL:
    """Rows of call-event columns holding an enum symbol the reader does not know
    (passed through by :func:`project`; the core dead-letters them INVALID_VALUE)."""
    bad = np.zeros(events.num_rows, dtype=np.bool_)
    for name, symbols in res.reader_symbols.items():
        col = events.column(name)
        known = pc.or_kleene(pc.is_null(col), pc.is_in(col, value_set=symbols.cast(col.type)))
        bad |= ~np.asarray(known.to_numpy(zero_copy_only=False), dtype=np.bool_)
    return bad


def _resolve_column(
    col: pa.Field, rf: AvroField | None, rbase: AvroType | None, writer: AvroType
) -> tuple[Column, AvroType | None]:
    """How to fill ``col``; raises ValueError when the writer field cannot resolve."""
    if rf is None or rbase is None:
        return Column(col.name, col.type), None
    names = (rf.name, *rf.aliases)
    wf = next((f for name in names for f in writer.fields if f.name == name), None)
    if wf is None:
        default = rf.default if rf.has_default else None
        if default is not None and rbase.kind == "long" and rbase.logical == "timestamp-micros":
            default = pa.scalar(int(default), pa.int64()).cast(col.type).as_py()
        return Column(col.name, col.type, default=default), None
    _, wbases = wf.type.non_null()
    if not wbases:  # a null-only writer type
        return Column(col.name, col.type), None
    if len(wbases) > 1:
        raise ValueError(f"field {rf.name!r}: a writer union of several types is not supported")
    wbase = wbases[0]
    if wbase.kind not in _PROMOTABLE[rbase.kind]:
        raise ValueError(f"field {rf.name!r}: writer {wbase.kind} cannot be read as {rbase.kind}")
    scale = 1
    if rbase.logical == "timestamp-micros":
        if wbase.logical not in _TS_TO_MICROS:
            raise ValueError(f"field {rf.name!r}: writer {wbase.logical} is not a UTC timestamp")
        scale = _TS_TO_MICROS[wbase.logical]
    return Column(col.name, col.type, source=wf.name, scale=scale), wbase


def resolve(writer: AvroType, reader: Schema) -> Resolution:
    """The resolution of ``writer`` (a compiled record) against the ``reader`` schema.

    ValueError: a field cannot be resolved; ConfigError: the reader is unusable.
    """
    if writer.kind != "record":
        raise ValueError("the writer schema is not a record")
    out = Resolution()
    columns: list[Column] = []
    for col, rf, rbase in _reader_columns(reader):
        if rbase is not None and rbase.kind == "enum":
            out.reader_symbols[col.name] = pa.array(rbase.symbols, pa.string())
        column, wbase = _resolve_column(col, rf, rbase, writer)
        columns.append(column)
        if column.source is not None and wbase is not None:
            out.needed[column.source] = wbase
    out.columns = tuple(columns)
    out.symbols = {
        name: pa.array(t.symbols, pa.large_string())
        for name, t in out.needed.items()
        if t.kind == "enum"
    }
    return out


def writer_table(res: Resolution, records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The writer-shaped table of fastavro records (decoded without logical types)."""
    return pa.table(
        [
            pa.array([r.get(name) for r in records], type=WRITER_ARROW[t.kind])
            for name, t in res.needed.items()
        ],
        names=list(res.needed),
    )


def project(res: Resolution, table: pa.Table) -> tuple[pa.Table, dict[int, str]]:
    """Writer-shaped rows -> the call-event columns (reader resolution).

    Also returns row -> detail for rows that cannot be represented (a timestamp out
    of range): those are ``DECODE_ERROR`` dead letters.
    """
    n = table.num_rows
    arrays = []
    dead: dict[int, str] = {}
    for column in res.columns:
        if column.source is None:
            if column.default is None:
                arrays.append(pa.nulls(n, column.arrow_type))
            else:
                scalar = pa.scalar(column.default, column.arrow_type)
                arrays.append(pc.fill_null(pa.nulls(n, column.arrow_type), scalar))
            continue
        values = table.column(column.source)
        if pa.types.is_timestamp(column.arrow_type):
            values, bad = _to_micros(values, column.scale)
            for i in np.flatnonzero(bad).tolist():
                dead[i] = f"{column.name} is out of the timestamp range"
        arrays.append(values.cast(column.arrow_type))
    schema = pa.schema(list(CALL_EVENT_FIELDS))
    return pa.Table.from_arrays(arrays, schema=schema), dead


def _to_micros(values: pa.ChunkedArray | pa.Array, scale: int) -> tuple[pa.Array, BOOL]:
    values = values.cast(pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if scale == 1:
        return values, np.zeros(len(values), dtype=np.bool_)
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    raw = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if scale > 0:
        limit = np.iinfo(np.int64).max // scale
        bad = valid & (np.abs(raw) > limit)
        micros = np.where(bad, 0, raw) * scale
    else:
        bad = np.zeros(len(raw), dtype=np.bool_)
        micros = np.floor_divide(raw, -scale)
    return pa.array(micros, pa.int64(), mask=~valid), bad
