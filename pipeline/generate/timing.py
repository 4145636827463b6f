"""Start times: the period's traffic profile cut into equal-mass slices.

:func:`start_times` draws sorted UTC microseconds from slice ``part`` of ``parts``
of the hourly weights (business-hours peak, quiet weekends), so chunk ``i`` of ``k``
covers the ``i``-th ``1/k`` of the period's traffic and a file is in time order.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt

from pipeline.generate.shares import I64, MICROS_PER_HOUR


def _hour_weights(start: datetime, days: int) -> npt.NDArray[np.float64]:
    """Relative traffic of each hour of the period: business-hours peak, quiet weekends."""
    hours = np.arange(days * 24)
    hour_of_day = (hours + start.hour) % 24
    diurnal = np.asarray(
        [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4.5, 6, 6.5, 6.5, 6, 6.2, 6.4, 6.2, 5.5, 4.5, 3.5,
         3, 2.6, 2.2, 1.8, 1.3],
    )  # fmt: skip
    weekday = (start.weekday() + (hours + start.hour) // 24) % 7
    return np.asarray(diurnal[hour_of_day] * np.where(weekday >= 5, 0.45, 1.0), np.float64)


def start_times(
    rng: np.random.Generator, n: int, start: datetime, days: int, part: int, parts: int
) -> I64:
    """UTC microseconds, sorted, from slice ``part`` of ``parts`` of the period's traffic."""
    weights = _hour_weights(start, days)
    cdf = np.cumsum(weights) / weights.sum()
    u = (part + rng.random(n)) / parts
    hour = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    lo = np.where(hour > 0, cdf[hour - 1], 0.0)
    within = np.clip((u - lo) / (cdf[hour] - lo), 0.0, 1.0 - 1e-12)
    base = int(start.timestamp()) * 1_000_000
    micros = (
        base + hour.astype(np.int64) * MICROS_PER_HOUR + (within * MICROS_PER_HOUR).astype(np.int64)
    )
    return np.sort(micros)
