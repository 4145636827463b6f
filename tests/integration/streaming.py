"""Helpers of the streaming integration tests (real broker, real Redis)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Producer

from pipeline.io import kafka_clients
from pipeline.lake.lake import Lake, partition_app_id
from pipeline.lake.tables import RATED
from pipeline.refdata.files import SAMPLE_REFDATA_DIR
from pipeline.runtime.service import Hook, RunStats, StreamingService
from pipeline.settings import KafkaSettings, Settings, load_settings
from pipeline.streaming import build_service, read_dead_letter_topic

SOURCE = ["source_topic", "source_partition", "source_offset", "source_file", "source_index"]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def settings_for(brokers: str, redis_url: str, lake: Path, topic: str, **extra: Any) -> Settings:
    batch = {"max_age_s": 0.5, "max_rows": 5_000, **extra.pop("batch", {})}
    return load_settings(
        kafka={"brokers": brokers},
        redis={"url": redis_url},
        topic=topic,
        group=extra.pop("group", unique("g")),
        output=str(lake),
        dead_letter_topic=extra.pop("dead_letter_topic", f"{topic}-dlq"),
        stop_when_idle=extra.pop("stop_when_idle", 4.0),
        metrics_host=extra.pop("metrics_host", "127.0.0.1"),
        batch=batch,
        **extra,
    )


class ServiceThread(threading.Thread):
    """Runs one :class:`StreamingService` in a thread (no signal handlers)."""

    def __init__(self, settings: Settings, hook: Hook | None = None) -> None:
        super().__init__(daemon=True)
        self.service: StreamingService = build_service(settings, hook=hook)
        self.stats: RunStats | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stats = self.service.run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self, timeout: float = 60) -> RunStats:
        self.service.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), "service did not stop"
        if self.error:
            raise self.error
        assert self.stats is not None
        return self.stats


def produce_raw(
    brokers: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    """Produce (key, value) pairs as they are (partition chosen by key hash)."""
    prod: Producer = kafka_clients.producer(KafkaSettings(brokers=brokers))
    for key, value in messages:
        prod.produce(topic, key=key, value=value)
    kafka_clients.flush_or_raise(prod, 60, "test produce")


def lake_rated(lake: Path | str | Lake) -> pa.Table:
    """Every rated record of a lake (all cycles), with billing_cycle."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    parts = [lake.read_rated(c) for c in lake.cycles()]
    return pa.concat_tables(parts) if parts else lake.read_rated("0000-00")


def lake_offsets(lake: Path | str | Lake, topic: str, partitions: int) -> dict[int, int | None]:
    """The last offset the lake holds per partition (its application transactions)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    return {
        p: lake.transaction_version(RATED, partition_app_id(topic, p)) for p in range(partitions)
    }


def assert_each_event_once(rated: pa.Table, dead: pa.Table, produced: int, partitions: int) -> None:
    """R1 through the group: each produced event is in the lake exactly once (by
    partition and offset) or a dead letter, never both, never lost, and every
    partition's offsets are contiguous from 0 (no gap)."""
    rated_keys = list(
        zip(
            rated.column("source_partition").to_pylist(),
            rated.column("source_offset").to_pylist(),
            strict=True,
        )
    )
    dead_keys = list(
        zip(
            dead.column("source_partition").to_pylist(),
            dead.column("source_offset").to_pylist(),
            strict=True,
        )
    )
    assert len(rated_keys) == len(set(rated_keys)), "an event is in the lake twice"
    assert len(dead_keys) == len(set(dead_keys))
    assert not set(rated_keys) & set(dead_keys), "an event is both rated and dead-lettered"
    got = set(rated_keys) | set(dead_keys)
    assert len(got) == produced, f"{produced - len(got)} event(s) lost"
    for part in range(partitions):
        offsets = sorted(o for q, o in got if q == part)
        assert offsets == list(range(len(offsets))), f"a gap in partition {part}"


def dead_letters(brokers: str, topic: str) -> pa.Table:
    return read_dead_letter_topic(KafkaSettings(brokers=brokers), topic)


def load_sample_refdata(redis_url: str) -> str:
    import redis as redis_lib

    from pipeline.refdata.redis_load import load_to_redis

    return load_to_redis(redis_lib.Redis.from_url(redis_url), SAMPLE_REFDATA_DIR)
