"""A zombie cannot commit over the new owner (issue 9 #2): a member frozen past its
session timeout in the middle of a flush loses its partitions to another member; when
it wakes up its stale range is refused by the table (the partition's application
transaction moved on) and every event is still in the lake exactly once.

Real broker (tansu, ``session.timeout.ms`` 6000), real Redis, a real Delta lake. The
zombie is a child process (:mod:`tests.integration.zombie_member`) that stops itself
with SIGSTOP (heartbeats included, like a long GC pause or a frozen VM) at the start
of one of its flushes; the new owner runs in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.embedded import EmbeddedKafka, EmbeddedRedis
from pipeline.generate import write_generated
from pipeline.io import kafka_clients
from pipeline.io.wire import wire_header
from pipeline.lake.lake import partition_app_id
from pipeline.refdata.files import SAMPLE_REFDATA_DIR
from pipeline.settings import KafkaSettings
from pipeline.streaming import produce_files
from tests.integration.streaming import (
    ServiceThread,
    assert_each_event_once,
    dead_letters,
    lake_offsets,
    lake_rated,
    load_sample_refdata,
    produce_raw,
    settings_for,
    unique,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]


def _wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state ``T`` in ``/proc/PID/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _all_in_lake(lake: Path, topic: str, produced: int) -> bool:
    """Every produced offset is committed (the partitions' last offsets sum up)."""
    held = lake_offsets(lake, topic, PARTITIONS).values()
    return sum(0 if o is None else o + 1 for o in held) == produced


def test_a_member_frozen_past_its_session_cannot_commit_over_the_new_owner(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Member A stops (SIGSTOP) at the start of a flush; B takes its partitions over
    after A's session times out and commits everything; A is woken (SIGCONT) and
    tries to commit its stale range: refused (fenced, logged, counted), nothing of it
    lands; A re-syncs, rejoins and shares the group with B for more traffic. R1: each
    event is in the lake once or a dead letter, no duplicate, no gap."""
    load_sample_refdata(redis_server.url)
    kafka = KafkaSettings(brokers=kafka_broker.bootstrap)
    topic, dlq, group = unique("zombie"), unique("zombie-dlq"), unique("g")
    lake = tmp_path / "lake"
    kafka_clients.ensure_topic(kafka, topic, PARTITIONS)
    waves = []
    for i in range(2):
        waves.append(tmp_path / f"wave-{i}.avro")
        write_generated(waves[-1], 6_000, seed=300 + i, refdata_dir=SAMPLE_REFDATA_DIR)
    produced = produce_files([waves[0]], kafka, topic).events
    junk = [(b"junk", wire_header(1) + b"\xff\xff"), (b"junk2", b"\x07junk")]
    produce_raw(kafka_broker.bootstrap, topic, junk)
    produced += len(junk)

    batch = {"max_rows": 400, "max_age_s": 0.3, "poll_max_messages": 200}
    settings: dict[str, Any] = {
        "kafka": {"brokers": kafka_broker.bootstrap},
        "redis": {"url": redis_server.url},
        "topic": topic,
        "group": group,
        "output": str(lake),
        "dead_letter_topic": dlq,
        "batch": batch,
    }
    report = tmp_path / "zombie.json"
    config = tmp_path / "zombie-config.json"
    config.write_text(
        json.dumps({"settings": settings, "report": str(report), "freeze_at": 5}),
        encoding="utf-8",
    )
    log = tmp_path / "zombie.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("wb") as out:
        zombie = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.zombie_member", str(config)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    owner: ServiceThread | None = None
    try:
        _wait_for("the zombie to freeze mid-flush", lambda: _stopped(zombie.pid), 90)
        frozen = json.loads(report.read_text(encoding="utf-8"))["frozen"]
        part, first, last = frozen["partition"], frozen["first"], frozen["last"]
        held = lake_offsets(lake, topic, PARTITIONS)[part]
        assert held is None or held < first, "the frozen range is committed already"

        # B joins; the group gives it A's partitions once A's session has timed out
        owner = ServiceThread(
            settings_for(
                kafka_broker.bootstrap,
                redis_server.url,
                lake,
                topic,
                group=group,
                dead_letter_topic=dlq,
                stop_when_idle=None,
                batch=batch,
            )
        )
        owner.start()
        _wait_for(
            "the new owner to commit every event", lambda: _all_in_lake(lake, topic, produced), 120
        )
        new_held = lake_offsets(lake, topic, PARTITIONS)[part]
        assert new_held is not None
        assert new_held >= last

        # A wakes up and tries to commit its stale range: refused
        os.kill(zombie.pid, signal.SIGCONT)
        fenced_line = f"fenced topic={topic} partition={part} offsets={first}-{last}: dropped"
        _wait_for(
            "the zombie's commit to be refused",
            lambda: fenced_line in log.read_text(encoding="utf-8", errors="replace"),
            60,
        )
        assert lake_offsets(lake, topic, PARTITIONS)[part] == new_held

        # both members in the group again: more traffic, committed by whoever owns it
        produced += produce_files([waves[1]], kafka, topic).events
        _wait_for("the second wave in the lake", lambda: _all_in_lake(lake, topic, produced), 120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(zombie.pid, signal.SIGCONT)
            os.killpg(zombie.pid, signal.SIGTERM)
        try:
            zombie.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(zombie.pid, signal.SIGKILL)
            zombie.wait(10)
        if owner is not None:
            owner.stop()

    text = log.read_text(encoding="utf-8", errors="replace")
    assert zombie.returncode == 0, text[-3000:]
    result = json.loads(report.read_text(encoding="utf-8"))
    assert result["fenced"] >= 1, "cdr_ranges_fenced_total not counted"
    # then A let go of the partitions: lost (its session timed out), revoked by the
    # group, or re-synced by itself
    after = text[text.index(fenced_line) :]
    assert any(
        line in after
        for line in ("lost count=", "revoked count=", "lake refused ranges of partitions=")
    ), after[-2000:]
    assert owner is not None
    assert owner.stats is not None
    assert owner.stats.rated > 0
    rated = lake_rated(lake)
    assert_each_event_once(rated, dead_letters(kafka_broker.bootstrap, dlq), produced, PARTITIONS)
    # the partition's application transaction only ever moved forward: a stale range
    # committed after the new owner's would have set it back
    for p in range(PARTITIONS):
        versions = _transaction_versions(lake, partition_app_id(topic, p))
        assert versions == sorted(set(versions)), (p, versions)


def _transaction_versions(lake: Path, app_id: str) -> list[int]:
    """The versions ``app_id`` set, commit by commit, from the table's Delta log."""
    versions = []
    for entry in sorted((lake / "rated_calls" / "_delta_log").glob("*.json")):
        for line in entry.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "txn" in action and action["txn"]["appId"] == app_id:
                versions.append(int(action["txn"]["version"]))
    return versions
