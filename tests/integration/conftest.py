"""Fixtures of the integration tests: real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.embedded import EmbeddedKafka, embedded_kafka


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedKafka]:
    """A Kafka-protocol broker (``tansu``, memory storage) for the whole test session."""
    with embedded_kafka() as broker:
        yield broker
