"""Dead letters on Kafka (streaming mode), and back.

One message per dead letter. Key: ``<source topic>:<partition>:<offset>`` (the
identity of the event, so a dead letter produced twice after a crash is recognised
and exported once). Value: JSON with the columns of
:data:`~pipeline.rating.columns.DEAD_LETTER_SCHEMA`; ``payload`` (the raw message
value) is base64. Header ``reason`` repeats the reason code for routing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from pipeline.errors import BrokerError
from pipeline.io.kafka_clients import flush_or_raise
from pipeline.rating.columns import DEAD_LETTER_SCHEMA


def dead_letter_key(row: dict[str, Any]) -> str:
    """The identity of the event a dead letter stands for."""
    if row.get("source_topic") is not None:
        return f"{row['source_topic']}:{row['source_partition']}:{row['source_offset']}"
    return f"file:{row.get('source_file')}:{row.get('source_index')}"


def encode(row: dict[str, Any]) -> bytes:
    """A dead-letter row as the JSON message value."""
    doc = dict(row)
    payload = doc.get("payload")
    doc["payload"] = base64.b64encode(payload).decode("ascii") if payload is not None else None
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(value: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode` (``ValueError`` on a value that is not a dead letter)."""
    doc = json.loads(value)
    if not isinstance(doc, dict) or "reason" not in doc:
        raise ValueError("not a dead-letter message")
    if doc.get("payload") is not None:
        doc["payload"] = base64.b64decode(doc["payload"])
    return {f.name: doc.get(f.name) for f in DEAD_LETTER_SCHEMA}


def to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Dead-letter dicts as a :data:`DEAD_LETTER_SCHEMA` table."""
    return pa.Table.from_pylist(list(rows), schema=DEAD_LETTER_SCHEMA)


class DeadLetterProducer:
    """Sends dead letters and returns only once Kafka has acknowledged all of them."""

    def __init__(self, producer: Producer, topic: str, *, timeout: float = 60.0) -> None:
        self._producer = producer
        self.topic = topic
        self._timeout = timeout
        self._failures: list[str] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(str(err))

    def send(self, dead: pa.Table) -> int:
        """Produce every row of ``dead`` and wait for the acknowledgements.

        Raises :class:`BrokerError` if any is not acknowledged (the caller retries; the
        offsets of these events are not done until this returns).
        """
        if dead.num_rows == 0:
            return 0
        self._failures.clear()
        for row in dead.to_pylist():
            reason = str(row["reason"])
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        key=dead_letter_key(row).encode(),
                        value=encode(row),
                        headers={"reason": reason.encode()},
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.1)
        flush_or_raise(self._producer, self._timeout, "dead letters")
        if self._failures:
            raise BrokerError(f"dead letters not delivered: {self._failures[0]}")
        return int(dead.num_rows)


def dedupe(dead: pa.Table) -> pa.Table:
    """One row per source event (the last one seen), e.g. after a crash re-sent some."""
    if dead.num_rows == 0:
        return dead
    keys = [
        dead_letter_key(r)
        for r in dead.select([c for c in dead.column_names if c.startswith("source_")]).to_pylist()
    ]
    last = {k: i for i, k in enumerate(keys)}
    return (
        dead.take(pa.array(sorted(last.values()))).combine_chunks()
        if len(last) != len(keys)
        else dead
    )


__all__ = ["DeadLetterProducer", "decode", "dedupe", "encode", "to_table"]
