"""Arrow tables -> Avro binary datums, column-wise (the one encoder of the pipeline).

Flat record schemas (strings, ints, longs, enums, ``[null, T]`` unions of those) are
encoded with Arrow and numpy, byte for byte what fastavro writes (the tests compare
the two); other schemas are encoded row by row with fastavro. A column missing from
the table takes the field default; ValueError if it has none, or if a required value
is null or an enum value is not a symbol (the message names row and field, never
the value: CDRs are CPNI).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.avro.types import AvroField, AvroType, Schema, compile_schema, schema_json
from pipeline.avro.varint import BOOL, varint_array, zigzag_varint

_Encoder = Callable[[pa.RecordBatch, bytes], pa.Array]
_ENCODERS: dict[str, _Encoder | None] = {}
_ENCODABLE = {"string", "int", "long", "enum"}
#: Rows per Arrow batch (bounds the memory of one join).
_CHUNK = 1 << 18


def encode_datums(table: pa.Table, schema: Schema, prefix: bytes = b"") -> list[pa.Array]:
    """The datums of every row of ``table`` under ``schema`` (fastavro-parsed), each
    preceded by ``prefix``, as ``large_binary`` arrays (one per chunk of rows, in order).

    Extra columns are ignored. Raises ValueError as described in the module doc.
    """
    key = schema_json(schema)
    if key not in _ENCODERS:
        _ENCODERS[key] = _column_encoder(compile_schema(schema))
    encoder = _ENCODERS[key]
    if encoder is None:
        return [_encode_rows(table, prefix, schema)]
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()  # small chunks would cost per-batch overhead
    out: list[pa.Array] = []
    done = 0
    for batch in table.to_batches(max_chunksize=_CHUNK):
        try:
            out.append(encoder(batch, prefix))
        except _RowError as exc:
            raise ValueError(f"row {done + exc.row}: {exc.problem}") from None
        done += batch.num_rows
    return out


class _RowError(ValueError):
    def __init__(self, row: int, problem: str) -> None:
        super().__init__(f"row {row}: {problem}")
        self.row = row
        self.problem = problem


def _encode_rows(table: pa.Table, prefix: bytes, schema: Schema) -> pa.Array:
    names = [c for c in (f["name"] for f in schema["fields"]) if c in table.column_names]
    out = []
    for row in table.select(names).to_pylist():
        buf = io.BytesIO()
        buf.write(prefix)
        fastavro.schemaless_writer(buf, schema, row)
        out.append(buf.getvalue())
    return pa.array(out, pa.large_binary())


def _column_encoder(record: AvroType) -> _Encoder | None:
    if record.kind != "record":
        return None
    for f in record.fields:
        nullable, bases = f.type.non_null()
        ok_union = f.type.kind != "union" or (len(f.type.branches) == 2 and nullable)
        if not ok_union or len(bases) != 1 or bases[0].kind not in _ENCODABLE:
            return None

    def encode_batch(batch: pa.RecordBatch, prefix: bytes) -> pa.Array:
        n = batch.num_rows
        parts = [pa.scalar(prefix, pa.large_binary())]
        for f in record.fields:
            parts.append(_encode_field(f, batch, n))
        parts.append(pa.scalar(b"", pa.large_binary()))
        return pc.binary_join_element_wise(*parts)

    return encode_batch


def _encode_field(f: AvroField, batch: pa.RecordBatch, n: int) -> pa.Array:
    nullable, (base,) = f.type.non_null()
    if f.name in batch.schema.names:
        column = batch.column(f.name)
    elif f.has_default:
        column = pa.array([f.default] * n)
    else:
        raise ValueError(f"column {f.name!r} is missing and has no default")
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not nullable and not valid.all():
        raise _RowError(int(np.argmin(valid)), f"field {f.name!r} is null")
    encoded = _encode_values(f.name, base, column, valid)
    if f.type.kind != "union":
        return encoded
    null_index = next(i for i, b in enumerate(f.type.branches) if b.kind == "null")
    prefix = pa.scalar(zigzag_varint(1 - null_index), pa.large_binary())
    empty = pa.scalar(b"", pa.large_binary())
    with_branch = pc.binary_join_element_wise(prefix, encoded, empty)
    return pc.if_else(
        pa.array(valid), with_branch, pa.scalar(zigzag_varint(null_index), pa.large_binary())
    )


def _encode_values(name: str, base: AvroType, column: pa.Array, valid: BOOL) -> pa.Array:
    if base.kind == "string":
        data = column.cast(pa.large_string()).cast(pa.large_binary())
        lengths = pc.binary_length(data).fill_null(0).to_numpy(zero_copy_only=False)
        empty = pa.scalar(b"", pa.large_binary())
        return pc.binary_join_element_wise(
            varint_array(np.asarray(lengths, np.int64)), data.fill_null(b""), empty
        )
    if base.kind == "enum":
        index = pc.index_in(column.cast(pa.string()), value_set=pa.array(base.symbols, pa.string()))
        unknown = valid & ~np.asarray(index.is_valid().to_numpy(zero_copy_only=False), np.bool_)
        if unknown.any():
            raise _RowError(
                int(np.argmax(unknown)), f"field {name!r} is not a symbol of {base.name}"
            )
        raw = np.asarray(index.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        return varint_array(raw)
    try:
        if pa.types.is_timestamp(column.type):
            unit = {"timestamp-millis": "ms", "timestamp-nanos": "ns"}.get(base.logical or "", "us")
            column = column.cast(pa.timestamp(unit, "UTC"))
        ints = column.cast(pa.int32() if base.kind == "int" else pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # No chained exception: Arrow's message would carry the value.
        raise ValueError(f"field {name!r}: a value does not fit Avro {base.kind}") from None
    raw = np.asarray(ints.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    return varint_array(raw)
