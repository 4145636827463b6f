"""librdkafka's log lines and client errors through the service's logging
(``pipeline.io.kafka_clients``, issue 11 #3): levels and wording. The same lines from a
real client, formatted and redacted: ``tests/integration/test_observability.py``."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from pipeline.io.kafka_clients import LibrdkafkaLog, log_client_error, logging_config

LOGGER = "pipeline.io.kafka_clients"


@pytest.mark.parametrize(
    ("given", "logged"),
    [
        (logging.CRITICAL, logging.ERROR),  # syslog 0-2
        (logging.ERROR, logging.WARNING),  # syslog 3: FAIL, retried by librdkafka
        (logging.WARNING, logging.WARNING),  # syslog 4: SESSTMOUT, REQTMOUT
        (logging.INFO, logging.INFO),  # syslog 5-6
        (logging.DEBUG, logging.DEBUG),  # syslog 7 (``debug`` contexts)
    ],
)
def test_librdkafka_levels(given: int, logged: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeline")
    LibrdkafkaLog().log(
        given,
        "%s [%s] %s",
        "SESSTMOUT",
        "cdr-pipeline#consumer-1",
        "[thrd:main]: Consumer group session timed out: revoking assignment",
    )
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logged
    assert record.getMessage() == (
        "librdkafka: Consumer group session timed out: revoking assignment "
        "facility=SESSTMOUT client=cdr-pipeline#consumer-1"
    )


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"), logging.WARNING),
        (KafkaError(KafkaError._TRANSPORT, "connect failed"), logging.DEBUG),
        (KafkaError(KafkaError._FENCED, "fenced", fatal=True), logging.ERROR),
    ],
)
def test_client_errors(error: KafkaError, level: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeline")
    log_client_error(error)
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == level
    assert record.getMessage() == f"kafka client error: {error.str()} code={error.name()}"


def test_every_client_gets_the_callbacks() -> None:
    conf = logging_config()
    assert isinstance(conf["logger"], LibrdkafkaLog)
    assert conf["error_cb"] is log_client_error
