"""Avro object container files: header, blocks of ``count, size, data, sync``.

Reading: :func:`parse_header`, :func:`scan_blocks` (walks the block headers and
resynchronizes on the next sync marker when the framing is broken: bad block header,
wrong sync marker, truncated last block, junk between blocks, trailing garbage),
:func:`decompress` and :func:`salvage_records` (decode a damaged stretch record by
record, as far as it goes). Writing: :func:`container_header` and :func:`block`.

Avro containers carry no checksum (except the snappy codec), so a corruption that
still decodes into well-formed values cannot be detected here.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import mmap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fastavro

from pipeline.avro.types import strip_private
from pipeline.avro.varint import CorruptError, read_long, zigzag_varint

__all__ = ["CorruptError"]

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
#: Longest stretch before a sync marker searched byte by byte for a block start.
MAX_INNER_SEARCH = 4 << 20
#: A claimed block count above this many records per data byte is not believed.
_MAX_RECORDS_PER_BYTE = 64
_DETAIL_MAX = 300

Buffer = bytes | mmap.mmap


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, at most 300 characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    raw: bytes  # the header as in the file (magic .. sync marker)
    schema: dict[str, Any]  # writer schema, plain JSON
    parsed: dict[str, Any]  # writer schema parsed by fastavro
    codec: str
    sync: bytes

    @property
    def end(self) -> int:
        return len(self.raw)


def parse_header(buf: Buffer) -> Header:
    """The header at the start of ``buf``; :class:`CorruptError` if unreadable."""
    if len(buf) == 0:
        raise CorruptError("empty file")
    if buf[:4] != MAGIC:
        raise CorruptError("not an Avro object container file (bad magic bytes)")
    pos = 4
    meta: dict[str, bytes] = {}
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = read_long(buf, pos)
        for _ in range(count):
            klen, pos = read_long(buf, pos)
            key = bytes(buf[pos : pos + klen])
            pos += klen
            vlen, pos = read_long(buf, pos)
            if klen < 0 or vlen < 0 or pos + vlen > len(buf):
                raise CorruptError("bad header metadata")
            meta[key.decode("utf-8", "replace")] = bytes(buf[pos : pos + vlen])
            pos += vlen
    if pos + SYNC_SIZE > len(buf):
        raise CorruptError("truncated header")
    sync = bytes(buf[pos : pos + SYNC_SIZE])
    pos += SYNC_SIZE
    if "avro.schema" not in meta:
        raise CorruptError("header has no avro.schema")
    try:
        schema = json.loads(meta["avro.schema"])
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise CorruptError("writer schema is not a record")
        parsed: dict[str, Any] = fastavro.parse_schema(schema)  # type: ignore[assignment]
    except CorruptError:
        raise
    except Exception as exc:
        raise CorruptError(f"invalid writer schema: {describe(exc)}") from exc
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace") or "null"
    return Header(bytes(buf[:pos]), schema, parsed, codec, sync)


def container_header(schema: str | dict[str, Any], codec: str, sync: bytes) -> bytes:
    """A container header: magic, ``avro.schema`` (JSON text), ``avro.codec``, sync."""
    text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
    out = bytearray(MAGIC)
    out += zigzag_varint(2)
    for key, value in ((b"avro.schema", text.encode()), (b"avro.codec", codec.encode())):
        out += zigzag_varint(len(key)) + key + zigzag_varint(len(value)) + value
    out += zigzag_varint(0) + sync
    return bytes(out)


def block(count: int, payload: bytes, sync: bytes) -> bytes:
    """One block as written to a file: count, size, (compressed) data, sync marker."""
    return b"".join([zigzag_varint(count), zigzag_varint(len(payload)), payload, sync])


def compress_deflate(raw: bytes, level: int = 6) -> bytes:
    """Raw deflate (no zlib header), as the Avro ``deflate`` codec stores block data."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(raw) + compressor.flush()


def decompress(codec: str, data: bytes) -> bytes | None:
    """Decompress block data; deflate tolerates truncation. None: codec not handled here."""
    if codec == "null":
        return data
    if codec == "deflate":
        return zlib.decompressobj(-15).decompress(data)
    if codec == "bzip2":
        return bz2.decompress(data)
    if codec == "xz":
        return lzma.decompress(data)
    return None


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    """One block (``error is None``) or a stretch of bytes with broken framing."""

    start: int  # file offset of the block's count varint
    end: int  # file offset after its sync marker (or the end of the stretch)
    data_start: int
    data_end: int
    count: int  # records (as claimed by the header when ``error`` is set; -1 unknown)
    error: str | None = None


def _frame_at(buf: Buffer, pos: int, sync: bytes) -> tuple[int, int, int, str | None]:
    """Parse the block framing at ``pos``: ``(count, data_start, data_end, error)``."""
    count, data_start = read_long(buf, pos)
    size, data_start = read_long(buf, data_start)
    data_end = data_start + size
    if count < 0 or size < 0:
        return count, data_start, data_start, "negative block count or size"
    if data_end + SYNC_SIZE > len(buf):
        return count, data_start, data_end, "block runs past the end of the file (truncated?)"
    if buf[data_end : data_end + SYNC_SIZE] != sync:
        return count, data_start, data_end, "sync marker mismatch"
    return count, data_start, data_end, None


def _block_starts_at(buf: Buffer, pos: int, sync: bytes) -> bool:
    """True at the end of the file or where a well-framed block starts."""
    if pos == len(buf):
        return True
    try:
        return _frame_at(buf, pos, sync)[3] is None
    except CorruptError:
        return False


def scan_blocks(buf: Buffer, header: Header) -> Iterator[Block]:
    """Walk the block headers; broken framing resynchronizes on the next sync marker.

    A block whose sync marker alone is damaged (a well-framed block, or the end of
    the file, follows it) is reported with its exact extent. Junk before an intact
    block (found within :data:`MAX_INNER_SEARCH` bytes before its marker, decoding
    into exactly its record count) is a stretch of its own: only the junk is lost.
    """
    pos = header.end
    size_of_file = len(buf)
    while pos < size_of_file:
        start = pos
        count = -1
        data_start = data_end = pos
        try:
            count, data_start, data_end, error = _frame_at(buf, pos, header.sync)
        except CorruptError as exc:
            error = str(exc)
        if error is None:
            pos = data_end + SYNC_SIZE
            yield Block(start, pos, data_start, data_end, count)
            continue
        if error == "sync marker mismatch" and _block_starts_at(
            buf, data_end + SYNC_SIZE, header.sync
        ):
            pos = data_end + SYNC_SIZE
            yield Block(start, pos, data_start, data_end, count, "sync marker damaged")
            continue
        found = buf.find(header.sync, start)
        if found >= 0 and not _decodes_exactly(buf, header, count, data_start, found):
            inner = _inner_block_start(buf, header, start, found)
            if inner is not None:  # junk before an intact block: only the junk is lost
                yield Block(start, inner, min(max(data_start, start), inner), inner, count, error)
                pos = inner
                continue
        end = size_of_file if found < 0 else found + SYNC_SIZE
        data_end = end - SYNC_SIZE if found >= 0 else end
        data_start = min(max(data_start, start), data_end)
        yield Block(start, end, data_start, data_end, count, error)
        pos = end


def _decodes_exactly(
    buf: Buffer, header: Header, count: int, data_start: int, data_end: int
) -> bool:
    """True if ``[data_start, data_end)`` holds exactly ``count`` decodable records."""
    if count <= 0 or data_end <= data_start:
        return False
    got = salvage_records(header, bytes(buf[data_start:data_end]), count)
    return got.error is None and len(got.records) == count


def _inner_block_start(buf: Buffer, header: Header, start: int, sync_at: int) -> int | None:
    """Where, after ``start``, the block whose sync marker is at ``sync_at`` begins."""
    for pos in range(max(start + 1, sync_at - MAX_INNER_SEARCH), sync_at):
        try:
            count, data_start = read_long(buf, pos)
            if count <= 0:
                continue
            size, data_start = read_long(buf, data_start)
        except CorruptError:
            continue
        if data_start + size == sync_at and _decodes_exactly(
            buf, header, count, data_start, sync_at
        ):
            return pos
    return None


def plausible_count(block: Block) -> int:
    """The claimed record count of a damaged stretch if believable, else 0."""
    data_len = max(block.data_end - block.data_start, 1)
    if 0 < block.count <= data_len * _MAX_RECORDS_PER_BYTE:
        return block.count
    return 0


# --------------------------------------------------------------------------- salvage


@dataclass
class Decoded:
    """Records decoded from block data and why decoding stopped, if it did."""

    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def read_block_records(
    header: Header, data: bytes, count: int, schema: dict[str, Any] | None = None
) -> Decoded:
    """The ``count`` records of a well-framed block (codec of ``header``) via
    ``fastavro.reader`` on a one-block container; stops at the first failure.

    ``schema`` (parsed; default the writer schema) is written into that container's
    header: it must have the writer schema's binary layout.
    """
    out = Decoded()
    if count <= 0:
        return out
    head = header.raw
    if schema is not None:
        head = container_header(json.dumps(strip_private(schema)), header.codec, header.sync)
    blob = head + block(count, data, header.sync)
    try:
        for record in fastavro.reader(io.BytesIO(blob)):
            if not isinstance(record, dict):
                raise TypeError("datum is not a record")
            out.records.append(record)
    except Exception as exc:
        out.error = f"record does not decode: {describe(exc)}"
    if out.error is None and len(out.records) < count:  # pragma: no cover - fastavro raises
        out.error = f"block claims {count} records but its data holds {len(out.records)}"
    return out


def salvage_records(
    header: Header, data: bytes, count: int, schema: dict[str, Any] | None = None
) -> Decoded:
    """Decode the data of a damaged stretch record by record, as far as it goes.

    ``schema`` (parsed, the writer's binary layout) defaults to the writer schema.

    Deflate data is decompressed as far as it is intact (a truncated last block
    still yields its leading records). ``count < 0``: until the data is exhausted.
    """
    out = Decoded()
    try:
        raw = decompress(header.codec, data)
    except Exception as exc:
        out.error = f"cannot decompress {header.codec} data: {describe(exc)}"
        return out
    if raw is None:
        if count <= 0:
            out.error = f"record count unknown in a {header.codec} block"
            return out
        return read_block_records(header, data, count, schema)
    parsed = header.parsed if schema is None else schema
    stream = io.BytesIO(raw)
    total = len(raw)
    while (count < 0 or len(out.records) < count) and stream.tell() < total:
        try:
            record = fastavro.schemaless_reader(stream, parsed, None)
        except Exception as exc:
            out.error = f"record does not decode: {describe(exc)}"
            return out
        if not isinstance(record, dict):
            out.error = "datum is not a record"
            return out
        out.records.append(record)
    if count >= 0 and len(out.records) < count:
        out.error = f"block claims {count} records but its data holds {len(out.records)}"
    elif stream.tell() < total:
        out.error = f"{total - stream.tell()} bytes after the last record"
    return out
