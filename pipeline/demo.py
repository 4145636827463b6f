"""``cdr-pipeline demo``: the whole path on this machine with nothing but the package.

Batch flavour (until the streaming service lands): generate synthetic switch
traffic, rate it into a lake, close the cycle, print the invoice summary and a
DuckDB query to explore the lake.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.batch import close, rate_files
from pipeline.generate import write_generated
from pipeline.io.lake import Lake
from pipeline.observability import console
from pipeline.refdata.files import load_reference_dir
from pipeline.summary import invoice_table
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

SAMPLE_REFDATA = Path(__file__).resolve().parent / "data" / "refdata"
CYCLE = "2026-11"


def run_demo(workdir: Path, events: int = 200_000) -> int:
    """Run the demo in ``workdir`` (replaced if it exists). Returns an exit code."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    avro = workdir / "traffic.avro"
    lake = Lake(workdir / "lake")
    console.rule("cdr-pipeline demo")
    started = time.perf_counter()
    write_generated(avro, events, seed=1, refdata_dir=SAMPLE_REFDATA)
    console.print(f"1. generated {events:,} call events -> {avro} ({time.perf_counter() - started:.1f} s)")
    ref = load_reference_dir(SAMPLE_REFDATA)
    tariffs = load_tariff_dir(DEFAULT_TARIFFS_DIR)
    stats = rate_files([avro], lake, ref, tariffs)
    console.print(
        f"2. rated {stats.events:,} events in {stats.seconds:.1f} s ({stats.per_second:,.0f} CDR/s): "
        f"{stats.rated:,} rated records, {stats.dead_letters:,} dead letters"
    )
    cycles = lake.cycles()
    for cycle in cycles:
        lines = close(lake, ref, tariffs, cycle)
        console.print(f"3. closed cycle {cycle}: {lines.num_rows} invoice lines")
        if cycle == CYCLE:
            console.print(invoice_table(lines, cycle))
    root = lake.root.resolve()
    console.print(f"\nThe lake is at {root}. Explore it with DuckDB, for example:\n")
    console.print(
        f"  duckdb -c \"SELECT call_class, origin_region, count(*) AS calls, sum(total_charge) AS charges "
        f"FROM read_parquet('{root}/rated_calls/*/*.parquet', hive_partitioning=true) "
        f"GROUP BY ALL ORDER BY charges DESC\"",
        soft_wrap=True,
    )
    return 0
