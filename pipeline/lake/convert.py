"""``cdr-pipeline lake convert LAKE``: turn a lake of the plain-Parquet layout of
earlier versions into Delta tables, in place, without rewriting a data file.

The old layout: ``rated_calls/billing_cycle=YYYY-MM/*.parquet``,
``dead_letters/*.parquet``, ``invoice_lines/billing_cycle=YYYY-MM/*.parquet`` and the
streaming checkpoints ``_checkpoints/<topic>+<partition>.json``. Each table folder gets a
Delta log listing its Parquet files (``deltalake.convert_to_deltalake``, Hive
partitions); the checkpoints become the application transactions of the first
``rated_calls`` commit, so the streaming service resumes where it stopped. Parts a
crash left beyond a checkpoint (the old recovery deleted them on assignment) and
hidden temporary files are deleted first; the checkpoint folder last.

Batch outputs carry no application transaction: rating the same input files again
after the conversion adds them twice (rate new files only). Local lakes only.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from deltalake import CommitProperties, Field, Schema, Transaction, convert_to_deltalake
from deltalake.exceptions import DeltaError
from deltalake.schema import PrimitiveType

from pipeline.errors import ConfigError, SinkError
from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.tables import RATED, TABLES
from pipeline.observability import LOG

_PART = re.compile(
    r"^(?P<topic>.+)\+(?P<partition>\d{5})\+(?P<first>\d{20})\+(?P<last>\d{20})\.parquet$"
)


def _checkpoints(root: Path) -> dict[tuple[str, int], int]:
    found = {}
    for path in sorted((root / "_checkpoints").glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            found[(str(doc["topic"]), int(doc["partition"]))] = int(doc["last_offset"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"checkpoint {path} cannot be read ({exc}): nothing converted"
            ) from None
    return found


def _orphans(root: Path, checkpoints: dict[tuple[str, int], int]) -> list[Path]:
    """Streaming parts beyond their partition's checkpoint, and temporary files."""
    doomed = list(root.glob("*/**/.*.tmp"))
    for path in (root / RATED).glob("*/*.parquet"):
        m = _PART.match(path.name)
        if m is None:
            continue
        last = checkpoints.get((m["topic"], int(m["partition"])))
        if last is None or int(m["first"]) > last:
            doomed.append(path)
    return doomed


def convert_lake(lake: Lake) -> dict[str, int]:
    """Convert the old-layout tables of ``lake`` (see the module docstring). Returns the
    data files each converted table lists. :class:`ConfigError` for an S3 lake, a lake
    with nothing to convert, or an unreadable checkpoint (nothing changed then)."""
    root = lake.location.path
    if root is None:
        raise ConfigError(f"{lake.uri}: lake convert works on a local lake (convert a copy)")
    legacy = [name for name in TABLES if lake.legacy_layout(name)]
    if not legacy:
        raise ConfigError(f"{root}: no table of the old plain-Parquet layout to convert")
    checkpoints = _checkpoints(root)
    for path in _orphans(root, checkpoints):
        LOG.info("lake convert: removing %s (not committed by the old layout)", path)
        path.unlink()
    converted = {}
    for name in legacy:
        spec = TABLES[name]
        transactions = [
            Transaction(partition_app_id(topic, partition), last)
            for (topic, partition), last in sorted(checkpoints.items())
        ] if name == RATED else []  # fmt: skip
        try:
            convert_to_deltalake(
                lake.table_uri(name),
                partition_by=Schema([Field(c, PrimitiveType("string")) for c in spec.partition_by])
                if spec.partition_by
                else None,
                partition_strategy="hive" if spec.partition_by else None,
                name=name,
                commit_properties=CommitProperties(app_transactions=transactions)
                if transactions
                else None,
            )
        except (OSError, DeltaError) as exc:
            raise SinkError(f"converting {lake.table_uri(name)} failed: {exc}") from None
        converted[name] = len(lake.live_files(name))
    shutil.rmtree(root / "_checkpoints", ignore_errors=True)
    return converted
