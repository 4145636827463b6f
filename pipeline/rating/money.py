"""Exact money: integer micro-dollars inside the core, ``decimal128`` at the edges.

Rates are held as micro-dollars per minute and charges as micro-dollars, both
``int64`` (exact; a tariff value with more than 6 decimal places is refused).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

I64 = npt.NDArray[np.int64]
MICRO_PER_UNIT = 1_000_000


def to_micro(value: Decimal) -> int:
    """Exact micro-units of ``value`` (ValueError if it has more than 6 places)."""
    scaled = value * MICRO_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than 6 decimal places")
    return int(scaled)


def charge_for_seconds(seconds: I64, rate_micro_per_min: I64) -> I64:
    """R7: ``seconds * rate / 60`` rounded half-up to the micro-dollar (inputs >= 0)."""
    return (seconds * rate_micro_per_min * 2 + 60) // 120


def micro_to_decimal_array(micro: I64, scale: int = 6, precision: int = 18) -> pa.Array:
    """``int64`` micro-units -> ``decimal128(precision, 6)`` with the same digits (exact).

    Builds the 128-bit two's-complement little-endian storage directly, so no value
    ever passes through a float.
    """
    if scale != 6:
        raise ValueError("only micro-unit (scale 6) arrays are supported")
    values = np.ascontiguousarray(micro, dtype=np.int64)
    storage = np.empty((values.size, 2), dtype=np.int64)
    storage[:, 0] = values
    storage[:, 1] = np.where(values < 0, -1, 0)
    return pa.Array.from_buffers(
        pa.decimal128(precision, scale), values.size, [None, pa.py_buffer(storage.tobytes())]
    )


def round_cents(value: Decimal) -> Decimal:
    """Half-up to cents (C1-C4 invoice lines)."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
