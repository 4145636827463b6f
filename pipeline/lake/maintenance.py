"""Lake upkeep, ``cdr-pipeline lake compact`` and ``lake vacuum``: the names the CLI
imports, gathered in one place.

The code lives in :mod:`pipeline.lake.compaction` (our own fenced compaction commit),
:mod:`pipeline.lake.stats_merge` (the merged Delta statistics of a compacted file) and
:mod:`pipeline.lake.vacuum` (deleting files no live version lists). New code imports
from those modules; this one only re-exports.
"""

from __future__ import annotations

from pipeline.lake.compaction import (
    COMPACT_ATTEMPTS,
    COMPACTABLE,
    DEFAULT_MIN_FILES,
    DEFAULT_TARGET_SIZE,
    Compaction,
    CompactionConflict,
    compact_lake,
    compact_table,
    table_cycles,
)
from pipeline.lake.vacuum import (
    FULL_MIN_RETAIN_HOURS,
    SAFE_RETAIN_HOURS,
    Vacuum,
    check_retention,
    vacuum_lake,
)

__all__ = [
    "COMPACTABLE",
    "COMPACT_ATTEMPTS",
    "DEFAULT_MIN_FILES",
    "DEFAULT_TARGET_SIZE",
    "FULL_MIN_RETAIN_HOURS",
    "SAFE_RETAIN_HOURS",
    "Compaction",
    "CompactionConflict",
    "Vacuum",
    "check_retention",
    "compact_lake",
    "compact_table",
    "table_cycles",
    "vacuum_lake",
]
