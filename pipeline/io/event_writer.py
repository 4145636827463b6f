"""Writing Avro container files of ``CallEvent`` (the shipped schema).

Iterables of dicts go through fastavro; Arrow tables through the column-wise encoder
of :mod:`pipeline.avro.encode`, byte-for-byte the datums fastavro would write (the
tests compare the two): 1 M events in about 1.5 s with deflate, against about 19 s
for ``Table.to_pylist`` plus ``fastavro.writer``. A file appears only once complete
(written to ``<path>.tmp``, fsynced, renamed).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import fastavro
import numpy as np
import pyarrow as pa

from pipeline.avro.container import SYNC_SIZE, block, compress_deflate, container_header
from pipeline.avro.encode import encode_datums
from pipeline.avro.schemas import load_call_event_json, load_call_event_schema
from pipeline.avro.varint import I64, U8
from pipeline.rating.columns import CALL_EVENT_FIELDS

Codec = Literal["null", "deflate"]


def events_to_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of the ``CallEvent`` columns of ``table`` as fastavro-ready dicts."""
    names = [f.name for f in CALL_EVENT_FIELDS if f.name in table.column_names]
    records: list[dict[str, Any]] = table.select(names).to_pylist()
    return records


def encode_table(table: pa.Table) -> tuple[U8, I64]:
    """Schemaless ``CallEvent`` datums of every row (vectorized); bytes and end offsets.

    Columns missing from ``table`` take the schema default; a null in a non-null
    field, or an unknown enum symbol, raises ``ValueError`` naming the field.
    """
    chunks = encode_datums(table, load_call_event_schema())
    joined = pa.concat_arrays(chunks) if len(chunks) != 1 else chunks[0]
    n = len(joined)
    if n == 0:
        return np.empty(0, np.uint8), np.empty(0, np.int64)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[
        joined.offset : joined.offset + n + 1
    ]
    data = np.frombuffer(joined.buffers()[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    return data, offsets[1:] - offsets[0]


class EventFileWriter:
    """Writes an Avro container file of ``CallEvent`` (the shipped schema), in blocks.

    The file appears at ``path`` only when :meth:`close` succeeds (it is written to
    ``<path>.tmp`` and renamed); leaving the ``with`` block by an exception removes
    the partial file. ``sync_marker`` (16 bytes) makes the file byte-for-byte
    reproducible (default random). Blocks hold about ``block_bytes`` of uncompressed
    datums; deflate blocks are compressed on up to two threads.
    """

    def __init__(
        self,
        path: Path,
        codec: Codec = "deflate",
        *,
        sync_marker: bytes | None = None,
        block_bytes: int = 1 << 20,
        compression_level: int = 6,
    ) -> None:
        if codec not in ("null", "deflate"):
            raise ValueError(f"unsupported codec {codec!r}")
        self.path = Path(path)
        self.codec = codec
        self.sync = sync_marker if sync_marker is not None else os.urandom(SYNC_SIZE)
        if len(self.sync) != SYNC_SIZE:
            raise ValueError("sync_marker must be 16 bytes")
        self.block_bytes = block_bytes
        self.level = compression_level
        self.records = 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 -- closed by close()/abort()
        self._fh.write(container_header(load_call_event_json(), codec, self.sync))
        self._pool: ThreadPoolExecutor | None = None

    def write_table(self, table: pa.Table) -> None:
        """Append the rows of ``table`` (``CallEvent`` columns; others are ignored)."""
        if table.num_rows == 0:
            return
        data, ends = encode_table(table)
        starts = np.concatenate([[0], ends[:-1]])
        blocks: list[tuple[bytes, int]] = []
        first = 0
        n = table.num_rows
        while first < n:
            limit = int(starts[first]) + self.block_bytes
            last = min(n, max(first + 1, int(np.searchsorted(ends, limit, side="right"))))
            raw = data[int(starts[first]) : int(ends[last - 1])].tobytes()
            blocks.append((raw, last - first))
            first = last
        self._write_blocks(blocks)

    def write_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records (dicts) encoded one by one with fastavro."""
        schema = load_call_event_schema()
        buf = io.BytesIO()
        count = 0
        blocks: list[tuple[bytes, int]] = []
        for record in records:
            fastavro.schemaless_writer(buf, schema, dict(record))
            count += 1
            if buf.tell() >= self.block_bytes:
                blocks.append((buf.getvalue(), count))
                buf, count = io.BytesIO(), 0
        if count:
            blocks.append((buf.getvalue(), count))
        self._write_blocks(blocks)

    def _compress(self, raw: bytes) -> bytes:
        return compress_deflate(raw, self.level)

    def _write_blocks(self, blocks: Sequence[tuple[bytes, int]]) -> None:
        payloads: Iterable[bytes] = (raw for raw, _ in blocks)
        if self.codec == "deflate":
            if len(blocks) > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(min(2, os.cpu_count() or 1))
                payloads = self._pool.map(self._compress, (raw for raw, _ in blocks))
            else:
                payloads = (self._compress(raw) for raw, _ in blocks)
        for (_, count), payload in zip(blocks, payloads, strict=True):
            self._fh.write(block(count, payload, self.sync))
            self.records += count

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self) -> None:
        """Flush, fsync and move the file into place."""
        self._shutdown()
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard the partial file."""
        self._shutdown()
        if not self._fh.closed:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> EventFileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_events(
    path: Path,
    records: Iterable[Mapping[str, Any]] | pa.Table,
    codec: Codec = "deflate",
    *,
    sync_marker: bytes | None = None,
) -> int:
    """Write an Avro container file of ``CallEvent`` with the shipped schema.

    ``records`` is an Arrow table (``CallEvent`` columns, others ignored; encoded
    vectorized) or dicts (encoded one by one by fastavro). The file appears only
    once complete. Returns the number of records written.
    """
    with EventFileWriter(path, codec, sync_marker=sync_marker) as writer:
        if isinstance(records, pa.Table):
            writer.write_table(records)
        else:
            writer.write_records(records)
    return writer.records
