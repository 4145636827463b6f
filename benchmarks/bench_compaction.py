"""Files per partition-hour with and without compaction (issue 9, item 4), and what
they cost a DuckDB query.

Simulates ``--minutes`` of the streaming service on ``--partitions`` Kafka partitions:
one commit per partition every ``--flush-s`` seconds (``batch.max_age_s``, default 5)
of ``--rate`` events per second per partition, through :meth:`Lake.commit_partition`
exactly as a member commits (rows and offset in one Delta commit; no sleeping: the
flushes are made back to back). Then counts the live files per partition-hour, times
a DuckDB aggregate over the table (the ``query`` command's way: the table's
``pyarrow`` dataset registered with DuckDB), runs ``lake compact`` and measures both
again, on a local disk and (``--s3``) on a real S3-compatible server (SeaweedFS on
loopback, started and killed here).

    .venv/bin/python -m benchmarks.bench_compaction [--minutes 60] [--partitions 4]
        [--rate 100] [--flush-s 5] [--s3]

Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.lake.compaction import compact_lake
from pipeline.lake.lake import Lake
from pipeline.lake.partitions import PartitionTable
from pipeline.lake.tables import RATED
from tests.unit.test_lake_maintenance import flush_rows, rated_template

QUERY = (
    "SELECT account_id, call_class, count(*) AS calls, sum(total_charge) AS charged "
    "FROM rated_calls GROUP BY ALL ORDER BY ALL"
)


def _query_seconds(lake: Lake, repeat: int = 5) -> float:
    """Median seconds of :data:`QUERY` over the table's current version."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        con = duckdb.connect(":memory:")
        data = lake.dataset(RATED)
        con.register("rated_calls", data)
        con.sql(QUERY).fetchall()
        con.close()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _stream(lake: Lake, template: pa.Table, args: argparse.Namespace) -> dict[str, float]:
    table = PartitionTable(lake)
    rows = int(args.rate * args.flush_s)
    flushes = int(args.minutes * 60 / args.flush_s)
    for p in range(args.partitions):
        table.resume_offset("calls", p)
    started = time.perf_counter()
    for i in range(flushes):
        for p in range(args.partitions):
            first = i * rows
            table.commit_range(
                "calls", p, flush_rows(template, p, first, rows), first, first + rows - 1
            )
    seconds = time.perf_counter() - started
    return {"commits": flushes * args.partitions, "rows": flushes * args.partitions * rows,
            "commit_seconds": round(seconds, 1)}  # fmt: skip


def _measure(lake: Lake, args: argparse.Namespace) -> dict[str, Any]:
    hours = args.minutes / 60
    files = len(lake.live_files(RATED))
    return {
        "files": files,
        "files_per_partition_hour": round(files / (args.partitions * hours), 2),
        "query_s": round(_query_seconds(lake), 3),
    }


def run_one(
    uri: str, settings: Any, template: pa.Table, args: argparse.Namespace
) -> dict[str, Any]:
    lake = Lake(uri, settings)
    out: dict[str, Any] = {"lake": "s3" if uri.startswith("s3://") else "local"}
    out["stream"] = _stream(lake, template, args)
    out["before"] = _measure(lake, args)
    started = time.perf_counter()
    done = compact_lake(lake, [RATED])
    out["compaction_s"] = round(time.perf_counter() - started, 1)
    out["compactions"] = [d.describe() for d in done]
    out["after"] = _measure(lake, args)
    out["query_speedup"] = round(out["before"]["query_s"] / out["after"]["query_s"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="events/s per partition")
    parser.add_argument("--flush-s", type=float, default=5.0)
    parser.add_argument("--s3", action="store_true", help="also on SeaweedFS (S3)")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-compaction-") as tmp:
        work = Path(tmp)
        template = rated_template(work, events=20_000)
        results.append(run_one(str(work / "lake"), None, template, args))
        print(json.dumps(results[-1], indent=2), flush=True)
        if args.s3:
            from tests.integration.object_store import seaweedfs

            with seaweedfs(work / "weed") as store:
                uri = f"s3://{store.bucket}/bench-{uuid.uuid4().hex[:8]}/lake"
                results.append(run_one(uri, store.settings(), template, args))
                print(json.dumps(results[-1], indent=2), flush=True)
    if args.results:
        args.results.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
