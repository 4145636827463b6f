"""Avro datums -> writer-shaped Arrow tables: polars columnar, fastavro the authority.

A :class:`Plan` is everything known about one (writer, reader) schema pair: the
resolution (:mod:`pipeline.avro.resolution`), the layout fastavro decodes with (raw
logical types; strings of fields the reader does not use are not UTF-8 checked),
and -- when :func:`~pipeline.avro.types.columnar_problem` allows it -- the container
headers polars reads. Before a writer schema is first decoded columnar, a few
generated records are decoded both ways; any difference (or a polars error) disables
the columnar path for that schema (logged once).

Streaming (:func:`columnar`): the datums of a batch, each a whole message value,
are one block of an in-memory container whose schema starts with a ``fixed(5)``
field that swallows the Confluent header (fields the reader does not use read as
bytes: not UTF-8 checked, as in fastavro's layout). The caller passes only datums
the structural scan accepted (UTF-8 of :attr:`Plan.utf8_fields` included), so polars
does not fail on them; a block it fails on all the same is bisected down to
:data:`BISECT_MIN` datums, which go to :func:`fastavro_rows`.

Batch (:func:`file_blocks`): the decompressed data of whole container blocks is one
polars block; the datum boundaries are estimated from what polars read
(:func:`~pipeline.avro.scan.record_sizes`) and checked with the structural scan. A
block whose datums do not all pass goes to :func:`fastavro_block`.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.avro.container import block, container_header
from pipeline.avro.resolution import WRITER_ARROW, Resolution, resolve, writer_table
from pipeline.avro.scan import PADDING, record_sizes, scan_datums
from pipeline.avro.types import (
    MAX_DETAIL,
    AvroType,
    Schema,
    columnar_problem,
    compile_schema,
    fastavro_layout,
    physical_schema,
    schema_json,
)
from pipeline.avro.varint import BOOL, I64

log = logging.getLogger(__name__)

#: Blocks that fail in polars are bisected down to this size, then go to fastavro.
BISECT_MIN = 32
#: Size of the Confluent wire header the streaming container swallows.
WIRE_HEADER_SIZE = 5
_WIRE_FIELD = "wire_header__"
_OBJECT_REPR = re.compile(r"\s*(from )?<[^<>]* at 0x[0-9a-fA-F]+>")


@dataclass
class Plan:
    """How datums of one writer schema are decoded for one reader schema."""

    hint: str
    error: str | None = None  # the writer cannot be resolved: every datum is DECODE_ERROR
    res: Resolution = field(default_factory=Resolution)
    fastavro_schema: Schema | None = None
    record: AvroType | None = None
    columnar: bool = False
    wire_header: bytes = b""  # container header of message values (null codec)
    file_header: bytes = b""  # container header of raw datums, all fields (null codec)
    sync: bytes = b""
    #: Top-level writer fields whose strings must be valid UTF-8 (those the reader uses;
    #: fastavro and polars read the others as bytes).
    utf8_fields: frozenset[str] = frozenset()


_PLANS: dict[tuple[str, str], Plan] = {}
_PLANS_LOCK = threading.Lock()


def plan_for(writer: Schema, reader: Schema, hint: str) -> Plan:
    """The (cached) plan of ``writer`` against ``reader``; ``hint`` names it in logs."""
    key = (schema_json(writer), schema_json(reader))
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
    if plan is None:
        plan = _build_plan(writer, reader, hint)
        with _PLANS_LOCK:
            if len(_PLANS) > 256:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _build_plan(writer: Schema, reader: Schema, hint: str) -> Plan:
    plan = Plan(hint)
    try:
        wtype = compile_schema(writer)
        plan.res = resolve(wtype, reader)
        plan.fastavro_schema = fastavro_layout(writer, set(plan.res.needed))
    except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException) as exc:
        plan.error = f"writer schema {hint} cannot be read as CallEvent: {exc}"[:MAX_DETAIL]
        return plan
    plan.record = wtype
    plan.utf8_fields = frozenset(plan.res.needed)
    problem = columnar_problem(wtype)
    if problem is None:
        plan.sync = os.urandom(16)
        unused = frozenset(f.name for f in wtype.fields) - set(plan.res.needed)
        physical = physical_schema(wtype, unused)
        plan.file_header = container_header(physical, "null", plan.sync)
        # The 5-byte wire header is read as a leading fixed field: a block body is then
        # simply the concatenation of the message values.
        header_type = {"type": "fixed", "name": _WIRE_FIELD, "size": WIRE_HEADER_SIZE}
        wire = physical_schema(wtype, unused)
        wire["fields"].insert(0, {"name": _WIRE_FIELD, "type": header_type})
        plan.wire_header = container_header(wire, "null", plan.sync)
        plan.columnar = True
        problem = _probe(plan)
        plan.columnar = problem is None
    if problem:
        log.warning(
            "writer schema %s: columnar decode unavailable (%s); per message", hint, problem
        )
    return plan


def _probe(plan: Plan) -> str | None:
    """Decode generated records both ways; a difference disables the columnar path."""
    from fastavro.utils import generate_many

    assert plan.fastavro_schema is not None
    assert plan.record is not None
    state = random.getstate()  # fastavro's generator draws from the global random module
    try:
        datums = []
        for record in generate_many(plan.fastavro_schema, 8):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, plan.fastavro_schema, record)
            datums.append(out.getvalue())
        lengths = np.array([len(d) for d in datums], dtype=np.int64)
        ends = np.cumsum(lengths)
        arr = np.frombuffer(b"".join(datums) + bytes(PADDING), dtype=np.uint8)
        if not scan_datums(plan.record, arr, ends - lengths, ends, plan.utf8_fields).all():
            return "the structural scan rejects valid datums"
        header = b"\x00" * WIRE_HEADER_SIZE
        fast = polars_block(plan, b"".join(header + d for d in datums), len(datums))
        slow, dead = fastavro_rows(plan, datums)
        if dead or not fast.equals(slow):
            return "polars and fastavro disagree on sample records"
        table, ok = file_blocks(plan, [b"".join(datums)], [len(datums)])
        if not ok.all() or not table.equals(slow):
            return "polars and fastavro disagree on a sample block"
    except Exception as exc:  # polars cannot read this layout: fall back
        return f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]
    except BaseException as exc:  # pyo3 PanicException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"polars panicked: {exc}"[:MAX_DETAIL]
    finally:
        random.setstate(state)
    return None


def _writer_shaped(plan: Plan, table: pa.Table) -> pa.Table:
    """Polars' physical columns -> the writer-shaped table (enums as symbols)."""
    if not plan.res.needed:
        return pa.table({})
    columns = []
    for name, t in plan.res.needed.items():
        col = table.column(name)
        if t.kind == "enum":
            col = pc.take(plan.res.symbols[name], col)
        columns.append(col.cast(WRITER_ARROW[t.kind]))
    return pa.table(columns, names=list(plan.res.needed))


def polars_block(plan: Plan, body: bytes, count: int) -> pa.Table:
    """The writer-shaped table of ``count`` concatenated message values, read by polars."""
    container = plan.wire_header + block(count, body, plan.sync)
    frame = pl.read_avro(io.BytesIO(container), columns=list(plan.res.needed) or [_WIRE_FIELD])
    if frame.height != count:
        raise ValueError(f"block of {count} datums decoded as {frame.height} records")
    return _writer_shaped(plan, frame.to_arrow())


def columnar(
    plan: Plan, values: Sequence[bytes | None], rows: I64, whole: bytes
) -> tuple[list[tuple[I64, pa.Table]], list[I64]]:
    """Decode message values ``rows`` with polars, bisecting failed blocks; small failed
    blocks are returned. ``whole`` is all of ``values`` joined (used when ``rows`` is all)."""
    done: list[tuple[I64, pa.Table]] = []
    failed: list[I64] = []
    pending = [rows] if rows.size else []
    while pending:
        part = pending.pop()
        try:
            body = (
                whole if len(part) == len(values) else b"".join([values[i] for i in part.tolist()])
            )
            done.append((part, polars_block(plan, body, len(part))))
            continue
        except Exception as exc:
            problem: BaseException = exc
        except BaseException as exc:  # pyo3 PanicException derives from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            problem = exc
        log.debug("polars failed on a block of %d datums (%s)", len(part), type(problem).__name__)
        if len(part) <= BISECT_MIN:
            failed.append(part)
        else:
            half = len(part) // 2
            pending += [part[half:], part[:half]]
    return done, failed


def file_blocks(plan: Plan, datas: Sequence[bytes], counts: Sequence[int]) -> tuple[pa.Table, BOOL]:
    """Decode the (decompressed) data of container blocks with polars, in one go.

    Returns the writer-shaped table of all records and, per block, whether every
    record of it passed the structural scan at the boundaries estimated from the
    decoded values; the rows of a failed block must be decoded by
    :func:`fastavro_block` instead. Raises whatever polars raises.
    """
    total = int(sum(counts))
    body = b"".join(datas)
    container = plan.file_header + block(total, body, plan.sync)
    frame = pl.read_avro(io.BytesIO(container))
    if frame.height != total:
        raise ValueError(f"blocks of {total} records decoded as {frame.height}")
    table = frame.to_arrow()
    assert plan.record is not None
    sizes = record_sizes(plan.record, table)
    n_blocks = len(counts)
    count_arr = np.asarray(counts, dtype=np.int64)
    data_len = np.array([len(d) for d in datas], dtype=np.int64)
    data_start = np.cumsum(data_len) - data_len
    row_end = np.cumsum(count_arr)  # one past each block's last row
    csum = np.cumsum(sizes)
    before = np.where(row_end - count_arr > 0, csum[np.maximum(row_end - count_arr - 1, 0)], 0)
    block_of_row = np.repeat(np.arange(n_blocks), count_arr)
    limit = (data_start + data_len)[block_of_row]
    ends = np.minimum(csum - before[block_of_row] + data_start[block_of_row], limit)
    starts = np.minimum(ends - sizes, ends)
    starts = np.maximum(starts, data_start[block_of_row])
    buf = np.frombuffer(body + bytes(PADDING), dtype=np.uint8)
    row_ok = scan_datums(plan.record, buf, starts, ends)
    ok = np.ones(n_blocks, dtype=np.bool_)
    bad_blocks = np.unique(block_of_row[~row_ok])
    ok[bad_blocks] = False
    last = ends[np.maximum(row_end - 1, 0)] if total else np.zeros(n_blocks, np.int64)
    ok &= (count_arr > 0) & (last == data_start + data_len)
    return _writer_shaped(plan, table), ok


def describe(exc: BaseException) -> str:
    """The dead-letter detail of a datum fastavro refused (no object addresses)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if " at 0x" in text:  # fastavro names the stream object: not stable
        text = _OBJECT_REPR.sub("", text)
    return f"Avro datum does not decode: {text}"[:MAX_DETAIL]


_ARROW_REFUSES = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)
OUT_OF_RANGE = "a value is out of range for its Avro type"


def _table_of(
    plan: Plan, records: Sequence[dict[str, Any] | None], dead: dict[int, str]
) -> pa.Table:
    """Writer-shaped table of the decoded records; a value Arrow refuses (e.g. an int
    beyond 32 bits) makes its record dead (``dead`` is updated)."""
    good = [r for r in records if r is not None]
    try:
        return writer_table(plan.res, good)
    except _ARROW_REFUSES:
        kept: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            if record is None:
                continue
            try:
                writer_table(plan.res, [record])
                kept.append(record)
            except _ARROW_REFUSES:
                dead[i] = OUT_OF_RANGE
        return writer_table(plan.res, kept)


def fastavro_rows(plan: Plan, datums: Sequence[bytes]) -> tuple[pa.Table, dict[int, str]]:
    """Decode whole datums one by one (the authority); failures map index -> detail."""
    assert plan.fastavro_schema is not None
    records: list[dict[str, Any] | None] = []
    dead: dict[int, str] = {}
    for i, datum in enumerate(datums):
        stream = io.BytesIO(datum)
        try:
            record = fastavro.schemaless_reader(stream, plan.fastavro_schema, None)
            left = len(datum) - stream.tell()
            if left:
                raise ValueError(f"{left} trailing byte(s) after the record")
            if not isinstance(record, dict):
                raise TypeError("the datum is not a record")
            records.append(record)
        except Exception as exc:
            dead[i] = describe(exc)
            records.append(None)
    return _table_of(plan, records, dead), dead


@dataclass
class BlockRecords:
    """What fastavro made of one block's (decompressed) data."""

    table: pa.Table  # writer-shaped rows of the good records, in order
    good: list[int]  # their indexes in the block
    spans: list[tuple[int, int]]  # byte range of every decoded record in the data
    dead: dict[int, str]  # decoded records whose values Arrow refuses: index -> detail
    stop: int  # records from here on do not decode (== count: all decoded)
    error: str | None  # why decoding stopped at ``stop``


def fastavro_block(plan: Plan, raw: bytes, count: int) -> BlockRecords:
    """Decode the ``count`` records of a block's data one by one (the authority).

    Decoding stops at the first record that is not a record of the writer schema;
    bytes left after the last record make that record undecodable too (its datum
    is not a record followed by nothing), as a garbage tail does on the wire.
    """
    assert plan.fastavro_schema is not None
    stream = io.BytesIO(raw)
    records: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    error = None
    for _ in range(count):
        start = stream.tell()
        try:
            record = fastavro.schemaless_reader(stream, plan.fastavro_schema, None)
            if not isinstance(record, dict):
                raise TypeError("the datum is not a record")
        except Exception as exc:
            error = describe(exc)
            break
        records.append(record)
        spans.append((start, stream.tell()))
    if error is None and stream.tell() < len(raw) and records:
        left = len(raw) - stream.tell()
        records.pop()
        spans.pop()
        error = f"Avro datum does not decode: {left} trailing byte(s) after the last record"
    return block_records(plan, records, spans, error)


def block_records(
    plan: Plan,
    records: list[dict[str, Any]],
    spans: list[tuple[int, int]],
    error: str | None,
) -> BlockRecords:
    """:class:`BlockRecords` of records decoded (with the plan's layout) from a block."""
    dead: dict[int, str] = {}
    table = _table_of(plan, list(records), dead)
    good = [i for i in range(len(records)) if i not in dead]
    return BlockRecords(table, good, spans, dead, len(records), error)
