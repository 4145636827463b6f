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
from pipeline.lake.lake import Lake
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


def lake_rated(lake: Path) -> pa.Table:
    """Every rated record of a lake (all cycles), with billing_cycle."""
    parts = [Lake(lake).read_rated(c) for c in Lake(lake).cycles()]
    return pa.concat_tables(parts) if parts else Lake(lake).read_rated("0000-00")


def dead_letters(brokers: str, topic: str) -> pa.Table:
    return read_dead_letter_topic(KafkaSettings(brokers=brokers), topic)


def load_sample_refdata(redis_url: str) -> str:
    import redis as redis_lib

    from pipeline.refdata.redis_load import load_to_redis

    return load_to_redis(redis_lib.Redis.from_url(redis_url), SAMPLE_REFDATA_DIR)
