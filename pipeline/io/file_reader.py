"""Decoding the blocks of one Avro container file of ``CallEvent`` into batches.

:class:`FileReader` groups well-framed blocks, decodes groups with polars on worker
threads (:func:`pipeline.avro.decode.file_blocks`), sends blocks that fail the
structural scan to fastavro, salvages stretches with broken framing and turns every
record into an event or a dead letter. The contract (what becomes which dead
letter) is in :mod:`pipeline.io.avro_files`, the entry point.
"""

from __future__ import annotations

import logging
import mmap
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.avro.container import (
    Block,
    Decoded,
    Header,
    decompress,
    describe,
    plausible_count,
    read_block_records,
    salvage_records,
    scan_blocks,
)
from pipeline.avro.decode import BlockRecords, Plan, block_records, fastavro_block, file_blocks
from pipeline.avro.resolution import project, unknown_symbols
from pipeline.avro.varint import BOOL, I64
from pipeline.rating.codes import Reason
from pipeline.rating.columns import DEAD_LETTER_SCHEMA, EVENT_SCHEMA

log = logging.getLogger(f"cdr_pipeline.{__name__.removeprefix('pipeline.')}")

#: Largest payload of one dead letter; longer unreadable stretches are split.
MAX_DEAD_LETTER_PAYLOAD = 64 << 20

_Result = tuple[pa.Table, BOOL, list[bytes]]


@dataclass(frozen=True)
class EventBatch:
    """Decoded events of consecutive blocks and the dead letters found on the way.

    ``events`` has :data:`EVENT_SCHEMA`, ``dead_letters`` :data:`DEAD_LETTER_SCHEMA`;
    either may be empty. Batches come in file order.
    """

    events: pa.Table
    dead_letters: pa.Table


# --------------------------------------------------------------------------- dead letters


def _dead_letter(
    source_file: str,
    index: int | None,
    detail: str,
    payload: bytes | None,
    call_id: str | None = None,
    revision: int | None = None,
) -> dict[str, Any]:
    return {
        "reason": Reason.DECODE_ERROR.value,
        "detail": detail,
        "call_id": call_id,
        "revision": revision,
        "source_topic": None,
        "source_partition": None,
        "source_offset": None,
        "source_file": source_file,
        "source_index": index,
        "payload": payload,
    }


def stretch_dead_letters(
    buf: bytes | mmap.mmap, start: int, end: int, index: int | None, source_file: str, detail: str
) -> list[dict[str, Any]]:
    """Dead letters carrying file bytes ``[start, end)``, split into 64 MiB parts."""
    parts = max(1, -(-(end - start) // MAX_DEAD_LETTER_PAYLOAD))
    rows = []
    for i in range(parts):
        a = start + i * MAX_DEAD_LETTER_PAYLOAD
        b = min(end, a + MAX_DEAD_LETTER_PAYLOAD)
        where = f"file bytes {a}-{b}" + (f", part {i + 1} of {parts}" if parts > 1 else "")
        rows.append(_dead_letter(source_file, index, f"{detail} [{where}]", bytes(buf[a:b])))
    return rows


def dead_letter_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    if not rows:
        return DEAD_LETTER_SCHEMA.empty_table()
    return pa.Table.from_pylist(list(rows), schema=DEAD_LETTER_SCHEMA)


# --------------------------------------------------------------------------- the reader


@dataclass
class FileReader:
    buf: bytes | mmap.mmap
    source_file: str
    header: Header
    plan: Plan
    batch_size: int
    workers: int
    use_polars: bool = True
    decoded_by_polars: int = 0
    decoded_by_fastavro: int = 0
    dead: int = 0

    def __post_init__(self) -> None:
        self.use_polars = self.use_polars and self.plan.columnar

    # -- decoding ---------------------------------------------------------------------

    def _data(self, block: Block) -> bytes:
        return bytes(self.buf[block.data_start : block.data_end])

    def _polars(self, group: Sequence[Block]) -> _Result:
        datas = []
        for block in group:
            raw = decompress(self.header.codec, self._data(block))
            if raw is None:
                raise ValueError(f"codec {self.header.codec} is decoded by fastavro")
            datas.append(raw)
        table, ok = file_blocks(self.plan, datas, [b.count for b in group])
        return table, ok, datas

    def _events(
        self, writer_table: pa.Table, indexes: I64, datum: Callable[[int], bytes | None]
    ) -> tuple[pa.Table, list[dict[str, Any]]]:
        """Resolve writer-shaped rows into EVENT_SCHEMA rows; ``datum(row)`` is the raw
        datum of a row (for rows that need a payload). Returns events, dead letters."""
        n = len(indexes)
        if writer_table.num_columns == 0:
            writer_table = pa.table({"_": pa.nulls(n)})
        calls, unfit = project(self.plan.res, writer_table)
        payloads: list[bytes | None] = [None] * n
        for row in np.flatnonzero(unknown_symbols(self.plan.res, calls)).tolist():
            payloads[row] = datum(row)  # the core dead-letters it: INVALID_VALUE
        dead: list[dict[str, Any]] = []
        if unfit:
            keep = np.ones(n, dtype=np.bool_)
            for row, detail in sorted(unfit.items()):
                keep[row] = False
                dead.append(
                    _dead_letter(
                        self.source_file,
                        int(indexes[row]),
                        f"{detail}; payload is the datum as in the file",
                        datum(row),
                        calls.column("call_id")[row].as_py(),
                        calls.column("revision")[row].as_py(),
                    )
                )
            calls = calls.filter(pa.array(keep))
            indexes = indexes[keep]
            payloads = [p for p, k in zip(payloads, keep.tolist(), strict=True) if k]
        m = calls.num_rows
        columns = [
            *calls.columns,
            pa.nulls(m, pa.string()),
            pa.nulls(m, pa.int32()),
            pa.nulls(m, pa.int64()),
            pa.repeat(pa.scalar(self.source_file, pa.string()), m),
            pa.array(indexes, type=pa.int64()),
            pa.array(payloads, pa.binary()),
        ]
        return pa.Table.from_arrays(columns, schema=EVENT_SCHEMA), dead

    def _finish_group(
        self, group: list[Block], firsts: list[int], result: Future[_Result] | None
    ) -> Iterator[EventBatch]:
        decoded: _Result | None = None
        if result is not None:
            try:
                decoded = result.result()
            except (Exception, pl.exceptions.PanicException) as exc:
                log.info(
                    "%s: polars could not decode a group (%s); using fastavro",
                    self.source_file,
                    describe(exc),
                )
        if decoded is not None:
            table, ok, datas = decoded
            counts = np.array([b.count for b in group], dtype=np.int64)
            if ok.all():
                yield from self._sliced(self._polars_batch(table, group, firsts, datas))
                return
            parts: list[EventBatch] = []
            row = 0
            for i, block in enumerate(group):
                if ok[i]:
                    part = table.slice(row, int(counts[i]))
                    parts.append(self._polars_batch(part, [block], [firsts[i]], [datas[i]]))
                else:
                    parts.append(self._fastavro_block(block, firsts[i]))
                row += int(counts[i])
            yield from self._sliced(_concat(parts))
            return
        all_clean = True
        for block, first in zip(group, firsts, strict=True):
            batch = self._fastavro_block(block, first)
            all_clean = all_clean and batch.dead_letters.num_rows == 0
            yield from self._sliced(batch)
        if result is not None and all_clean and self.use_polars:
            log.info(
                "%s: polars cannot read this file's schema/codec; fastavro for the rest",
                self.source_file,
            )
            self.use_polars = False

    def _polars_batch(
        self, table: pa.Table, group: Sequence[Block], firsts: Sequence[int], datas: list[bytes]
    ) -> EventBatch:
        counts = [b.count for b in group]
        indexes = np.concatenate(
            [np.arange(f, f + c, dtype=np.int64) for f, c in zip(firsts, counts, strict=True)]
        )
        starts = np.cumsum(counts) - np.asarray(counts)
        spans: dict[int, BlockRecords] = {}

        def datum(row: int) -> bytes | None:  # rare: re-decode the block for its bytes
            which = int(np.searchsorted(starts, row, side="right")) - 1
            if which not in spans:
                spans[which] = fastavro_block(self.plan, datas[which], counts[which])
            got = spans[which]
            pos = row - int(starts[which])
            return _span(datas[which], got, pos)

        self.decoded_by_polars += table.num_rows
        events, dead = self._events(table, indexes, datum)
        return self._batch(events, dead)

    def _fastavro_block(self, block: Block, first: int) -> EventBatch:
        data = self._data(block)
        try:
            raw = decompress(self.header.codec, data)
        except Exception as exc:
            raw, got = b"", block_records(self.plan, [], [], f"cannot decompress: {describe(exc)}")
        else:
            if raw is None:  # a codec fastavro reads itself: no byte spans
                assert self.plan.fastavro_schema is not None
                read = read_block_records(self.header, data, block.count, self.plan.fastavro_schema)
                got = block_records(self.plan, read.records, [], read.error)
                raw = b""
            else:
                got = fastavro_block(self.plan, raw, block.count)
        detail = None
        if got.error is not None:
            k, last = first + got.stop, first + block.count - 1
            detail = (
                f"records {k}..{last} of the {self.header.codec} block at file bytes "
                f"{block.start}-{block.end} (records {first}..{last}) do not decode: "
                f"{got.error}; payload is the block as in the file (count, size, data, sync), "
                "decode it with the file header"
            )
        return self._fastavro_batch(got, raw, block, first, detail)

    def _salvage(self, block: Block, first: int) -> tuple[EventBatch, int]:
        """A stretch with broken framing: decode what can be, dead-letter the rest."""
        claimed = plausible_count(block)
        data = self._data(block)
        if block.data_end > block.data_start:
            read = salvage_records(
                self.header, data, claimed if claimed > 0 else -1, self.plan.fastavro_schema
            )
        else:
            read = Decoded(error="no data")
        got = block_records(self.plan, read.records, [], read.error)
        k = len(read.records)
        complete = read.error is None and claimed > 0 and k == claimed
        # a dead letter gets an index of its own: source_index stays unique in the file
        advance = max(k, claimed) if complete else max(k + 1, claimed)
        detail = None
        if not complete:
            claim = (
                f"its block header claims {claimed} records, so later record indexes assume "
                f"{advance} records here"
                if claimed > 0
                else f"its block header is unreadable, later record indexes assume {advance} "
                "records here"
            )
            detail = (
                f"damaged container framing ({block.error}) at file bytes {block.start}-"
                f"{block.end}: {k} records salvaged from record {first}, the rest does not "
                f"decode ({read.error or 'record count unknown'}); {claim}; payload is the "
                "raw stretch of the file"
            )
        else:
            log.warning(
                "%s: damaged framing at file bytes %d-%d (%s); all %d records salvaged",
                self.source_file,
                block.start,
                block.end,
                block.error,
                k,
            )
        return self._fastavro_batch(got, b"", block, first, detail), advance

    def _fastavro_batch(
        self, got: BlockRecords, raw: bytes, block: Block, first: int, detail: str | None
    ) -> EventBatch:
        """The records fastavro decoded from ``block`` (indexes from ``first``), and,
        when ``detail`` says why, one dead letter for the rest of the block's bytes."""
        self.decoded_by_fastavro += len(got.good)
        indexes = first + np.asarray(got.good, dtype=np.int64)
        events, dead = self._events(got.table, indexes, lambda row: _span(raw, got, got.good[row]))
        for pos, why in sorted(got.dead.items()):
            dead.append(
                _dead_letter(
                    self.source_file,
                    first + pos,
                    f"{why}; payload is the datum as in the file",
                    _span(raw, got, pos),
                )
            )
        if detail is not None:
            dead += stretch_dead_letters(
                self.buf, block.start, block.end, first + got.stop, self.source_file, detail
            )
            log.warning("%s: %s", self.source_file, detail)
        dead.sort(key=lambda d: int(d["source_index"]))
        return self._batch(events, dead)

    def _batch(self, events: pa.Table, dead: list[dict[str, Any]]) -> EventBatch:
        self.dead += len(dead)
        return EventBatch(events, dead_letter_table(dead))

    def _sliced(self, batch: EventBatch) -> Iterator[EventBatch]:
        events = batch.events
        if events.num_rows <= self.batch_size:
            yield batch
            return
        for offset in range(0, events.num_rows, self.batch_size):
            part = events.slice(offset, self.batch_size)
            dl = batch.dead_letters if offset == 0 else DEAD_LETTER_SCHEMA.empty_table()
            yield EventBatch(part, dl)

    # -- driving ----------------------------------------------------------------------

    def batches(self) -> Iterator[EventBatch]:
        """Group good blocks (at most ``batch_size`` records) and decode them in order."""
        pending: deque[tuple[list[Block], list[int], Future[_Result] | None]] = deque()
        executor = ThreadPoolExecutor(self.workers) if self.use_polars else None
        group: list[Block] = []
        firsts: list[int] = []
        in_group = 0
        index = 0

        def submit() -> Iterator[EventBatch]:
            nonlocal group, firsts, in_group
            future = (
                executor.submit(self._polars, group)
                if executor is not None and self.use_polars
                else None
            )
            pending.append((group, firsts, future))
            group, firsts, in_group = [], [], 0
            while len(pending) > self.workers:
                yield from self._finish_group(*pending.popleft())

        try:
            for block in scan_blocks(self.buf, self.header):
                if block.error is not None:
                    if group:
                        yield from submit()
                    while pending:  # keep file order
                        yield from self._finish_group(*pending.popleft())
                    batch, advance = self._salvage(block, index)
                    index += advance
                    yield batch
                    continue
                if group and in_group + block.count > self.batch_size:
                    yield from submit()
                group.append(block)
                firsts.append(index)
                in_group += block.count
                index += block.count
            if group:
                yield from submit()
            while pending:
                yield from self._finish_group(*pending.popleft())
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        log.info(
            "%s: %d events decoded (polars %d, fastavro %d), %d dead letters",
            self.source_file,
            self.decoded_by_polars + self.decoded_by_fastavro,
            self.decoded_by_polars,
            self.decoded_by_fastavro,
            self.dead,
        )


def _span(raw: bytes, got: BlockRecords, pos: int) -> bytes | None:
    """The bytes of record ``pos`` of a block's data, when fastavro could place it."""
    if pos < len(got.spans) and raw:
        a, b = got.spans[pos]
        return raw[a:b]
    return None


def _concat(parts: Sequence[EventBatch]) -> EventBatch:
    return EventBatch(
        pa.concat_tables([p.events for p in parts]),
        pa.concat_tables([p.dead_letters for p in parts]),
    )
