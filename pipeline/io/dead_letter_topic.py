"""Dead letters on Kafka (streaming mode), and back.

One message per dead letter. Key: ``<source topic>:<partition>:<offset>`` (the
identity of the event, so a dead letter produced twice after a crash is recognised
and exported once). Header ``reason`` repeats the reason code for routing. Value:
JSON with the columns of :data:`~pipeline.rating.columns.DEAD_LETTER_SCHEMA`
(``payload``, the raw message value, base64) and four more:

``payload_size``       bytes of the raw message value (null when it had none)
``payload_sha256``     hex SHA-256 of the raw message value
``payload_truncated``  true when ``payload`` is not the whole value: a prefix, or null
``payload_ref``        with ``payload_truncated``: where the whole value is, relative to
                       the lake (``dead_letter_payloads/<topic>+<partition>+<offset>.bin``)

A dead letter is always deliverable: key, value and headers stay within
``max_message_bytes`` (setting ``dead_letter.max_message_bytes``), well under the
producer's and the broker's message limits. A payload that does not fit whole is
carried as the longest prefix that fits; ``detail``, ``call_id`` and ``source_file``
are clipped (with their full length noted). Before such a letter is produced, the
whole payload is written to the lake (temporary name, fsync, rename), so an offset
is only committed once the whole payload is durable. If the broker still refuses a
letter as too large (its limit is below ours), it is sent again without the prefix.

Reading back (:func:`decode`) never presents a prefix as the payload: a truncated
letter decodes with ``payload`` null and the prefix under ``payload_prefix``;
:func:`resolve_payloads` puts the whole payload back from the lake (checked against
size and SHA-256).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.errors import BrokerError, SinkError
from pipeline.io.atomic import write_bytes_atomic
from pipeline.io.kafka_clients import flush_or_raise
from pipeline.lake.tables import DEAD_PAYLOADS
from pipeline.rating.columns import DEAD_LETTER_SCHEMA

LOG = logging.getLogger(__name__)

#: Default of ``dead_letter.max_message_bytes`` (a quarter of librdkafka's
#: ``message.max.bytes`` default, 1,000,000, and of Kafka's default broker limit).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
#: Smallest accepted cap: room for every field clipped to its tightest limit.
MIN_MAX_MESSAGE_BYTES = 16_384
#: Bytes a record adds to key, value and headers on the wire (record and batch
#: headers, varints, timestamps), rounded up generously.
RECORD_OVERHEAD = 512
#: librdkafka's default ``message.max.bytes``.
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000

#: Longest text kept for each unbounded text field: (normal, tight). The tight limits
#: apply when the normal ones leave no room (a cap near :data:`MIN_MAX_MESSAGE_BYTES`).
TEXT_LIMITS: dict[str, tuple[int, int]] = {
    "detail": (2_000, 200),
    "call_id": (256, 64),
    "source_file": (1_024, 256),
}
#: Keys :func:`decode` adds to the columns of ``DEAD_LETTER_SCHEMA``.
TOPIC_FIELDS = ("payload_size", "payload_sha256", "payload_truncated", "payload_prefix")

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: The columns of a dead letter (a pyarrow schema builds its fields anew on each access).
_FIELD_NAMES = tuple(DEAD_LETTER_SCHEMA.names)
#: What ``json.dumps(doc, separators=(",", ":"), sort_keys=True)`` builds on every call.
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def dead_letter_key(row: dict[str, Any]) -> str:
    """The identity of the event a dead letter stands for."""
    if row.get("source_topic") is not None:
        return f"{row['source_topic']}:{row['source_partition']}:{row['source_offset']}"
    return f"file:{row.get('source_file')}:{row.get('source_index')}"


def payload_ref(row: dict[str, Any]) -> str:
    """Where the whole payload of the dead letter ``row`` is kept, relative to the lake:
    ``dead_letter_payloads/<topic>+<partition>+<offset>.bin`` (derived from the event's
    identity, so a letter read back cannot point anywhere else)."""
    topic = row.get("source_topic")
    if topic is not None:
        name = (
            f"{_safe_topic(str(topic))}+{int(row['source_partition'])}+{int(row['source_offset'])}"
        )
    else:
        name = f"file+{_digest(str(row.get('source_file')))[:32]}+{row.get('source_index')}"
    return f"{DEAD_PAYLOADS}/{name}.bin"


@functools.lru_cache(maxsize=64)
def _safe_topic(topic: str) -> str:
    """``topic`` as a file-name part (a digest when it has other characters)."""
    return topic if _SAFE_NAME.fullmatch(topic) else _digest(topic)[:32]


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


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _clip(text: Any, limit: int) -> Any:
    """``text`` cut to ``limit`` characters, noting its length; other values as they are."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text):,} characters, truncated]"


def _dumps(doc: dict[str, Any]) -> bytes:
    # ASCII only (non-ASCII escaped), so any text, lone surrogates included, encodes
    return _JSON.encode(doc).encode("ascii")


@dataclass(frozen=True)
class DeadLetterMessage:
    """One dead letter as a Kafka message (see the module docstring)."""

    key: bytes
    value: bytes
    #: The ``reason`` header (the reason code).
    reason: bytes
    #: True when the value does not carry the whole payload (keep it elsewhere first).
    truncated: bool
    #: :func:`payload_ref` of the letter when ``truncated``.
    ref: str | None

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what counts against the cap, with
        :data:`RECORD_OVERHEAD`)."""
        return len(self.key) + len(self.value) + len("reason") + len(self.reason)


def encode(
    row: dict[str, Any],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    keep_prefix: bool = True,
) -> DeadLetterMessage:
    """A dead-letter row as a message of at most ``max_message_bytes`` (counting
    :data:`RECORD_OVERHEAD`): the whole payload when it fits, else the longest prefix
    that fits (none with ``keep_prefix=False``) and ``payload_truncated``.

    Raises ``ValueError`` only if the key alone leaves no room (an absurd cap).
    """
    key = dead_letter_key(row).encode()
    reason = str(row["reason"]).encode()
    budget = max_message_bytes - RECORD_OVERHEAD - len(key) - len("reason") - len(reason)
    payload: bytes | None = row.get("payload")
    if payload is None or keep_prefix:  # the usual case: whole payload, nothing clipped
        value = _whole_value(row, payload)
        if value is not None and len(value) <= budget:
            return DeadLetterMessage(key, value, reason, False, None)
    doc: dict[str, Any] = {name: row.get(name) for name in _FIELD_NAMES}
    doc["payload_size"] = len(payload) if payload is not None else None
    doc["payload_sha256"] = _digest(payload) if payload is not None else None
    ref = payload_ref(row)
    for tight in (False, True):
        for name, limits in TEXT_LIMITS.items():
            doc[name] = _clip(row.get(name), limits[tight])
        if payload is None or keep_prefix:  # the whole payload (or none), if it fits
            doc["payload"] = None if payload is None else base64.b64encode(payload).decode()
            doc["payload_truncated"], doc["payload_ref"] = False, None
            value = _dumps(doc)
            if len(value) <= budget:
                return DeadLetterMessage(key, value, reason, False, None)
            if payload is None:
                continue
        doc["payload"] = None
        doc["payload_truncated"], doc["payload_ref"] = True, ref
        value = _dumps(doc)
        room = budget - len(value)
        if room < 0:
            continue
        # "null" gives way to the quoted base64 of 3 bytes per 4 characters
        prefix = (room + 2) // 4 * 3 if keep_prefix else 0
        if prefix > 0:
            doc["payload"] = base64.b64encode(payload[:prefix]).decode()
            value = _dumps(doc)
        return DeadLetterMessage(key, value, reason, True, ref)
    raise ValueError(f"a dead letter does not fit in {max_message_bytes:,} bytes")


#: The keys of a letter's JSON, sorted (as ``sort_keys`` writes them).
_LETTER_KEYS = tuple(sorted({*_FIELD_NAMES, *TOPIC_FIELDS[:3], "payload_ref"}))
_ESCAPE = json.encoder.encode_basestring_ascii  # json.dumps' own (C) string encoder


def _json_scalar(value: Any) -> str:
    """``value`` (None, a str, a bool or an int) as :data:`_JSON` writes it."""
    if value is None:
        return "null"
    if type(value) is str:
        return _ESCAPE(value)
    if type(value) is int:
        return int.__repr__(value)
    return _JSON.encode(value)


#: The keys :func:`_whole_value` writes, in its order (checked against the schema).
_TEMPLATE_KEYS = (
    "call_id", "detail", "payload", "payload_ref", "payload_sha256", "payload_size",
    "payload_truncated", "reason", "revision", "source_file", "source_index",
    "source_offset", "source_partition", "source_topic",
)  # fmt: skip
_TEMPLATE_FITS = _TEMPLATE_KEYS == _LETTER_KEYS


def _whole_value(row: dict[str, Any], payload: bytes | None) -> bytes | None:
    """The value :func:`encode` builds first -- the whole payload, nothing clipped --
    written straight in key order: byte for byte ``_dumps`` of that document, at
    less of the writer thread's time (it writes one letter per malformed message:
    issue 11). None when a text field would be clipped (``encode`` then builds it)."""
    if not _TEMPLATE_FITS:  # the dead-letter columns changed: the generic way
        return None
    get = row.get
    detail, call_id, source_file = get("detail"), get("call_id"), get("source_file")
    if (
        (type(detail) is str and len(detail) > TEXT_LIMITS["detail"][0])
        or (type(call_id) is str and len(call_id) > TEXT_LIMITS["call_id"][0])
        or (type(source_file) is str and len(source_file) > TEXT_LIMITS["source_file"][0])
    ):
        return None
    j = _json_scalar
    if payload is None:
        data = size = sha = "null"
    else:
        data = f'"{base64.b64encode(payload).decode()}"'
        size = str(len(payload))
        sha = f'"{_digest(payload)}"'
    text = (
        f'{{"call_id":{j(call_id)},"detail":{j(detail)},"payload":{data},'
        f'"payload_ref":null,"payload_sha256":{sha},"payload_size":{size},'
        f'"payload_truncated":false,"reason":{j(get("reason"))},'
        f'"revision":{j(get("revision"))},"source_file":{j(source_file)},'
        f'"source_index":{j(get("source_index"))},"source_offset":{j(get("source_offset"))},'
        f'"source_partition":{j(get("source_partition"))},"source_topic":{j(get("source_topic"))}}}'
    )
    return text.encode("ascii")


def decode(value: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode`: the columns of ``DEAD_LETTER_SCHEMA`` plus
    :data:`TOPIC_FIELDS`. ``payload`` is the whole raw value or null, never a prefix
    (a truncated letter's prefix is ``payload_prefix``). ``ValueError`` on a value
    that is not a dead letter, or whose payload does not match its SHA-256."""
    doc = json.loads(value)
    if not isinstance(doc, dict) or "reason" not in doc:
        raise ValueError("not a dead-letter message")
    raw = base64.b64decode(doc["payload"]) if doc.get("payload") is not None else None
    truncated = bool(doc.get("payload_truncated"))
    row = {name: doc.get(name) for name in _FIELD_NAMES}
    row["payload"] = None if truncated else raw
    row["payload_prefix"] = raw if truncated else None
    row["payload_truncated"] = truncated
    size, sha = doc.get("payload_size"), doc.get("payload_sha256")
    if not truncated and raw is not None:  # letters written before these fields had none
        if sha is not None and sha != _digest(raw):
            raise ValueError("dead-letter payload does not match its sha256")
        size, sha = len(raw), _digest(raw)
    row["payload_size"], row["payload_sha256"] = size, sha
    return row


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
        data = store.read(_name(ref)) if store is not None else None
        if data is not None and (len(data), _digest(data)) == (
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


def _name(ref: str) -> str:
    """A :func:`payload_ref` without its folder."""
    return ref.removeprefix(f"{DEAD_PAYLOADS}/")


def to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Dead-letter dicts as a :data:`DEAD_LETTER_SCHEMA` table (other keys ignored)."""
    return pa.Table.from_pylist(list(rows), schema=DEAD_LETTER_SCHEMA)


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
        name = _name(payload_ref(row))
        if self.payloads.size(name) == len(payload):
            return
        self.payloads.write(name, payload)


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


__all__ = [
    "DeadLetterMessage",
    "DeadLetterProducer",
    "decode",
    "dedupe",
    "encode",
    "payload_ref",
    "producer_config",
    "resolve_payloads",
    "to_table",
]
