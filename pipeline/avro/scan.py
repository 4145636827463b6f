"""Vectorized structural scan: are many datums records of a writer type?

All datums live in one byte buffer (padded with 16 zero bytes) at known
``[start, end)``; the scan walks them in lock step with numpy and rejects a datum
whose varints are overlong, whose string/bytes lengths are negative or run past its
end, whose union/enum index is out of range, whose ``int`` does not fit 32 bits, or
that does not end exactly at its end (a garbage tail, which polars silently ignores
in the last datum of a block and which shifts every later datum of the block), or
-- for the top-level fields named in ``utf8_fields`` -- whose strings are not valid
UTF-8 (polars fails on the whole block for one such string). A datum that passes
decodes in polars, so a block of them never needs bisecting; a rejected datum goes
to fastavro, the authority (:mod:`pipeline.avro.decode`).

Datum boundaries come from the Kafka messages (streaming) or, inside a container
block, from :func:`record_sizes` of what polars decoded (batch): a wrong estimate
makes the scan fail and the block go to fastavro, never accepts a bad datum.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.avro.types import FIXED_SIZE, AvroType
from pipeline.avro.varint import BOOL, I64, MAX_VARINT_BYTES, U8, varint_sizes

#: Zero bytes after the data, so a scan never reads past the buffer.
PADDING = 16


@dataclass
class _Scan:
    buf: U8  # all datum bytes, padded with PADDING zero bytes
    pos: I64  # next byte of each datum
    end: I64  # end of each datum
    ok: BOOL
    #: (rows or None for all, start, length) of the strings to check for UTF-8
    strings: list[tuple[I64 | None, I64, I64]] = field(default_factory=list)

    def _set(self, rows: I64 | None, new_pos: I64, bad: BOOL | None = None) -> None:
        end = self.end if rows is None else self.end[rows]
        over = new_pos > end
        if bad is not None:
            over |= bad
        new_pos = np.where(over, end, new_pos)  # keep reads inside the buffer
        if rows is None:
            self.pos = new_pos
            self.ok &= ~over
        else:
            self.pos[rows] = new_pos
            self.ok[rows[over]] = False

    def varint(self, rows: I64 | None) -> I64:
        p = self.pos if rows is None else self.pos[rows]
        b = self.buf[p]
        value = (b & 0x7F).astype(np.uint64)
        length = np.ones(len(p), dtype=np.int64)
        active = np.flatnonzero(b & 0x80)
        bad = np.zeros(len(p), dtype=np.bool_)
        k = 1
        while active.size:
            if k == MAX_VARINT_BYTES:  # more than 10 bytes: not a 64-bit varint
                bad[active] = True
                break
            b = self.buf[p[active] + k]
            if k == MAX_VARINT_BYTES - 1:
                bad[active[(b & 0x7E) != 0]] = True  # bits beyond 64
            value[active] |= (b & 0x7F).astype(np.uint64) << np.uint64(7 * k)
            length[active] += 1
            active = active[(b & 0x80) != 0]
            k += 1
        self._set(rows, p + length, bad)
        return (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)

    def skip(self, rows: I64 | None, size: I64 | int, bad: BOOL | None = None) -> None:
        p = self.pos if rows is None else self.pos[rows]
        self._set(rows, p + size, bad)

    def walk(self, t: AvroType, rows: I64 | None, utf8: bool = False) -> None:
        kind = t.kind
        if kind == "null":
            return
        if kind in ("string", "bytes"):
            n = self.varint(rows)
            p = self.pos if rows is None else self.pos[rows]
            end = self.end if rows is None else self.end[rows]
            bad = (n < 0) | (n > end - p)
            n = np.where(bad, 0, n)
            if utf8 and kind == "string":
                self.strings.append((rows, p, n))
            self.skip(rows, n, bad)
        elif kind == "long":
            self.varint(rows)
        elif kind == "int":
            v = self.varint(rows)
            self._flag(rows, (v < -(2**31)) | (v >= 2**31))
        elif kind in FIXED_SIZE:
            self.skip(rows, FIXED_SIZE[kind])
        elif kind == "fixed":
            self.skip(rows, t.size)
        elif kind == "enum":
            v = self.varint(rows)
            self._flag(rows, (v < 0) | (v >= len(t.symbols)))
        elif kind == "record":
            for f in t.fields:
                self.walk(f.type, rows, utf8)
        elif kind == "union":
            v = self.varint(rows)
            self._flag(rows, (v < 0) | (v >= len(t.branches)))
            all_rows = np.arange(len(self.pos)) if rows is None else rows
            for i, branch in enumerate(t.branches):
                if branch.kind != "null":
                    selected = all_rows[v == i]
                    if selected.size:
                        self.walk(branch, selected, utf8)
        else:  # excluded by types.columnar_problem
            raise ValueError(f"cannot scan {kind}")

    def _flag(self, rows: I64 | None, bad: BOOL) -> None:
        if rows is None:
            self.ok &= ~bad
        else:
            self.ok[rows[bad]] = False


def scan_datums(
    t: AvroType,
    buf: U8,
    starts: I64,
    ends: I64,
    utf8_fields: frozenset[str] = frozenset(),
    utf8_errors: dict[int, UnicodeDecodeError] | None = None,
) -> BOOL:
    """True for each datum ``buf[start:end]`` that is structurally a record of ``t``
    and whose strings in the top-level fields ``utf8_fields`` are valid UTF-8.

    ``utf8_errors``, if given, receives for each datum that is structurally a record
    but holds invalid UTF-8 the error of its first such string (in field order): what
    a reader decoding it field by field (fastavro) fails with. ``buf`` must extend
    :data:`PADDING` bytes past the last end.
    """
    scan = _Scan(buf, starts.copy(), ends, np.ones(len(starts), dtype=np.bool_))
    if t.kind == "record" and utf8_fields:
        for f in t.fields:
            scan.walk(f.type, None, f.name in utf8_fields)
    else:
        scan.walk(t, None)
    ok: BOOL = scan.ok & (scan.pos == ends)
    if scan.strings:
        structural = ok.copy()
        high = _high_bytes(buf)
        for rows, span_starts, lengths in scan.strings:
            errors: dict[int, UnicodeDecodeError] | None = {} if utf8_errors is not None else None
            valid = utf8_valid(buf, span_starts, lengths, high, errors)
            if rows is None:
                ok &= valid
            else:
                ok[rows[~valid]] = False
            if errors and utf8_errors is not None:
                for i, exc in errors.items():
                    datum = i if rows is None else int(rows[i])
                    if structural[datum]:
                        utf8_errors.setdefault(datum, exc)
    return ok


def _high_bytes(buf: U8) -> npt.NDArray[Any]:
    """Running count of bytes >= 0x80 before each position of ``buf`` (one longer)."""
    dtype = np.int32 if len(buf) < 2**31 else np.int64  # int32: half the memory traffic
    high = np.zeros(len(buf) + 1, dtype=dtype)
    np.cumsum(buf >= 0x80, dtype=dtype, out=high[1:])
    return high


def utf8_valid(
    buf: U8,
    starts: I64,
    lengths: I64,
    high: npt.NDArray[Any] | None = None,
    errors: dict[int, UnicodeDecodeError] | None = None,
) -> BOOL:
    """Whether each ``buf[start:start+length]`` is valid UTF-8 (strict, as Python and
    polars decode it). Spans of ASCII bytes only -- nearly all of them in call events --
    are settled by counting bytes >= 0x80 (``high``: :func:`_high_bytes` of ``buf``);
    the others are decoded one by one. ``errors``, if given, receives span index ->
    the error of decoding that span."""
    if high is None:
        high = _high_bytes(buf)
    ends = np.minimum(starts + lengths, len(buf))
    suspect = np.flatnonzero(high[ends] != high[starts])
    valid = np.ones(len(starts), dtype=np.bool_)
    if suspect.size:
        view = buf.data
        for i, s, e in zip(
            suspect.tolist(), starts[suspect].tolist(), ends[suspect].tolist(), strict=True
        ):
            try:
                codecs.utf_8_decode(view[s:e], "strict", True)
            except UnicodeDecodeError as exc:
                valid[i] = False
                if errors is not None:
                    errors[i] = exc
    return valid


def _valid(array: pa.Array) -> BOOL:
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def _ints(array: pa.Array) -> I64:
    return np.asarray(
        array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64
    )


def _sizes(t: AvroType, array: pa.Array) -> I64:
    n = len(array)
    kind = t.kind
    if kind == "null":
        return np.zeros(n, dtype=np.int64)
    if kind in ("string", "bytes"):
        lengths = _ints(pc.binary_length(array))
        return varint_sizes(lengths) + lengths
    if kind in ("int", "long", "enum"):
        return varint_sizes(_ints(array))
    if kind in FIXED_SIZE:
        return np.full(n, FIXED_SIZE[kind], dtype=np.int64)
    if kind == "fixed":
        return np.full(n, t.size, dtype=np.int64)
    if kind == "record":
        total = np.zeros(n, dtype=np.int64)
        for i, f in enumerate(t.fields):
            total += _sizes(f.type, array.field(i))
        return total
    if kind == "union":  # [null, T] (types.columnar_problem): index 0 or 1, one byte
        _, (inner,) = t.non_null()
        valid = _valid(array)
        return 1 + np.where(valid, _sizes(inner, array), 0)
    raise ValueError(f"cannot size {kind}")


def record_sizes(t: AvroType, table: pa.Table) -> I64:
    """Encoded size of each row of ``table`` (every field of record ``t``, as read by
    polars with :func:`~pipeline.avro.types.physical_schema`), assuming canonical
    (shortest) varints."""
    total = np.zeros(table.num_rows, dtype=np.int64)
    for f in t.fields:
        column = table.column(f.name)
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        total += _sizes(f.type, array)
    return total
