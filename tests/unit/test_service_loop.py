"""The streaming service's real loop (staging, rating, buffers, committer, pause policy)
driven by in-memory fakes (``tests/unit/fakes.py``): rebalances, outages and
backpressure at chosen moments. Throughout, R1: every consumed offset ends as exactly
one rated record or one dead letter, nothing lost, nothing duplicated. The same
guarantees against a real broker and Redis: ``tests/integration/test_streaming.py``
and ``test_crash.py``."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.io.wire import (
    CALL_EVENT_SCHEMA_ID,
    SchemaRegistryError,
    ShippedSchemas,
    encode_table,
    wire_header,
)
from pipeline.lake.lake import Lake
from pipeline.lake.partitions import PartitionTable
from pipeline.refdata.files import SAMPLE_REFDATA_DIR, load_reference_dir
from pipeline.runtime.enrich import Enricher
from pipeline.runtime.ports import Flush, LakeTable, Mark
from pipeline.runtime.service import StreamingService
from pipeline.runtime.stats import RunStats
from pipeline.settings import load_settings
from pipeline.tariff_files import DEFAULT_TARIFFS_DIR, load_tariff_dir
from tests.unit.fakes import (
    FailingLake,
    FakeConsumer,
    FakeDeadLetters,
    FakeTopic,
    MemoryLake,
    MemoryReferenceReader,
)

TOPIC = "calls"
Msg = tuple[bytes | None, bytes | None]
JUNK: list[Msg] = [
    (b"junk-1", b"\x07not a wire message"),
    (b"junk-2", wire_header(CALL_EVENT_SCHEMA_ID) + b"\xff\xff\xff"),
    (b"junk-3", None),
]


@functools.cache
def _events(n: int) -> tuple[Msg, ...]:
    from pipeline.generate import generate_events

    events = generate_events(n, seed=7, refdata_dir=SAMPLE_REFDATA_DIR)
    values = encode_table(events, CALL_EVENT_SCHEMA_ID)
    keys = [str(k).encode() for k in events.column("call_id").to_pylist()]
    return tuple(zip(keys, values, strict=True))


def traffic(n: int = 400, *, junk: bool = True) -> list[Msg]:
    """``n`` generated call events, with malformed messages among them if ``junk``."""
    messages = list(_events(n))
    if junk:
        for i, bad in enumerate(JUNK):
            messages.insert(50 + 97 * i, bad)
    return messages


@functools.cache
def _reference() -> Any:
    return load_reference_dir(SAMPLE_REFDATA_DIR)


def expected_reasons(messages: list[Msg]) -> dict[str, int]:
    """Dead letters by reason of ``messages`` decoded and rated in one go (no outage)."""
    import numpy as np

    from pipeline.io.wire import KafkaSources, decode_batch
    from pipeline.metrics import count_reasons
    from pipeline.rating.rate import rate_batch

    n = len(messages)
    sources = KafkaSources(TOPIC, np.zeros(n, np.int32), np.arange(n, dtype=np.int64))
    events, dead = decode_batch(
        [v for _, v in messages], sources, ShippedSchemas(), keys=[k for k, _ in messages]
    )
    result = rate_batch(events, _reference(), load_tariff_dir(DEFAULT_TARIFFS_DIR))
    return count_reasons(pa.concat_tables([dead, result.dead_letters]).column("reason"))


class FlakyResolver(ShippedSchemas):
    """The shipped schemas, unreachable like a registry while :attr:`down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def writer_schema(self, schema_id: int) -> Any:
        if self.down.is_set():
            raise SchemaRegistryError("schema registry http://registry unreachable (fake)")
        return super().writer_schema(schema_id)


@dataclass
class Rig:
    topic: FakeTopic
    consumer: FakeConsumer
    dead: FakeDeadLetters
    lake: LakeTable
    reader: MemoryReferenceReader
    resolver: FlakyResolver
    service: StreamingService
    points: list[tuple[str, dict[str, Any]]]

    def run(self, timeout: float = 60.0) -> RunStats:
        """Run the service in a thread until it stops by itself (idle)."""
        result: list[RunStats] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                result.append(self.service.run())
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.service.stopping.set()
            thread.join(30)
            pytest.fail(f"the service did not stop within {timeout:.0f} s")
        if errors:
            raise errors[0]
        return result[0]


def make_rig(
    messages: list[Msg],
    *,
    lake: LakeTable | None = None,
    partitions: int = 2,
    dead_failures: int = 0,
    batch: dict[str, Any] | None = None,
    stop_when_idle: float = 0.4,
    output: Path = Path("unused-lake"),
) -> Rig:
    topic = FakeTopic(TOPIC, partitions)
    topic.produce_all(messages)
    consumer = FakeConsumer(topic)
    dead = FakeDeadLetters(dead_failures)
    reader = MemoryReferenceReader(_reference())
    resolver = FlakyResolver()
    points: list[tuple[str, dict[str, Any]]] = []
    settings = load_settings(
        topic=TOPIC,
        output=str(output),
        stop_when_idle=stop_when_idle,
        batch={"max_rows": 60, "max_age_s": 0.05, "poll_max_messages": 25, **(batch or {})},
    )
    lake = lake if lake is not None else MemoryLake()
    service = StreamingService(
        settings,
        consumer=consumer,
        dead_letters=dead,
        lake=lake,
        enricher=Enricher(reader, version_check_s=0.0),
        tariffs=load_tariff_dir(DEFAULT_TARIFFS_DIR),
        resolver=resolver,
        hook=lambda point, info: points.append((point, info)),
    )
    return Rig(topic, consumer, dead, lake, reader, resolver, service, points)


def rated_offsets(lake: LakeTable, root: Path | None = None) -> list[tuple[int, int]]:
    if isinstance(lake, FailingLake):
        return rated_offsets(lake.inner, root)
    if isinstance(lake, MemoryLake):
        return lake.rated()
    assert root is not None
    rows: list[tuple[int, int]] = []
    for cycle in Lake(root).cycles():
        table = Lake(root).read_rated(cycle, ["source_partition", "source_offset"])
        rows += zip(
            table.column("source_partition").to_pylist(),
            table.column("source_offset").to_pylist(),
            strict=True,
        )
    return rows


def assert_each_offset_once(rig: Rig, stats: RunStats, root: Path | None = None) -> None:
    """R1: each offset of the topic is exactly one rated record or one dead letter
    (dead letters deduplicated by source offset, as ``dead-letters export`` does)."""
    rated = Counter(rated_offsets(rig.lake, root))
    twice = [k for k, n in rated.items() if n > 1]
    assert twice == [], f"rated twice: {twice[:5]}"
    dead = {(r["source_partition"], r["source_offset"]) for r in rig.dead.rows}
    assert not set(rated) & dead, "an offset is both rated and dead-lettered"
    missing = rig.topic.all_offsets() - set(rated) - dead
    assert missing == set(), f"lost: {sorted(missing)[:5]}"
    assert stats.consumed >= stats.rated + stats.dead_letters
    assert stats.rated == len(rated)
    assert rig.consumer.polled_messages == [], "a poll while paused handed out a message"
    # the Kafka commit follows what is durable
    ends = {p: len(log) for p, log in rig.topic.logs.items() if log}
    assert rig.consumer.committed == ends


@pytest.fixture
def run_log(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The messages the service logged so far (DEBUG and up)."""
    caplog.set_level(logging.DEBUG, logger="pipeline")
    return lambda: [r.getMessage() for r in caplog.records if r.name.startswith("pipeline.")]


# ----------------------------------------------------------------------------- tests
def test_every_offset_ends_as_one_rated_record_or_one_dead_letter(tmp_path: Path) -> None:
    """R1 end to end through the real lake (a Delta table on tmp_path):
    malformed messages become dead letters, everything else rated, once; the stage
    timings come from the service itself."""
    messages = traffic(400)
    rig = make_rig(messages, lake=PartitionTable(Lake(tmp_path)), output=tmp_path)
    stats = rig.run()
    assert stats.consumed == len(messages) == stats.rated + stats.dead_letters
    assert stats.by_reason == expected_reasons(messages)
    assert stats.by_reason.get("BAD_MAGIC_BYTE", 0) >= 1
    assert_each_offset_once(rig, stats, tmp_path)
    assert stats.durable_offsets == {p: len(log) - 1 for p, log in rig.topic.logs.items()}
    expected = {
        "main:consume", "main:stage", "main:wait_prepared", "main:rate", "main:buffer",
        "main:flush", "decode:decode_batch", "decode:numbers", "lookup:for_numbers",
        "writer:dead-letters-acked", "writer:committed",
        "writer:other",
    }  # fmt: skip
    assert expected <= set(stats.stage_seconds)
    assert all(v >= 0 for v in stats.stage_seconds.values())
    flush_points = [p for p, _ in rig.points if p.startswith("flush:")]
    assert flush_points[:3] == [
        "flush:start", "flush:dead-letters-acked", "flush:committed",
    ]  # fmt: skip
    assert rig.consumer.closed
    assert not rig.service.assigned


def test_stop_when_idle_on_an_empty_topic() -> None:
    rig = make_rig([], stop_when_idle=0.3)
    started = time.monotonic()
    stats = rig.run(timeout=20)
    assert time.monotonic() - started < 5
    assert (stats.consumed, stats.flushes) == (0, 0)
    assert rig.consumer.closed
    assert ("group:assigned", {"partitions": [0, 1]}) in rig.points
    assert ("group:revoked", {"partitions": [0, 1]}) in rig.points


def test_rebalance_mid_batch_drops_the_staged_batch_and_rereads_it(
    run_log: Callable[[], list[str]],
) -> None:
    """A batch polled under the old assignment is dropped and its messages re-read from
    the lake's offsets; a partition handed away and back resumes where the lake is."""
    messages = traffic(600)
    rig = make_rig(messages)
    rig.consumer.at_call(4, lambda c: c.rebalance([0]))  # batch of call 3 is staged
    rig.consumer.at_call(9, lambda c: c.rebalance([0, 1]))
    stats = rig.run()
    assert rig.consumer.rebalances == 3
    assert any(m.startswith("assignment changed during a batch: dropping") for m in run_log())
    handed = Counter(rig.consumer.handed_out)
    assert any(n > 1 for n in handed.values()), "nothing was read twice: no batch dropped"
    assert stats.consumed < sum(handed.values())
    assert_each_offset_once(rig, stats)


@pytest.mark.parametrize(("where", "cause"), [("lake", "lake"), ("dead-letter topic", "kafka")])
def test_outage_mid_flush_pauses_retries_and_writes_once(
    where: str, cause: str, run_log: Callable[[], list[str]]
) -> None:
    """The lake (or the dead-letter topic) fails twice: the flush is retried with back-off
    and lands once; readiness names the cause meanwhile; nothing is dead-lettered for
    it."""
    messages = traffic(300)
    memory = MemoryLake()
    lake = FailingLake(memory, 2) if where == "lake" else memory
    rig = make_rig(messages, lake=lake, dead_failures=2 if where != "lake" else 0)
    seen: list[str | None] = []
    rig.consumer.watch(lambda _c, _m: seen.append(rig.service.paused_on))
    stats = rig.run()
    assert_each_offset_once(rig, stats)
    assert cause in seen
    assert rig.service.paused_on is None
    log = run_log()
    down = [m for m in log if " unavailable, retrying partition=" in m]
    back = [m for m in log if " back after " in m]
    assert len(down) == 1, down
    assert down[0].startswith(f"{cause} unavailable, retrying partition=")
    assert len(back) == 1, back
    assert back[0].startswith(f"{cause} back after ")
    assert back[0].endswith(" written")
    assert len(memory.commits) == len(set(memory.commits)), "a range was committed twice"
    assert stats.by_reason == expected_reasons(messages)  # no dead letter for the outage


@pytest.mark.parametrize(
    ("dependency", "cause"), [("redis", "redis"), ("registry", "schema registry")]
)
def test_dependency_outage_on_a_batch_pauses_and_resumes_naming_its_cause(
    dependency: str, cause: str, run_log: Callable[[], list[str]]
) -> None:
    """Issue 11 #2: Redis (or the schema registry) goes away for a while: consumption
    pauses, nothing is rated without enrichment and nothing is dead-lettered; it resumes
    once, saying which dependency came back after how long, and the batches staged
    during the outage do not report the old error again."""
    messages = traffic(500, junk=False)
    rig = make_rig(messages)
    down = rig.reader.down if dependency == "redis" else rig.resolver.down
    paused: list[tuple[str | None, bool]] = []

    def outage(_consumer: FakeConsumer) -> None:
        down.set()
        threading.Timer(0.7, down.clear).start()

    rig.consumer.at_call(5, outage)
    rig.consumer.watch(
        lambda c, m: paused.append((rig.service.paused_on, bool(c.paused))) if m == "poll" else None
    )
    stats = rig.run()
    assert_each_offset_once(rig, stats)
    assert stats.by_reason == expected_reasons(messages)  # no dead letter for the outage
    assert (cause, True) in paused, "not paused on the dependency"
    log = run_log()
    unavailable = [m for m in log if " unavailable, pausing consumption" in m]
    resumed = [m for m in log if m.endswith(": resuming consumption")]
    assert len(unavailable) == 1, unavailable
    assert unavailable[0].startswith(f"{cause} unavailable, pausing consumption: ")
    assert len(resumed) == 1, resumed
    assert resumed[0].startswith(f"{cause} back after ")
    seconds = float(resumed[0].removeprefix(f"{cause} back after ").split(" ")[0])
    assert 0.3 <= seconds <= 5.0
    assert stats.stage_seconds["main:paused"] >= 0.3


class GatedLake:
    """A lake table whose commits wait until :attr:`gate` is set (a slow lake)."""

    def __init__(self, inner: LakeTable) -> None:
        self.inner = inner
        self.gate = threading.Event()

    def resume_offset(self, topic: str, partition: int) -> int | None:
        return self.inner.resume_offset(topic, partition)

    def commit(self, flush: Flush, mark: Mark) -> int:
        assert self.gate.wait(30), "gate never opened"
        return self.inner.commit(flush, mark)


def test_revoke_during_backpressure_loses_nothing(run_log: Callable[[], list[str]]) -> None:
    """The writer is slow, ranges queue up, consumption is paused (backpressure); a
    rebalance arrives while paused: the revoked partitions are drained, the new
    assignment stays paused until the writer has caught up (a poll then hands out no
    message nobody would buffer), and every offset still ends once."""
    memory = MemoryLake()
    gated = GatedLake(memory)
    messages = traffic(800)
    rig = make_rig(messages, lake=gated, batch={"max_rows": 20})
    rebalanced: list[bool] = []

    def during_backpressure(consumer: FakeConsumer, method: str) -> None:
        if method == "poll" and rig.service.pausing.holding and not rebalanced:
            rebalanced.append(True)
            threading.Timer(0.2, gated.gate.set).start()  # the revocation drains the writer
            consumer.rebalance([0, 1])
            assert consumer.paused == {0, 1}, "new assignment not paused during backpressure"

    rig.consumer.watch(during_backpressure)
    stats = rig.run()
    assert rebalanced == [True], "backpressure never engaged"
    assert stats.stage_seconds["main:backpressure"] > 0
    rig.lake = memory
    assert_each_offset_once(rig, stats)
    assert any(m.startswith("revoked count=2 partitions=[0, 1]") for m in run_log())


def test_a_range_abandoned_on_revoke_is_reread_by_the_next_owner() -> None:
    """Flushes keep failing when the partition is revoked: the drain gives up (nothing
    of the range committed) and the range is read again after the assignment."""
    import pipeline.runtime.service as service_module

    memory = MemoryLake()
    failing = FailingLake(memory, 1_000)
    messages = traffic(200)
    rig = make_rig(messages, lake=failing)

    def heal(_consumer: FakeConsumer) -> None:
        failing.failures = 0

    rig.consumer.at_call(6, lambda c: c.rebalance([0, 1]))
    rig.consumer.at_call(7, heal)
    saved = service_module.REVOKE_DRAIN_S
    service_module.REVOKE_DRAIN_S = 0.3
    try:
        stats = rig.run()
    finally:
        service_module.REVOKE_DRAIN_S = saved
    rig.lake = memory
    assert_each_offset_once(rig, stats)
    assert rig.service.paused_on is None


def test_probes_read_the_service_state() -> None:
    """The health probes' attributes: assigned, paused_on, last_tick."""
    from pipeline.runtime.health import Probes

    rig = make_rig(traffic(50))
    probes = Probes(rig.service, None)
    assert probes.ready().detail == "not assigned: waiting for the consumer group"
    states: list[tuple[bool, bool]] = []
    rig.consumer.watch(lambda _c, _m: states.append((probes.ready().ok, probes.live().ok)))
    rig.run()
    assert (True, True) in states
    assert not rig.service.assigned


@pytest.mark.parametrize("outage", ["redis", "slow lake"])
def test_stop_when_idle_does_not_count_a_pause(
    outage: str, run_log: Callable[[], list[str]]
) -> None:
    """Issue 11 #1: Redis goes away (or the lake stops acknowledging, so consumption
    pauses on backpressure) for longer than ``stop_when_idle``, and after the resume
    the consumer fetches afresh (its first polls come back empty, as librdkafka's do):
    the service waits through the outage, resumes, finishes every message and only
    then stops as idle. Before the fix it stopped right after the resume, the pause
    counted as idle, with most of the topic unread."""
    messages = traffic(600, junk=False)
    memory = MemoryLake()
    gated = GatedLake(memory)
    slow = outage == "slow lake"
    rig = make_rig(messages, lake=gated if slow else memory, stop_when_idle=0.6)
    rig.consumer.refetch_s = 0.3
    outage_s = 1.5
    if slow:
        rig.consumer.at_call(3, lambda _c: threading.Timer(outage_s, gated.gate.set).start())
    else:
        gated.gate.set()

        def down(_consumer: FakeConsumer) -> None:
            rig.reader.down.set()
            threading.Timer(outage_s, rig.reader.down.clear).start()

        rig.consumer.at_call(4, down)
    started = time.monotonic()
    stats = rig.run()
    assert time.monotonic() - started >= outage_s
    rig.lake = memory
    assert_each_offset_once(rig, stats)
    assert stats.consumed == len(messages)
    log = run_log()
    stops = [m for m in log if m.startswith("idle for ")]
    assert len(stops) == 1, stops
    if slow:
        assert stats.stage_seconds["main:backpressure"] >= 0.6
        assert any(m.startswith("backpressure over after ") for m in log)
    else:
        assert stats.stage_seconds["main:paused"] >= 0.6


def test_lost_partitions_are_not_flushed_and_come_back_logged(
    run_log: Callable[[], list[str]],
) -> None:
    """Issue 11 #3: the session times out (a broker freeze) and the assignment is lost:
    another member may own the partitions already, so nothing buffered is flushed or
    committed (before the fix ``on_revoke`` ran for lost partitions and flushed them);
    the loss, the new assignment without partition 1 and partition 1 coming back later
    are logged with counts and durations. R1 holds: the dropped records are read again
    from the lake's offsets."""
    messages = traffic(600)
    rig = make_rig(messages, batch={"max_age_s": 30.0, "max_rows": 100_000})

    def lose(consumer: FakeConsumer) -> None:
        rig.points.append(("test:session-timed-out", {}))
        consumer.lose()

    rig.consumer.at_call(8, lose)
    rig.consumer.at_call(9, lambda c: c.rebalance([0]))

    def later(consumer: FakeConsumer) -> None:
        time.sleep(0.3)
        consumer.rebalance([0, 1])

    rig.consumer.at_call(12, later)
    stats = rig.run()
    assert_each_offset_once(rig, stats)
    points = [p for p, _ in rig.points]
    lost_at = points.index("test:session-timed-out")
    assert "flush:start" not in points[lost_at : points.index("group:assigned", lost_at)], (
        "a lost partition was flushed"
    )
    log = run_log()
    lost = [m for m in log if m.startswith("lost count=")]
    assert len(lost) == 1, lost
    assert lost[0].startswith("lost count=2 partitions=[0, 1] ")
    dropped = int(lost[0].split("records=")[1].split(",")[0])
    assert dropped > 0, "nothing was buffered when the assignment was lost"
    assert "assigned count=1 partitions=[(0, " in "\n".join(log)
    assert any(m.startswith("not reassigned to this member: [1] ") for m in log), log
    back = [m for m in log if m.startswith("partitions=[1] reassigned after ")]
    assert len(back) == 1, back
    assert float(back[0].split(" after ")[1].split(" ")[0]) >= 0.3
    assert any(m.startswith("revoked count=1 partitions=[0]") for m in log)
