"""Dead letters on Kafka (streaming mode): the producer and the lake's payload store.

The message format, capping and decoding are :mod:`pipeline.io.dead_letter_codec`.

A dead letter is always deliverable: key, value and headers stay within
``max_message_bytes`` (setting ``dead_letter.max_message_bytes``), well under the
producer's (:func:`producer_config`) and the broker's message limits. Before a letter
whose payload does not fit whole is produced, :class:`DeadLetterProducer` writes the
whole payload to the lake (temporary name, fsync, rename), so an offset is only
committed once the whole payload is durable. If the broker still refuses a letter as
too large (its limit is below ours), it is sent again without the prefix.
:meth:`DeadLetterProducer.send` returns only once Kafka has acknowledged every letter
(:class:`BrokerError` otherwise; :class:`SinkError` if a payload cannot be kept).

Reading back, :func:`resolve_payloads` puts the whole payload of a truncated letter
back from the lake (checked against size and SHA-256).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.errors import BrokerError, SinkError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.io.dead_letter_codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RECORD_OVERHEAD,
    dead_letter_key,
    encode,
    payload_name,
    payload_ref,
    sha256_hex,
)
from pipeline.io.kafka_clients import flush_or_raise
from pipeline.lake.tables import DEAD_PAYLOADS

LOG = logging.getLogger(__name__)

#: librdkafka's default ``message.max.bytes``.
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000


def producer_config(max_message_bytes: int) -> dict[str, Any]:
    """librdkafka settings for a producer of dead letters capped at ``max_message_bytes``:
    its ``message.max.bytes`` never refuses a letter the cap allows. Delivery reports
    only for failures (the only ones :class:`DeadLetterProducer` acts on: a Python
    callback per acknowledged letter cost ~1 µs of the writer thread each)."""
    return {
        "message.max.bytes": max(
            LIBRDKAFKA_MESSAGE_MAX_BYTES, max_message_bytes + 2 * RECORD_OVERHEAD
        ),
        "delivery.report.only.error": True,
    }


class PayloadStore(Protocol):
    """Where whole payloads are kept: names relative to ``dead_letter_payloads/``
    (:class:`pipeline.lake.storage.BlobStore` of a lake; a directory in tests)."""

    def size(self, name: str) -> int | None: ...
    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def describe(self, name: str = "") -> str: ...


class DirectoryPayloads:
    """A :class:`PayloadStore` in ``LAKE/dead_letter_payloads`` of a local lake."""

    def __init__(self, lake: Path) -> None:
        self.directory = Path(lake) / DEAD_PAYLOADS

    def size(self, name: str) -> int | None:
        path = self.directory / name
        return path.stat().st_size if path.is_file() else None

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except OSError:
            return None

    def write(self, name: str, data: bytes) -> None:
        path = self.directory / name
        try:
            write_bytes_atomic(path, data)
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def describe(self, name: str = "") -> str:
        return str(self.directory / name) if name else str(self.directory)


def _store(lake: Path | PayloadStore | None) -> PayloadStore | None:
    return DirectoryPayloads(lake) if isinstance(lake, Path) else lake


def resolve_payloads(rows: list[dict[str, Any]], lake: Path | PayloadStore | None) -> int:
    """Put back, in place, the whole payload of each truncated letter of ``rows`` from
    ``lake`` (its :func:`payload_ref`), checked against size and SHA-256. A letter
    whose payload is not found (or ``lake`` is None) keeps ``payload`` null and gets a
    note in ``detail``. Returns how many were not resolved."""
    missing = 0
    store = _store(lake)
    for row in rows:
        if not row.get("payload_truncated"):
            continue
        ref = payload_ref(row)
        data = store.read(payload_name(ref)) if store is not None else None
        if data is not None and (len(data), sha256_hex(data)) == (
            row.get("payload_size"),
            row.get("payload_sha256"),
        ):
            row["payload"] = data
            continue
        missing += 1
        why = "no lake given" if lake is None else "not found" if data is None else "differs"
        row["payload"] = None
        row["detail"] = (
            f"{row['detail']} [payload of {row.get('payload_size') or 0:,} bytes "
            f"(sha256 {row.get('payload_sha256')}) truncated on the dead-letter topic; "
            f"whole payload {ref}: {why}]"
        )
    return missing


class DeadLetterProducer:
    """Sends dead letters and returns only once Kafka has acknowledged all of them.

    ``lake``: where whole payloads too big for the topic are kept (before the letter
    that names them is produced). ``max_message_bytes``: the cap of one letter; the
    producer's ``message.max.bytes`` must allow it (:func:`producer_config`).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        lake: Path | PayloadStore,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout: float = 60.0,
    ) -> None:
        self._producer = producer
        self.topic = topic
        store = _store(lake)
        assert store is not None
        self.payloads = store
        self.max_message_bytes = max_message_bytes
        self._timeout = timeout
        self._failures: list[tuple[bytes | None, KafkaError]] = []

    def _delivered(self, err: KafkaError | None, msg: Message | None) -> None:
        # One bound method for every letter, matched by key on failure: a callback
        # object per letter cost ~2 µs of the writer thread (issue 11).
        if err is not None:
            key = msg.key() if msg is not None else None
            self._failures.append((key if isinstance(key, bytes) else None, err))

    def send(self, dead: pa.Table) -> int:
        """Produce every row of ``dead`` and wait for the acknowledgements.

        Raises :class:`BrokerError` if any is not acknowledged, or
        :class:`~pipeline.errors.SinkError` if a whole payload cannot be written to the
        lake (the caller retries; the offsets of these events are not done until this
        returns). A letter the broker refuses as too large is sent again without its
        payload prefix (size, SHA-256 and the lake copy kept).
        """
        if dead.num_rows == 0:
            return 0
        rows = dead.to_pylist()
        refused = self._send(rows, range(len(rows)), keep_prefix=True)
        if refused:
            LOG.warning(
                "the broker refused %d dead letter(s) as too large (first key=%s): its "
                "message limit is below dead_letter.max_message_bytes=%d; sending them "
                "again without payload prefix (size, sha256 and the whole payload in the "
                "lake are kept)",
                len(refused),
                dead_letter_key(rows[refused[0]]),
                self.max_message_bytes,
            )
            refused = self._send(rows, refused, keep_prefix=False)
        if refused:
            raise BrokerError(
                f"{len(refused)} dead letter(s) refused as too large even without payload "
                f"(first key={dead_letter_key(rows[refused[0]])}): check the message limit "
                f"of topic {self.topic}"
            )
        return int(dead.num_rows)

    def _send(
        self, rows: list[dict[str, Any]], which: Iterable[int], *, keep_prefix: bool
    ) -> list[int]:
        """Produce ``rows[i]`` for ``i`` in ``which`` and wait; the indexes refused as
        too large (by this client or the broker)."""
        self._failures.clear()
        too_large: list[int] = []
        kept = 0
        which = list(which)
        for i in which:
            row = rows[i]
            message = encode(row, self.max_message_bytes, keep_prefix=keep_prefix)
            if message.truncated:
                self._keep_payload(row)
                kept += 1
            while True:
                try:
                    self._producer.produce(
                        self.topic,
                        key=message.key,
                        value=message.value,
                        headers=[("reason", message.reason)],
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                        too_large.append(i)
                        break
                    raise BrokerError(f"dead letters not produced: {exc}") from exc
        flush_or_raise(self._producer, self._timeout, "dead letters")
        others = []
        index_of = {dead_letter_key(rows[i]).encode(): i for i in which} if self._failures else {}
        for key, err in self._failures:
            index = index_of.get(key) if key is not None else None
            if index is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large.append(index)
            else:
                others.append(err)
        if others:
            raise BrokerError(f"dead letters not delivered: {others[0]}")
        if kept:
            LOG.info(
                "%d dead letter(s) too big for topic %s carry a payload prefix, size and "
                "sha256; whole payloads kept in %s",
                kept,
                self.topic,
                self.payloads.describe(),
            )
        return sorted(too_large)

    def _keep_payload(self, row: dict[str, Any]) -> None:
        """Write the whole payload of ``row`` to the lake, durably, unless it is there
        (the same source offset always holds the same message)."""
        payload = row.get("payload")
        if payload is None:
            return
        name = payload_name(payload_ref(row))
        if self.payloads.size(name) == len(payload):
            return
        self.payloads.write(name, payload)


__all__ = [
    "LIBRDKAFKA_MESSAGE_MAX_BYTES",
    "DeadLetterProducer",
    "DirectoryPayloads",
    "PayloadStore",
    "producer_config",
    "resolve_payloads",
]
