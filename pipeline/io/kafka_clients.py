"""Kafka clients built from :class:`~pipeline.settings.KafkaSettings` (one place).

librdkafka's own log lines and errors go through the service's logging (the logger
of this module), so they come in the configured format (``kv`` or ``json``) and
through the phone-number redaction, never raw to stderr. Every client built here
(consumers, producers, the admin client) gets:

* ``logger``: librdkafka's log lines, served from the client's ``poll``/``consume``/
  ``flush`` (confluent-kafka then sets ``log.queue``), as ``librdkafka: <text>
  facility=<FAC> client=<name>``. Levels: librdkafka's syslog levels arrive
  mapped by confluent-kafka (0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG) and
  are lowered one step at the top, because librdkafka retries what it reports there
  (a ``FAIL`` to connect during a broker freeze is a WARNING; a ``CRITICAL`` an
  ERROR);
* ``error_cb``: client-level errors as ``kafka client error: <text> code=<NAME>``,
  WARNING (ERROR when fatal); ``_TRANSPORT`` at DEBUG, as the ``FAIL`` log line
  already reports the same failed connection.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.errors import BrokerError
from pipeline.settings import KafkaSettings

LOG = logging.getLogger(__name__)

#: confluent-kafka's Python level of a librdkafka line -> the level logged here.
_LEVELS = {logging.CRITICAL: logging.ERROR, logging.ERROR: logging.WARNING}
_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]: ")


class LibrdkafkaLog:
    """The ``logger`` handed to confluent-kafka: it calls ``log(level, "%s [%s] %s",
    facility, client name, text)`` for each librdkafka line."""

    def log(self, level: int, msg: str, *args: Any, **_kwargs: Any) -> None:
        """Never raises: an exception here would be left pending inside librdkafka's
        call and surface later in an unrelated call of the consumer's thread."""
        try:
            self._log(level, msg, *args)
        except Exception:
            LOG.debug("a librdkafka log line could not be logged", exc_info=True)

    def _log(self, level: int, msg: str, *args: Any) -> None:
        level = _LEVELS.get(level, level) if isinstance(level, int) else logging.WARNING
        if not LOG.isEnabledFor(level):
            return
        if len(args) == 3:
            facility, client, text = (str(a) for a in args)
            text = _THREAD_PREFIX.sub("", text)
            LOG.log(level, "librdkafka: %s facility=%s client=%s", text, facility, client)
        else:  # not the documented call: keep the line whatever it is
            LOG.log(level, "librdkafka: %s", msg % args if args else msg)


def log_client_error(err: KafkaError) -> None:
    """confluent-kafka's ``error_cb`` (see the module docstring). Never raises (see
    :meth:`LibrdkafkaLog.log`)."""
    try:
        _log_client_error(err)
    except Exception:
        LOG.debug("a kafka client error could not be logged", exc_info=True)


def _log_client_error(err: KafkaError) -> None:
    if err.fatal():
        level = logging.ERROR
    elif err.code() == KafkaError._TRANSPORT:
        level = logging.DEBUG
    else:
        level = logging.WARNING
    LOG.log(level, "kafka client error: %s code=%s", err.str(), err.name())


def logging_config() -> dict[str, Any]:
    """The client configuration that routes librdkafka's lines and errors here."""
    return {"logger": LibrdkafkaLog(), "error_cb": log_client_error}


#: librdkafka ``fetch.queue.backoff.ms`` of the consumer (see :func:`consumer`).
FETCH_QUEUE_BACKOFF_MS = 10


def consumer(kafka: KafkaSettings, group: str, **extra: Any) -> Consumer:
    """A consumer-group member that never commits or stores offsets by itself: the
    lake commit (``pipeline.lake``) holds what is durable; Kafka offsets follow it."""
    conf = {
        **kafka.client_config(),
        **logging_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, kafka.session_timeout_ms // 3),
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 100,
        "queued.min.messages": kafka.prefetch_messages,
        "queued.max.messages.kbytes": kafka.prefetch_max_kbytes,
        # librdkafka waits this long (default 1 s) before fetching again for a partition
        # whose queue was full: with a small prefetch cap that stalled consume() on a
        # backlog (issue 11: 3.5 instead of 1.4 us per message in consume)
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        **extra,
    }
    return Consumer(conf)


def producer(kafka: KafkaSettings, **extra: Any) -> Producer:
    """A producer that waits for all in-sync replicas (dead letters must not be lost)."""
    conf = {
        **kafka.client_config(),
        **logging_config(),
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 120_000,
        **extra,
    }
    return Producer(conf)


def ensure_topic(
    kafka: KafkaSettings, topic: str, partitions: int = 4, timeout: float = 30.0
) -> None:
    """Create ``topic`` if it does not exist (an existing topic is left as it is)."""
    admin = AdminClient({**kafka.client_config(), **logging_config()})
    try:
        metadata = admin.list_topics(timeout=timeout)
        if topic in metadata.topics and not metadata.topics[topic].error:
            return
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        for future in futures.values():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    except KafkaException as exc:
        raise BrokerError(f"cannot create topic {topic!r}: {exc}") from exc


def flush_or_raise(prod: Producer, timeout: float, what: str) -> None:
    """Wait until every queued message is acknowledged; :class:`BrokerError` if not."""
    remaining = prod.flush(timeout)
    if remaining:
        raise BrokerError(f"{what}: {remaining} message(s) not acknowledged after {timeout:.0f} s")
