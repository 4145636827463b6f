"""Kafka wire format (spec section 1): Confluent framing around Avro binary datums.

A message value is ``0x00`` (magic byte), a 4-byte big-endian schema id, then the
Avro binary datum of one ``CallEvent``; the message key is the call_id. Schema ids
resolve through :mod:`pipeline.io.registry`; the Avro codec itself is
:mod:`pipeline.avro`, shared with the batch file reader.

Decoding a batch (:func:`decode_batch`)
---------------------------------------
Every message ends as exactly one event row or one dead letter (R1); a bad message
never spoils the rest of its batch. Dead-letter reasons chosen here:

* ``BAD_MAGIC_BYTE`` -- not the Confluent framing: null value (tombstone), empty
  value, fewer than 5 bytes, or byte 0 is not ``0x00``.
* ``UNKNOWN_SCHEMA_ID`` -- framing fine, the resolver does not know the id.
* ``DECODE_ERROR`` -- framing and id fine but the datum is not a record of the
  writer schema (empty, truncated, random bytes, bytes left over after the record,
  invalid UTF-8, out-of-range union/enum index, an ``int`` beyond 32 bits...), or
  the writer schema cannot be resolved against the reader schema (e.g. a field
  changed type).

Decoded values that violate the semantics (negative duration, an enum symbol the
reader does not know, missing required value) are passed on: the rating core
dead-letters them (R1). The batch file reader gives every datum the same answer.

Events carry ``payload`` = the raw message value on every row, because the core
may still dead-letter an event (e.g. unknown account) and needs the raw bytes.

Columnar fast path. The messages of a batch are grouped by writer schema id; each
group is checked by the vectorized structural scan (:mod:`pipeline.avro.scan`: the
structure of each datum, and UTF-8 of the strings the reader uses), and the messages
that pass are concatenated into ONE in-memory Avro block read by
``polars.read_avro`` (``benchmarks/bench_decode.py``: about 7x the records/s of
fastavro per message, end to end). Rejected datums go to ``fastavro`` one by one,
the authority for what is good (and for the error message of a dead letter), except
those whose only fault is invalid UTF-8: fastavro would stop at the same first
invalid string with the same ``UnicodeDecodeError``, which the scan already has. A
block polars still fails on is bisected (:mod:`pipeline.avro.decode`), a fallback
that the scan leaves for what it does not know of: before the scan checked UTF-8,
one invalid string per block sent the whole block through bisection to fastavro,
and garbage traffic took three quarters of the capacity (issue 11).
Writer schemas polars cannot read (arrays, maps, unions other than ``[null, T]``,
recursive types...) are decoded with ``fastavro`` per message: correct, slower.
Schema resolution (writer -> reader ``CallEvent``) is
:mod:`pipeline.avro.resolution`, identical for both decoders and both paths.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.avro.decode import Plan, describe, fastavro_rows, plan_for
from pipeline.avro.decode import columnar as decode_columnar
from pipeline.avro.encode import encode_datums
from pipeline.avro.resolution import project
from pipeline.avro.scan import PADDING, scan_datums
from pipeline.avro.schemas import encode_datum
from pipeline.avro.types import MAX_DETAIL, Schema, schema_json
from pipeline.avro.varint import I64, zigzag_varint
from pipeline.errors import DataError
from pipeline.io.registry import (
    CALL_EVENT_SCHEMA_ID,
    SHIPPED_SCHEMA_FILES,
    RegistrySchemas,
    SchemaRegistryError,
    SchemaResolver,
    ShippedSchemas,
    UnknownSchemaIdError,
    call_event_schema,
    value_subject,
)
from pipeline.rating.codes import Reason
from pipeline.rating.columns import CALL_EVENT_FIELDS, DEAD_LETTER_SCHEMA, EVENT_SCHEMA

__all__ = [
    "CALL_EVENT_SCHEMA_ID",
    "HEADER_SIZE",
    "MAGIC_BYTE",
    "SHIPPED_SCHEMA_FILES",
    "KafkaMessage",
    "KafkaSources",
    "RegistrySchemas",
    "SchemaRegistryError",
    "SchemaResolver",
    "ShippedSchemas",
    "UnknownSchemaIdError",
    "call_event_schema",
    "columnar_decodable",
    "decode_batch",
    "decode_messages",
    "encode",
    "encode_table",
    "schema_json",
    "value_subject",
    "wire_header",
    "zigzag_varint",
]

log = logging.getLogger(__name__)

MAGIC_BYTE = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**31 - 1


def columnar_decodable(writer_schema: Schema, reader_schema: Schema | None = None) -> bool:
    """Whether :func:`decode_batch` uses the columnar path for this writer schema."""
    reader = reader_schema if reader_schema is not None else call_event_schema()
    plan = plan_for(writer_schema, reader, "(asked)")
    return plan.error is None and plan.columnar


# ------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class KafkaSources:
    """Where each message of a batch came from (parallel to the values)."""

    topics: str | Sequence[str]  # one topic for the whole batch, or one per message
    partitions: Sequence[int] | npt.NDArray[np.integer[Any]]
    offsets: Sequence[int] | npt.NDArray[np.integer[Any]]

    def arrays(self, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
        if isinstance(self.topics, str):
            topics = pc.fill_null(pa.nulls(n, pa.string()), self.topics)
        else:
            topics = pa.array(self.topics, pa.string())
        partitions = pa.array(self.partitions, pa.int32())
        offsets = pa.array(self.offsets, pa.int64())
        if not len(topics) == len(partitions) == len(offsets) == n:
            raise ValueError(f"sources do not match the {n} message values")
        return topics, partitions, offsets


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` used here."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


@dataclass
class _Outcome:
    pieces: list[tuple[I64, pa.Table]] = field(default_factory=list)
    dead_rows: list[int] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    dead_details: list[str] = field(default_factory=list)
    dead_ids: dict[int, tuple[str | None, int | None]] = field(default_factory=dict)

    def dead(self, rows: Sequence[int] | I64, reason: str, detail: str) -> None:
        rows = rows.tolist() if isinstance(rows, np.ndarray) else [int(r) for r in rows]
        self.dead_rows.extend(rows)
        self.dead_reasons.extend([str(reason)] * len(rows))
        self.dead_details.extend([detail[:MAX_DETAIL]] * len(rows))

    def dead_each(self, rows: list[int], reason: str, details: list[str]) -> None:
        """One dead letter per row, each with its own detail."""
        self.dead_rows.extend(rows)
        self.dead_reasons.extend([str(reason)] * len(rows))
        self.dead_details.extend([d[:MAX_DETAIL] for d in details])


def decode_messages(
    messages: Sequence[KafkaMessage],
    resolver: SchemaResolver,
    reader_schema: Schema | None = None,
    *,
    columnar: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """:func:`decode_batch` over consumed ``confluent_kafka`` messages (without errors)."""
    sources = KafkaSources(
        [m.topic() or "" for m in messages],
        [m.partition() or 0 for m in messages],
        [m.offset() or 0 for m in messages],
    )
    return decode_batch(
        [m.value() for m in messages],
        sources,
        resolver,
        reader_schema,
        keys=[m.key() for m in messages],
        columnar=columnar,
    )


def decode_batch(
    values: Sequence[bytes | None],
    sources: KafkaSources,
    resolver: SchemaResolver,
    reader_schema: Schema | None = None,
    *,
    keys: Sequence[bytes | str | None] | None = None,
    columnar: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """Decode wire-format message values into (events, dead letters).

    ``events`` follows :data:`EVENT_SCHEMA` (source_topic/partition/offset filled,
    ``payload`` = the raw value) in input order; ``dead letters`` follows
    :data:`DEAD_LETTER_SCHEMA`, one row per bad message, in input order. ``keys``
    (the message keys, i.e. call ids) name the call in dead letters of messages
    whose datum could not be read. ``columnar=False`` decodes every message with
    fastavro (the reference path; same result, slower). Bad messages never raise;
    :class:`~pipeline.errors.InfrastructureError` means the resolver could not answer
    (retry the batch), :class:`~pipeline.errors.ConfigError` a misconfiguration.
    """
    n = len(values)
    reader = reader_schema if reader_schema is not None else call_event_schema()
    topics, partitions, offsets = sources.arrays(n)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} message values")

    try:
        lengths = np.fromiter(map(len, values), np.int64, n)  # type: ignore[arg-type]
    except TypeError:  # a None (tombstone) among the values
        lengths = np.fromiter((-1 if v is None else len(v) for v in values), np.int64, n)
    joined = b"".join([v for v in values if v is not None])
    buf = np.frombuffer(joined + bytes(PADDING), dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(np.maximum(lengths, 0)[:-1], out=starts[1:])
    ends = starts + np.maximum(lengths, 0)

    out = _Outcome()
    framed = lengths >= HEADER_SIZE
    magic = np.where(lengths >= 1, buf[np.minimum(starts, len(buf) - 1)], -1)
    unframed = np.flatnonzero(~framed | (magic != MAGIC_BYTE))
    if unframed.size:
        problems = [
            _framing_problem(length, byte)
            for length, byte in zip(
                lengths[unframed].tolist(), magic[unframed].tolist(), strict=True
            )
        ]
        out.dead_each(unframed.tolist(), Reason.BAD_MAGIC_BYTE, problems)
    good = np.flatnonzero(framed & (magic == MAGIC_BYTE))
    head = starts[good]
    ids_u32 = (
        (buf[head + 1].astype(np.int64) << 24)
        | (buf[head + 2].astype(np.int64) << 16)
        | (buf[head + 3].astype(np.int64) << 8)
        | buf[head + 4].astype(np.int64)
    )
    ids = np.where(ids_u32 >= 2**31, ids_u32 - 2**32, ids_u32)

    for schema_id in np.unique(ids).tolist():
        rows = good[ids == schema_id]
        try:
            writer = resolver.writer_schema(int(schema_id))
        except DataError as exc:
            out.dead(rows, exc.reason, exc.detail)
            continue
        plan = plan_for(writer, reader, f"id {schema_id}")
        if plan.error:
            out.dead(rows, Reason.DECODE_ERROR, plan.error)
            continue
        d_starts, d_ends = starts[rows] + HEADER_SIZE, ends[rows]
        if columnar and plan.columnar:
            assert plan.record is not None
            utf8_errors: dict[int, UnicodeDecodeError] = {}
            ok = scan_datums(plan.record, buf, d_starts, d_ends, plan.utf8_fields, utf8_errors)
            settled = np.zeros(len(rows), dtype=np.bool_)
            if utf8_errors:  # fastavro fails on the same string with the same error
                local = np.fromiter(utf8_errors, np.int64, len(utf8_errors))
                details = [describe(exc) for exc in utf8_errors.values()]
                out.dead_each(rows[local].tolist(), Reason.DECODE_ERROR, details)
                settled[local] = True
            slow = rows[~ok & ~settled]
            blocks, failed = decode_columnar(plan, values, rows[ok], joined)
            for block_rows, table in blocks:
                _add(out, plan, block_rows, table)
            slow = np.sort(np.concatenate([slow, *failed])) if failed else slow
        else:
            slow = rows
        if slow.size:
            table, dead = fastavro_rows(plan, _datums(values, slow))
            if dead:
                local = np.fromiter(dead, np.int64, len(dead))
                out.dead_each(slow[local].tolist(), Reason.DECODE_ERROR, list(dead.values()))
                keep = np.ones(len(slow), dtype=np.bool_)
                keep[local] = False
                _add(out, plan, slow[keep], table)
            else:
                _add(out, plan, slow, table)

    return _assemble(out, n, values, keys, topics, partitions, offsets)


def _framing_problem(length: int, magic: int) -> str:
    if length < 0:
        return "null message value (tombstone): not the Confluent wire format"
    if length == 0:
        return "empty message value: not the Confluent wire format"
    if magic != MAGIC_BYTE:
        return f"magic byte 0x{magic:02x}, expected 0x00: not the Confluent wire format"
    return f"{length}-byte value is shorter than the 5-byte wire-format header"


def _datums(values: Sequence[bytes | None], rows: I64) -> list[bytes]:
    """The Avro datums (message values without their header) of ``rows``."""
    return [values[i][HEADER_SIZE:] for i in rows.tolist()]


def _add(out: _Outcome, plan: Plan, rows: I64, writer_table: pa.Table) -> None:
    if not len(rows):
        return
    if writer_table.num_columns == 0:
        writer_table = pa.table({"_": pa.nulls(len(rows))})
    projected, dead = project(plan.res, writer_table)
    if dead:
        bad = np.zeros(len(rows), dtype=np.bool_)
        for local, detail in dead.items():
            bad[local] = True
            out.dead([int(rows[local])], Reason.DECODE_ERROR, detail)
            call_id = projected.column("call_id")[local].as_py()
            revision = projected.column("revision")[local].as_py()
            out.dead_ids[int(rows[local])] = (call_id, revision)
        projected = projected.filter(pa.array(~bad))
        rows = rows[~bad]
    out.pieces.append((rows, projected))


def _key_text(key: bytes | str | None) -> str | None:
    if key is None or isinstance(key, str):
        return key
    try:
        return bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _assemble(
    out: _Outcome,
    n: int,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | str | None] | None,
    topics: pa.Array,
    partitions: pa.Array,
    offsets: pa.Array,
) -> tuple[pa.Table, pa.Table]:
    payload = pa.array(values, pa.binary())

    if out.pieces:
        order_rows = np.concatenate([rows for rows, _ in out.pieces])
        table = pa.concat_tables([t for _, t in out.pieces])
        order = np.argsort(order_rows, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            table = table.take(pa.array(order))
        rows = order_rows[order]
    else:
        table = pa.schema(list(CALL_EVENT_FIELDS)).empty_table()
        rows = np.zeros(0, dtype=np.int64)
    m = len(rows)
    everything = m == n  # rows are unique and sorted: all of them, in order

    def pick(array: pa.Array) -> pa.Array:
        return array if everything else array.take(pa.array(rows))

    events = pa.Table.from_arrays(
        [
            *table.columns,
            pick(topics),
            pick(partitions),
            pick(offsets),
            pa.nulls(m, pa.string()),
            pa.nulls(m, pa.int64()),
            pick(payload),
        ],
        schema=EVENT_SCHEMA,
    )

    order = np.argsort(np.array(out.dead_rows, dtype=np.int64), kind="stable")
    dead_rows = [out.dead_rows[i] for i in order]
    call_ids: list[str | None] = []
    revisions: list[int | None] = []
    for r in dead_rows:
        call_id, revision = out.dead_ids.get(r, (None, None))
        if call_id is None and keys is not None:
            call_id = _key_text(keys[r])
        call_ids.append(call_id)
        revisions.append(revision)
    taken = pa.array(dead_rows, pa.int64())
    k = len(dead_rows)
    dead_letters = pa.Table.from_arrays(
        [
            pa.array([out.dead_reasons[i] for i in order], pa.string()),
            pa.array([out.dead_details[i] for i in order], pa.string()),
            pa.array(call_ids, pa.string()),
            pa.array(revisions, pa.int32()),
            topics.take(taken),
            partitions.take(taken),
            offsets.take(taken),
            pa.nulls(k, pa.string()),
            pa.nulls(k, pa.int64()),
            payload.take(taken),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
    return events, dead_letters


# ------------------------------------------------------------------------ encoding


def wire_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header for ``schema_id``."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} out of range")
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")


def encode(record: Mapping[str, Any], schema_id: int, parsed_schema: Schema) -> bytes:
    """One record in the Confluent wire format (header + schemaless Avro datum)."""
    return wire_header(schema_id) + encode_datum(record, parsed_schema)


def encode_table(
    events: pa.Table, schema_id: int, parsed_schema: Schema | None = None
) -> list[bytes]:
    """Encode each row of ``events`` (e.g. EVENT_SCHEMA; extra columns ignored).

    ``parsed_schema`` defaults to the shipped ``CallEvent`` schema and must be the
    schema registered under ``schema_id``. Column-wise for flat schemas
    (:func:`pipeline.avro.encode.encode_datums`, which also says what raises).
    """
    schema = parsed_schema if parsed_schema is not None else call_event_schema()
    out: list[bytes] = []
    for chunk in encode_datums(events, schema, wire_header(schema_id)):
        out.extend(chunk.to_pylist())
    return out
