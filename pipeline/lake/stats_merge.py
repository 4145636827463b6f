"""Delta statistics of a compacted file, merged from its inputs' (pure, no I/O).

:func:`merged_stats` gives the statistics JSON of one file holding exactly the rows
of some files, from their flattened add actions: records and null counts summed, min
of the minima and max of the maxima. Values are written as Delta writes them:
timestamps ISO-8601 UTC with milliseconds, decimals as exact number literals (never
through a float). A column some input has values but no bounds for (or a non-finite
bound) gets none, so readers do not prune on it; they never prune wrongly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def _json_scalar(value: Any) -> str | None:
    """A statistics value as Delta writes it in JSON: timestamps ISO-8601 UTC with
    milliseconds, decimals as exact number literals (never through a float); None
    for a value that has no JSON form (a non-finite float)."""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return json.dumps(
            value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        )
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return json.dumps(value)


def _json_object(values: dict[str, str]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in values.items()) + "}"


def merged_stats(files: pa.Table, columns: Sequence[str]) -> str:
    """Delta statistics (JSON) of one file holding exactly the rows of ``files`` (their
    flattened add actions): records and null counts summed, min of the minima and max
    of the maxima of ``columns`` (a column some input has values but no bounds for
    gets none: readers then do not prune on it)."""
    records = int(pc.sum(files.column("num_records")).as_py() or 0)
    rows = files.column("num_records").to_pylist()
    mins: dict[str, str] = {}
    maxs: dict[str, str] = {}
    nulls: dict[str, str] = {}
    for column in columns:
        nc, lo, hi = f"null_count.{column}", f"min.{column}", f"max.{column}"
        counts = files.column(nc).to_pylist() if nc in files.column_names else None
        if counts is not None and None not in counts:
            nulls[column] = str(sum(counts))
        if lo not in files.column_names or hi not in files.column_names:
            continue
        valued = [
            i
            for i in range(files.num_rows)
            if counts is None or counts[i] is None or counts[i] < rows[i]
        ]  # files with at least one value in the column
        if not valued:
            continue
        take = pa.array(valued, pa.int64())
        low, high = files.column(lo).take(take), files.column(hi).take(take)
        if low.null_count or high.null_count:
            continue
        smallest, largest = _json_scalar(pc.min(low).as_py()), _json_scalar(pc.max(high).as_py())
        if smallest is not None and largest is not None:
            mins[column], maxs[column] = smallest, largest
    return (
        f'{{"numRecords":{records},"minValues":{_json_object(mins)},'
        f'"maxValues":{_json_object(maxs)},"nullCount":{_json_object(nulls)}}}'
    )
