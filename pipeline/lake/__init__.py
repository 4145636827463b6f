"""The lake: Delta Lake tables on a local directory or S3 (:class:`Lake`).

``location`` (where), ``storage`` (how its bytes are reached), ``tables`` (names,
schemas, partitioning), ``lake`` (the read/write API, exactly once through the
tables' application transactions; built on ``readers`` and ``handles``),
``compaction``, ``stats_merge`` and ``vacuum`` (upkeep). Imported lazily: :mod:`pipeline.settings` uses
:mod:`pipeline.lake.location` and must not pull in ``deltalake``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.lake.lake import Lake, partition_app_id
    from pipeline.lake.location import LakeLocation, parse_location
    from pipeline.lake.tables import DEAD, DEAD_PAYLOADS, INVOICES, PARTITION, RATED, check_cycle

__all__ = [
    "DEAD",
    "DEAD_PAYLOADS",
    "INVOICES",
    "PARTITION",
    "RATED",
    "Lake",
    "LakeLocation",
    "check_cycle",
    "parse_location",
    "partition_app_id",
]

_HOMES = {
    "Lake": "pipeline.lake.lake",
    "partition_app_id": "pipeline.lake.lake",
    "LakeLocation": "pipeline.lake.location",
    "parse_location": "pipeline.lake.location",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    if name in __all__:
        return getattr(importlib.import_module("pipeline.lake.tables"), name)
    raise AttributeError(name)
