"""Dead letters as Kafka messages: capping, encoding and decoding (pure, no I/O).

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

:func:`encode` keeps a letter within ``max_message_bytes`` (key, value and headers,
counting :data:`RECORD_OVERHEAD`): a payload that does not fit whole is carried as
the longest prefix that fits (or none, ``keep_prefix=False``); ``detail``,
``call_id`` and ``source_file`` are clipped (with their full length noted). Keeping
the whole payload in the lake before such a letter is produced is the producer's job
(:mod:`pipeline.io.dead_letter_topic`).

:func:`decode` never presents a prefix as the payload: a truncated letter decodes
with ``payload`` null and the prefix under ``payload_prefix``. :func:`to_table` and
:func:`dedupe` turn decoded letters into a table, one row per source event.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.lake.tables import DEAD_PAYLOADS
from pipeline.rating.columns import DEAD_LETTER_SCHEMA

#: Default of ``dead_letter.max_message_bytes`` (a quarter of librdkafka's
#: ``message.max.bytes`` default, 1,000,000, and of Kafka's default broker limit).
DEFAULT_MAX_MESSAGE_BYTES = 262_144
#: Smallest accepted cap: room for every field clipped to its tightest limit.
MIN_MAX_MESSAGE_BYTES = 16_384
#: Bytes a record adds to key, value and headers on the wire (record and batch
#: headers, varints, timestamps), rounded up generously.
RECORD_OVERHEAD = 512

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
        name = f"file+{sha256_hex(str(row.get('source_file')))[:32]}+{row.get('source_index')}"
    return f"{DEAD_PAYLOADS}/{name}.bin"


@functools.lru_cache(maxsize=64)
def _safe_topic(topic: str) -> str:
    """``topic`` as a file-name part (a digest when it has other characters)."""
    return topic if _SAFE_NAME.fullmatch(topic) else sha256_hex(topic)[:32]


def sha256_hex(data: bytes | str) -> str:
    """The hex SHA-256 of ``data`` (text as UTF-8)."""
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
    doc["payload_sha256"] = sha256_hex(payload) if payload is not None else None
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
        sha = f'"{sha256_hex(payload)}"'
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
        if sha is not None and sha != sha256_hex(raw):
            raise ValueError("dead-letter payload does not match its sha256")
        size, sha = len(raw), sha256_hex(raw)
    row["payload_size"], row["payload_sha256"] = size, sha
    return row


def payload_name(ref: str) -> str:
    """A :func:`payload_ref` without its folder (the name in a payload store)."""
    return ref.removeprefix(f"{DEAD_PAYLOADS}/")


def to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Dead-letter dicts as a :data:`DEAD_LETTER_SCHEMA` table (other keys ignored)."""
    return pa.Table.from_pylist(list(rows), schema=DEAD_LETTER_SCHEMA)


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
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MIN_MAX_MESSAGE_BYTES",
    "RECORD_OVERHEAD",
    "TEXT_LIMITS",
    "TOPIC_FIELDS",
    "DeadLetterMessage",
    "dead_letter_key",
    "decode",
    "dedupe",
    "encode",
    "payload_name",
    "payload_ref",
    "sha256_hex",
    "to_table",
]
