"""Exactly once into the lake under SIGKILL (issue 3; issue 9 #2 on a local lake and on
an S3 lake): consumers are killed at random moments, two of them sharing the group
part of the time, while traffic keeps arriving; afterwards every event is in the lake
exactly once or is a dead letter.

The S3 lake is a real S3-compatible server (SeaweedFS on loopback,
:mod:`tests.integration.object_store`), configured for the consumers the way an
operator would: ``--output s3://bucket/prefix`` and ``CDR_LAKE__*`` variables."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipeline.embedded import EmbeddedKafka, EmbeddedRedis
from pipeline.generate import write_generated
from pipeline.io import kafka_clients
from pipeline.io.wire import wire_header
from pipeline.lake.lake import Lake
from pipeline.refdata.files import SAMPLE_REFDATA_DIR
from pipeline.settings import KafkaSettings
from pipeline.streaming import produce_files
from tests.integration.object_store import ObjectStore
from tests.integration.streaming import (
    assert_each_event_once,
    dead_letters,
    lake_rated,
    load_sample_refdata,
    produce_raw,
    unique,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
KILLS = 12


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sigkill_consumers_at_random_moments(
    where: str,
    kafka_broker: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Issue 3 #5/#8, issue 9 #2: >= 10 SIGKILLs at random moments; then each event is
    in the lake exactly once (by topic, partition, offset) or a dead letter, never both,
    never lost, no gap."""
    load_sample_refdata(redis_server.url)
    kafka = KafkaSettings(brokers=kafka_broker.bootstrap)
    topic, dlq = unique("crash"), unique("crash-dlq")
    lake_env: dict[str, str] = {}
    if where == "s3":
        store: ObjectStore = request.getfixturevalue("object_store")
        lake = f"s3://{store.bucket}/crash-{uuid.uuid4().hex[:8]}/lake"
        lake_env = store.env()
        reader = Lake(lake, store.settings())
    else:
        lake = str(tmp_path / "lake")
        reader = Lake(lake)
    kafka_clients.ensure_topic(kafka, topic, PARTITIONS)
    waves = []
    for i in range(KILLS + 1):
        path = tmp_path / f"wave-{i}.avro"
        write_generated(path, 2_500, seed=100 + i, refdata_dir=SAMPLE_REFDATA_DIR)
        waves.append(path)
    env = {
        **os.environ,
        "CDR_KAFKA__BROKERS": kafka_broker.bootstrap,
        "CDR_REDIS__URL": redis_server.url,
        "CDR_BATCH__MAX_ROWS": "700",
        "CDR_BATCH__MAX_AGE_S": "0.2",
        "CDR_BATCH__POLL_MAX_MESSAGES": "300",
        **lake_env,
    }
    argv = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--topic",
        topic,
        "--group",
        unique("g"),
        "--output",
        lake,
        "--dead-letter-topic",
        dlq,
        "--stop-when-idle",
        "12",
    ]
    rng = random.Random(20261121)
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "consumers.log"
    try:
        produced = produce_files([waves[0]], kafka, topic).events
        procs += [_start(argv, env, log), _start(argv, env, log)]
        kills = 0
        while kills < KILLS:
            time.sleep(rng.uniform(0.3, 2.5))
            produced += produce_files([waves[kills + 1]], kafka, topic).events
            if kills % 3 == 0:  # malformed messages keep arriving too
                produce_raw(
                    kafka_broker.bootstrap,
                    topic,
                    [(b"junk", wire_header(1) + os.urandom(40)), (b"junk2", b"\x07junk")],
                )
                produced += 2
            live = [p for p in procs if p.poll() is None]
            if live:
                _kill(rng.choice(live))
                kills += 1
            live = [p for p in procs if p.poll() is None]
            for _ in range(rng.choice([1, 2]) - len(live)):
                procs.append(_start(argv, env, log))
        assert kills >= 10
        # let the survivors (and one fresh member) finish: they stop when idle
        procs.append(_start(argv, env, log))
        deadline = time.monotonic() + 240
        for proc in procs:
            proc.wait(max(1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)

    rated = lake_rated(reader)
    assert_each_event_once(rated, dead_letters(kafka_broker.bootstrap, dlq), produced, PARTITIONS)
    assert pc.count_distinct(rated.column("source_topic")).as_py() == 1
    # what readers see is the table's live files only: a killed writer's uncommitted
    # data files (if any) are never read, so no row is there twice (checked above)
