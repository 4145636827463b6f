"""Avro ``int``/``long`` binary form: zig-zag, then base-128 varint (little end first).

Scalar encode/decode for headers and framing, and vectorized encoders over int64
arrays for the column-wise datum encoder and the record-size estimate of the
batch reader.
"""

from __future__ import annotations

import mmap

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
BOOL = npt.NDArray[np.bool_]

#: A 64-bit varint is at most this many bytes.
MAX_VARINT_BYTES = 10


class CorruptError(ValueError):
    """The bytes are not well-formed Avro (framing or varint) at some position."""


def zigzag_varint(value: int) -> bytes:
    """Avro ``long`` encoding of one int (zig-zag, then base-128 varint)."""
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def read_long(buf: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    """Decode one zig-zag varint at ``pos``: ``(value, next position)``.

    Raises :class:`CorruptError` at the end of ``buf`` or after 10 bytes.
    """
    acc = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CorruptError("unexpected end of data in a varint")
        byte = buf[pos]
        pos += 1
        acc |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (acc >> 1) ^ -(acc & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptError("varint longer than 10 bytes")


def _zigzag(values: I64) -> npt.NDArray[np.uint64]:
    v = values.astype(np.int64, copy=False)
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def varint_sizes(values: I64) -> I64:
    """Bytes of the canonical (shortest) varint of each int64 value."""
    zz = _zigzag(values)
    sizes = np.ones(zz.shape[0], dtype=np.int64)
    for k in range(1, MAX_VARINT_BYTES):
        above = zz >= np.uint64(1 << (7 * k))
        if not above.any():
            break
        sizes += above
    return sizes


def varints(values: I64) -> tuple[U8, I64]:
    """Zig-zag varints of int64 values: concatenated bytes and the length of each."""
    zz = _zigzag(values)
    n = zz.shape[0]
    top = int(zz.max()) if n else 0
    if top < 0x80:  # the common case: one byte each (lengths, enums, branches)
        return zz.astype(np.uint8), np.ones(n, dtype=np.int64)
    lengths = np.ones(n, dtype=np.int64)
    width = 1
    while width < MAX_VARINT_BYTES and top >= 1 << (7 * width):
        lengths += zz >= np.uint64(1 << (7 * width))
        width += 1
    shifts = (np.arange(width, dtype=np.uint64) * np.uint64(7))[None, :]
    groups = ((zz[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    position = np.arange(width, dtype=np.int64)[None, :]
    groups |= ((position < (lengths[:, None] - 1)) * 0x80).astype(np.uint8)
    if bool((lengths == width).all()):
        return groups.reshape(-1), lengths
    return groups[position < lengths[:, None]], lengths


def binary_array(flat: U8, lengths: I64) -> pa.LargeBinaryArray:
    """Per-row byte strings (``lengths`` of each, back to back in ``flat``) as Arrow."""
    n = lengths.shape[0]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)]
    )


def varint_array(values: I64) -> pa.LargeBinaryArray:
    """Avro ``long`` encodings of an int64 array, as a ``large_binary`` array."""
    return binary_array(*varints(values))
