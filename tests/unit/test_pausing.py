"""The one retry and pause policy (``pipeline.runtime.pausing``): back-off, causes and
durations in the log, the consumer paused and resumed, readiness and the gauge."""

from __future__ import annotations

import logging
import threading

import pytest
from confluent_kafka import TopicPartition

from pipeline.errors import BrokerError, InfrastructureError, ReferenceStoreError, SinkError
from pipeline.io.wire import SchemaRegistryError
from pipeline.metrics import ServiceMetrics
from pipeline.runtime.pausing import Backoff, Pausing, cause_of
from pipeline.runtime.stats import RunStats, StageClock
from tests.unit.fakes import FakeConsumer, FakeTopic


def _pausing() -> tuple[Pausing, FakeConsumer, ServiceMetrics]:
    consumer = FakeConsumer(FakeTopic("t", 2))
    consumer.assign([TopicPartition("t", 0, 0), TopicPartition("t", 1, 0)])
    metrics = ServiceMetrics()
    stages = StageClock(RunStats(), metrics)
    return Pausing(consumer, metrics, stages, first_delay=0.001, max_delay=0.002), consumer, metrics


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.runtime.pausing"]


def test_backoff_doubles_up_to_its_limit() -> None:
    backoff = Backoff(0.2, 5.0)
    assert [backoff.next() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (ReferenceStoreError("x"), "redis"),
        (SchemaRegistryError("x"), "schema registry"),
        (SinkError("x"), "lake"),
        (BrokerError("x"), "kafka"),
        (InfrastructureError("x"), "a dependency"),
    ],
)
def test_cause_of(error: InfrastructureError, cause: str) -> None:
    assert cause_of(error) == cause


def test_retry_pauses_names_each_cause_and_resumes_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11 #2: Redis fails twice, then the schema registry once: one pause of the
    assignment, each cause logged when it starts, the resume naming the cause that
    ended it with its duration and the whole pause's."""
    caplog.set_level(logging.INFO, logger="pipeline")
    pausing, consumer, metrics = _pausing()
    errors: list[InfrastructureError] = [
        ReferenceStoreError("redis unreachable"),
        ReferenceStoreError("redis unreachable"),
        SchemaRegistryError("registry unreachable"),
    ]
    seen: list[tuple[str | None, set[int], float]] = []

    def action() -> str:
        seen.append((pausing.paused_on, set(consumer.paused), metrics.paused._value.get()))
        if errors:
            raise errors.pop(0)
        return "done"

    assert pausing.retry(action, stopping=threading.Event()) == "done"
    assert seen[0] == (None, set(), 0.0)
    assert seen[1] == ("redis", {0, 1}, 1.0)
    assert seen[3] == ("schema registry", {0, 1}, 1.0)
    assert consumer.paused == set()
    assert pausing.paused_on is None
    assert metrics.paused._value.get() == 0.0
    log = _messages(caplog)
    assert log[0] == "redis unavailable, pausing consumption: redis unreachable"
    assert log[1] == "schema registry unavailable, pausing consumption: registry unreachable"
    assert len(log) == 3
    assert log[2].startswith("schema registry back after ")
    assert " s (paused " in log[2]
    assert log[2].endswith(" s in all): resuming consumption")


def test_retry_gives_up_when_stopping() -> None:
    pausing, consumer, _ = _pausing()
    stopping = threading.Event()
    stopping.set()

    def action() -> None:
        raise ReferenceStoreError("down")

    with pytest.raises(ReferenceStoreError):
        pausing.retry(action, stopping=stopping)
    assert consumer.paused == set()
    assert pausing.paused_on is None


def test_writer_retry_never_touches_the_consumer_and_clears_on_abandon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline")
    pausing, consumer, metrics = _pausing()
    abort = threading.Event()
    attempts: list[str | None] = []

    def action() -> None:
        attempts.append(pausing.paused_on)
        if len(attempts) == 3:
            abort.set()
        raise SinkError("disk full")

    assert pausing.retry_writer(action, abort=abort, what="partition=1") is None
    assert attempts == [None, "lake", "lake"]
    assert consumer.paused == set()
    assert pausing.paused_on is None
    assert metrics.paused._value.get() == 0.0
    log = _messages(caplog)
    assert log[0] == "lake unavailable, retrying partition=1: disk full"
    assert log[1].startswith("lake still unavailable after ")
    assert log[1].endswith(" s: partition=1 abandoned, to be re-read")


def test_hold_pauses_new_assignments_until_released() -> None:
    pausing, consumer, _ = _pausing()
    turns: list[set[int]] = []

    def step() -> None:
        if not turns:
            consumer.assign([TopicPartition("t", 1, 0)])  # a rebalance while held
            pausing.assigned([TopicPartition("t", 1, 0)])
        turns.append(set(consumer.paused))

    pausing.hold(lambda: len(turns) < 2, step, stopping=threading.Event())
    assert turns == [{1}, {1}]
    assert consumer.paused == set()
    assert not pausing.holding
