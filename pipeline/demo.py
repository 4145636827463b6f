"""``cdr-pipeline demo``: the whole path on this machine with nothing but the package.

Starts an embedded Kafka-protocol broker and Redis-protocol server (from Python
wheels, on free loopback ports), loads the sample reference data into Redis,
generates synthetic switch traffic, produces it to Kafka, runs two consumers in one
group, exports the dead letters, closes the billing cycle and prints throughput,
the lake's location, the invoice summary and a DuckDB query to explore the lake.
Ctrl-C stops everything it started (each child runs in its own process group).

``--batch`` runs the batch path instead (no broker, no Redis).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.batch import close, rate_files
from pipeline.embedded import embedded_kafka, embedded_redis
from pipeline.generate import write_generated
from pipeline.invoice_console import invoice_table
from pipeline.lake.lake import Lake
from pipeline.lake.tables import DEAD
from pipeline.observability import console
from pipeline.refdata.files import load_reference_dir
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir

SAMPLE_REFDATA = Path(__file__).resolve().parent / "data" / "refdata"
CYCLE = "2026-11"
TOPIC = "call-events"
DLQ = "call-events-dlq"
PARTITIONS = 4


def _closing(lake: Lake) -> None:
    ref = load_reference_dir(SAMPLE_REFDATA)
    tariffs = load_tariff_dir(DEFAULT_TARIFFS_DIR)
    for cycle in lake.cycles():
        lines = close(lake, ref, tariffs, cycle)
        console.print(f"   closed cycle {cycle}: {lines.num_rows} invoice lines")
        if cycle == CYCLE:
            console.print(invoice_table(lines, cycle))
    root = lake.uri
    console.print(
        f"\nThe lake is at {root}: Delta Lake tables rated_calls, dead_letters and "
        "invoice_lines. Query it with `cdr-pipeline query`, or from Python with DuckDB "
        "over the table's live files (docs/analytics.md):\n"
    )
    console.print(
        '  python -c "import duckdb, deltalake; '  # noqa: S608
        f"calls = deltalake.DeltaTable('{root}/rated_calls').to_pyarrow_dataset(); "
        "print(duckdb.sql('SELECT call_class, origin_region, count(*) AS calls, "
        "sum(total_charge) AS charges FROM calls GROUP BY ALL ORDER BY charges DESC'))\"",
        soft_wrap=True,
    )
    console.print(
        "\n  With internet access, DuckDB's delta extension reads it directly: "  # noqa: S608
        f"SELECT count(*) FROM delta_scan('{root}/rated_calls')",
        soft_wrap=True,
    )


def run_demo(workdir: Path, events: int = 200_000, batch: bool = False) -> int:
    """Run the demo in ``workdir`` (replaced if it exists). Returns an exit code."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    avro = workdir / "traffic.avro"
    lake = Lake(workdir / "lake")
    console.rule("cdr-pipeline demo")
    started = time.perf_counter()
    write_generated(avro, events, seed=1, refdata_dir=SAMPLE_REFDATA)
    console.print(
        f"1. generated {events:,} call events -> {avro} ({time.perf_counter() - started:.1f} s)"
    )
    if batch:
        stats = rate_files(
            [avro], lake, load_reference_dir(SAMPLE_REFDATA), load_tariff_dir(DEFAULT_TARIFFS_DIR)
        )
        console.print(
            f"2. rated {stats.events:,} events in {stats.seconds:.1f} s ({stats.per_second:,.0f} CDR/s)"
        )
        _closing(lake)
        return 0
    return _streaming(workdir, avro, lake, events)


def _streaming(workdir: Path, avro: Path, lake: Lake, events: int) -> int:
    import redis as redis_lib

    from pipeline.refdata.redis_load import load_to_redis
    from pipeline.settings import KafkaSettings
    from pipeline.streaming import export_dead_letters, produce_files

    children: list[subprocess.Popen[bytes]] = []
    logs = workdir / "logs"
    logs.mkdir()
    try:
        with embedded_kafka() as kafka, embedded_redis() as redis:
            console.print(
                f"2. embedded Kafka-protocol broker at {kafka.bootstrap}, Redis-protocol server at port {redis.port}"
            )
            version = load_to_redis(redis_lib.Redis.from_url(redis.url), SAMPLE_REFDATA)
            console.print(f"3. loaded the sample reference data into Redis (version {version})")
            settings = KafkaSettings(brokers=kafka.bootstrap)
            produced = produce_files([avro], settings, TOPIC, partitions=PARTITIONS)
            console.print(
                f"4. produced {produced.events:,} events to {TOPIC} ({PARTITIONS} partitions) in {produced.seconds:.1f} s"
            )
            env = {
                **os.environ,
                "CDR_KAFKA__BROKERS": kafka.bootstrap,
                "CDR_REDIS__URL": redis.url,
                "CDR_METRICS_HOST": "127.0.0.1",  # should CDR_METRICS_PORT be set: this machine only
            }
            argv = [
                sys.executable,
                "-m",
                "pipeline.cli",
                "run",
                "--topic",
                TOPIC,
                "--group",
                "demo",
                "--output",
                lake.uri,
                "--dead-letter-topic",
                DLQ,
                "--stop-when-idle",
                "6",
            ]
            t0 = time.perf_counter()
            for i in (1, 2):
                with (logs / f"consumer-{i}.log").open("wb") as log:
                    children.append(
                        subprocess.Popen(
                            argv,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            console.print(f"5. started 2 consumers in group 'demo' (logs in {logs})")
            done_at = _wait_for_lake(lake, produced.events, children)
            elapsed = (done_at or time.perf_counter()) - t0
            for child in children:
                child.wait(120)
            console.print(
                f"   every event is in the lake after {elapsed:.1f} s from consumer start "
                f"({produced.events / elapsed:,.0f} CDR/s end to end, including group join)"
            )
            n_dead = export_dead_letters(settings, DLQ, lake)
            console.print(
                f"6. exported {n_dead:,} dead letters from {DLQ} to {lake.table_uri(DEAD)}"
            )
            _closing(lake)
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything the demo started")
        return 130
    finally:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
    return 0


def _wait_for_lake(
    lake: Lake, expected: int, children: list[subprocess.Popen[bytes]]
) -> float | None:
    """Poll the lake until its committed offsets cover ``expected`` ones; the time then."""
    while any(c.poll() is None for c in children):
        offsets = [lake.resume_offset(TOPIC, p) for p in range(PARTITIONS)]
        covered = sum(o for o in offsets if o is not None)
        if covered >= expected:
            return time.perf_counter()
        time.sleep(0.1)
    return None
