"""Delta commit latency of the lake (issue 9): small appends as the streaming service
makes them (:meth:`Lake.commit_partition`: rows + the partition's offset in one
commit), on a local disk and on a real S3-compatible server (SeaweedFS on loopback,
started and killed here), and the data files per partition that ``rate`` writes.

    .venv/bin/python -m benchmarks.bench_lake_commit [--commits 200] [--rows 100]

Not a test: numbers depend on the machine. Reports p50/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.batch import rate_files
from pipeline.generate import write_generated
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD, RATED
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.integration.object_store import seaweedfs


def _commits(lake: Lake, template: pa.Table, commits: int, rows: int) -> dict[str, float]:
    """``commits`` flushes of ``rows`` rows over 4 partitions, timed one by one."""
    seconds = []
    expected: dict[int, int | None] = {p: None for p in range(4)}
    for i in range(commits):
        p = i % 4
        first = 0 if expected[p] is None else int(expected[p] or 0) + 1
        last = first + rows - 1
        started = time.perf_counter()
        lake.commit_partition(
            "calls", p, template.slice(0, rows), first, last, expected=expected[p]
        )
        seconds.append(time.perf_counter() - started)
        expected[p] = last
    ms = np.array(seconds) * 1000
    return {
        "commits": commits,
        "rows_per_commit": rows,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "table_version": int(lake.version(RATED) or 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--events", type=int, default=200_000, help="events for the rate run")
    args = parser.parse_args()
    ref, tariffs = load_reference_dir(SAMPLE_REFDATA_DIR), load_tariff_dir(DEFAULT_TARIFFS_DIR)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        work = Path(tmp)
        avro = work / "calls.avro"
        write_generated(avro, args.events, seed=3, refdata_dir=SAMPLE_REFDATA_DIR)
        local = Lake(work / "lake")
        started = time.perf_counter()
        stats = rate_files([avro], local, ref, tariffs)
        files = {c: len(local.live_files(RATED, c)) for c in local.cycles()}
        results["rate"] = {
            "events": stats.events,
            "seconds": round(time.perf_counter() - started, 2),
            "batch_size": 250_000,
            "rated_files_per_cycle": files,
            "dead_letter_files": len(local.live_files(DEAD)),
        }
        template = local.read_rated(local.cycles()[0]).slice(0, args.rows)
        results["local"] = _commits(Lake(work / "commits"), template, args.commits, args.rows)
        with seaweedfs(work / "seaweedfs") as store:
            remote = Lake(f"s3://{store.bucket}/bench-{uuid.uuid4().hex[:6]}", store.settings())
            results["seaweedfs"] = _commits(remote, template, args.commits, args.rows)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
