"""The memory defaults chosen for issue 11 #6 (docs/decisions.md, "Capacity under
garbage and on a backlog"): one member catching up on a 4-partition backlog peaked at
~900 MiB with the old ones and stays under 512 MiB with these (benchmarks/README.md).
RSS is measured by the benchmark, not here; this pins the values it was measured with."""

from __future__ import annotations

from pipeline.io import kafka_clients
from pipeline.settings import BatchSettings, KafkaSettings

MiB = 1024 * 1024


def test_prefetch_queue_is_capped_at_8_mb() -> None:
    """The byte cap binds (not queued.min.messages): ~7x resident when full."""
    kafka = KafkaSettings()
    assert kafka.prefetch_max_kbytes == 8_192
    average_event = 190  # bytes of a generated event on the wire
    assert kafka.prefetch_max_kbytes * 1024 // average_event < kafka.prefetch_messages


def test_buffers_and_polls_are_bounded_for_a_backlog() -> None:
    batch = BatchSettings()
    assert batch.max_bytes == 8 * MiB  # per partition, plus the ranges the writer holds
    assert batch.poll_max_messages == 10_000  # about two polls alive at once


def test_a_full_prefetch_queue_is_refilled_at_once() -> None:
    """With librdkafka's default fetch.queue.backoff.ms (1 s) a partition whose queue
    reached the small cap waited up to a second before its next fetch: consume() took
    3.5 instead of 1.4 us per message on a backlog (20 % of the throughput)."""
    assert kafka_clients.FETCH_QUEUE_BACKOFF_MS <= 20
