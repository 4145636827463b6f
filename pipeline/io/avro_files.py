"""Avro object container files of ``CallEvent`` <-> Arrow tables of ``EVENT_SCHEMA``.

Reading (:func:`iter_event_batches`)
====================================

The container is framed by :mod:`pipeline.avro.container` and the record data is
decoded in groups of whole blocks with the codec shared with the streaming wire
decoder (:mod:`pipeline.avro`), so a datum gets the same answer on both paths:

* **Decoder.** A group's blocks are decompressed and decoded by ``polars.read_avro``
  as one block (:func:`pipeline.avro.decode.file_blocks`), up to ``workers`` groups
  at once (zlib and polars release the GIL); the record boundaries implied by the
  decoded values are checked with the structural scan (:mod:`pipeline.avro.scan`).
  A block that fails the scan (a wrong union branch, an ``int`` beyond 32 bits, an
  overlong varint, bytes after its last record...) or a group polars fails on is
  decoded record by record by fastavro, the authority. If polars fails on a group
  whose blocks all decode with fastavro, polars is not used for the rest of the
  file (an unsupported codec). Writer schemas the columnar decoder cannot read
  (maps, arrays, unions of several types) go to fastavro from the start.
* **Schema resolution** is :mod:`pipeline.avro.resolution`, as in streaming: fields
  the reader does not know are ignored; fields the writer lacks take the reader
  default (``revision`` 0, ``leg`` ORIGINAL, null; a *required* field the writer
  lacks is null, so the rating core dead-letters the event with ``MISSING_FIELD``);
  ``int`` is promoted to ``long``; ``start_time`` may be ``timestamp-micros``,
  ``-millis``, ``-nanos`` or a plain ``long``. A writer field of an incompatible type
  makes every block of the file a ``DECODE_ERROR`` dead letter. An enum symbol the
  reader does not know (e.g. a newer ``Disposition``) is passed on and the core
  dead-letters the event ``INVALID_VALUE`` (R1); its ``payload`` is then the datum
  as in the file (writer schema), carried in the event's ``payload`` column.
* **Batching.** A batch holds whole blocks and at most ``batch_size`` events; a
  single block larger than ``batch_size`` is decoded whole and sliced. Memory is
  bounded by ``(workers + 1)`` groups, not by the file: the file is memory-mapped
  and only the bytes of the groups in flight are copied.
* **Source columns.** ``source_file`` is ``str(path)`` as given, ``source_index``
  the 0-based index of the record in the file (counted with the block headers), the
  Kafka columns are null, ``payload`` is null for decoded events except the ones
  above (the batch runner encodes a dead-lettered event with
  :func:`pipeline.avro.schemas.encode_datum`).

Damaged files: nothing is dropped silently
------------------------------------------

Every record of a file ends either as an event or inside a ``DECODE_ERROR`` dead
letter whose ``source_index`` is the index of the first record it covers and whose
``payload`` holds the raw file bytes (never more than 64 MiB per dead letter; a
longer stretch is split into parts that name their byte range in ``detail``):

* unreadable header (not a container, truncated header, bad schema): the whole
  file, from record index 0;
* a single record whose values cannot be represented (an ``int`` beyond 32 bits, a
  timestamp out of range): that record, ``payload`` its datum as in the file;
* a block whose framing is intact but whose data does not decode: the records
  decoded before the failure are events, the block (``count``, ``size``, data and
  sync marker, as in the file) is a dead letter starting at the first undecoded
  record; the file header is needed to decode it again (``detail`` names codec and
  byte range);
* broken framing (bad block header, wrong sync marker, truncated last block,
  junk between blocks, trailing garbage): the reader searches the next sync marker
  and resumes after it, or at the start of the block that marker ends when that
  block (found within 4 MiB before the marker) decodes exactly; the stretch in
  between is salvaged record by record as far as it decodes and the rest is a dead
  letter. Record indexes after such a stretch assume it held the
  number of records its block header claims (when plausible, else the salvaged
  ones plus one); ``detail`` says so.

``source_index`` values are unique within a file across events and dead letters
(the parts of one split stretch share theirs), so batch outputs named by their
first index never collide.

Writing (:func:`write_events`, :class:`EventFileWriter`) is
:mod:`pipeline.io.event_writer` (re-exported here).
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.avro.container import CorruptError, Header, parse_header, plausible_count, scan_blocks
from pipeline.avro.decode import plan_for
from pipeline.avro.schemas import load_call_event_schema
from pipeline.errors import DataError
from pipeline.io.event_writer import (
    Codec,
    EventFileWriter,
    encode_table,
    events_to_records,
    write_events,
)
from pipeline.io.file_reader import (
    EventBatch,
    FileReader,
    dead_letter_table,
    stretch_dead_letters,
)
from pipeline.rating.codes import Reason
from pipeline.rating.columns import EVENT_SCHEMA

__all__ = [
    "Codec",
    "EventBatch",
    "EventFileWriter",
    "count_records",
    "encode_table",
    "events_to_records",
    "file_problem",
    "iter_event_batches",
    "schema_of",
    "write_events",
]

log = logging.getLogger(f"cdr_pipeline.{__name__.removeprefix('pipeline.')}")


def _open(path: Path) -> tuple[Any, bytes | mmap.mmap]:
    fh = open(path, "rb")  # noqa: SIM115 -- closed by the caller
    try:
        size = os.fstat(fh.fileno()).st_size
        buf: bytes | mmap.mmap = (
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
        )
    except (OSError, ValueError):
        buf = fh.read()
    return fh, buf


def iter_event_batches(
    path: Path, batch_size: int = 100_000, *, workers: int | None = None, use_polars: bool = True
) -> Iterator[EventBatch]:
    """Decode an Avro container file of ``CallEvent`` into batches of ``EVENT_SCHEMA``.

    Batches come in file order and hold at most ``batch_size`` events; every record
    of the file is in exactly one batch, as an event or inside a ``DECODE_ERROR``
    dead letter (see the module docstring for damaged files). ``workers`` bounds
    concurrent polars decodes (default: up to 2); ``use_polars=False`` forces the
    fastavro decoder. Raises ``OSError`` if the file cannot be opened.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    source_file = str(path)
    fh, buf = _open(path)
    try:
        try:
            header = parse_header(buf)
        except CorruptError as exc:
            detail = f"unreadable Avro container header ({exc}); payload is the raw file"
            log.warning("%s: %s", source_file, detail)
            rows = stretch_dead_letters(buf, 0, len(buf), 0, source_file, detail)
            yield EventBatch(EVENT_SCHEMA.empty_table(), dead_letter_table(rows))
            return
        plan = plan_for(header.parsed, load_call_event_schema(), f"of {source_file}")
        if plan.error is not None:
            yield from _incompatible_file(buf, header, source_file, plan.error)
            return
        reader = FileReader(
            buf,
            source_file,
            header,
            plan,
            batch_size,
            max(1, workers if workers is not None else min(2, os.cpu_count() or 1)),
            use_polars=use_polars,
        )
        yield from reader.batches()
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()


def _incompatible_file(
    buf: bytes | mmap.mmap, header: Header, source_file: str, why: str
) -> Iterator[EventBatch]:
    detail = f"{why}; payload is one block as in the file, decode it with the file header"
    log.warning("%s: %s", source_file, detail)
    index = 0
    for block in scan_blocks(buf, header):
        rows = stretch_dead_letters(buf, block.start, block.end, index, source_file, detail)
        index += block.count if block.error is None else plausible_count(block)
        yield EventBatch(EVENT_SCHEMA.empty_table(), dead_letter_table(rows))


def count_records(path: Path) -> int:
    """Records in the file, from the block headers only (cheap; for progress bars).

    An unreadable header counts 0; a damaged stretch counts what its block header
    claims when plausible (so the result may differ from the decoded count).
    """
    fh, buf = _open(path)
    try:
        try:
            header = parse_header(buf)
        except CorruptError:
            return 0
        return sum(
            b.count if b.error is None else plausible_count(b) for b in scan_blocks(buf, header)
        )
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()


def file_problem(path: Path) -> str | None:
    """Why no record of the file can be read as a ``CallEvent``, from its header alone:
    an unreadable header (empty file, not an Avro container, truncated header, bad
    writer schema) or a writer schema that cannot be resolved against ``CallEvent``;
    None when the header is good. The text names no record content. Raises ``OSError``
    if the file cannot be opened."""
    fh, buf = _open(path)
    try:
        try:
            header = parse_header(buf)
        except CorruptError as exc:
            return f"unreadable Avro container header: {exc}"
        plan = plan_for(header.parsed, load_call_event_schema(), f"of {path.name}")
        if plan.error is not None:
            return f"writer schema cannot be resolved against CallEvent: {plan.error}"
        return None
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()


def schema_of(path: Path) -> dict[str, Any]:
    """The writer schema of the file (plain JSON). Raises ``DataError`` if unreadable."""
    fh, buf = _open(path)
    try:
        try:
            return parse_header(buf).schema
        except CorruptError as exc:
            raise DataError(Reason.DECODE_ERROR.value, f"{path}: {exc}") from exc
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
        fh.close()
